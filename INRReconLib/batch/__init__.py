"""`inrrecon batch`: a study of many reconstructions on Dask, resumable and fault tolerant.

study.py reads and checks the study file (every bad row reported before anything runs);
state.py decides which rows are already finished; task.py runs one row on a Dask worker (the
background worker's `run_job`, retried once); schedule.py builds the cluster and runs the rows,
chained ones after their upstream row; report.py writes study.csv, study.md and the plots.
Dask is an optional extra (`pip install -e ".[batch]"`, Python 3.10+); only schedule.py needs it.
"""

from __future__ import annotations

from .study import ROW_KEYS, Row, Study, load_study  # noqa: F401


def run_batch(study_path, *, out_dir=None, scheduler="local", workers=None, gpus_per_worker=None, progress=None,
              client=None):
    """Check the study, run its unfinished rows and write the report into out_dir (default
    <study stem>_results). client: an existing distributed.Client (one torch thread per row);
    else one is opened for `scheduler`. Returns (summaries, report paths)."""
    from .report import write_report
    from .schedule import open_client, require_dask, run_study

    require_dask()
    study = load_study(study_path, out_dir)
    out = out_dir or study.path.with_name(study.path.stem + "_results")
    if client is not None:
        summaries = run_study(study, client, threads=1, progress=progress)
    else:
        with open_client(scheduler, workers, gpus_per_worker) as (opened, threads, gpus, by_name):
            summaries = run_study(study, opened, threads=threads, gpus_per_worker=gpus, progress=progress,
                                  gpus_by_worker_name=by_name)
    return summaries, write_report(study, summaries, out)
