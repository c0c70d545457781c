"""One reconstruction run seen from the scene: job -> worker -> preview / plot / output nodes.

`ReconstructionSession.poll()` is called on the main thread (a QTimer in Slicer, a loop in tests).
It drains the runner's events and turns them into scene changes:
  preview  -> voxels of a preview volume node on the measurement grid (overlays the prior)
  progress -> `state` (percent, stage, ETA) and a row of the convergence table
  result   -> a new output volume named after the measurement; the prior is never touched
  error    -> `state.status == "error"` with the worker's message for a person
The runner is anything with `start()`, `poll() -> list[dict]`, `cancel()`, `running`, `returncode`
(`INRReconLib.worker.runner.WorkerRunner` or a test fake), built by `runner_factory(job_dir)`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..methods import auto_params
from ..physics.grid import ImageGrid
from ..io.readers import read_measurement_header
from .progress_plot import ProgressPlot
from .volumes import PREVIEW_ATTRIBUTE, ensure_display_node, get_ijk_to_ras, ijk_to_ras_from_grid, \
    load_volume_file, update_volume_from_array, write_volume_node

FINISHED = ("done", "cancelled", "error")
CHANGE_NOTE = ("Colour overlay: the change map, where the new data moved the result away from the aligned prior "
               "(at least 3 times the background's spread).")


@dataclass
class SessionState:
    """What the widget shows. percent in [0, 100]; elapsed/eta in seconds (None when unknown)."""

    status: str = "idle"  # idle | running | done | cancelled | error
    stage: str = ""
    iteration: int = 0
    total: int = 0
    loss: float | None = None
    psnr: float | None = None
    elapsed: float | None = None
    eta: float | None = None
    message: str = ""  # the error, or a note on the result, for a person
    sequence_node_id: str = ""  # dynamic MR: the result's frames as a Sequence
    metrics: dict = field(default_factory=dict)
    output_node_id: str | None = None
    warnings: list = field(default_factory=list)  # the worker's (e.g. a prior that does not match the data)

    @property
    def percent(self) -> float:
        if self.status == "done":
            return 100.0
        return 100.0 * self.iteration / self.total if self.total else 0.0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def summary(self) -> str:
        """One line for a status label."""
        if self.status == "running":
            eta = f", about {self.eta:.0f} s left" if self.eta is not None else ""
            loss = f", loss {self.loss:.4g}" if self.loss is not None else ""
            return f"{self.stage or 'starting'}: {self.iteration}/{self.total}{loss}{eta}"
        if self.status == "error":
            return f"Failed: {self.message}"
        text = {"idle": "", "done": "Done.", "cancelled": "Cancelled: partial result kept."}.get(self.status, "")
        return f"{text} {self.message}" if text and self.message else text


def _default_job_writer(job_dir, **job):
    from ..worker.job import write_job

    return write_job(job_dir, **job)


def _finite(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class ReconstructionSession:
    """Runs one measurement file through the worker and keeps the scene in step with it.

    scene: the MRML scene. runner_factory: job_dir -> runner. job_dir: an empty folder for the job.
    prior_node: a scalar volume node or None. method/config/iterations/device/preview_every/upsample:
    as in the job file. output_name: name of the result node (default: the measurement file's stem).
    job_writer(job_dir, **job): defaults to `INRReconLib.worker.job.write_job`.
    pretrain_on: DisINR: measurement files the worker pre-trains the model on first (a series'
    earlier fractions), or None.
    header: the measurement's `read_measurement_header` dict when the caller has it (it needs
    h5py, which Slicer's Python lacks until the first Apply installs it); read from the file otherwise.
    """

    def __init__(self, scene, runner_factory, job_dir, measurement_path, *, prior_node=None, method="nerp",
                 config=None, iterations=None, device="cpu", preview_every=10, upsample=1, output_name=None,
                 job_writer=None, header=None, pretrain_on=None):
        self.scene = scene
        self.runner_factory = runner_factory
        self.job_dir = Path(job_dir)
        self.measurement_path = Path(measurement_path)
        self.prior_node = prior_node
        self.method = method
        self.config = dict(config or {})
        self.iterations = iterations
        self.device = device
        self.preview_every = preview_every
        self.upsample = upsample
        self.output_name = output_name or self.measurement_path.name.split(".")[0]
        self.job_writer = job_writer or _default_job_writer
        self.pretrain_on = [str(p) for p in pretrain_on] if pretrain_on else None
        self.state = SessionState()
        self.runner = None
        self.preview_node = None
        self.output_node = None
        self.change_node = None  # NeRP: where the data changed the prior (methods/change.py)
        self.sequence_node = None  # dynamic MR: the frames as a Sequence (scene/sequence.py)
        self.browser_node = None   # its browser, where Slicer's Sequences module is loaded
        self.plot = None
        self.log: list[str] = []
        self._stage_offset = 0
        header = header or read_measurement_header(self.measurement_path)
        self.modality = header["modality"]
        self.grid: ImageGrid = header["grid"]

    # --- lifecycle --------------------------------------------------------------------------

    def start(self):
        """Write the job (prior as NRRD) and start the runner; returns self."""
        from ..methods.registry import METHODS

        self.job_dir.mkdir(parents=True, exist_ok=True)
        prior_path = None
        # Only a method that reads the prior gets it: for FBP or TV the export would be a copy of
        # the volume for nothing (the 256x256x141 thorax: 36 MB). An unknown method gets it; the
        # worker names that error.
        spec = METHODS.get(self.method)
        if self.prior_node is not None and (spec is None or spec.uses_prior):
            prior_path = str(self.job_dir / "prior.nrrd")
            write_volume_node(self.prior_node, prior_path)
        self.job_writer(self.job_dir, measurement=str(self.measurement_path), prior=prior_path, method=self.method,
                        config=self.config, iterations=self.iterations, device=self.device,
                        output=str(self.job_dir / "output.nrrd"), preview_every=self.preview_every,
                        upsample=self.upsample, pretrain_on=self.pretrain_on)
        self.plot = ProgressPlot(self.scene, self.output_name)
        self.state = SessionState(status="running", stage="starting")
        self.runner = self.runner_factory(self.job_dir)
        self.runner.start()
        return self

    def cancel(self):
        """Ask the worker to stop; it saves the partial result, which `poll()` still loads."""
        if self.runner is not None and not self.state.finished:
            self.runner.cancel()

    def terminate(self):
        """Stop the worker now (SIGTERM to its process tree: it saves the partial result if it
        can) without waiting for events: for when nobody will poll any more (module or scene
        closing)."""
        if self.runner is not None and not self.state.finished:
            self.runner.terminate()

    def poll(self) -> list[dict]:
        """Handle every event the runner has now; returns them. Safe to call after the end."""
        if self.runner is None or self.state.finished:
            return []
        events = list(self.runner.poll())
        for event in events:
            handler = getattr(self, "_on_" + str(event.get("event", "")), None)
            if handler is not None:
                handler(event)
            if self.state.finished:
                break
        ended = getattr(self.runner, "finished", None)
        if ended is None:
            ended = not self.runner.running
        if not self.state.finished and ended and not events:
            # The process ended without a final event (killed, crashed before writing one).
            self.state.status = "error"
            self.state.message = (f"the reconstruction process ended unexpectedly (exit code "
                                  f"{self.runner.returncode}) without a result.")
        return events

    def wait(self, timeout_s: float = 600.0, interval_s: float = 0.05) -> SessionState:
        """Poll until finished (for `waitForCompletion=True` and tests)."""
        import time

        deadline = time.monotonic() + timeout_s
        while not self.state.finished:
            self.poll()
            if time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"reconstruction did not finish within {timeout_s} s")
            time.sleep(interval_s)
        return self.state

    # --- events -----------------------------------------------------------------------------

    def _on_started(self, event):
        self.state.stage = "started"
        device = event.get("device")
        if device:
            self.log.append(f"worker started on {device}")

    def _on_progress(self, event):
        s = self.state
        stage = str(event.get("stage") or s.stage)
        if stage != s.stage and s.stage not in ("", "starting", "started"):
            # A new stage (NeRP: embed the prior, then fit the data) restarts its iteration count;
            # the plot's x axis keeps counting so the stages sit side by side. The last iteration
            # seen, not the planned total: the prior registration's optimizers stop before theirs.
            self._stage_offset += s.iteration or s.total
        s.stage = stage
        s.iteration = int(event.get("iteration") or 0)
        s.total = int(event.get("total") or s.total or 0)
        s.loss = _finite(event.get("loss"))
        s.psnr = _finite(event.get("psnr"))
        s.elapsed = _finite(event.get("elapsed"))
        s.eta = _finite(event.get("eta"))
        self.plot.add(self._stage_offset + s.iteration, s.loss, s.psnr)

    def _on_preview(self, event):
        path = event.get("path")
        if not path or not os.path.exists(path):
            return
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return  # a preview is best effort; the next one will come
        grid = self.grid
        if isinstance(event.get("grid"), dict):
            try:
                grid = ImageGrid.from_dict(event["grid"])
            except (KeyError, TypeError, ValueError):
                pass
        volume = preview_volume(array, event, grid.shape)
        if volume is None:
            return
        if self.preview_node is None or self.scene.GetNodeByID(self.preview_node.GetID()) is None:
            self.preview_node = self.scene.AddNewNodeByClass(
                "vtkMRMLScalarVolumeNode", self.scene.GenerateUniqueName(f"{self.output_name} preview"))
            self.preview_node.SetAttribute(PREVIEW_ATTRIBUTE, "1")  # never offered as a prior
            ensure_display_node(self.preview_node, self.scene).AutoWindowLevelOn()
        update_volume_from_array(self.preview_node, volume, ijk_to_ras_from_grid(grid))

    def _on_result(self, event):
        output = event.get("output")
        cancelled = bool(event.get("cancelled"))
        self.state.metrics = dict(event.get("metrics") or {})
        if output and os.path.exists(output):
            name = self.output_name + (" (partial)" if cancelled else "")
            self.output_node = load_volume_file(self.scene, output, name)
            self.output_node.SetAttribute("INRRecon.measurement", str(self.measurement_path))
            self.output_node.SetAttribute("INRRecon.method", self.method)
            if self.prior_node is not None:
                self.output_node.SetAttribute("INRRecon.prior", self.prior_node.GetID())
            for key, value in self.state.metrics.items():
                self.output_node.SetAttribute(f"INRRecon.metric.{key}", str(value))
            self.state.output_node_id = self.output_node.GetID()
            aligned = event.get("prior_aligned")
            if aligned and os.path.exists(aligned):
                # The prior as NeRP embedded it (registered to the new data): a new node, so the
                # alignment can be checked against the result; the user's prior stays untouched.
                node = load_volume_file(self.scene, aligned, f"{self.output_name} prior aligned")
                self.output_node.SetAttribute("INRRecon.alignedPrior", node.GetID())
                offset = event.get("prior_slice_offset_mm")
                if offset is not None:
                    node.SetAttribute("INRRecon.priorSliceOffsetMm", str(offset))
                    self.state.message = f"Prior: its slice {offset:+.1f} mm from the measured plane matched the data."
                    self.log.append(self.state.message)
            change = event.get("change_map")
            if change and os.path.exists(change):
                self.change_node = load_change_map(self.scene, change, f"{self.output_name} change")
                self.output_node.SetAttribute("INRRecon.changeMap", self.change_node.GetID())
                self.state.message = " ".join([self.state.message, CHANGE_NOTE]).strip()
            chosen = event.get("chosen") or {}
            for key, c in chosen.items():
                self.output_node.SetAttribute(f"INRRecon.auto.{key}", str(c.get("value")))
            if chosen:
                self.state.message = " ".join([self.state.message, auto_params.describe(chosen)]).strip()
                self.log.append(auto_params.describe(chosen))
            sequence = event.get("sequence")
            if sequence and os.path.exists(sequence):
                self._load_sequence(sequence, name)
            if event.get("warnings"):
                self.output_node.SetAttribute("INRRecon.warnings", "\n".join(map(str, event["warnings"])))
            self.remove_preview()  # the result replaces it; one preview node per run would pile up
        self.state.warnings = [str(w) for w in event.get("warnings") or []]
        self.log.extend(self.state.warnings)
        if self.state.warnings:
            self.state.message = " ".join([self.state.message] + self.state.warnings).strip()
        self.state.status = "cancelled" if cancelled else "done"
        if not cancelled and self.state.total:
            self.state.iteration = self.state.total

    def _load_sequence(self, path, name):
        """Dynamic MR: the series as a Sequence (+ browser) next to the mean image."""
        from ..io.sequence import read_sequence
        from .sequence import add_volume_sequence

        frames, grid, times = read_sequence(path)
        self.sequence_node, self.browser_node = add_volume_sequence(
            self.scene, frames, ijk_to_ras_from_grid(grid), times, f"{name} frames")
        self.sequence_node.SetAttribute("INRRecon.method", self.method)
        self.output_node.SetAttribute("INRRecon.sequence", self.sequence_node.GetID())
        if self.browser_node is not None:
            self.output_node.SetAttribute("INRRecon.sequenceBrowser", self.browser_node.GetID())
        self.state.sequence_node_id = self.sequence_node.GetID()
        note = f"{len(times)} frames over {times[0]:.3g}-{times[-1]:.3g} s: play them with the sequence browser."
        self.state.message = " ".join([self.state.message, note]).strip()

    def _on_error(self, event):
        self.state.status = "error"
        self.state.message = str(event.get("message") or "the reconstruction failed.")
        detail = event.get("detail")
        if detail:
            self.log.append(str(detail))

    def remove_preview(self):
        """Drop the preview node (after the output exists, it only clutters the scene)."""
        if self.preview_node is not None and self.scene.GetNodeByID(self.preview_node.GetID()) is not None:
            self.scene.RemoveNode(self.preview_node)
        self.preview_node = None


def load_change_map(scene, path, name):
    """The change map as a volume for a colour overlay: rainbow from the threshold (3 × the
    background spread) to 10, transparent below it."""
    from ..methods.change import CHANGE_THRESHOLD

    node = load_volume_file(scene, path, name)
    node.SetAttribute("INRRecon.changeThreshold", str(CHANGE_THRESHOLD))
    display = ensure_display_node(node, scene)
    if scene.GetNodeByID("vtkMRMLColorTableNodeRainbow") is not None:
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeRainbow")
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(CHANGE_THRESHOLD, 10.0)
    display.SetApplyThreshold(1)
    display.SetLowerThreshold(CHANGE_THRESHOLD)
    display.SetUpperThreshold(1e9)
    return node


def preview_volume(array: np.ndarray, event: dict, shape_zyx) -> np.ndarray | None:
    """A float32 volume of `shape_zyx` showing a preview array (see worker.events.preview_payload).

    "axial"/"image": the 2D image; "volume": the 3D image; "slices": the three central planes
    written into an otherwise zero volume, so the default slice views (which sit at the centre)
    show them. Returns None when the array does not fit the grid (a stale or foreign file).
    """
    nz, ny, nx = shape_zyx
    a = np.asarray(array, dtype=np.float32)
    kind = event.get("kind")
    if kind == "slices" or (a.ndim == 3 and a.shape[0] == 3 and nz > 1 and a.shape != (nz, ny, nx)):
        volume = np.zeros((nz, ny, nx), np.float32)
        slices = event.get("slices") or [
            {"axis": 0, "index": nz // 2, "shape": [ny, nx]},
            {"axis": 1, "index": ny // 2, "shape": [nz, nx]},
            {"axis": 2, "index": nx // 2, "shape": [nz, ny]}]
        for n, info in enumerate(slices):
            h, w = info["shape"]
            plane = np.nan_to_num(a[n, :h, :w])
            index = [slice(None)] * 3
            index[int(info["axis"])] = int(info["index"])
            target = volume[tuple(index)]
            if target.shape != plane.shape:
                return None
            volume[tuple(index)] = plane
        return volume
    if a.size != nz * ny * nx:
        return None
    return np.nan_to_num(a.reshape(nz, ny, nx))


def same_geometry(node_a, node_b, atol: float = 1e-4) -> bool:
    """True when two volume nodes have the same IJK->RAS and dimensions."""
    dims_a = node_a.GetImageData().GetDimensions() if node_a.GetImageData() else None
    dims_b = node_b.GetImageData().GetDimensions() if node_b.GetImageData() else None
    return dims_a == dims_b and np.allclose(get_ijk_to_ras(node_a), get_ijk_to_ras(node_b), atol=atol)
