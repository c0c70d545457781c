"""One study row as a Dask task: the worker's `run_job` in a scratch job folder, retried once.

Runs inside a Dask worker process. It returns a summary (a plain dict) whatever happens, so a
failed row is a result, not an exception: the rows that do not depend on it go on, the rows that
follow it (`after`) are marked failed without running. A worker process that dies mid-row
raises nothing here; the scheduler gives the row to another worker (schedule.py), and since
the output is written atomically and the finished-record only after it, no half result counts.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ATTEMPTS = 2  # a failed row is retried once

_gpu_lock = threading.Lock()
_gpus_busy: set = set()


def run_row(row, fingerprint: str, upstream, threads, gpus_per_worker: int, gpus_by_worker_name: bool = False) -> dict:
    """Reconstruct `row` (study.Row); upstream: the summary of the row it follows, or None.
    threads: torch threads for the row; None: this machine's cores over its worker's task slots."""
    base = {"id": row.id, "method": row.method, "output": str(row.output), "after": row.after,
            "host": socket.gethostname(), "pid": os.getpid()}
    prior = row.prior
    if row.after is not None:
        if upstream is None or upstream.get("status") not in ("done", "skipped"):
            return {**base, "status": "failed", "kind": "upstream",
                    "message": f"not run: row {row.after}, whose output is this row's prior, failed."}
        prior = Path(upstream["output"])
    import torch

    if threads is None:
        from distributed import get_worker

        threads = (os.cpu_count() or 1) // max(1, get_worker().state.nthreads)
    torch.set_num_threads(max(1, int(threads)))
    from .state import write_record

    t0 = time.perf_counter()
    final = None
    for attempt in range(1, ATTEMPTS + 1):
        with _device(row.device, gpus_per_worker, gpus_by_worker_name) as device:
            final = _run_once(row, prior, device)
        if final.get("event") == "result":
            summary = {**base, "status": "done", "attempts": attempt, "device": final.get("device", device),
                       "seconds": round(time.perf_counter() - t0, 3), "method_seconds": final.get("method_seconds"),
                       "iterations": final.get("iterations"), "metrics": final.get("metrics") or {},
                       "cancelled": bool(final.get("cancelled")), "warnings": final.get("warnings") or []}
            if row.after is not None:
                from ..io.provenance import file_sha256

                summary["prior_sha256"] = file_sha256(prior)  # resume checks the upstream output is still this
            write_record(row.output, fingerprint, summary)
            return summary
    return {**base, "status": "failed", "attempts": ATTEMPTS, "kind": final.get("kind", "internal"),
            "message": final.get("message", "unknown error"), "seconds": round(time.perf_counter() - t0, 3)}


def _run_once(row, prior, device: str) -> dict:
    from ..worker.run import run_job

    job = {"measurement": str(row.measurement), "method": row.method, "prior": str(prior) if prior else None,
           "prior_series": row.prior_series if row.after is None else None,
           "model": str(row.model) if row.model else None, "config": row.config, "iterations": row.iterations,
           "pretrain_on": [str(p) for p in row.pretrain_on] if row.pretrain_on else None,
           "device": device, "output": str(row.output),
           "reference": str(row.reference) if row.reference else None, "roi": str(row.roi) if row.roi else None,
           "preview_every": 0, "meta": {"batch_id": row.id, "after": row.after}}
    row.output.parent.mkdir(parents=True, exist_ok=True)
    events = []
    with tempfile.TemporaryDirectory(prefix=f"inrrecon-batch-{row.id}-") as job_dir:
        final = run_job(job, Path(job_dir), events.append, threading.Event())
    started = next((e for e in events if e.get("event") == "started"), {})
    return {**final, "device": started.get("device", device)}


@contextmanager
def _device(requested: str, gpus_per_worker: int, by_worker_name: bool):
    """The device for one row: as the row asks (cpu, cuda:N), or with 'auto' / 'cuda' on a worker
    that holds GPUs (Dask resource GPU), the first of its GPUs no other row on it is using. On a
    LocalCluster started here (by_worker_name) worker i holds GPUs i*K .. i*K+K-1; a worker
    started by hand sees the GPUs CUDA_VISIBLE_DEVICES gives it, from 0."""
    if requested not in ("auto", "cuda") or gpus_per_worker <= 0:
        yield requested
        return
    offset = 0
    if by_worker_name:
        from distributed import get_worker

        name = get_worker().name
        offset = int(name) * gpus_per_worker if str(name).isdigit() else 0
    with _gpu_lock:
        slot = next(i for i in range(gpus_per_worker) if offset + i not in _gpus_busy)
        _gpus_busy.add(offset + slot)
    try:
        yield f"cuda:{offset + slot}"
    finally:
        with _gpu_lock:
            _gpus_busy.discard(offset + slot)
