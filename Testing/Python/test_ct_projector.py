"""CTProjector: adjointness, autograd, exact line integrals, and agreement with astra and RTK."""

import numpy as np
import pytest
import torch

from ct_phantoms import BLOBS, blob_image, blob_sinogram, rel_rms
from INRReconLib.errors import InputError
from INRReconLib.physics.ct_geometry import cone_geometry, fan_geometry, parallel_geometry
from INRReconLib.physics.ct_projector import CTProjector
from INRReconLib.physics.grid import ImageGrid

torch.set_num_threads(2)

GRID_2D = ImageGrid.centred((1, 48, 56), (0.8, 0.8, 1.0))
GRID_3D = ImageGrid.centred((12, 20, 24), (2.0, 2.0, 2.5))


def _geometries():
    a180 = np.linspace(0, np.pi, 12, endpoint=False)
    a360 = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    return {
        "parallel2d": (parallel_geometry(a180, 80, 0.7, detector_offset_mm=1.5), GRID_2D),
        "fan2d_offset": (fan_geometry(a360, 80, 1.0, 120.0, 80.0, detector_offset_mm=6.0), GRID_2D),
        "parallel3d": (parallel_geometry(a180, 40, 1.5, n_rows=16, row_spacing_mm=2.0), GRID_3D),
        "cone3d": (cone_geometry(a360, 40, 2.0, 200.0, 100.0, n_rows=20, row_spacing_mm=2.5,
                                 detector_offset_mm=4.0), GRID_3D),
    }


@pytest.mark.parametrize("name", list(_geometries()))
def test_dot_product_adjoint(name):
    geo, grid = _geometries()[name]
    op = CTProjector(geo, grid)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(grid.shape, generator=gen, dtype=torch.float64)
    y = torch.rand(geo.sinogram_shape, generator=gen, dtype=torch.float64)
    lhs = float((op.forward(x) * y).sum())
    rhs = float((x * op.adjoint(y)).sum())
    assert lhs > 0
    # The adjoint is the exact transpose: in float64 only rounding is left (measured ~1e-16).
    assert abs(lhs - rhs) / abs(lhs) < 1e-10
    assert op.adjoint_test(dtype=torch.float64) < 1e-10 and op.adjoint_test() < 1e-5
    # float32 and a batch dimension give the same numbers
    xb = torch.stack([x, 2 * x]).float()
    yb = op.forward(xb)
    assert yb.shape == (2,) + geo.sinogram_shape
    assert torch.allclose(yb[1], 2 * op.forward(x.float()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["fan2d_offset", "cone3d"])
def test_autograd_gradient_is_adjoint(name):
    geo, grid = _geometries()[name]
    op = CTProjector(geo, grid)
    x = torch.rand(grid.shape, dtype=torch.float64, requires_grad=True)
    w = torch.rand(geo.sinogram_shape, dtype=torch.float64)
    (op(x) * w).sum().backward()
    assert torch.allclose(x.grad, op.adjoint(w), rtol=1e-10, atol=1e-12)
    # and the adjoint's gradient is the forward
    s = torch.rand(geo.sinogram_shape, dtype=torch.float64, requires_grad=True)
    v = torch.rand(grid.shape, dtype=torch.float64)
    (op.adjoint(s) * v).sum().backward()
    assert torch.allclose(s.grad, op.forward(v), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["parallel2d", "fan2d_offset"])
def test_matches_exact_line_integrals_2d(name):
    geo, _ = _geometries()[name]
    grid = ImageGrid.centred((1, 96, 96), (0.75, 0.75, 1.0))
    blobs = [(c, s * 0.7, a) for c, s, a in BLOBS]
    sino = CTProjector(geo, grid)(torch.from_numpy(blob_image(grid, blobs))).numpy()
    assert rel_rms(sino, blob_sinogram(geo, True, blobs)) < 0.01


def test_matches_exact_line_integrals_cone():
    grid = ImageGrid.centred((40, 64, 64), (1.0, 1.0, 1.0))
    geo = cone_geometry(np.linspace(0, 2 * np.pi, 6, endpoint=False), 96, 1.5, 200.0, 100.0, n_rows=60,
                        row_spacing_mm=1.5, detector_offset_mm=5.0)
    blobs = [(tuple(0.5 * np.asarray(c)), s * 0.5, a) for c, s, a in BLOBS]
    sino = CTProjector(geo, grid)(torch.from_numpy(blob_image(grid, blobs))).numpy()
    assert rel_rms(sino, blob_sinogram(geo, False, blobs)) < 0.01


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_agrees_with_astra_2d(kind):
    astra = pytest.importorskip("astra")
    grid = ImageGrid.centred((1, 64, 80), (0.8, 0.8, 1.0))
    blobs = [((c[0] * 0.8, c[1] * 0.8, 0.0), s * 0.6, a) for c, s, a in BLOBS]
    img = blob_image(grid, blobs)
    ex, ey, _ = grid.extent_mm
    vol_geom = astra.create_vol_geom(64, 80, -ex / 2, ex / 2, -ey / 2, ey / 2)
    if kind == "parallel":
        geo = parallel_geometry(np.linspace(0, np.pi, 30, endpoint=False), 100, 0.7, detector_offset_mm=2.0)
        astra_kind, projector = "parallel_vec", "linear"
    else:
        geo = fan_geometry(np.linspace(0, 2 * np.pi, 30, endpoint=False), 100, 1.1, 150.0, 80.0,
                           detector_offset_mm=5.0)
        astra_kind, projector = "fanflat_vec", "line_fanflat"
    v = geo.vectors
    vec2d = np.concatenate([v[:, 0:2], v[:, 3:5], v[:, 6:8]], axis=1)
    vec2d[:, [1, 3, 5]] *= -1  # astra 2D's y axis points against the row index (docs/measurement-format.md)
    proj_geom = astra.create_proj_geom(astra_kind, geo.n_cols, vec2d)
    pid = astra.create_projector(projector, proj_geom, vol_geom)
    sid, ref = astra.create_sino(img[0], pid)
    astra.data2d.delete(sid)
    astra.projector.delete(pid)
    ours = CTProjector(geo, grid)(torch.from_numpy(img)).numpy()[:, 0, :]
    assert rel_rms(ours, ref) < 0.02


def test_agrees_with_rtk_cone():
    itk = pytest.importorskip("itk")
    try:
        from itk import RTK as rtk
    except (ImportError, AttributeError):
        pytest.skip("itk-rtk is not installed")
    grid = ImageGrid.centred((24, 32, 40), (2.0, 2.0, 2.5))
    img = blob_image(grid, [((5.0, -8.0, 4.0), 10.0, 0.02), ((-10.0, 6.0, -6.0), 6.0, 0.01)])
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    sid, idd, n_rows, n_cols, pitch = 300.0, 200.0, 40, 60, 2.5
    geo = cone_geometry(angles, n_cols, pitch, sid, idd, n_rows=n_rows, row_spacing_mm=pitch)
    ours = CTProjector(geo, grid)(torch.from_numpy(img)).numpy()

    # RTK frame: grid (x, y, z) -> (x, z, -y) (docs/measurement-format.md); array [z, y, x] -> [-y, z, x].
    # Checked numerically: RTK gantry angle = ours + 180 deg and RTK's detector columns run the
    # other way (our u at angle a maps to -x_rtk at RTK angle a + 180).
    geometry = rtk.ThreeDCircularProjectionGeometry.New()
    for a in angles:
        geometry.AddProjection(sid, sid + idd, float(np.degrees(a) + 180.0), 0.0, 0.0)
    vol = np.ascontiguousarray(np.flip(img.transpose(1, 0, 2), axis=0)).astype(np.float32)
    volume = itk.image_from_array(vol)
    n2, n1, n0 = vol.shape
    sp = (grid.spacing[0], grid.spacing[2], grid.spacing[1])
    volume.SetSpacing(sp)
    volume.SetOrigin([-(n - 1) / 2 * s for n, s in zip((n0, n1, n2), sp)])
    proj = itk.image_from_array(np.zeros((len(angles), n_rows, n_cols), np.float32))
    proj.SetSpacing([pitch, pitch, 1.0])
    proj.SetOrigin([-(n_cols - 1) / 2 * pitch, -(n_rows - 1) / 2 * pitch, 0.0])
    image_type = itk.Image[itk.F, 3]
    fp = rtk.JosephForwardProjectionImageFilter[image_type, image_type].New()
    fp.SetInput(0, proj)
    fp.SetInput(1, volume)
    fp.SetGeometry(geometry)
    fp.Update()
    ref = itk.array_from_image(fp.GetOutput()).copy()[:, :, ::-1]
    assert rel_rms(ours, ref) < 0.03


def test_subset_and_norm():
    geo, grid = _geometries()["fan2d_offset"]
    op = CTProjector(geo, grid)
    x = torch.rand(grid.shape)
    sub = op.subset([1, 5, 7])
    assert torch.allclose(sub(x), op(x)[[1, 5, 7]], rtol=1e-5, atol=1e-6)
    norm = op.norm_estimate()
    assert norm > 0
    # power iteration approaches the top singular value from below; random inputs stay under it
    for _ in range(3):
        z = torch.rand(grid.shape)
        assert float(op(z).norm()) <= norm * float(z.norm()) * 1.001
    ones = torch.ones(grid.shape)
    assert float(op(ones).norm()) / float(ones.norm()) > 0.5 * norm


def test_wrong_shapes_raise_input_error():
    geo, grid = _geometries()["parallel2d"]
    op = CTProjector(geo, grid)
    with pytest.raises(InputError, match=r"\[1, 40, 40\].*\[1, 48, 56\]"):
        op.forward(torch.zeros(1, 40, 40))
    with pytest.raises(InputError, match="sinogram"):
        op.adjoint(torch.zeros(3, 1, 80))
    with pytest.raises(InputError, match="one-row"):
        CTProjector(parallel_geometry([0.0, 1.0], 10, 1.0, n_rows=4), grid)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (astra GPU backend)")
@pytest.mark.parametrize("name", ["parallel2d", "fan2d_offset", "parallel3d", "cone3d"])
def test_astra_backend_matches_torch(name):
    from INRReconLib.physics.ct_astra import astra_cuda_available

    if not astra_cuda_available():
        pytest.skip("astra-toolbox without CUDA")
    geo, grid = _geometries()[name]
    dev = torch.device("cuda")
    torch_op = CTProjector(geo, grid, device=dev, backend="torch")
    astra_op = CTProjector(geo, grid, device=dev, backend="astra")
    assert astra_op.backend == "astra"
    blobs = [(tuple(0.4 * np.asarray(c)), s * 0.4, a) for c, s, a in BLOBS]
    x = torch.from_numpy(blob_image(grid, blobs)).to(dev)
    ref = torch_op(x)
    got = astra_op(x)
    assert rel_rms(got.cpu().numpy(), ref.cpu().numpy()) < 0.03
    y = torch.rand(geo.sinogram_shape, device=dev)
    lhs, rhs = float((astra_op(x) * y).sum()), float((x * astra_op.adjoint(y)).sum())
    assert abs(lhs - rhs) / abs(lhs) < 0.05  # astra's FP/BP are matched only approximately
    xg = x.clone().requires_grad_(True)
    (astra_op(xg) * y).sum().backward()
    assert torch.allclose(xg.grad, astra_op.adjoint(y))
