"""The measurement file: round trips and every validation error (the message names the field)."""

import h5py
import numpy as np
import pytest

from INRReconLib.errors import InputError
from INRReconLib.io.measurement import (FORMAT_VERSION, Measurement, describe_measurement, validate_measurement,
                                        write_measurement)
from INRReconLib.io.readers import read_measurement
from INRReconLib.physics.ct_geometry import cone_geometry, fan_geometry, parallel_geometry
from INRReconLib.physics.grid import ImageGrid
from INRReconLib.physics.mr_geometry import MRGeometry


def ct2d(n_views=12, n_cols=40):
    grid = ImageGrid((32, 32, 1), (1.5, 1.5, 2.0), (-20.0, 10.0, 55.0))
    angles = np.linspace(0, 2 * np.pi, n_views, endpoint=False)
    geom = fan_geometry(angles, n_cols, 2.5, 400.0, 300.0, slice_thickness_mm=2.0, detector_offset_mm=3.0)
    data = np.random.default_rng(0).random((n_views, 1, n_cols)).astype(np.float32)
    attrs = {"description": "fan test", "patient_id": "P-007", "acquired": "2026-11-20", "fraction": 3,
             "mu_water_per_mm": 0.019}
    return Measurement("CT", data, grid, geom, attrs)


def ct3d():
    d = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=float)
    grid = ImageGrid((16, 12, 8), (2.0, 2.0, 3.0), (1.0, 2.0, 3.0), tuple(d.ravel()))
    angles = np.linspace(0, np.pi, 9, endpoint=False)
    geom = cone_geometry(angles, 24, 3.0, 500.0, 500.0, n_rows=10, row_spacing_mm=4.0)
    data = np.random.default_rng(1).random((9, 10, 24)).astype(np.float32)
    return Measurement("CT", data, grid, geom, {})


def mr_cartesian(two_d=True, n_frames=2, n_coils=3):
    grid = ImageGrid((16, 12, 1 if two_d else 4), (1.0, 1.0, 5.0))
    spatial = grid.shape[1:] if two_d else grid.shape
    rng = np.random.default_rng(2)
    mask = np.zeros((n_frames,) + spatial, dtype=bool)
    for f in range(n_frames):
        mask[f].flat[rng.choice(mask[f].size, 50, replace=False)] = True
    maps = (rng.standard_normal((n_coils,) + spatial) + 1j * rng.standard_normal((n_coils,) + spatial))
    data = (rng.standard_normal((n_frames, n_coils, 50)) + 1j * rng.standard_normal((n_frames, n_coils, 50)))
    geom = MRGeometry("cartesian", mask=mask, coil_maps=maps.astype(np.complex64),
                      frame_times_s=np.arange(n_frames) * 0.5)
    return Measurement("MR", data.astype(np.complex64), grid, geom, {"description": "cartesian"})


def mr_radial(two_d=True, n_frames=1, n_coils=2, n_samples=64):
    grid = ImageGrid((16, 16, 1 if two_d else 4), (1.0, 1.0, 5.0))
    spatial = grid.shape[1:] if two_d else grid.shape
    ndim = 2 if two_d else 3
    rng = np.random.default_rng(3)
    traj = rng.uniform(-np.pi, np.pi, (n_frames, ndim, n_samples)).astype(np.float32)
    maps = np.ones((n_coils,) + spatial, dtype=np.complex64)
    data = (rng.standard_normal((n_frames, n_coils, n_samples)) * (1 + 1j)).astype(np.complex64)
    geom = MRGeometry("noncartesian", trajectory=traj, coil_maps=maps,
                      dcf=rng.random((n_frames, n_samples)).astype(np.float32))
    return Measurement("MR", data, grid, geom, {"n_spokes": 4})


def assert_same(a: Measurement, b: Measurement):
    assert a.modality == b.modality
    assert a.grid == b.grid
    np.testing.assert_array_equal(a.data, b.data)
    assert a.attrs == b.attrs
    assert a.geometry.type == b.geometry.type
    if a.modality == "CT":
        np.testing.assert_array_equal(a.geometry.vectors, b.geometry.vectors)
        assert (a.geometry.n_rows, a.geometry.n_cols) == (b.geometry.n_rows, b.geometry.n_cols)
        assert set(a.geometry.circular) == set(b.geometry.circular)
        for k, v in a.geometry.circular.items():
            np.testing.assert_allclose(b.geometry.circular[k], v)
    else:
        for k in ("mask", "trajectory", "coil_maps", "dcf", "frame_times_s"):
            va, vb = getattr(a.geometry, k), getattr(b.geometry, k)
            assert (va is None) == (vb is None), k
            if va is not None:
                np.testing.assert_array_equal(va, vb)


@pytest.mark.parametrize("make", [ct2d, ct3d, lambda: mr_cartesian(True), lambda: mr_cartesian(False),
                                  lambda: mr_radial(True), lambda: mr_radial(False, n_frames=3)])
def test_round_trip(tmp_path, make):
    m = make()
    path = write_measurement(m, tmp_path / "m.h5")
    back = read_measurement(path)
    assert_same(m, back)
    assert back.data.dtype == (np.float32 if m.modality == "CT" else np.complex64)
    # atomic write leaves no temporary files behind
    assert [p.name for p in tmp_path.iterdir()] == ["m.h5"]


def test_round_trip_types_of_optional_attributes(tmp_path):
    back = read_measurement(write_measurement(ct2d(), tmp_path / "m.h5"))
    assert isinstance(back.attrs["fraction"], int) and back.attrs["fraction"] == 3
    assert isinstance(back.attrs["patient_id"], str)
    assert back.mu_water_per_mm == pytest.approx(0.019)
    assert back.geometry.circular["detector_offset_mm"] == 3.0
    assert back.geometry.circular["angles_rad"].shape == (12,)


def test_outside_tool_minimal_file(tmp_path):
    """A file written with h5py alone (no optional fields, float64 data, no direction) reads."""
    p = tmp_path / "min.h5"
    geom = parallel_geometry(np.linspace(0, np.pi, 5, endpoint=False), 8, 1.0)
    with h5py.File(p, "w") as f:
        f.attrs.update({"format": "inrrecon-measurement", "version": 1, "modality": "CT"})
        g = f.create_group("grid")
        g.attrs.update({"size": [8, 8, 1], "spacing_mm": [1, 1, 1], "origin_mm": [0, 0, 0]})
        f["data"] = np.ones((5, 1, 8))
        f.create_group("geometry").attrs["type"] = b"parallel"
        f["geometry/vectors"] = geom.vectors
    m = read_measurement(p)
    assert m.data.dtype == np.float32 and m.grid.direction == (1, 0, 0, 0, 1, 0, 0, 0, 1)


# ---------------------------------------------------------------------------------- errors


def write_raw(path, m):
    """Write without validation (to build broken files)."""
    import INRReconLib.io.measurement as mm

    saved = mm.validate_measurement
    mm.validate_measurement = lambda _m, **_kw: None
    try:
        write_measurement(m, path)
    finally:
        mm.validate_measurement = saved


def edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def expect_error(path, field, *words):
    with pytest.raises(InputError) as info:
        read_measurement(path)
    assert info.value.field == field, str(info.value)
    for w in words:
        assert w in str(info.value)
    assert "Fix:" in str(info.value) or info.value.field.startswith("/grid") or info.value.field == "/ version"
    return info.value


def replace(name, value):
    def fn(f):
        del f[name]
        f[name] = value
    return fn


FILE_ERRORS = [
    # (make, edit, field, words in message)
    (ct2d, lambda f: f.attrs.__setitem__("format", "something-else"), "/ format", ()),
    (ct2d, lambda f: f.attrs.__setitem__("version", FORMAT_VERSION + 1), "/ version", ("newer",)),
    (ct2d, lambda f: f.attrs.__setitem__("modality", "PET"), "/ modality", ("PET",)),
    (ct2d, lambda f: f.attrs.__setitem__("modality", "MR"), "/geometry type", ("cartesian", "cone")),
    (ct2d, lambda f: f.__delitem__("data"), "/data", ("missing",)),
    (ct2d, lambda f: f.__delitem__("geometry"), "/geometry", ("missing",)),
    (ct2d, lambda f: f.__delitem__("geometry/vectors"), "/geometry/vectors", ("missing",)),
    (ct2d, lambda f: f["grid"].attrs.__delitem__("spacing_mm"), "/grid spacing_mm", ("missing",)),
    (ct2d, lambda f: f["grid"].attrs.__setitem__("spacing_mm", [1, 0, 1]), "/grid spacing_mm", ()),
    (ct2d, lambda f: f["grid"].attrs.__setitem__("size", [32, 32]), "/grid size", ()),
    (ct2d, lambda f: f["grid"].attrs.__setitem__("direction", [2, 0, 0, 0, 1, 0, 0, 0, 1]), "/grid direction", ()),
    (ct2d, replace("data", np.ones((12, 40), np.float32)), "/data", ("3-D",)),
    (ct2d, replace("data", np.ones((12, 1, 40), np.int16)), "/data", ("float",)),
    (ct2d, replace("data", np.ones((12, 1, 40), np.complex64)), "/data", ("float",)),
    (ct2d, replace("data", np.ones((11, 1, 40), np.float32)), "/geometry/vectors", ("11",)),
    (ct2d, replace("data", np.ones((12, 2, 40), np.float32)), "/data", ("n_rows = 1",)),
    (ct2d, replace("data", np.full((12, 1, 40), np.nan, np.float32)), "/data", ("NaN",)),
    (ct2d, replace("data", -np.random.default_rng(0).random((12, 1, 40)).astype(np.float32) * 5), "/data",
     ("-ln(I/I0)",)),
    (ct2d, replace("geometry/vectors", np.ones((12, 9))), "/geometry/vectors", ("[n_views, 12]",)),
    (ct2d, replace("geometry/vectors", np.full((12, 12), np.inf)), "/geometry/vectors", ("NaN",)),
    (ct2d, lambda f: f["geometry"].attrs.__setitem__("type", "helical"), "/geometry type", ("helical",)),
    (ct2d, lambda f: f.attrs.__setitem__("mu_water_per_mm", -1.0), "/ mu_water_per_mm", ()),
    (mr_cartesian, replace("data", np.ones((2, 3, 50), np.float32)), "/data", ("complex",)),
    (mr_cartesian, replace("data", np.ones((2, 3, 49), np.complex64)), "/geometry/mask", ("49",)),
    (mr_cartesian, replace("data", np.ones((2, 2, 50), np.complex64)), "/geometry/coil_maps", ("[2, 12, 16]",)),
    (mr_cartesian, replace("geometry/mask", np.ones((2, 12, 15), bool)), "/geometry/mask", ("[2, 12, 16]",)),
    (mr_cartesian, replace("geometry/mask", np.full((2, 12, 16), 0.5)), "/geometry/mask", ("bool",)),
    (mr_cartesian, lambda f: f.__delitem__("geometry/mask"), "/geometry/mask", ("missing",)),
    # without maps they are estimated from the data; this random mask leaves the centre unsampled
    (mr_cartesian, lambda f: f.__delitem__("geometry/coil_maps"), "/geometry/coil_maps", ("3 coils", "cannot be estimated")),
    (mr_cartesian, replace("geometry/frame_times_s", np.zeros(3)), "/geometry/frame_times_s", ()),
    (mr_cartesian, replace("data", np.full((2, 3, 50), np.inf, np.complex64)), "/data", ("NaN",)),
    (mr_radial, replace("geometry/trajectory", np.zeros((1, 3, 64), np.float32)), "/geometry/trajectory",
     ("ndim 2",)),
    (mr_radial, replace("geometry/trajectory", np.full((1, 2, 64), 5.0, np.float32)), "/geometry/trajectory",
     ("[-pi, pi)",)),
    (mr_radial, replace("geometry/trajectory", np.zeros((1, 2, 64), np.complex64)), "/geometry/trajectory",
     ("real",)),
    (mr_radial, replace("geometry/dcf", np.ones((1, 63), np.float32)), "/geometry/dcf", ("[1, 64]",)),
    (mr_radial, replace("geometry/dcf", -np.ones((1, 64), np.float32)), "/geometry/dcf", ("negative",)),
    (mr_radial, replace("geometry/coil_maps", np.full((2, 16, 16), np.nan, np.complex64)), "/geometry/coil_maps",
     ("NaN",)),
    (lambda: mr_radial(False), replace("geometry/trajectory", np.zeros((1, 2, 64), np.float32)),
     "/geometry/trajectory", ("ndim 3",)),
    (lambda: mr_cartesian(False), replace("geometry/coil_maps", np.ones((3, 12, 16), np.complex64)),
     "/geometry/coil_maps", ("[3, 4, 12, 16]",)),
]


@pytest.mark.parametrize("make, change, field, words", FILE_ERRORS)
def test_read_errors_name_the_field(tmp_path, make, change, field, words):
    p = tmp_path / "bad.h5"
    write_raw(p, make())
    edit(p, change)
    expect_error(p, field, *words)


def test_small_negative_line_integrals_are_noise(tmp_path):
    m = ct2d()
    m.data = (m.data * 4 - 0.05).astype(np.float32)  # air rays slightly negative, as noise makes them
    validate_measurement(m)


def test_not_hdf5_and_missing_file(tmp_path):
    p = tmp_path / "x.h5"
    p.write_text("not hdf5")
    with pytest.raises(InputError, match="HDF5"):
        read_measurement(p)
    with pytest.raises(InputError, match="does not exist"):
        read_measurement(tmp_path / "nope.h5")


def test_write_refuses_invalid_and_leaves_nothing(tmp_path):
    m = mr_cartesian()
    m.data = m.data[:, :, :40]
    with pytest.raises(InputError) as info:
        write_measurement(m, tmp_path / "m.h5")
    assert info.value.field == "/geometry/mask"
    assert list(tmp_path.iterdir()) == []


def test_modality_geometry_mismatch():
    m = ct2d()
    m.modality = "MR"
    m.data = m.data.astype(np.complex64)
    with pytest.raises(InputError) as info:
        validate_measurement(m)
    assert info.value.field == "/geometry"


def test_describe():
    text = describe_measurement(ct2d())
    assert "fan beam, 12 views" in text and "arc 360.0 deg" in text and "source_to_isocenter_mm: 400" in text
    assert "grid: 2D [32, 32, 1]" in text and "FOV 48 x 48 x 2 mm" in text and "patient_id: P-007" in text
    text = describe_measurement(mr_cartesian())
    assert "cartesian, 2 frame(s), 3 coil(s) (maps given), 50 samples" in text
    assert "acceleration (pixels / samples per frame): 3.84" in text
    assert "spokes per frame: 4" in describe_measurement(mr_radial())


def test_2d_mr_with_an_explicit_single_slice_axis(tmp_path):
    """A 2D mask and coil maps stored as [n, 1, ny, nx] are what the MR operator accepts: the
    file is valid, and the data it gives are those of the [n, ny, nx] form."""
    import torch

    from INRReconLib.physics.mr_operator import MROperator

    m = mr_cartesian(two_d=True)
    g = m.geometry
    explicit = MRGeometry("cartesian", mask=g.mask[:, None], coil_maps=g.coil_maps[:, None])
    path = write_measurement(Measurement("MR", m.data, m.grid, explicit), tmp_path / "nz1.h5")
    back = read_measurement(path)
    image = torch.randn((g.n_frames,) + m.grid.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    plain = MROperator(g, m.grid).forward(image)
    kept = MROperator(back.geometry, back.grid).forward(image)
    torch.testing.assert_close(plain, kept)
    wrong = MRGeometry("cartesian", mask=g.mask[:, None, None], coil_maps=g.coil_maps)
    with pytest.raises(InputError, match="/geometry/mask"):
        write_measurement(Measurement("MR", m.data, m.grid, wrong), tmp_path / "bad.h5")


def test_read_measurement_dispatches_by_content(tmp_path, monkeypatch):
    """read_measurement asks each registered reader whether it recognises the file (by content,
    not name): a v1 file under any name is read; an unknown file names the formats there are;
    a new reader is one entry in READERS."""
    from INRReconLib.io import readers

    m = ct2d()
    odd = tmp_path / "scan.data"
    write_measurement(m, tmp_path / "a.h5")
    odd.write_bytes((tmp_path / "a.h5").read_bytes())
    assert readers.reader_for(odd).name == "inrrecon-h5"
    assert np.array_equal(read_measurement(odd).data, m.data)
    header = readers.read_measurement_header(odd)
    assert header["modality"] == "CT" and header["grid"] == m.grid and header["geometry"] == m.geometry.type
    assert readers.is_measurement_file(odd) and not readers.is_measurement_file(tmp_path / "nothing.h5")
    text = tmp_path / "notes.txt"
    text.write_text("not a measurement")
    with pytest.raises(InputError, match="no format INRRecon reads") as info:
        read_measurement(text)
    assert "HDF5" in str(info.value)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):  # the .h5 reader says what is wrong with it
        read_measurement(garbage)

    seen = []
    toy = readers.Reader("toy", "a toy format", (".toy",), lambda p: p.read_bytes().startswith(b"TOY"),
                         lambda p: seen.append(p) or m, lambda p: {"modality": "CT"})
    monkeypatch.setattr(readers, "READERS", readers.READERS + (toy,))
    (tmp_path / "x.bin").write_bytes(b"TOY1")
    assert read_measurement(tmp_path / "x.bin") is m and seen == [tmp_path / "x.bin"]
