"""`python -m INRReconLib.worker JOB_DIR`: run the job in JOB_DIR/job.json in the background.

stdout carries the protocol only (one JSON event per line); everything else a library might print
is sent to stderr, which, with the log, also goes to JOB_DIR/worker.log. A line `cancel` on
stdin, SIGTERM or SIGINT stops the run at the next iteration and keeps the partial result.
Exit status: 0 result (also when cancelled), 1 internal error, 2 bad input, 3 no GPU,
4 out of memory.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from pathlib import Path

USAGE = "usage: python -m INRReconLib.worker JOB_DIR   (JOB_DIR holds job.json)"


def claim_stdout():
    """Keep a private handle on the real stdout for events, then point fd 1 and sys.stdout at
    stderr, so prints and C-library chatter (astra, CUDA) cannot corrupt the event stream."""
    events_fd = os.dup(1)
    events = os.fdopen(events_fd, "w", encoding="utf-8", buffering=1, newline="\n")
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events


class LineEmitter:
    """The `emit` for run_job: one JSON line per event, flushed at once. If the reader has gone
    (broken pipe), it asks the run to stop, which saves the partial result."""

    def __init__(self, stream, stop: threading.Event, log: logging.Logger):
        self.stream, self.stop, self.log = stream, stop, log
        self.lock = threading.Lock()
        self.broken = False

    def __call__(self, event: dict) -> None:
        from .events import encode_event

        line = encode_event(event)
        self.log.debug("event %s", line)  # worker.log only: the stderr tail stays readable
        if self.broken:
            return
        with self.lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.broken = True
                self.log.warning("stdout is closed: the reader has gone; stopping and keeping the result")
                self.stop.set()


def watch_stdin(stop: threading.Event, log: logging.Logger) -> None:
    """Set `stop` on a line `cancel`. Reads fd 0 unbuffered: a daemon thread blocked inside
    sys.stdin's buffered reader can abort the interpreter at exit."""
    pending = b""
    while True:
        try:
            chunk = os.read(0, 4096)
        except OSError:
            return
        if not chunk:
            return  # EOF: the parent closed stdin; not a cancel (`< /dev/null` must work)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            word = line.strip().decode("utf-8", errors="replace").lower()
            if word == "cancel":
                log.info("cancel requested on stdin")
                stop.set()
            elif word:
                log.warning("ignoring stdin line %r (only 'cancel' is understood)", word[:80])


def setup_logging(job_dir: Path) -> logging.Logger:
    log = logging.getLogger("INRReconLib")
    log.setLevel(logging.DEBUG)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setLevel(logging.INFO)
    to_stderr.setFormatter(fmt)
    log.addHandler(to_stderr)
    if job_dir.is_dir():
        to_file = logging.FileHandler(job_dir / "worker.log", encoding="utf-8")
        to_file.setLevel(logging.DEBUG)
        to_file.setFormatter(fmt)
        log.addHandler(to_file)
    logging.captureWarnings(True)  # warnings go through the log, i.e. stderr + worker.log
    logging.getLogger("py.warnings").handlers = log.handlers
    return logging.getLogger("INRReconLib.worker")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    events_out = claim_stdout()
    faulthandler.enable(file=sys.stderr)  # a native crash leaves a traceback in the stderr tail
    job_dir = Path(argv[0])
    log = setup_logging(job_dir)
    stop = threading.Event()

    signals_seen = []

    def on_signal(signum, frame):
        if signals_seen:  # a second signal: the person wants out now (Ctrl-C twice)
            os._exit(128 + int(signum))
        signals_seen.append(signum)
        log.info("signal %s: stopping at the next iteration", signum)
        stop.set()

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    threading.Thread(target=watch_stdin, args=(stop, log), name="stdin-cancel", daemon=True).start()

    from .events import error_from_exception, exit_code_for
    from .job import load_job
    from .run import run_job

    emit = LineEmitter(events_out, stop, log)
    log.info("worker pid %d, job %s", os.getpid(), job_dir)
    try:
        job = load_job(job_dir)
    except Exception as exc:
        event = error_from_exception(exc)
        log.error("bad job: %s", event["message"])
        emit(event)
    else:
        event = run_job(job, job_dir, emit, stop)
    code = exit_code_for(event)
    log.info("exit %d", code)
    for handler in logging.getLogger("INRReconLib").handlers:
        handler.flush()
    events_out.flush()
    return code


if __name__ == "__main__":
    status = main()
    # Everything is written and flushed by now; skipping the interpreter's teardown (torch's alone
    # takes a second or more) lets the caller see the process end right after the final event.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(status)
