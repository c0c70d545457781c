"""Start the background worker and collect its events, without Qt.

The Slicer logic owns a runner, calls `poll()` from a QTimer on the main thread and `cancel()`
from the Stop button; tests call `poll()` in a loop, or swap in `FakeRunner` (scripted events) or a
fake `popen` so no process is started. `poll()` reads whatever the pipes hold without blocking; no
thread is involved, since Python threads inside Slicer run only while its main thread runs Python.
Nothing here touches the scene.
"""

from __future__ import annotations

import collections
import logging
import os
import io
import signal
import subprocess
import sys
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
        self._pending: list[dict] = []  # events not yet handed out by poll()
        self._readers: list[_LineReader] = []
        self._died_reported = False
        self._started_at = None
        self._terminate_at = None  # monotonic time after a cancel when SIGTERM follows

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
            self._pending.append(self.final_event)
            return self
        self._readers = [_LineReader(self.process.stdout, "stdout"), _LineReader(self.process.stderr, "stderr")]
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
                and all(reader.eof for reader in self._readers))

    def poll(self) -> list[dict]:
        """The events received since the last call, oldest first; never blocks. When the worker
        has ended without a `result` or `error`, the last call yields a synthetic `worker-died`
        error with the tail of its stderr."""
        self._pending.extend(self._drain_once())
        if self._terminate_at is not None and time.monotonic() >= self._terminate_at:
            self._terminate_at = None
            if self.running:
                log.info("worker still running %.0f s after cancel; sending SIGTERM", self.cancel_grace_s)
                self.terminate()
        events, self._pending = self._pending, []
        for event in events:
            if event.get("event") in FINAL_KINDS and self.final_event is None:
                self.final_event = event  # the first final event counts; a worker sends only one
        if self.final_event is None and not self._died_reported and self.finished:
            self._died_reported = True
            self.final_event = self._died_event()
            events.append(self.final_event)
        return events

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Block until the worker exits and its output is read; returns its exit code (None on
        timeout). The events stay queued for poll()."""
        if self.process is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                return None
            self._pending.extend(self._drain_once())
            time.sleep(0.01)
        return self.returncode

    def cancel(self) -> None:
        """Ask the worker to stop at its next iteration and save what it has (`cancel` on stdin);
        on POSIX, if it is still running `cancel_grace_s` later, the next poll() sends SIGTERM
        (which the worker treats the same way)."""
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
        if os.name == "nt":
            # terminate() is a hard kill there, which would lose the partial result the worker is
            # saving: no escalation, the worker stops at its next iteration
            return
        if self._terminate_at is None:  # a second Cancel does not postpone the SIGTERM
            self._terminate_at = time.monotonic() + self.cancel_grace_s  # poll() sends SIGTERM then

    def terminate(self) -> None:
        """SIGTERM to the worker and every process it started (the worker saves its partial
        result on SIGTERM; on Windows this is a hard stop)."""
        if self.process is not None and not self.finished:  # the launcher may be gone, its child not
            self._signal_tree(hard=False)

    def kill(self) -> None:
        """Hard stop of the worker and every process it started; the checkpoint and the last
        preview in the job folder remain."""
        if self.process is not None and not self.finished:
            self._signal_tree(hard=True)

    def _signal_tree(self, hard: bool) -> None:
        # Slicer's PythonSlicer is a launcher that starts the real Python as its child and passes
        # stdin through but no signals: signalling the launcher alone leaves the worker running.
        if not isinstance(self.process, subprocess.Popen):  # a test's stand-in: no real tree
            (self.process.kill if hard else self.process.terminate)()
            return
        if os.name == "nt":
            # taskkill /T ends the whole tree; /F because a console process may ignore the request
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.process.pid)], capture_output=True, check=False)
            return
        try:
            # started with start_new_session: the worker's process group is its whole tree
            os.killpg(self.process.pid, signal.SIGKILL if hard else signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass  # the group has ended meanwhile (its id may even be reused: then it is not ours)

    # --- pipes ------------------------------------------------------------------------------
    def _drain_once(self) -> list:
        """Events from what stdout holds now; stderr lines go to the tail and the debug log."""
        events = []
        if len(self._readers) != 2:
            return events
        for line in self._readers[0].read_lines():
            event = parse_event_line(line)
            if event is None:
                if line.strip():
                    self.malformed.append(line.rstrip("\n"))
                    log.warning("worker stdout line is not an event: %r", line[:200])
                continue
            events.append(event)
        for line in self._readers[1].read_lines():
            self.stderr_tail.append(line.rstrip("\n"))
            log.debug("worker: %s", line.rstrip("\n"))
        return events

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


class _LineReader:
    """Complete text lines from a pipe, read without blocking: what the pipe holds now, the rest
    at the next call. `eof` once the writer has closed it (or reading failed)."""

    CHUNK = 65536

    def __init__(self, stream, name: str):
        self.stream, self.name = stream, name
        self.eof = stream is None
        self._buffer = b""
        try:
            self._fd = stream.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self._fd = None  # a file-like object without a descriptor (tests): plain reads
        if self._fd is not None and os.name != "nt":
            os.set_blocking(self._fd, False)

    def read_lines(self) -> list:
        if self.eof:
            return []
        while True:
            try:
                data = self._read_available()
            except OSError as exc:  # a broken pipe ends the reading, it must not raise into the GUI
                log.warning("reading the worker's %s failed: %s", self.name, exc)
                data = b""
            if data is None:  # nothing more just now
                break
            if not data:
                self.eof = True
                _close(self.stream)
                break
            self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if self.eof and self._buffer:
            lines, self._buffer = lines + [self._buffer], b""
        return [line.decode("utf-8", errors="replace") + "\n" for line in lines]

    def _read_available(self):
        """Bytes now in the pipe, b"" at its end, None when it is empty but still open."""
        if self._fd is None:
            return self.stream.read(self.CHUNK)
        if os.name == "nt":
            import _winapi
            import msvcrt

            try:
                available = _winapi.PeekNamedPipe(msvcrt.get_osfhandle(self._fd), 0)[0]
            except BrokenPipeError:
                return b""
            return os.read(self._fd, min(available, self.CHUNK)) if available else None
        try:
            return os.read(self._fd, self.CHUNK)
        except BlockingIOError:
            return None


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
