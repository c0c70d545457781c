"""Start the background worker and collect its events, without Qt.

The Slicer logic owns a runner, calls `poll()` from a QTimer on the main thread and `cancel()`
from the Stop button; tests call `poll()` in a loop, or swap in `FakeRunner` (scripted events) or a
fake `popen` so no process is started. Reader threads only parse and queue; nothing here touches
the scene.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from .events import FINAL_KINDS, parse_event_line

log = logging.getLogger("INRReconLib.worker.runner")

STDERR_TAIL_LINES = 60


def package_parent() -> str:
    """The folder that holds the INRReconLib package, for the child's PYTHONPATH."""
    return str(Path(__file__).resolve().parents[2])


class WorkerRunner:
    """One worker process for one job folder.

    python: the interpreter that has torch (Slicer's own or one the user configured).
    env: base environment for the child (default: this process's); PYTHONPATH gets the package's
    parent prepended so the child imports this same INRReconLib.
    popen: factory with subprocess.Popen's signature (tests pass a fake).
    """

    def __init__(self, job_dir, python: str = sys.executable, env: Optional[dict] = None,
                 popen: Callable = subprocess.Popen, cancel_grace_s: float = 10.0):
        self.job_dir = Path(job_dir)
        self.python = str(python)
        self.env = env
        self.popen = popen
        self.cancel_grace_s = cancel_grace_s
        self.process = None
        self.malformed: list[str] = []  # stdout lines that were not events (kept for the log)
        self.stderr_tail = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.final_event: Optional[dict] = None
        self.cancel_requested = False
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._died_reported = False
        self._started_at = None

    # --- life cycle -----------------------------------------------------------------------
    def command(self) -> list:
        return [self.python, "-m", "INRReconLib.worker", str(self.job_dir)]

    def child_env(self) -> dict:
        env = dict(os.environ if self.env is None else self.env)
        parts = [package_parent()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        return env

    def start(self) -> "WorkerRunner":
        if self.process is not None:
            raise RuntimeError("this runner has already started its worker; make a new one per job")
        kwargs = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      env=self.child_env(), cwd=str(self.job_dir))
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # Ctrl-C in Slicer's terminal must not kill the worker
        log.info("starting worker: %s", self.command())
        self._started_at = time.monotonic()
        try:
            self.process = self.popen(self.command(), **kwargs)
        except OSError as exc:  # no such interpreter, job folder gone: report it like any failure
            self.process = _NeverStarted()
            self._died_reported = True
            self.final_event = {"event": "error", "kind": "worker-died",
                                "message": f"Could not start the worker with {self.python!r} ({exc}). Check the "
                                           "Python interpreter setting and that the job folder exists.",
                                "detail": repr(exc), "returncode": None}
            self._queue.put(self.final_event)
            return self
        for name, target, stream in (("worker-stdout", self._read_stdout, self.process.stdout),
                                     ("worker-stderr", self._read_stderr, self.process.stderr)):
            thread = threading.Thread(target=target, args=(stream,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    @property
    def finished(self) -> bool:
        """The worker has ended and all its output has been read (poll() will yield nothing new
        after the events already queued)."""
        return (self.process is not None and not self.running
                and not any(t.is_alive() for t in self._threads))

    def poll(self) -> list[dict]:
        """The events received since the last call, oldest first; never blocks. When the worker
        has ended without a `result` or `error`, the last call yields a synthetic `worker-died`
        error with the tail of its stderr."""
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for event in events:
            if event.get("event") in FINAL_KINDS and self.final_event is None:
                self.final_event = event  # the first final event counts; a worker sends only one
        if self.final_event is None and not self._died_reported and self.finished and self._queue.empty():
            self._died_reported = True
            self.final_event = self._died_event()
            events.append(self.final_event)
        return events

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Block until the worker exits and its output is read; returns its exit code (None on timeout)."""
        if self.process is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.returncode

    def cancel(self) -> None:
        """Ask the worker to stop at its next iteration and save what it has (`cancel` on stdin);
        if it is still running after `cancel_grace_s`, send SIGTERM (same meaning on POSIX, a hard
        stop on Windows)."""
        if not self.running:
            return
        self.cancel_requested = True
        try:
            self.process.stdin.write(b"cancel\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            log.info("could not write 'cancel' to the worker; terminating it")
            self.terminate()
            return
        timer = threading.Timer(self.cancel_grace_s, self._terminate_if_running)
        timer.daemon = True
        timer.start()

    def terminate(self) -> None:
        if self.running:
            self.process.terminate()

    def kill(self) -> None:
        """Hard stop; the checkpoint and the last preview in the job folder remain."""
        if self.running:
            self.process.kill()

    # --- reader threads -----------------------------------------------------------------
    def _read_stdout(self, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
                if not line:
                    break
                event = parse_event_line(line)
                if event is None:
                    if line.strip():
                        self.malformed.append(line.rstrip("\n"))
                        log.warning("worker stdout line is not an event: %r", line[:200])
                    continue
                self._queue.put(event)
        except Exception:  # a broken stream must end the reader, not raise into nowhere
            log.exception("reading the worker's stdout failed")
        finally:
            _close(stream)

    def _read_stderr(self, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
                if not line:
                    break
                line = line.rstrip("\n")
                self.stderr_tail.append(line)
                log.debug("worker: %s", line)
        except Exception:
            log.exception("reading the worker's stderr failed")
        finally:
            _close(stream)

    def _terminate_if_running(self) -> None:
        if self.running:
            log.info("worker still running %.0f s after cancel; sending SIGTERM", self.cancel_grace_s)
            self.terminate()

    def _died_event(self) -> dict:
        code = self.returncode
        how = f"exit code {code}"
        if code is not None and code < 0:
            how = f"killed by signal {-code}"
        tail = "\n".join(self.stderr_tail)
        return {"event": "error", "kind": "worker-died",
                "message": f"The worker died ({how}) without a result. The last preview and "
                           f"checkpoint.npy in {self.job_dir} keep the work done so far; "
                           "worker.log there has the details.",
                "detail": tail, "returncode": code}


class _NeverStarted:
    """The `process` of a runner whose worker could not be started."""

    pid = None

    def poll(self):
        return -1

    def wait(self, timeout=None):
        return -1

    terminate = kill = lambda self: None


def _close(stream) -> None:
    try:
        stream.close()
    except Exception:
        pass


class FakeRunner:
    """Same surface as WorkerRunner, playing a scripted list of events (Slicer logic tests).

    per_poll: events handed out per poll() call. cancel() makes the next poll end the script with
    a `result` carrying cancelled=True (and `output` from the script's result, if any)."""

    def __init__(self, events: Iterable[dict], per_poll: int = 1, returncode: int = 0, job_dir=None):
        self.script = [dict(e) for e in events]
        self.per_poll = per_poll
        self.job_dir = None if job_dir is None else Path(job_dir)
        self._returncode_at_end = returncode
        self._position = 0
        self._started = False
        self.cancel_requested = False
        self.final_event: Optional[dict] = None
        self.malformed: list[str] = []
        self.polls = 0
        self._pending: list[dict] = []

    def start(self) -> "FakeRunner":
        self._started = True
        return self

    @property
    def running(self) -> bool:
        return self._started and self.final_event is None and self._position < len(self.script)

    @property
    def finished(self) -> bool:
        return self._started and not self.running

    @property
    def returncode(self) -> Optional[int]:
        return None if not self._started or self.running else self._returncode_at_end

    def poll(self) -> list[dict]:
        self.polls += 1
        if self._pending:
            batch, self._pending = self._pending, []
            return batch
        if not self.running:
            return []
        if self.cancel_requested:
            template = next((e for e in self.script if e.get("event") == "result"), {"event": "result"})
            event = {**template, "event": "result", "cancelled": True}
            self._position = len(self.script)
            self.final_event = event
            self._returncode_at_end = 0
            return [event]
        batch = self.script[self._position:self._position + self.per_poll]
        self._position += len(batch)
        for event in batch:
            if event.get("event") in FINAL_KINDS and self.final_event is None:
                self.final_event = event
        return batch

    def wait(self, timeout=None) -> Optional[int]:
        while self.running:
            self.poll()
        return self.returncode

    def cancel(self) -> None:
        if self.running:
            self.cancel_requested = True

    def terminate(self) -> None:
        self.cancel()

    def kill(self) -> None:
        if self.running:
            self._position = len(self.script)
            self.final_event = {"event": "error", "kind": "worker-died",
                                "message": "The worker died (killed by signal 9) without a result.",
                                "detail": "", "returncode": -9}
            self._pending.append(self.final_event)
            self._returncode_at_end = -9
