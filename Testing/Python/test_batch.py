"""`inrrecon batch` on a real Dask LocalCluster (2 worker processes) with tiny CT cases: a study
with a chained series runs and writes every output and the report; a re-run skips every row;
changing one row's config reruns only it (and the rows chained after it); a bad row fails with
its message while the others finish; a worker process killed mid-run still ends with every
output present and readable; a bad study is refused whole before anything runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from INRReconLib.errors import InputError
from INRReconLib.io.measurement import Measurement, write_measurement
from INRReconLib.io.volume import mu_to_hu, read_volume, write_volume
from INRReconLib.physics import ImageGrid, operator_for, parallel_geometry

distributed = pytest.importorskip("distributed", reason="the batch extra (dask) is not installed")

from INRReconLib.batch import load_study, run_batch  # noqa: E402
from INRReconLib.batch.state import record_path  # noqa: E402

MU = 0.02
GRID = ImageGrid((32, 32, 1), (1.5, 1.5, 2.0), (0.0, 0.0, 0.0))


def _phantom(shift_px: float, radius: float = 5.0) -> np.ndarray:
    yy, xx = np.mgrid[:32, :32] - 15.5
    body = (xx ** 2 + yy ** 2 < 13 ** 2) * MU
    lesion = ((xx - shift_px) ** 2 + yy ** 2 < radius ** 2) * 0.5 * MU
    return (body + lesion)[None].astype(np.float32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Two patients × two fractions of 20-view parallel CT, their truths (HU) and a planning CT."""
    folder = tmp_path_factory.mktemp("cohort")
    geometry = parallel_geometry(np.linspace(0, np.pi, 20, endpoint=False), 48, 1.5, row_spacing_mm=2.0)
    for patient in (1, 2):
        for fraction in (1, 2):
            truth = _phantom(shift_px=patient, radius=4.0 + fraction)
            m = Measurement("CT", np.zeros((20, 1, 48), np.float32), GRID, geometry, {"mu_water_per_mm": MU})
            m.data = operator_for(m).forward(torch.from_numpy(truth)).numpy().astype(np.float32)
            write_measurement(m, folder / f"p{patient}_f{fraction}.h5")
            write_volume(folder / f"p{patient}_f{fraction}_truth.nrrd", mu_to_hu(truth, MU), GRID)
        write_volume(folder / f"p{patient}_plan.nrrd", mu_to_hu(_phantom(shift_px=patient, radius=4.0), MU), GRID)
    return folder


FAST_INR = {"iterations": 50, "embed_iterations": 50, "registration_reference_iterations": 10, "prior_mismatch": "warn",
            "prior_registration": "rigid"}


def _study(folder: Path, name: str, rows: list) -> Path:
    import yaml

    path = folder / name
    path.write_text(yaml.safe_dump({"rows": rows}, sort_keys=False), encoding="utf-8")
    return path


def _six_rows() -> list:
    rows = []
    for p in (1, 2):
        rows.append({"id": f"p{p}-fbp", "measurement": f"p{p}_f1.h5", "method": "fbp", "reference": f"p{p}_f1_truth.nrrd"})
        rows.append({"id": f"p{p}-f1", "measurement": f"p{p}_f1.h5", "method": "nerp", "prior": f"p{p}_plan.nrrd",
                     "config": dict(FAST_INR), "reference": f"p{p}_f1_truth.nrrd"})
    rows.append({"id": "p1-f2", "measurement": "p1_f2.h5", "method": "nerp", "after": "p1-f1",
                 "config": dict(FAST_INR), "reference": "p1_f2_truth.nrrd"})
    rows.append({"id": "p2-sirt", "measurement": "p2_f2.h5", "method": "sirt", "iterations": 5})
    return rows


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=50)
    with Client(cluster) as c:
        yield c
    cluster.close()


def _mtimes(summaries) -> dict:
    return {s["id"]: Path(s["output"]).stat().st_mtime_ns for s in summaries}


def test_study_runs_resumes_and_reruns_only_what_changed(cohort, client, tmp_path):
    study = _study(cohort, "study.yaml", _six_rows())
    out = tmp_path / "results"
    summaries, report = run_batch(study, out_dir=out, client=client)
    assert [s["status"] for s in summaries] == ["done"] * 6, summaries
    for s in summaries:
        image, _ = read_volume(s["output"])
        assert image.shape == (1, 32, 32) and np.all(np.isfinite(image))
        assert record_path(Path(s["output"])).is_file()
    chained = next(s for s in summaries if s["id"] == "p1-f2")
    assert json.loads(Path(out / "p1-f2.metrics.json").read_text())["prior"] == str(out / "p1-f1.nrrd")
    assert chained["metrics"]["psnr"] > 20
    with open(report["csv"], newline="") as f:
        lines = list(csv.DictReader(f))
    assert [line["id"] for line in lines] == [s["id"] for s in summaries]
    assert all(float(line["psnr"]) > 15 for line in lines if line["id"] != "p2-sirt")
    assert "| p1-f2 | done | nerp | p1-f1 |" in Path(report["md"]).read_text()
    assert {p.name for p in report["plots"]} == {"study_seconds.png", "study_fractions.png"}
    before = _mtimes(summaries)

    again, _ = run_batch(study, out_dir=out, client=client)
    assert [s["status"] for s in again] == ["skipped"] * 6
    assert _mtimes(again) == before

    rows = _six_rows()
    rows[1]["config"]["iterations"] = 51  # p1-f1: it and p1-f2, chained after it, rerun; nothing else
    changed, _ = run_batch(_study(cohort, "study.yaml", rows), out_dir=out, client=client)
    status = {s["id"]: s["status"] for s in changed}
    assert status == {"p1-fbp": "skipped", "p1-f1": "done", "p2-fbp": "skipped", "p2-f1": "skipped",
                      "p1-f2": "done", "p2-sirt": "skipped"}
    after = _mtimes(changed)
    assert {k for k in after if after[k] != before[k]} == {"p1-f1", "p1-f2"}

    # An output replaced by something else (a user's edit, a half-copied file) is not finished.
    Path(out / "p2-sirt.nrrd").write_bytes(b"not an image")
    study = _study(cohort, "study.yaml", _six_rows())  # and p1-f1's config back as it was
    status = {s["id"]: s["status"] for s in run_batch(study, out_dir=out, client=client)[0]}
    assert status == {"p1-fbp": "skipped", "p1-f1": "done", "p2-fbp": "skipped", "p2-f1": "skipped",
                      "p1-f2": "done", "p2-sirt": "done"}
    assert [s["status"] for s in run_batch(study, out_dir=out, client=client)[0]] == ["skipped"] * 6

    # p1-f1 rebuilt by a run that stopped before p1-f2 (both records still valid on their own):
    # p1-f2 was built from the old p1-f1 and must run again.
    from INRReconLib.batch.state import fingerprints, write_record

    upstream = out / "p1-f1.nrrd"
    image, grid = read_volume(upstream)
    write_volume(upstream, image + 1.0, grid)
    write_record(upstream, fingerprints(load_study(study, out))["p1-f1"],
                 json.loads(record_path(upstream).read_text())["summary"])
    status = {s["id"]: s["status"] for s in run_batch(study, out_dir=out, client=client)[0]}
    assert status["p1-f1"] == "skipped" and status["p1-f2"] == "done", status


def test_a_failing_row_is_retried_then_recorded_and_the_others_finish(cohort, client, tmp_path):
    (cohort / "bad_config.yaml").write_text("iterations: 5\nlr: -1\n", encoding="utf-8")
    rows = [{"id": "good", "measurement": "p1_f1.h5", "method": "fbp"},
            {"id": "bad", "measurement": "p1_f1.h5", "method": "inr", "config": "bad_config.yaml"},
            {"id": "after-bad", "measurement": "p1_f2.h5", "method": "nerp", "after": "bad", "config": dict(FAST_INR)},
            {"id": "also-good", "measurement": "p2_f1.h5", "method": "sirt", "iterations": 3}]
    summaries, report = run_batch(_study(cohort, "failing.yaml", rows), out_dir=tmp_path, client=client)
    by_id = {s["id"]: s for s in summaries}
    assert by_id["good"]["status"] == by_id["also-good"]["status"] == "done"
    bad = by_id["bad"]
    assert bad["status"] == "failed" and bad["kind"] == "bad-input" and bad["attempts"] == 2
    assert "lr" in bad["message"]
    assert by_id["after-bad"]["status"] == "failed" and by_id["after-bad"]["kind"] == "upstream"
    assert not (tmp_path / "bad.nrrd").exists() and not record_path(tmp_path / "bad.nrrd").exists()
    md = Path(report["md"]).read_text()
    assert "## Failed rows" in md and "**bad** (bad-input)" in md


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL of a worker process")
def test_a_killed_worker_loses_no_row(cohort, client, tmp_path):
    slow = {"iterations": 60, "prior_registration": "none"}
    rows = [{"id": f"r{i}", "measurement": f"p{1 + i % 2}_f{1 + i // 2 % 2}.h5", "method": "inr",
             "config": slow, "reference": f"p{1 + i % 2}_f{1 + i // 2 % 2}_truth.nrrd"} for i in range(4)]
    study = _study(cohort, "kill.yaml", rows)
    seen, killed = [], threading.Event()

    def progress(counts):
        seen.append(dict(counts))

    def killer():
        # Kill one worker process while it is reconstructing a row (the nanny starts a new one).
        deadline = time.time() + 60
        while time.time() < deadline:
            busy = [addr for addr, keys in client.processing().items() if keys]
            if busy:
                time.sleep(1.0)
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summaries, _ = run_batch(study, out_dir=tmp_path, client=client, progress=progress)
    thread.join()
    assert killed.is_set()
    assert [s["status"] for s in summaries] == ["done"] * 4, summaries
    for s in summaries:
        image, _ = read_volume(s["output"])
        assert image.shape == (1, 32, 32) and np.all(np.isfinite(image))
        assert s["metrics"]["psnr"] > 10
    assert seen[-1]["done"] == 4 and seen[-1]["failed"] == 0


def test_bad_study_is_refused_whole_before_running(cohort, tmp_path):
    rows = [{"id": "a", "measurement": "missing.h5", "method": "fbp"},
            {"id": "b", "measurement": "p1_f1.h5", "method": "nerp"},
            {"id": "c", "measurement": "p1_f1.h5", "method": "magic"},
            {"id": "d", "measurement": "p1_f1.h5", "method": "fbp", "after": "zzz"},
            {"id": "a", "measurement": "p1_f1.h5", "method": "adjoint"},
            {"id": "e", "measurement": "p1_f1.h5", "method": "inr", "config": "no-such-preset", "colour": "red"},
            {"id": "f", "measurement": "p1_f1.h5", "method": "fbp", "output": "same.nrrd"},
            {"id": "g", "measurement": "p1_f1.h5", "method": "fbp", "output": "same.nii.gz"},
            {"id": "h", "measurement": "p1_f1.h5", "method": "fbp", "device": "gpu"}]
    with pytest.raises(InputError) as err:
        load_study(_study(cohort, "bad.yaml", rows), tmp_path)
    text = str(err.value)
    for expected in ("missing.h5 does not exist", "needs a prior", "unknown method 'magic'", "after 'zzz' is not a row",
                     "id 'a' is used by 2 rows", "does not reconstruct CT", "'no-such-preset' is neither a preset",
                     "unknown key 'colour'", "rows f and g write the same output", "device 'gpu'",
                     "nothing was run"):
        assert expected in text, expected
    assert not list(tmp_path.iterdir())


def test_csv_study_and_chain_order(cohort, tmp_path):
    path = cohort / "study.csv"
    path.write_text("id,measurement,method,after,prior,config\n"
                    "f2,p1_f2.h5,nerp,f1,,\n"
                    "f1,p1_f1.h5,nerp,,p1_plan.nrrd,nerp-ct\n"
                    ",,,,,\n", encoding="utf-8")
    study = load_study(path, tmp_path)
    assert [r.id for r in study.rows] == ["f1", "f2"]  # upstream first
    assert study.rows[0].prior == cohort / "p1_plan.nrrd" and study.rows[0].config == "nerp-ct"
    assert study.rows[1].output == tmp_path / "f2.nrrd"
    assert [[r.id for r in chain] for chain in study.chains()] == [["f1", "f2"]]
    cycle = cohort / "cycle.csv"
    cycle.write_text("id,measurement,method,after\nx,p1_f1.h5,nerp,y\ny,p1_f1.h5,nerp,x\n", encoding="utf-8")
    with pytest.raises(InputError, match="loops back"):
        load_study(cycle, tmp_path)


TINY_DISINR = {"preset": "disinr-ct-fast", "pretrain_iterations": 4, "iterations": 3, "coarse_to_fine": 0,
               "field": {"encoding": {"n_levels": 4, "log2_hashmap_size": 10},
                         "network": {"n_neurons": 16, "code_dims": 16}}}


def test_a_disinr_row_pretrains_on_the_earlier_fractions(cohort, client, tmp_path):
    """`pretrain_on` in a study: a list in YAML, ';'-separated in CSV; the row's model is written
    next to its output and a changed earlier fraction reruns the row."""
    rows = [{"id": "p1-f2", "measurement": "p1_f2.h5", "method": "disinr", "pretrain_on": ["p1_f1.h5"],
             "config": TINY_DISINR, "device": "cpu"}]
    study = load_study(_study(cohort, "disinr.yaml", rows), tmp_path)
    assert study.rows[0].pretrain_on == (cohort / "p1_f1.h5",)
    summaries, _ = run_batch(_study(cohort, "disinr.yaml", rows), out_dir=tmp_path, client=client)
    assert summaries[0]["status"] == "done", summaries
    model = json.loads((tmp_path / "p1-f2.model" / "model.json").read_text())
    assert [c["name"] for c in model["cohort"]] == ["p1_f1.h5"]
    assert json.loads((tmp_path / "p1-f2.metrics.json").read_text())["model"] == str(tmp_path / "p1-f2.model")
    from INRReconLib.batch.state import fingerprints

    before = fingerprints(study)["p1-f2"]
    rows[0]["pretrain_on"] = ["p1_f1.h5", "p2_f1.h5"]
    assert fingerprints(load_study(_study(cohort, "disinr.yaml", rows), tmp_path))["p1-f2"] != before

    csv_path = cohort / "disinr.csv"
    csv_path.write_text("id,measurement,method,pretrain_on\nx,p1_f2.h5,disinr,p1_f1.h5;p2_f1.h5\n", encoding="utf-8")
    assert load_study(csv_path, tmp_path).rows[0].pretrain_on == (cohort / "p1_f1.h5", cohort / "p2_f1.h5")
    bad = [{"id": "a", "measurement": "p1_f2.h5", "method": "disinr"},
           {"id": "b", "measurement": "p1_f2.h5", "method": "nerp", "prior": "p1_plan.nrrd", "pretrain_on": ["p1_f1.h5"]},
           {"id": "c", "measurement": "p1_f2.h5", "method": "disinr", "pretrain_on": ["gone.h5"]},
           {"id": "d", "measurement": "p1_f2.h5", "method": "disinr", "pretrain_on": ["p1_f1.h5"],
            "model": "p1_f1.h5"},
           {"id": "e", "measurement": "p1_f2.h5", "method": "disinr", "pretrain_on": ["p1_f1.h5", "p1_f2.h5"]}]
    with pytest.raises(InputError) as err:
        load_study(_study(cohort, "bad-disinr.yaml", bad), tmp_path / "x")
    for expected in ("needs 'model'", "or 'pretrain_on'", "takes no 'pretrain_on'", "gone.h5 does not exist",
                     "set 'model' or 'pretrain_on', not both", "(e): pretrain_on lists the row's own measurement"):
        assert expected in str(err.value), expected


def test_cli_batch_without_dask_says_how_to_install(monkeypatch, cohort, capsys):
    import builtins

    from INRReconLib.cli import main

    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError("No module named 'distributed'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    assert main(["batch", str(_study(cohort, "any.yaml", _six_rows()))]) == 2
    assert 'pip install -e ".[batch]"' in capsys.readouterr().err


def test_runs_on_an_existing_scheduler_by_address(cohort, client, tmp_path):
    """--scheduler tcp://...: the study goes to a running cluster (here the test's LocalCluster)."""
    rows = [{"id": "remote-fbp", "measurement": "p1_f1.h5", "method": "fbp", "reference": "p1_f1_truth.nrrd"},
            {"id": "remote-tv", "measurement": "p2_f1.h5", "method": "tv", "iterations": 20}]
    summaries, report = run_batch(_study(cohort, "remote.yaml", rows), out_dir=tmp_path,
                                  scheduler=client.scheduler.address)
    assert [s["status"] for s in summaries] == ["done", "done"]
    assert summaries[0]["metrics"]["psnr"] > 20 and Path(report["csv"]).is_file()
