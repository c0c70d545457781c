"""Fields: Fourier features, SIREN, ReLU MLP, hash grid (layout as tiny-cuda-nn), the factory."""

import math

import numpy as np
import pytest
import torch

from INRReconLib.errors import InputError
from INRReconLib.fields import build_field, resolve_field_config
from INRReconLib.fields.hashgrid import HashGridEncoding, level_layout

torch.set_num_threads(2)

HASH = {"encoding": {"otype": "HashGrid", "n_levels": 8, "n_features_per_level": 2, "log2_hashmap_size": 12,
                     "base_resolution": 4, "per_level_scale": 1.6},
        "network": {"otype": "ReLU", "n_neurons": 32, "n_hidden_layers": 2}}


def test_fourier_siren_shapes_and_seed():
    cfg = {"encoding": {"otype": "Fourier", "n_features": 16, "sigma": 4.0, "seed": 3},
           "network": {"otype": "Siren", "n_neurons": 32, "n_hidden_layers": 3, "seed": 3}}
    x = torch.rand(50, 2) * 2 - 1
    a, b = build_field(cfg, 2, 1), build_field(cfg, 2, 1)
    assert a(x).shape == (50, 1)
    assert torch.equal(a(x), b(x))  # same config, same field
    cfg["encoding"]["seed"] = 4
    assert not torch.allclose(a(x), build_field(cfg, 2, 1)(x))
    assert build_field(cfg, 3, 2)(torch.rand(7, 3)).shape == (7, 2)
    relu = {"encoding": cfg["encoding"], "network": {"otype": "ReLU", "n_neurons": 16, "n_hidden_layers": 2}}
    assert build_field(relu, 2, 2)(x).shape == (50, 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_hashgrid_shape_and_gradients(dims):
    field = build_field(HASH, dims, 1)
    x = (torch.rand(200, dims) * 2 - 1).requires_grad_(True)
    y = field(x)
    assert y.shape == (200, 1)
    assert field.encoding(x).shape == (200, 16)
    y.square().sum().backward()
    g = field.encoding.params.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0  # smooth in the coordinates too


def test_hashgrid_layout_matches_tcnn_rules():
    """Level sizes and indices computed independently with Python integers, as tcnn defines them."""
    enc = HashGridEncoding(2, n_levels=6, n_features_per_level=1, log2_hashmap_size=10, base_resolution=8,
                           per_level_scale=2.0)
    layout = level_layout(2, 6, 10, 8, 2.0)
    # scale 8*2^l - 1, resolution ceil(scale)+1: 8, 16, 32 (dense, 1024 fits), then hashed (table 1024)
    assert [r for _, r, *_ in layout] == [8, 16, 32, 64, 128, 256]
    assert [s for _, _, s, _, _ in layout] == [64, 256, 1024, 1024, 1024, 1024]
    assert [d for *_, d in layout] == [True, True, True, False, False, False]
    with torch.no_grad():
        enc.params.copy_(torch.randn_like(enc.params))
    # Bilinear interpolation of the four corner entries, written out per point. Dense levels go
    # through grid_sample on the vertex lattice, hashed ones through per-corner gathers; the points
    # near 1 use the extra upper vertex, whose dense index wraps around as in tcnn.
    x01 = torch.tensor([[0.3, 0.7], [0.91, 0.13], [0.999, 0.998], [0.0, 0.5]], dtype=torch.float32)
    out = enc(x01 * 2 - 1)
    table = enc.params.detach()
    for level in (0, 1, 2, 4):
        scale, res, size, offset, dense = layout[level]
        for p, value in zip(x01, out[:, level]):
            pos = (p * scale + 0.5).numpy()
            base = np.floor(pos).astype(np.int64)
            frac = pos - base
            expect = 0.0
            for cx in (0, 1):
                for cy in (0, 1):
                    vx, vy = int(base[0] + cx), int(base[1] + cy)
                    idx = (vx + vy * res) if dense else ((vx * 1) ^ ((vy * 2654435761) & 0xFFFFFFFF))
                    w = (frac[0] if cx else 1 - frac[0]) * (frac[1] if cy else 1 - frac[1])
                    expect += w * float(table[offset + idx % size])
            assert abs(float(value) - expect) < 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_hashgrid_forward_grid_matches_points(dims):
    """The whole-grid path (separable interpolation of dense levels) gives what forward gives at
    the same points, values and table gradients, on dense and hashed levels alike."""
    from INRReconLib.fields.lattice import lattice_points

    field = build_field(HASH, dims, 1)
    layout = field.encoding.layout
    assert any(level[4] for level in layout) and not all(level[4] for level in layout)
    with torch.no_grad():
        field.encoding.params.uniform_(-1, 1)
    gen = torch.Generator().manual_seed(1)
    # Uneven axes that reach the edges of the frame, where the upper vertex wraps.
    axes = [torch.cat([torch.tensor([-1.0, 1.0]), torch.rand(n, generator=gen) * 2 - 1]) for n in (9, 7, 5)[:dims]]
    points = lattice_points(axes)
    assert points.shape == (math.prod(a.numel() for a in axes), dims)
    assert torch.equal(points[1, :], torch.tensor([1.0, -1.0, -1.0][:dims]))  # x varies fastest
    enc = field.encoding
    torch.testing.assert_close(enc.forward_grid(axes), enc(points), atol=2e-5, rtol=0)
    weights = torch.rand(points.shape[0], enc.n_output_dims, generator=gen)
    g_points = torch.autograd.grad((enc(points) * weights).sum(), enc.params)[0]
    g_grid = torch.autograd.grad((enc.forward_grid(axes) * weights).sum(), enc.params)[0]
    torch.testing.assert_close(g_grid, g_points, atol=1e-5, rtol=1e-5)
    # The field routes through the fast path and keeps the level weights.
    field.set_active_levels(2.5)
    torch.testing.assert_close(field.forward_grid(axes), field(points), atol=1e-4, rtol=1e-4)
    fourier = build_field({"encoding": {"otype": "Fourier", "n_features": 8}, "network": {"otype": "ReLU"}}, dims, 1)
    torch.testing.assert_close(fourier.forward_grid(axes), fourier(points))


def test_auto_level_scale_and_bad_keys():
    cfg = resolve_field_config({**HASH, "encoding": {**HASH["encoding"], "per_level_scale": "auto"}}, (1, 64, 64))
    s = cfg["encoding"]["per_level_scale"]
    assert abs(4 * s ** 7 - 64) < 0.01  # finest level has one vertex per voxel
    # Left-out keys are written out (tcnn's defaults), so the saved config says what ran.
    bare = resolve_field_config({"encoding": {"otype": "HashGrid"}, "network": {"otype": "ReLU"}}, (1, 256, 256))
    assert bare["encoding"] == {"otype": "HashGrid", "n_levels": 16, "n_features_per_level": 2,
                                "log2_hashmap_size": 19, "base_resolution": 16,
                                "per_level_scale": round((256 / 16) ** (1 / 15), 6)}
    with pytest.raises(InputError, match="field.encoding.sigma"):
        build_field({**HASH, "encoding": {**HASH["encoding"], "sigma": 3}}, 2, 1)
    with pytest.raises(InputError, match="unknown encoding"):
        build_field({"encoding": {"otype": "Wavelet"}, "network": {"otype": "ReLU"}}, 2, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="tiny-cuda-nn comparison needs CUDA")
def test_hashgrid_matches_tinycudann():
    tcnn = pytest.importorskip("tinycudann")
    from INRReconLib.fields.hashgrid import TcnnHashGridEncoding

    cfg = {k: v for k, v in HASH["encoding"].items() if k != "otype"}
    ours = HashGridEncoding(3, **cfg).cuda()
    theirs = TcnnHashGridEncoding(3, cfg).cuda()
    params = [p for p in theirs.parameters()][0]
    assert params.numel() == ours.params.numel(), "tcnn parameter layout differs (table sizes)"
    with torch.no_grad():
        params.copy_(ours.params.to(params.dtype))
    x = torch.rand(4096, 3, device="cuda") * 2 - 1
    a, b = ours(x), theirs(x)
    # fp32 on both sides; a few points may fall on the other side of a floor() (fma vs mul+add)
    close = (a - b).abs().max(dim=1).values < 1e-4
    assert close.float().mean() > 0.99
    del tcnn


def test_coarse_to_fine_level_weights():
    cfg = resolve_field_config({"encoding": {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": 2,
                                             "log2_hashmap_size": 12, "base_resolution": 4},
                                "network": {"otype": "ReLU", "n_neurons": 16, "n_hidden_layers": 1}}, (1, 32, 32))
    field = build_field(cfg, 2, 1)
    x = torch.rand(50, 2) * 2 - 1
    full = field(x)
    field.set_active_levels(1.5)  # level 0 on, level 1 half, levels 2-3 off
    assert field.feature_weight.tolist() == [1, 1, 0.5, 0.5, 0, 0, 0, 0]
    # With levels 2-3 off, changing their table entries cannot change the output.
    masked = field(x)
    with torch.no_grad():
        enc = field.encoding
        lo = enc.layout[2][3] * enc.n_features
        enc.params[lo:] += 1.0
    assert torch.allclose(field(x), masked)
    field.set_active_levels(None)
    assert field.feature_weight is None and not torch.allclose(field(x), full)
    fourier = build_field({"encoding": {"otype": "Fourier", "n_features": 8},
                           "network": {"otype": "ReLU", "n_neurons": 8, "n_hidden_layers": 1}}, 2, 1)
    with pytest.raises(InputError, match="coarse_to_fine"):
        fourier.set_active_levels(1.0)


def test_coarse_to_fine_frozen_levels_keep_their_values():
    cfg = resolve_field_config({"encoding": {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": 2,
                                             "log2_hashmap_size": 12, "base_resolution": 4},
                                "network": {"otype": "ReLU", "n_neurons": 16, "n_hidden_layers": 1}}, (1, 32, 32))
    field = build_field(cfg, 2, 1)
    enc = field.encoding
    split = enc.level_offset(2) * enc.n_features
    before = enc.params.detach().clone()
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    field.set_trainable_levels(1.5)  # levels 0-1 train, 2-3 frozen
    for _ in range(3):
        opt.zero_grad()
        field(torch.rand(64, 2) * 2 - 1).square().mean().backward()
        opt.step()
    after = enc.params.detach()
    assert torch.equal(after[split:], before[split:])
    assert not torch.equal(after[:split], before[:split])
    field.set_trainable_levels(3.5)  # the last level fading in: every level trains
    assert field._frozen_from is None
    field.set_trainable_levels(None)
    opt.zero_grad()
    field(torch.rand(64, 2) * 2 - 1).square().mean().backward()
    assert enc.params.grad[split:].abs().sum() > 0
