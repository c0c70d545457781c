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

ALLOWED_FAILURES = 1  # a row whose worker dies twice is given up (Dask: more than 1 suspicious death)
INSTALL_HINT = "pip install -e \".[batch]\" (dask and distributed; Python 3.10 or newer)"

log = logging.getLogger("INRReconLib.batch")


def require_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise InputError("batch", "needs Dask, which is not installed.", f"Install it: {INSTALL_HINT}.") from None


@contextmanager
def open_client(scheduler: str = "local", workers=None, gpus_per_worker=None):
    """Yields (client, threads per row, GPUs per worker, whether worker i holds GPUs i*K.. (a
    LocalCluster started here; on a cluster each worker sees its own GPUs)). scheduler: 'local' (a LocalCluster on
    this machine) or a scheduler address (tcp://host:8786) whose workers were started with
    `--nthreads K --resources GPU=K` on GPU nodes (README, "Many patients")."""
    require_dask()
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        if scheduler != "local":
            try:
                client = Client(scheduler, timeout="30s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError("--scheduler", f"cannot reach the Dask scheduler {scheduler!r} ({exc}).",
                                 "Start it (dask scheduler) and give its address, e.g. tcp://host:8786, "
                                 "or use --scheduler local.") from None
            with client:
                gpus = int(gpus_per_worker or 0)
                workers_info = client.scheduler_info()["workers"].values()
                if gpus and not any(w.get("resources", {}).get("GPU") for w in workers_info):
                    raise InputError("--gpus-per-worker", "no worker of that cluster has the resource GPU: the rows "
                                     "would wait forever.", "Start the workers with --resources GPU=K, or leave "
                                     "--gpus-per-worker out.")
                # Threads per row: each worker's cores over its task slots (task.py), a worker per node.
                yield client, None, gpus, False
            return
        n_gpus = _cuda_count()
        cores = os.cpu_count() or 1
        if n_gpus:
            k = int(gpus_per_worker or 1)
            n_workers = int(workers or max(1, n_gpus // k))
            if n_workers * k > n_gpus:
                raise InputError("--workers / --gpus-per-worker", f"{n_workers} workers x {k} GPUs is more than the "
                                 f"{n_gpus} GPUs of this machine.", f"Use at most {n_gpus // k or 1} workers of "
                                 f"{min(k, n_gpus)} GPUs.")
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
                yield client, threads, gpus, True
        finally:
            cluster.close()


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install: run on the CPU
        return 0


def run_study(study, client, threads: int = 1, gpus_per_worker: int = 0, progress=None,
              gpus_by_worker_name: bool = False) -> list:
    """Run every unfinished row of `study` on `client`; returns one summary per row, in the
    study's order (status done / skipped / failed). progress(counts: dict): after each row."""
    from distributed import as_completed

    from .state import fingerprints, finished_summary
    from .task import run_row

    prints = fingerprints(study)
    summaries, futures = {}, {}
    for row in study.rows:
        stored = finished_summary(row.output, prints[row.id])
        if stored is not None and row.after:
            # Built from the upstream output that is there now? (It may have been rebuilt by a run
            # this row did not finish.) A skipped upstream carries its output's checked hash.
            upstream_sha = summaries.get(row.after, {}).get("output_sha256")
            if row.after in futures or stored.get("prior_sha256") != upstream_sha:
                stored = None
        if stored is not None:
            summaries[row.id] = {**stored, "status": "skipped"}
            continue
        upstream = futures.get(row.after) if row.after else None
        if upstream is None and row.after:
            upstream = summaries[row.after]
        futures[row.id] = client.submit(
            run_row, row, prints[row.id], upstream, threads, gpus_per_worker, gpus_by_worker_name,
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
