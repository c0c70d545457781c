"""Worker protocol pieces without a real worker: event lines, the job file, WorkerRunner with a
fake process, FakeRunner."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from INRReconLib.errors import InputError
from INRReconLib.worker import FakeRunner, WorkerRunner, check_job, load_job, parse_event_line, write_job
from INRReconLib.worker.events import encode_event, error_from_exception, exit_code_for, to_jsonable
from INRReconLib.worker.runner import package_parent


# --- event lines -----------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "", "\n", "hello world", "{", "{not json}", "[1, 2]", '"event"', "42", '{"no_event": 1}', '{"event": 5}',
    "Warning: something {\"event\": \"progress\"}", b"\xff\xfe\x00garbage", None, '{"event": "progress"' * 3,
    "[" * 5000 + "]" * 5000,
])
def test_garbage_lines_are_not_events(line):
    assert parse_event_line(line) is None


def test_event_lines_round_trip_with_numpy_and_non_finite_numbers():
    event = {"event": "progress", "iteration": np.int64(3), "loss": np.float32(0.25), "eta": float("nan"),
             "psnr": float("inf"), "shape": np.array([2, 3]), "path": Path("/tmp/p.npy"), "ok": np.bool_(True)}
    line = encode_event(event)
    assert "\n" not in line and "NaN" not in line and "Infinity" not in line
    back = parse_event_line(line + "\r\n")
    assert back == {"event": "progress", "iteration": 3, "loss": 0.25, "eta": None, "psnr": None,
                    "shape": [2, 3], "path": "/tmp/p.npy", "ok": True}
    assert parse_event_line(line.encode()) == back  # bytes too
    with pytest.raises(ValueError):
        encode_event({"no": "kind"})
    assert to_jsonable({1: (np.float64(1.5),)}) == {"1": [1.5]}


def test_error_classification_and_exit_codes():
    e = error_from_exception(InputError("/grid size", "must be positive.", "Use nz = 1."))
    assert e["kind"] == "bad-input" and e["message"] == "/grid size: must be positive. Fix: Use nz = 1."
    assert e["field"] == "/grid size" and exit_code_for(e) == 2
    assert error_from_exception(MemoryError())["kind"] == "out-of-memory"
    assert exit_code_for(error_from_exception(ValueError("x"))) == 1
    assert exit_code_for({"event": "result"}) == 0


# --- job file ----------------------------------------------------------------------------------

def test_write_then_load_job_resolves_relative_paths(tmp_path):
    job_dir = tmp_path / "job"
    (tmp_path / "scan.h5").write_bytes(b"x")
    path = write_job(job_dir, measurement="../scan.h5", method="sirt", iterations=20, device="cpu",
                     output="out/recon.nrrd", config={"nonneg": False}, meta={"fraction": 2})
    assert path == job_dir / "job.json" and json.loads(path.read_text())["measurement"] == "../scan.h5"
    assert [p.name for p in job_dir.iterdir()] == ["job.json"]  # no temporary file left behind
    job = load_job(job_dir)
    assert job["measurement"] == str((tmp_path / "scan.h5").resolve())
    assert job["output"] == str((job_dir / "out" / "recon.nrrd").resolve())
    assert job["prior"] is None and job["preview_every"] == 10 and job["preview"] == "slices"
    assert job["config"] == {"nonneg": False} and job["meta"] == {"fraction": 2}
    assert check_job(job, job_dir) == job  # checking twice changes nothing


@pytest.mark.parametrize("keys,field", [
    ({"method": "sirt"}, "measurement"),
    ({"measurement": "m.h5"}, "method"),
    ({"measurement": "m.h5", "method": "magic"}, "method"),
    ({"measurement": "m.h5", "method": "sirt", "device": "gpu"}, "device"),
    ({"measurement": "m.h5", "method": "sirt", "iterations": 0}, "iterations"),
    ({"measurement": "m.h5", "method": "sirt", "iterations": "10"}, "iterations"),
    ({"measurement": "m.h5", "method": "sirt", "preview_every": -1}, "preview_every"),
    ({"measurement": "m.h5", "method": "sirt", "config": 3}, "config"),
    ({"measurement": "m.h5", "method": "sirt", "mu_water_per_mm": -1}, "mu_water_per_mm"),
    ({"measurement": 5, "method": "sirt"}, "measurement"),
    ({"measurement": "m.h5", "method": "nerp", "prior": "p.nrrd", "output": "p.nrrd"}, "output"),
])
def test_invalid_jobs_name_the_key(tmp_path, keys, field):
    with pytest.raises(InputError) as info:
        write_job(tmp_path / "job", **keys)
    assert info.value.field == field
    assert not (tmp_path / "job").exists()


def test_load_job_reports_missing_files_and_bad_json(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_job(tmp_path / "nothing")
    write_job(tmp_path, measurement="gone.h5", method="fbp")
    with pytest.raises(InputError, match="gone.h5"):
        load_job(tmp_path)
    (tmp_path / "job.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        load_job(tmp_path)


# --- WorkerRunner with a fake process ------------------------------------------------------------

class FakeProcess:
    """Stands in for subprocess.Popen: scripted stdout/stderr bytes, records stdin and signals."""

    def __init__(self, stdout: bytes, stderr: bytes = b"", returncode: int = 0, exit_after_s: float = 0.0):
        self.stdout, self.stderr = io.BytesIO(stdout), io.BytesIO(stderr)
        self.stdin = io.BytesIO()
        self.stdin.close = lambda: None  # keep what was written readable
        self.pid = 4242
        self._code, self._end = returncode, time.monotonic() + exit_after_s
        self.signals = []

    def poll(self):
        return self._code if time.monotonic() >= self._end else None

    def wait(self, timeout=None):
        while self.poll() is None:
            if timeout is not None and time.monotonic() > self._end + timeout:
                raise subprocess.TimeoutExpired("fake", timeout)
            time.sleep(0.005)
        return self._code

    def terminate(self):
        self.signals.append("TERM")
        self._code, self._end = -15, time.monotonic()

    def kill(self):
        self.signals.append("KILL")
        self._code, self._end = -9, time.monotonic()


def _fake_popen(process, calls):
    def popen(cmd, **kwargs):
        calls.append((cmd, kwargs))
        return process
    return popen


def _drain(runner, timeout=5.0):
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        events.extend(runner.poll())
        if runner.finished and runner.final_event is not None:
            return events + runner.poll()
        time.sleep(0.005)
    raise AssertionError("runner did not finish")


def test_runner_parses_events_among_garbage_and_starts_with_an_argument_list(tmp_path):
    lines = [b'{"event": "started", "device": "cpu"}', b"libfoo: some chatter", b"",
             b'{"event": "progress", "iteration": 1, "total": 2}', b"\xff\xfe binary junk", b"[1,2,3]",
             b'{"event": "progress", "iteration": 2, "total": 2}', b'{"event": "result", "output": "o.nrrd"}']
    process = FakeProcess(b"\n".join(lines) + b"\n")
    calls = []
    runner = WorkerRunner(tmp_path, python="/opt/py/bin/python", env={"PYTHONPATH": "/elsewhere", "A": "1"},
                          popen=_fake_popen(process, calls)).start()
    events = _drain(runner)
    assert [e["event"] for e in events] == ["started", "progress", "progress", "result"]
    assert runner.final_event["output"] == "o.nrrd" and runner.returncode == 0 and not runner.running
    assert len(runner.malformed) == 3 and "libfoo: some chatter" in runner.malformed
    cmd, kwargs = calls[0]
    assert cmd == ["/opt/py/bin/python", "-m", "INRReconLib.worker", str(tmp_path)]
    assert "shell" not in kwargs
    assert kwargs["env"]["PYTHONPATH"].split(os.pathsep) == [package_parent(), "/elsewhere"]
    assert kwargs["env"]["A"] == "1" and kwargs["stdin"] == subprocess.PIPE
    assert (Path(package_parent()) / "INRReconLib" / "worker" / "__main__.py").is_file()
    assert runner.poll() == []  # nothing more, no synthetic error after a result


def test_runner_reports_a_silent_death_with_the_stderr_tail(tmp_path):
    process = FakeProcess(b'{"event": "started"}\n{"event": "progress", "iteration": 1}\n',
                          stderr=b"loading\nSegmentation fault (core dumped)\n", returncode=-11)
    runner = WorkerRunner(tmp_path, popen=_fake_popen(process, [])).start()
    events = _drain(runner)
    assert [e["event"] for e in events] == ["started", "progress", "error"]
    died = events[-1]
    assert died["kind"] == "worker-died" and "signal 11" in died["message"]
    assert "Segmentation fault" in died["detail"] and died["returncode"] == -11
    assert runner.poll() == []  # reported once

    process = FakeProcess(b"", stderr=b"ImportError: No module named torch\n", returncode=1)
    events = _drain(WorkerRunner(tmp_path, popen=_fake_popen(process, [])).start())
    assert events[-1]["kind"] == "worker-died" and "exit code 1" in events[-1]["message"]
    assert "No module named torch" in events[-1]["detail"]


def test_runner_cancel_writes_to_stdin_then_terminates_after_the_grace_time(tmp_path):
    process = FakeProcess(b'{"event": "started"}\n', exit_after_s=30.0)
    runner = WorkerRunner(tmp_path, popen=_fake_popen(process, []), cancel_grace_s=0.2).start()
    assert runner.running and runner.returncode is None
    runner.cancel()
    assert process.stdin.getvalue() == b"cancel\n" and process.signals == []
    deadline, events = time.monotonic() + 3, []
    while runner.running and time.monotonic() < deadline:
        events += runner.poll()  # the Slicer timer's tick: it also sends SIGTERM once the grace time is over
        time.sleep(0.01)
    assert process.signals == ["TERM"] and runner.returncode == -15
    events += _drain(runner)
    assert events[-1]["kind"] == "worker-died"


def test_runner_survives_a_reader_that_raises(tmp_path):
    class Exploding(io.BytesIO):
        def read(self, *args):
            raise OSError("pipe broke")

        readline = read

    process = FakeProcess(b"")
    process.stdout = Exploding()
    runner = WorkerRunner(tmp_path, popen=_fake_popen(process, [])).start()
    events = _drain(runner)
    assert [e["kind"] for e in events] == ["worker-died"]


def test_runner_reports_a_worker_that_cannot_start(tmp_path):
    runner = WorkerRunner(tmp_path, python=str(tmp_path / "no-such-python")).start()
    events = runner.poll()
    assert [e["kind"] for e in events] == ["worker-died"] and "no-such-python" in events[0]["message"]
    assert not runner.running and runner.finished and runner.poll() == []


# --- FakeRunner -------------------------------------------------------------------------------

SCRIPT = [{"event": "started", "device": "cpu"}, {"event": "progress", "iteration": 1, "total": 3},
          {"event": "progress", "iteration": 2, "total": 3}, {"event": "progress", "iteration": 3, "total": 3},
          {"event": "result", "output": "/x/o.nrrd", "cancelled": False}]


def test_fake_runner_plays_its_script():
    runner = FakeRunner(SCRIPT, per_poll=2)
    assert runner.poll() == [] and not runner.running  # not started
    runner.start()
    batches = []
    while runner.running:
        batches.append(runner.poll())
    assert [len(b) for b in batches] == [2, 2, 1] and batches[-1][0]["event"] == "result"
    assert runner.returncode == 0 and runner.finished and runner.poll() == []


def test_fake_runner_cancel_and_kill():
    runner = FakeRunner(SCRIPT).start()
    runner.poll()
    runner.cancel()
    final = runner.poll()
    assert final == [{"event": "result", "output": "/x/o.nrrd", "cancelled": True}]
    assert not runner.running and runner.poll() == []

    runner = FakeRunner(SCRIPT).start()
    runner.poll()
    runner.kill()
    assert runner.poll()[0]["kind"] == "worker-died" and runner.returncode == -9


# --- WorkerRunner with real processes --------------------------------------------------------------

LAUNCHER = '''
"""Behaves like Slicer's PythonSlicer: starts the real interpreter as a child, passes stdin
through (inherited), forwards no signal, and waits."""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import os, sys, time; print(os.getpid(), flush=True); time.sleep(120)"])
sys.exit(child.wait())
'''


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(os.name == "nt" or not os.path.isdir("/proc"), reason="POSIX process groups, read from /proc")
@pytest.mark.parametrize("stop", ["kill", "terminate"])
def test_stopping_the_runner_ends_the_worker_behind_a_launcher(tmp_path, stop):
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)

    class LauncherRunner(WorkerRunner):
        def command(self):
            return [self.python, str(launcher)]

    runner = LauncherRunner(tmp_path, python=sys.executable).start()
    deadline = time.monotonic() + 20
    while not runner.malformed and time.monotonic() < deadline:  # the child's pid is not an event
        runner.poll()
        time.sleep(0.02)
    worker_pid = int(runner.malformed[0])
    assert _alive(worker_pid) and runner.running
    getattr(runner, stop)()
    assert runner.wait(timeout=10) is not None
    deadline = time.monotonic() + 5
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(worker_pid), f"{stop}() left the launcher's child {worker_pid} running"


def test_a_real_worker_reports_a_bad_job_over_the_pipe(tmp_path):
    """The real runner and the real worker process: a job with no measurement file ends with one
    `error` event of kind bad-input and exit code 2."""
    from INRReconLib.worker.job import write_job

    write_job(tmp_path, measurement=str(tmp_path / "missing.h5"), method="fbp")
    runner = WorkerRunner(tmp_path, python=sys.executable).start()
    events = _drain(runner, timeout=120)
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "bad-input"
    assert "missing.h5" in events[-1]["message"] and runner.returncode == 2
