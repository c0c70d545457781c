"""`inrrecon bench --cases batch`: the same small CPU reconstructions run one after the other in
this process (all cores to each, the best a shell loop gets) and as `inrrecon batch --workers
2` (a LocalCluster of 2 processes, the cores split between them), with the wall times, their
ratio and the scheduling overhead per row.

Rows: 8 slices of the embedded thorax CT (INRReconLib/data) at 128², 20 parallel views, each
reconstructed with TV (4 rows) or the hash-grid INR (4 rows). Overhead per row: the batch's
wall time less the cluster's start and its rows' own seconds spread over the workers, per row
(what Dask and the extra processes cost).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

BATCH_ROWS = 8
BATCH_WORKERS = 2
TV_ITERATIONS = 300
INR_ITERATIONS = 150


def _write_cases(folder: Path) -> list:
    import numpy as np

    from .cases import thorax_slices
    from .io.measurement import write_measurement
    from .io.volume import MU_WATER_PER_MM, hu_to_mu
    from .physics import ImageGrid
    from .simulate import simulate_ct

    thorax = thorax_slices("embedded")
    rows = []
    for i in range(BATCH_ROWS):
        hu = thorax.hu[i + 1]
        hu = hu.reshape(128, 2, 128, 2).mean(axis=(1, 3))[None].astype(np.float32)  # 256² -> 128²
        grid = ImageGrid((128, 128, 1), (thorax.grid.spacing[0] * 2, thorax.grid.spacing[1] * 2, thorax.grid.spacing[2]))
        m = simulate_ct(hu_to_mu(hu, MU_WATER_PER_MM), grid, geometry="parallel", n_views=20, upsample=1)
        path = folder / f"slice{i}.h5"
        write_measurement(m, path)
        method = "tv" if i % 2 == 0 else "inr"
        rows.append({"id": f"slice{i}-{method}", "measurement": path.name, "method": method,
                     "iterations": TV_ITERATIONS if method == "tv" else INR_ITERATIONS})
    return rows


def batch_timings() -> dict:
    """Serial and batch wall times of the same rows (seconds)."""
    import torch
    import yaml

    from .batch import run_batch
    from .batch.schedule import open_client
    from .worker.run import run_job

    with tempfile.TemporaryDirectory(prefix="inrrecon-bench-batch-") as tmp:
        folder = Path(tmp)
        rows = _write_cases(folder)
        threads = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)
        serial, t0 = [], time.perf_counter()
        for row in rows:
            t = time.perf_counter()
            job = {"measurement": str(folder / row["measurement"]), "method": row["method"],
                   "iterations": row["iterations"], "device": "cpu", "output": str(folder / "serial" / f"{row['id']}.nrrd"),
                   "preview_every": 0}
            (folder / "serial").mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory() as job_dir:
                final = run_job(job, Path(job_dir), lambda _e: None, threading.Event())
            if final.get("event") != "result":
                raise RuntimeError(f"serial row {row['id']} failed: {final.get('message')}")
            serial.append(time.perf_counter() - t)
        serial_wall = time.perf_counter() - t0
        torch.set_num_threads(threads)

        study = folder / "study.yaml"
        study.write_text(yaml.safe_dump({"defaults": {"device": "cpu"}, "rows": rows}, sort_keys=False), encoding="utf-8")
        t0 = time.perf_counter()
        with open_client("local", workers=BATCH_WORKERS) as (client, per_row_threads, _gpus, _by_name):
            started = time.perf_counter() - t0
            summaries, _ = run_batch(study, out_dir=folder / "batch", client=client)
        batch_wall = time.perf_counter() - t0
    failed = [s["id"] for s in summaries if s["status"] != "done"]
    if failed:
        raise RuntimeError(f"batch rows failed: {failed}")
    row_seconds = sum(s["seconds"] for s in summaries)
    return {"rows": BATCH_ROWS, "workers": BATCH_WORKERS, "cores": os.cpu_count(),
            "serial_wall_s": serial_wall, "serial_row_s": serial, "batch_wall_s": batch_wall,
            "cluster_start_s": started, "batch_row_s": [s["seconds"] for s in summaries],
            "ratio": batch_wall / serial_wall,
            "overhead_per_row_s": (batch_wall - started - row_seconds / BATCH_WORKERS) / BATCH_ROWS,
            "threads_per_row": {"serial": os.cpu_count(), "batch": per_row_threads}}


def print_batch_table(t: dict, stream=None) -> None:
    import sys

    stream = stream or sys.stdout
    print(f"{t['rows']} rows (4 TV x {TV_ITERATIONS} it., 4 INR x {INR_ITERATIONS} it., 128², 20 views), "
          f"{t['cores']} cores", file=stream)
    print("| run | threads per row | wall (s) | rows' own seconds (sum) |", file=stream)
    print("|---|---|---|---|", file=stream)
    print(f"| serial, in one process | {t['threads_per_row']['serial']} | {t['serial_wall_s']:.1f} | "
          f"{sum(t['serial_row_s']):.1f} |", file=stream)
    print(f"| inrrecon batch --workers {t['workers']} | {t['threads_per_row']['batch']} | {t['batch_wall_s']:.1f} "
          f"(cluster start {t['cluster_start_s']:.1f}) | {sum(t['batch_row_s']):.1f} |", file=stream)
    print(f"batch / serial wall: {t['ratio']:.2f}; scheduling overhead per row: {t['overhead_per_row_s']:.2f} s",
          file=stream)
