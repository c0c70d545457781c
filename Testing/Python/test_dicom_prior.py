"""A DICOM folder as the prior (io/dicom_series.py): values in HU, the grid, the series choice, and
clear errors for a missing slice, uneven spacing, duplicates and a tilted gantry.

The fixtures are per-slice DICOM files written with SimpleITK/GDCM from the bundled real thorax
CT (mean-pooled 4x in-plane to 64², five 2 mm slices), with the tags a scanner writes.
"""

import json
import shutil

import numpy as np
import pytest

from INRReconLib.cases import EMBEDDED_CT
from INRReconLib.errors import InputError
from INRReconLib.io.volume import read_volume, write_volume
from INRReconLib.physics.grid import ImageGrid

UID_A = "1.2.826.0.1.3680043.2.1125.101"
UID_B = "1.2.826.0.1.3680043.2.1125.102"
_TILT_20 = np.deg2rad(20.0)
# An oblique (20 degrees about x) but orthogonal stack: positions along the slice normal, no tilt.
OBLIQUE = (1.0, 0.0, 0.0, 0.0, np.cos(_TILT_20), -np.sin(_TILT_20), 0.0, np.sin(_TILT_20), np.cos(_TILT_20))


@pytest.fixture(scope="module")
def thorax():
    """(HU [5, 64, 64] whole numbers, its grid): real anatomy, small."""
    hu, _ = read_volume(EMBEDDED_CT)
    small = np.round(hu[3:8].reshape(5, 64, 4, 64, 4).mean(axis=(2, 4))).astype(np.float32)
    return small, ImageGrid((64, 64, 5), (7.8125, 7.8125, 2.0), (-250.0, -230.0, 120.0), OBLIQUE)


def write_series(folder, hu, grid, uid=UID_A, *, slope=1.0, intercept=-1024.0, modality="CT", description="thorax",
                 positions=None, extra_tags=None, name="IM"):
    """One DICOM file per slice of `hu` (stored as int16 = (HU - intercept) / slope by GDCM), at the
    grid's slice positions or at `positions` (LPS mm per slice). File names do not follow the
    slice order, as on many PACS exports. Returns the file paths in slice order."""
    import locale

    import SimpleITK as sitk

    # GDCM's writer switches the process locale to "C" (reading does not): without restoring it,
    # every later text read without an explicit encoding in the same pytest run is ASCII.
    saved_locale = locale.setlocale(locale.LC_ALL, None)
    try:
        return _write_series(folder, hu, grid, uid, sitk, slope=slope, intercept=intercept, modality=modality,
                             description=description, positions=positions, extra_tags=extra_tags, name=name)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)


def _write_series(folder, hu, grid, uid, sitk, *, slope, intercept, modality, description, positions, extra_tags,
                  name):
    folder.mkdir(parents=True, exist_ok=True)
    d = np.asarray(grid.direction).reshape(3, 3)
    if positions is None:
        positions = [np.asarray(grid.origin) + d[:, 2] * k * grid.spacing[2] for k in range(hu.shape[0])]
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()  # else GDCM makes up a new series UID per file
    paths = []
    for k, pos in enumerate(positions):
        img = sitk.GetImageFromArray(hu[k][None].astype(np.float32))
        img.SetSpacing(grid.spacing)
        img.SetOrigin(tuple(float(v) for v in pos))
        img.SetDirection(grid.direction)
        tags = {"0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{uid}.{k + 1}", "0008|0060": modality,
                "0008|103e": description, "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": uid,
                "0020|0013": str(k + 1), "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
                "0020|0037": "\\".join(f"{v:.6f}" for v in np.r_[d[:, 0], d[:, 1]]),
                "0028|0030": f"{grid.spacing[1]}\\{grid.spacing[0]}", "0018|0050": f"{grid.spacing[2]}",
                "0028|1052": f"{intercept:g}", "0028|1053": f"{slope:g}",
                # int16 storage: GDCM turns the float image into stored values with the rescale tags
                "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1"}
        tags.update(extra_tags or {})
        for tag, value in tags.items():
            img.SetMetaData(tag, value)
        path = folder / f"{name}{(3 * k + 2) % len(positions):04d}_{k}"  # shuffled names
        writer.SetFileName(str(path))
        writer.Execute(img)
        paths.append(path)
    return paths


def _grid_matches(a: ImageGrid, b: ImageGrid):
    assert a.size == b.size
    np.testing.assert_allclose(a.spacing, b.spacing, atol=1e-5)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-4)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-5)  # IOP is written with 6 decimals


def test_folder_reads_to_the_source_values_and_grid(tmp_path, thorax):
    hu, grid = thorax
    write_series(tmp_path / "ct", hu, grid)
    values, read_grid = read_volume(tmp_path / "ct")
    assert values.dtype == np.float32 and values.shape == hu.shape
    np.testing.assert_array_equal(values, hu)  # whole HU, intercept -1024, slope 1: exact
    _grid_matches(read_grid, grid)


def test_rescale_slope_and_intercept_give_hu(tmp_path, thorax):
    """Slope 0.5, intercept -2048: the file stores (HU + 2048) * 2, the reader gives HU back."""
    hu, grid = thorax
    paths = write_series(tmp_path / "ct", hu, grid, slope=0.5, intercept=-2048.0)
    # The stored integers, read straight from the end of the file (uncompressed little-endian
    # pixel data is the last element): they are not HU, so the reader did the rescaling.
    raw = np.frombuffer(paths[2].read_bytes()[-hu[2].size * 2:], dtype="<i2").reshape(hu[2].shape)
    np.testing.assert_array_equal(raw, (hu[2] + 2048.0) * 2)
    values, _ = read_volume(tmp_path / "ct")
    np.testing.assert_allclose(values, hu, atol=0.25 + 1e-4)  # within half the slope
    assert values.min() < -900 and values.max() > 100  # HU: air and tissue


def test_each_slice_keeps_its_own_rescale(tmp_path, thorax):
    """Slices with different slopes (as some scanners write per slice): no cast to the first
    slice's integer type."""
    import SimpleITK as sitk

    hu, grid = thorax
    paths = write_series(tmp_path / "ct", hu, grid)
    d = np.asarray(grid.direction).reshape(3, 3)
    paths[3].unlink()
    write_series(tmp_path / "tmp", hu[3:4], grid, slope=0.25, intercept=-3000.0, name="X",
                 positions=[np.asarray(grid.origin) + d[:, 2] * 3 * grid.spacing[2]],
                 extra_tags={"0008|0018": f"{UID_A}.4"})
    shutil.move(str(next((tmp_path / "tmp").iterdir())), str(tmp_path / "ct" / "slice3"))
    assert len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "ct"), UID_A)) == 5
    values, _ = read_volume(tmp_path / "ct")
    np.testing.assert_array_equal(values[[0, 1, 2, 4]], hu[[0, 1, 2, 4]])
    np.testing.assert_allclose(values[3], hu[3], atol=0.125 + 1e-4)


def test_several_series_are_listed_and_prior_series_picks_each(tmp_path, thorax):
    hu, grid = thorax
    folder = tmp_path / "export"
    write_series(folder, hu, grid, UID_A, description="thorax 2 mm", name="A")
    write_series(folder, hu + 100.0, grid, UID_B, description="thorax soft kernel", name="B")
    with pytest.raises(InputError) as err:
        read_volume(folder)
    message = str(err.value)
    assert err.value.field == "prior_series"
    assert UID_A in message and UID_B in message and "'thorax soft kernel'" in message and "5 file(s)" in message
    assert "--prior-series" in message and "\n" not in message
    np.testing.assert_array_equal(read_volume(folder, series=UID_A)[0], hu)
    np.testing.assert_array_equal(read_volume(folder, series=UID_B)[0], hu + 100.0)
    with pytest.raises(InputError, match="is not a series of"):
        read_volume(folder, series="1.2.3.4")
    with pytest.raises(InputError, match="is a file, not a folder"):
        read_volume(EMBEDDED_CT, series=UID_A)


def test_radiotherapy_objects_do_not_count_as_candidates(tmp_path, thorax):
    """The usual planning export (CT + RT dose ...): the CT is taken without a UID."""
    hu, grid = thorax
    write_series(tmp_path / "plan", hu, grid, UID_A, name="CT")
    write_series(tmp_path / "plan", hu[:2], grid, UID_B, modality="RTDOSE", name="RD")
    np.testing.assert_array_equal(read_volume(tmp_path / "plan")[0], hu)


def test_missing_middle_slice_is_an_error(tmp_path, thorax):
    hu, grid = thorax
    paths = write_series(tmp_path / "ct", hu, grid)
    paths[2].unlink()
    with pytest.raises(InputError) as err:
        read_volume(tmp_path / "ct")
    message = str(err.value)
    assert "gap of 4.00 mm" in message and "2.00 mm apart" in message and "1 slice(s) missing" in message
    assert paths[1].name in message and paths[3].name in message  # where: the slices on either side


def test_uneven_spacing_is_an_error(tmp_path, thorax):
    hu, grid = thorax
    d = np.asarray(grid.direction).reshape(3, 3)
    offsets = [0.0, 2.0, 4.0, 6.5, 8.5]  # no step 1.5x the median, but 0.25 mm off an even stack
    write_series(tmp_path / "ct", hu, grid, positions=[np.asarray(grid.origin) + d[:, 2] * z for z in offsets])
    with pytest.raises(InputError, match="unevenly spaced: steps of 2.000 to 2.500 mm"):
        read_volume(tmp_path / "ct")


def test_duplicated_position_is_an_error(tmp_path, thorax):
    hu, grid = thorax
    d = np.asarray(grid.direction).reshape(3, 3)
    offsets = [0.0, 2.0, 4.0, 4.0, 6.0]
    write_series(tmp_path / "ct", hu, grid, positions=[np.asarray(grid.origin) + d[:, 2] * z for z in offsets])
    with pytest.raises(InputError, match="two slices at one position"):
        read_volume(tmp_path / "ct")


def test_gantry_tilt_is_an_error(tmp_path, thorax):
    hu, grid = thorax
    write_series(tmp_path / "tag", hu, grid, extra_tags={"0018|1120": "15"})
    with pytest.raises(InputError) as err:
        read_volume(tmp_path / "tag")
    assert "gantry/detector tilt of 15 degrees" in str(err.value)
    assert "non-tilted grid" in err.value.fix and "Acquisition geometry regularization" in err.value.fix
    # No tag, but the positions move sideways along the stack (15 degrees: 2.1 mm over the 5
    # slices, more than a fifth of these 7.8 mm pixels): a sheared stack.
    d = np.asarray(grid.direction).reshape(3, 3)
    sheared = [np.asarray(grid.origin) + d[:, 2] * 2.0 * k + d[:, 1] * 2.0 * k * np.tan(np.deg2rad(15.0))
               for k in range(5)]
    write_series(tmp_path / "shear", hu, grid, positions=sheared)
    with pytest.raises(InputError, match="sheared stack, about 15.00 degrees"):
        read_volume(tmp_path / "shear")


def test_single_file_and_empty_folder_are_errors(tmp_path, thorax):
    hu, grid = thorax
    write_series(tmp_path / "one", hu[:1], grid)
    with pytest.raises(InputError, match="is a single file"):
        read_volume(tmp_path / "one")
    (tmp_path / "empty" / "DICOM").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="holds no DICOM image series.*subfolders \\(DICOM\\)"):
        read_volume(tmp_path / "empty")


def test_job_and_study_accept_a_dicom_folder(tmp_path, thorax):
    from INRReconLib.batch.state import fingerprints
    from INRReconLib.batch.study import load_study
    from INRReconLib.cli import main
    from INRReconLib.worker.job import check_job

    hu, grid = thorax
    folder = tmp_path / "export"
    write_series(folder, hu, grid, UID_A, name="A")
    job = check_job({"measurement": str(EMBEDDED_CT), "method": "nerp", "prior": str(folder)}, tmp_path)
    assert job["prior"] == str(folder) and job["prior_series"] is None
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_job({"measurement": str(EMBEDDED_CT), "method": "nerp", "prior": str(EMBEDDED_CT),
                   "prior_series": UID_A}, tmp_path)
    with pytest.raises(InputError, match="there is no prior"):
        check_job({"measurement": str(EMBEDDED_CT), "method": "nerp", "prior_series": UID_A}, tmp_path)

    write_volume(tmp_path / "truth.nrrd", hu, grid)
    assert main(["simulate", str(tmp_path / "truth.nrrd"), "--slice", "2", "--views", "20",
                 "--out", str(tmp_path / "m.h5")]) == 0
    study = tmp_path / "study.csv"
    study.write_text("id,measurement,method,prior,prior_series\n"
                     "a,m.h5,nerp,export,\n"
                     f"b,m.h5,nerp,export,{UID_A}\n")
    rows = load_study(study).rows
    assert [r.prior for r in rows] == [folder, folder] and rows[1].prior_series == UID_A
    prints = fingerprints(load_study(study))
    assert prints["a"] != prints["b"]  # the series choice is part of what decides the result
    write_series(folder, hu + 100.0, grid, UID_B, name="B")
    with pytest.raises(InputError) as err:
        load_study(study)  # before anything runs: row a does not say which series
    assert "1 problem(s)" in str(err.value) and "row 1 (a)" in str(err.value) and UID_B in str(err.value)


def test_cli_reconstructs_with_a_dicom_folder_prior(tmp_path, thorax, capsys):
    """inrrecon reconstruct MEAS.h5 --method nerp --prior FOLDER [--prior-series UID], end to end
    on a 64² 2D CT case (20 views), the folder holding two series."""
    import torch

    from INRReconLib.cli import main

    torch.set_num_threads(2)
    hu, grid = thorax
    write_volume(tmp_path / "truth.nrrd", hu, grid)
    meas, out = tmp_path / "m.h5", tmp_path / "nerp.nrrd"
    assert main(["simulate", str(tmp_path / "truth.nrrd"), "--slice", "2", "--views", "20", "--out", str(meas)]) == 0
    folder = tmp_path / "export"
    write_series(folder, hu, grid, UID_A, name="A")
    write_series(folder, hu[::-1], grid, UID_B, description="other", name="B")
    common = ["reconstruct", str(meas), "--method", "nerp", "--prior", str(folder), "--device", "cpu",
              "--iterations", "5", "--out", str(out)]
    capsys.readouterr()
    assert main(common) == 2  # two series: bad input, one line naming both
    err = capsys.readouterr().err
    assert UID_A in err and UID_B in err and "--prior-series" in err and not out.exists()
    config = tmp_path / "quick.json"  # a few steps of every stage: this tests the plumbing, not NeRP
    config.write_text(json.dumps({"preset": "hash-ct", "embed_iterations": 5}))
    assert main(common + ["--prior-series", UID_A, "--config", str(config)]) == 0
    image, out_grid = read_volume(out)
    assert out_grid.size == (64, 64, 1) and np.isfinite(image).all()
    metrics = json.loads((tmp_path / "nerp.metrics.json").read_text())
    assert metrics["prior"] == str(folder) and metrics["prior_series"] == UID_A
