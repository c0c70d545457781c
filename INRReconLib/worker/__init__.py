"""The background worker: `python -m INRReconLib.worker JOB_DIR` (see __main__) and the
Qt-free pieces around it. Importing this package is cheap (no torch)."""

from .events import EVENT_KINDS, PROTOCOL_VERSION, parse_event_line, unpack_preview
from .job import check_job, load_job, write_job
from .run import run_job
from .runner import FakeRunner, WorkerRunner

__all__ = ["EVENT_KINDS", "PROTOCOL_VERSION", "parse_event_line", "unpack_preview", "check_job", "load_job",
           "write_job", "run_job", "FakeRunner", "WorkerRunner"]
