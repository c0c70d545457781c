"""Running a study on Dask: a LocalCluster sized to the machine, or an existing scheduler.

Each row not already finished (state.py) becomes one task; a chained row takes its upstream
row's future as an argument, so Dask runs it after that row, on any worker. One row per GPU
(worker resource "GPU") where there are GPUs; otherwise the cores are split between worker
processes, each row using its worker's share of threads. A worker process that dies (killed, out
of memory) loses its rows to the others: the scheduler reruns them, up to ALLOWED_FAILURES deaths
per row before the row is recorded as failed ("worker-died").
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from contextlib import contextmanager

from ..errors import InputError

ALLOWED_FAILURES = 2
INSTALL_HINT = "pip install -e \".[batch]\" (dask and distributed; Python 3.10 or newer)"

log = logging.getLogger("INRReconLib.batch")


def require_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise InputError("batch", "needs Dask, which is not installed.", f"Install it: {INSTALL_HINT}.") from None


@contextmanager
def open_client(scheduler: str = "local", workers=None, gpus_per_worker=None):
    """Yields (client, threads per row, GPUs per worker). scheduler: 'local' (a LocalCluster on
    this machine) or a scheduler address (tcp://host:8786) whose workers were started with
    `--nthreads K --resources GPU=K` on GPU nodes (README, "Many patients")."""
    require_dask()
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        if scheduler != "local":
            with Client(scheduler, timeout="30s") as client:
                # Threads per row: each worker's cores over its task slots (task.py), a worker per node.
                yield client, None, int(gpus_per_worker or 0)
            return
        n_gpus = _cuda_count()
        cores = os.cpu_count() or 1
        if n_gpus:
            k = int(gpus_per_worker or 1)
            n_workers = int(workers or max(1, n_gpus // k))
            kwargs = {"threads_per_worker": k, "resources": {"GPU": k}}
            threads, gpus = max(1, cores // (n_workers * k)), k
        else:
            if gpus_per_worker:
                log.warning("--gpus-per-worker %s: this machine has no CUDA GPU; running on the CPU", gpus_per_worker)
            # Reconstructions are torch-bound: a few threads each beat many single-threaded rows.
            n_workers = int(workers or max(1, cores // 2))
            kwargs = {"threads_per_worker": 1}
            threads, gpus = max(1, cores // n_workers), 0
        cluster = LocalCluster(n_workers=n_workers, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR, **kwargs)
        try:
            with Client(cluster) as client:
                yield client, threads, gpus
        finally:
            cluster.close()


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install: run on the CPU
        return 0


def run_study(study, client, threads: int = 1, gpus_per_worker: int = 0, progress=None) -> list:
    """Run every unfinished row of `study` on `client`; returns one summary per row, in the
    study's order (status done / skipped / failed). progress(counts: dict): after each row."""
    from distributed import as_completed

    from .state import fingerprints, finished_summary
    from .task import run_row

    prints = fingerprints(study)
    summaries, futures = {}, {}
    for row in study.rows:
        stored = finished_summary(row.output, prints[row.id])
        upstream_changed = row.after is not None and row.after in futures
        if stored is not None and not upstream_changed:
            summaries[row.id] = {**stored, "status": "skipped"}
            continue
        upstream = futures.get(row.after) if row.after else None
        if upstream is None and row.after:
            upstream = summaries[row.after]
        futures[row.id] = client.submit(
            run_row, row, prints[row.id], upstream, threads, gpus_per_worker,
            # a fresh key each run: Dask must not hand back a result it still holds from an earlier run
            key=f"row-{row.id}-{uuid.uuid4().hex[:12]}", resources={"GPU": 1} if gpus_per_worker else None)
    ids = {f.key: row_id for row_id, f in futures.items()}
    t0 = time.perf_counter()
    counts = _counts(study, summaries, futures, t0, client)
    if progress:
        progress(counts)
    for future in as_completed(list(futures.values())):
        row_id = ids[future.key]
        try:
            summaries[row_id] = future.result()
        except Exception as exc:  # KilledWorker past ALLOWED_FAILURES, or a scheduler-side error
            summaries[row_id] = _lost(study.row(row_id), exc, future.key)
        counts = _counts(study, summaries, futures, t0, client)
        if progress:
            progress(counts)
    return [summaries[row.id] for row in study.rows]


def _lost(row, exc, key) -> dict:
    died = type(exc).__name__ == "KilledWorker"
    if died and getattr(exc, "task", key) != key:
        kind, message = "upstream", f"not run: row {row.after}, whose output is this row's prior, was lost."
    elif died:
        kind = "worker-died"
        message = ("its worker process died while running it, as many times as the scheduler allows "
                   f"(allowed-failures; {ALLOWED_FAILURES} on a local cluster): killed, or out of memory.")
    else:
        kind, message = "internal", f"{type(exc).__name__}: {exc}"
    return {"id": row.id, "method": row.method, "output": str(row.output), "after": row.after,
            "status": "failed", "kind": kind, "message": message}


def _counts(study, summaries: dict, futures: dict, t0: float, client) -> dict:
    done = [s for s in summaries.values() if s["status"] == "done"]
    counts = {"rows": len(study.rows), "done": len(done),
              "skipped": sum(s["status"] == "skipped" for s in summaries.values()),
              "failed": sum(s["status"] == "failed" for s in summaries.values()),
              "elapsed_s": time.perf_counter() - t0}
    counts["running"] = _running(client, {f.key for row_id, f in futures.items() if row_id not in summaries})
    left = counts["rows"] - counts["done"] - counts["skipped"] - counts["failed"]
    # ETA: the rows left at the pace finished rows came in, since the start.
    counts["eta_s"] = counts["elapsed_s"] / len(done) * left if done and left else (0.0 if not left else None)
    return counts


def _running(client, keys: set) -> int:
    """Rows being computed now: those a worker is processing, at most one per task slot."""
    try:
        workers = client.scheduler_info()["workers"]
        processing = client.processing()
    except Exception:  # the scheduler is busy or gone: the count is only for the progress line
        return 0
    return sum(min(len(keys.intersection(processing.get(addr, ()))), int(info.get("nthreads", 1)))
               for addr, info in workers.items())


class ProgressLine:
    """`done 3 · running 2 · failed 0 · skipped 1 of 8 · ETA 1m40s` on one terminal line."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, c: dict) -> None:
        finished = c["done"] + c["skipped"] + c["failed"]
        width = 20
        filled = int(width * finished / max(1, c["rows"]))
        eta = "--" if c["eta_s"] is None else _duration(c["eta_s"])
        line = (f"[{'#' * filled}{'-' * (width - filled)}] {finished}/{c['rows']} rows · done {c['done']} · "
                f"running {c['running']} · failed {c['failed']} · skipped {c['skipped']} · "
                f"{_duration(c['elapsed_s'])} · ETA {eta}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and finished == c["rows"]:
            self.stream.write("\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
