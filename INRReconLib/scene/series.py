"""A longitudinal series: one measurement per fraction, reconstructed one after another.

Each fraction uses the chosen prior, or (chain mode) the previous fraction's reconstruction, the
way a physicist follows a patient through treatment. A method with a pre-trained model (DisINR)
chains by learning instead: in chain mode every fraction after the first is adapted from a model
the worker pre-trains on the earlier fractions' raw measurements (the first uses the model folder
of the config); without chain mode every fraction uses that model. Results are gathered in a Sequence node
(index "fraction") with a sequence browser, so the series can be stepped through in the views.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .session import ReconstructionSession, SessionState


def _add_node(scene, class_name: str, name: str):
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    if node is None:
        # In Slicer the Sequences module registers this class; a bare MRML scene may lack it.
        raise RuntimeError(f"the scene cannot create {class_name}: register the Sequences module's node "
                           f"classes (scene.RegisterNodeClass) first.")
    return node


def build_sequence(scene, volume_nodes, name: str, index_values=None):
    """A Sequence node holding a copy of each volume (index "fraction") and a browser for it.

    Returns (sequence_node, browser_node)."""
    sequence = _add_node(scene, "vtkMRMLSequenceNode", name)
    sequence.SetIndexName("fraction")
    sequence.SetIndexUnit("")
    sequence.SetIndexType(sequence.NumericIndex)
    for n, node in enumerate(volume_nodes):
        value = str(index_values[n] if index_values is not None else n + 1)
        sequence.SetDataNodeAtValue(node, value)
    browser = _add_node(scene, "vtkMRMLSequenceBrowserNode", f"{name} browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    return sequence, browser


class SeriesSession:
    """Runs `ReconstructionSession`s for several measurement files, one at a time.

    measurement_paths: in fraction order. prior_node: the prior of the first fraction (and of
    every fraction unless chain=True). job_root: a folder; each fraction gets job_root/fraction-NN.
    Other keyword arguments go to every ReconstructionSession.
    """

    def __init__(self, scene, runner_factory, job_root, measurement_paths, *, prior_node=None, chain=True,
                 name="INRRecon series", **session_kwargs):
        if not measurement_paths:
            raise ValueError("a series needs at least one measurement file")
        self.scene = scene
        self.runner_factory = runner_factory
        self.job_root = Path(job_root)
        self.paths = [Path(p) for p in measurement_paths]
        self.prior_node = prior_node
        self.chain = chain
        self.name = name
        self.session_kwargs = session_kwargs
        self.sessions: list[ReconstructionSession] = []
        self.outputs = []
        self.sequence_node = None
        self.browser_node = None
        self.status = "idle"
        self.message = ""

    @property
    def current(self) -> ReconstructionSession | None:
        return self.sessions[-1] if self.sessions else None

    @property
    def state(self) -> SessionState:
        """A copy of the running fraction's state, with the series position in its stage text (the
        fraction's own state keeps its stage name: the session compares it with the next event's)."""
        s = replace(self.current.state) if self.current else SessionState()
        if self.status == "running" and self.current is not None:
            s.stage = f"fraction {len(self.sessions)}/{len(self.paths)}: {s.stage}"
        elif self.status == "error":
            s.status, s.message = "error", self.message
        return s

    @property
    def finished(self) -> bool:
        return self.status in ("done", "cancelled", "error")

    def start(self):
        """Check every fraction's file first (a bad later one must not stop the series halfway),
        then start the first."""
        from ..io.readers import read_measurement_header

        for path in self.paths:
            read_measurement_header(path)  # InputError naming the file and the field
        self.status = "running"
        self._start_next()
        return self

    def _start_next(self):
        from ..methods.registry import METHODS

        index = len(self.sessions)
        prior, pretrain_on = self.prior_node, None
        spec = METHODS.get(self.session_kwargs.get("method"))
        if self.chain and spec is not None and "model" in spec.reads:
            pretrain_on = self.paths[:index] or None  # the raw data of every earlier fraction
        elif self.chain and self.outputs:
            prior = self.outputs[-1]
        session = ReconstructionSession(self.scene, self.runner_factory, self.job_root / f"fraction-{index + 1:02d}",
                                        self.paths[index], prior_node=prior, pretrain_on=pretrain_on,
                                        **self.session_kwargs)
        self.sessions.append(session)
        session.start()

    def poll(self) -> list[dict]:
        if self.status != "running" or self.current is None:
            return []
        session = self.current
        events = session.poll()
        if session.state.finished:
            if session.output_node is not None and session.state.status == "done":
                self.outputs.append(session.output_node)
                session.remove_preview()
            if session.state.status == "error":
                self.status, self.message = "error", f"fraction {len(self.sessions)}: {session.state.message}"
                self._finish()
            elif session.state.status == "cancelled":
                self.status, self.message = "cancelled", "series cancelled"
                self._finish()
            elif len(self.sessions) < len(self.paths):
                try:
                    self._start_next()
                except Exception as exc:  # a later fraction's file went missing or is broken
                    self.status = "error"
                    self.message = f"fraction {len(self.sessions) + 1} ({self.paths[len(self.sessions)].name}): {exc}"
                    self._finish()
            else:
                self.status = "done"
                self._finish()
        return events

    def _finish(self):
        if self.outputs:
            self.sequence_node, self.browser_node = build_sequence(self.scene, self.outputs, self.name)

    def cancel(self):
        if self.current is not None:
            self.current.cancel()

    def terminate(self):
        """Stop the running fraction's worker now (see ReconstructionSession.terminate)."""
        if self.current is not None:
            self.current.terminate()

    def wait(self, timeout_s: float = 1200.0, interval_s: float = 0.05):
        import time

        deadline = time.monotonic() + timeout_s
        while not self.finished:
            self.poll()
            if time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"series did not finish within {timeout_s} s")
            time.sleep(interval_s)
        return self.status
