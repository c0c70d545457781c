"""The `inrrecon` command line: simulate -> info -> reconstruct, and one-line errors on bad input."""

import logging

import h5py
import numpy as np
import pytest

from INRReconLib.cli import main
from INRReconLib.io.volume import read_volume, write_volume
from INRReconLib.physics.grid import ImageGrid


@pytest.fixture()
def small_ct_image(tmp_path):
    """A 3-slice 48² HU volume with an off-centre origin: a water disc with a dense insert."""
    n = 48
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    hu = np.full((n, n), -1000.0)
    hu[xx ** 2 + yy ** 2 < 20 ** 2] = 0.0
    hu[(xx - 6) ** 2 + (yy + 4) ** 2 < 5 ** 2] = 600.0
    vol = np.repeat(hu[None], 3, axis=0).astype(np.float32)
    grid = ImageGrid((n, n, 3), (2.0, 2.0, 3.0), (-40.0, 12.0, 100.0))
    path = tmp_path / "image.nrrd"
    write_volume(path, vol, grid)
    return path, hu, grid


def test_simulate_info_reconstruct(tmp_path, small_ct_image, capsys):
    image, hu, grid = small_ct_image
    meas = tmp_path / "meas.h5"
    assert main(["simulate", str(image), "--slice", "1", "--views", "90", "--out", str(meas)]) == 0
    assert main(["info", str(meas)]) == 0
    assert "parallel beam, 90 views" in capsys.readouterr().out
    out = tmp_path / "fbp.nrrd"
    assert main(["reconstruct", str(meas), "--method", "fbp", "--device", "cpu", "--out", str(out)]) == 0
    rec, rgrid = read_volume(out)
    # The output lives on the slice's grid: same spacing, origin moved to slice 1 along z.
    assert rgrid.size == (48, 48, 1)
    np.testing.assert_allclose(rgrid.origin, (-40.0, 12.0, 103.0), atol=1e-4)
    # Written in HU: water ≈ 0, air ≈ -1000 (90 views, dense enough for FBP).
    inside = np.hypot(*(np.mgrid[:48, :48] - 23.5)) < 14
    assert abs(np.median(rec[0][inside & (hu == 0)])) < 60
    assert np.median(rec[0][hu == -1000]) < -850
    assert (tmp_path / "fbp.config.json").exists()


def test_bad_measurement_gives_one_line_reason(tmp_path, small_ct_image, capsys, caplog):
    image, _, _ = small_ct_image
    meas = tmp_path / "meas.h5"
    assert main(["simulate", str(image), "--slice", "0", "--views", "10", "--out", str(meas)]) == 0
    with h5py.File(meas, "r+") as f:
        f["data"][0, 0, 5] = np.nan
    capsys.readouterr()
    with caplog.at_level(logging.DEBUG, logger="INRReconLib"):
        code = main(["reconstruct", str(meas), "--method", "sirt", "--device", "cpu", "--out", str(tmp_path / "x.nrrd")])
    err = capsys.readouterr().err
    assert code == 2
    assert "/data" in err and "NaN" in err
    # The reason, not a stack: the traceback of a bad input is logged at DEBUG only (worker.log).
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert failed and not any("Traceback" in m for m in failed)
    assert any("Traceback" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert not (tmp_path / "x.nrrd").exists()


def test_missing_prior_for_nerp_is_bad_input(tmp_path, small_ct_image, capsys):
    image, _, _ = small_ct_image
    meas = tmp_path / "meas.h5"
    main(["simulate", str(image), "--slice", "0", "--views", "10", "--out", str(meas)])
    capsys.readouterr()
    code = main(["reconstruct", str(meas), "--method", "nerp", "--device", "cpu", "--out", str(tmp_path / "x.nrrd")])
    assert code == 2
    assert "prior" in capsys.readouterr().err


def test_slice_out_of_range(tmp_path, small_ct_image, capsys):
    image, _, _ = small_ct_image
    code = main(["simulate", str(image), "--slice", "7", "--out", str(tmp_path / "m.h5")])
    assert code == 2
    assert "--slice" in capsys.readouterr().err


def test_demo_runs_on_the_embedded_real_scan_without_shared_data(tmp_path, monkeypatch):
    """A fresh clone has no ../shared/data: the demo uses the real thorax slices that ship with
    the package, hands NeRP the prior as a volume, and writes everything."""
    import json

    import INRReconLib.cases as cases
    from INRReconLib.demo import run_demo
    from INRReconLib.io.volume import read_volume

    monkeypatch.setattr(cases, "data_dir", lambda: None)
    report = run_demo(tmp_path, size=64, iterations=5, device="cpu")
    for name in ("measurement.h5", "truth_hu.nrrd", "prior_hu.nrrd", "prior_volume_hu.nrrd", "fbp_hu.nrrd",
                 "tv_hu.nrrd", "inr_hu.nrrd", "nerp_hu.nrrd", "nerp.change.nrrd", "demo.png", "change.png",
                 "report.md", "report.json"):
        assert (tmp_path / name).exists(), name
    assert report["case"].endswith("_embedded") and "embedded" in report["source"]
    rows = {r["method"].split(" (")[0]: r for r in json.loads((tmp_path / "report.json").read_text())["results"]}
    assert rows["tv"]["psnr"] > rows["fbp"]["psnr"] + 3
    assert "roi_psnr" in rows["nerp"] and "prior aligned" in rows
    assert 0.0 <= rows["nerp"]["change_dice"] <= 1.0 and 0.0 <= rows["nerp"]["change_auc"] <= 1.0
    assert "Change map" in (tmp_path / "report.md").read_text()
    truth, _ = read_volume(tmp_path / "truth_hu.nrrd")
    assert truth.min() < -800 and truth.max() > 0  # air and tissue: a real chest, not a phantom



def test_upsampled_output_evaluates_the_field_finer(tmp_path, small_ct_image, capsys):
    """(c) inference at a finer resolution: --upsample 2 writes the same field on a grid 2x finer
    in-plane over the same extent; averaged back over 2x2 blocks it is the measurement-grid output."""
    import json

    from INRReconLib.io.volume import grid_centre_lps

    image, hu, grid = small_ct_image
    meas = tmp_path / "meas.h5"
    assert main(["simulate", str(image), "--slice", "1", "--views", "30", "--out", str(meas)]) == 0
    common = ["reconstruct", str(meas), "--method", "nerp", "--prior", str(image), "--device", "cpu",
              "--iterations", "30", "--reference", str(image)]
    assert main(common + ["--out", str(tmp_path / "coarse.nrrd")]) == 0
    assert main(common + ["--out", str(tmp_path / "fine.nrrd"), "--upsample", "2"]) == 0
    coarse, cgrid = read_volume(tmp_path / "coarse.nrrd")
    fine, fgrid = read_volume(tmp_path / "fine.nrrd")
    assert fgrid.size == (96, 96, 1) and fgrid.spacing[:2] == (1.0, 1.0)
    np.testing.assert_allclose(grid_centre_lps(fgrid), grid_centre_lps(cgrid), atol=1e-4)
    pooled = fine[0].reshape(48, 2, 48, 2).mean(axis=(1, 3))
    body = hu > -500
    with capsys.disabled():
        print(f"fine vs coarse, mean |difference| in the body: {np.abs(pooled - coarse[0])[body].mean():.1f} HU")
    assert np.abs(pooled - coarse[0])[body].mean() < 20.0  # measured: 9.1 HU
    # The metrics are those of the measurement-grid image in both runs; metrics.json names the output grid.
    saved = [json.loads((tmp_path / f"{n}.metrics.json").read_text()) for n in ("coarse", "fine")]
    assert saved[0]["metrics"]["psnr"] == pytest.approx(saved[1]["metrics"]["psnr"])
    assert saved[1]["output_grid"]["size"] == [96, 96, 1] and saved[1]["warnings"] == []
    # Classical methods have no field to evaluate: a one-line error before any work.
    capsys.readouterr()
    code = main(["reconstruct", str(meas), "--method", "fbp", "--device", "cpu", "--upsample", "2",
                 "--out", str(tmp_path / "f.nrrd")])
    assert code == 2 and "upsample" in capsys.readouterr().err
    assert not (tmp_path / "f.nrrd").exists()


def test_methods_lists_the_registry_and_each_methods_keys(capsys):
    """`inrrecon methods` prints every registered method; `inrrecon methods NAME` its config keys
    with the defaults it runs with and their docs, per modality."""
    from INRReconLib.methods.registry import METHODS

    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    for name in METHODS:
        assert f"\n{name} " in listing
    assert main(["methods", "tv"]) == 0
    tv = capsys.readouterr().out
    assert "CT:" in tv and "MR:" in tv and tv.count("lambda = 'auto'") == 2  # CT and MR: chosen from the data
    assert main(["methods", "nerp"]) == 0
    nerp = capsys.readouterr().out
    assert "defaults of preset 'hash-ct'" in nerp and "prior_registration = 'auto'" in nerp
    assert main(["methods", "no-such"]) == 2
    assert "unknown method" in capsys.readouterr().err
