"""Losses, ADMM, schedules, config presets, and FLS/ADMM convergence speed against L2."""

import json

import numpy as np

import pytest
import torch

from INRReconLib.errors import InputError
from INRReconLib.methods.losses import data_loss, fls_loss, make_scheduler, tv_loss
from INRReconLib.methods.presets import load_config, preset_names, save_config
from INRReconLib.physics.ct_filters import ramp_filter

torch.set_num_threads(2)


def test_data_losses_values():
    y = torch.tensor([1.0, 2.0, -2.0])
    p = torch.tensor([1.0, 1.0, -2.0])
    assert float(data_loss("l2", y, y)) == 0.0
    assert float(data_loss("l2", p, y)) == pytest.approx(1 / 9)
    assert float(data_loss("l1", p, y)) == pytest.approx(1 / 5)
    yc = torch.tensor([1 + 1j, 0.5j], dtype=torch.complex64)
    pc = torch.tensor([1 + 1j, 0.0j], dtype=torch.complex64)
    # rel_l2: |r|²/(|data|+ε)² averaged: second sample 0.25/0.51²
    assert float(data_loss("rel_l2", pc, yc, eps=1e-2)) == pytest.approx(0.25 / 0.51 ** 2 / 2, rel=1e-4)
    with pytest.raises(InputError, match="loss"):
        data_loss("l3", p, y)


def test_fls_is_ramp_filtered_l2():
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(4, 1, 32, generator=gen)
    p = y + 0.1 * torch.rand(4, 1, 32, generator=gen)
    expect = ramp_filter(p - y, 1.5).square().sum() / ramp_filter(y, 1.5).square().sum()
    assert float(fls_loss(p, y, 1.5)) == pytest.approx(float(expect), rel=1e-6)
    p.requires_grad_(True)
    fls_loss(p, y, 1.5).backward()
    assert p.grad.abs().sum() > 0


def test_tv():
    flat = torch.ones(1, 8, 8)
    assert float(tv_loss(flat)) < 1e-3
    step = torch.zeros(1, 8, 8)
    step[..., 4:] = 1.0  # one unit jump per row: 7 of 7x7 interior positions
    assert float(tv_loss(step)) == pytest.approx(1 / 7, abs=1e-3)


def test_schedules():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    s = make_scheduler(opt, "step", 100, step_size=10, gamma=0.5)
    for _ in range(25):
        opt.step()
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)
    with pytest.raises(InputError, match="schedule"):
        make_scheduler(opt, "linear", 10)


def test_config_round_trip_and_unknown_keys(tmp_path):
    assert {"nerp-ct", "nerp-mr", "hash-ct", "hash-cone", "hash-mr"} <= set(preset_names())
    cfg = load_config("nerp-ct", {"lr": 3e-5, "field": {"network": {"n_neurons": 128}}, "admm": {"rho": 0.5}})
    assert cfg["preset"] == "nerp-ct" and cfg["lr"] == 3e-5 and cfg["admm"]["rho"] == 0.5
    assert cfg["field"]["network"]["n_neurons"] == 128 and cfg["field"]["network"]["n_hidden_layers"] == 8
    path = tmp_path / "run.json"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left behind
    (tmp_path / "u.yaml").write_text("preset: hash-mr\niterations: 50\n")
    assert load_config(str(tmp_path / "u.yaml"))["iterations"] == 50
    # a different otype replaces the section instead of mixing keys
    swapped = load_config({"preset": "nerp-ct", "field": {"encoding": {"otype": "HashGrid", "n_levels": 4}}})
    assert swapped["field"]["encoding"] == {"otype": "HashGrid", "n_levels": 4}
    with pytest.raises(InputError, match="learning_rate"):
        load_config({"learning_rate": 1e-3})
    with pytest.raises(InputError, match="admm has no option .steps"):
        load_config({"admm": {"steps": 3}})
    with pytest.raises(InputError, match="preset"):
        load_config("no-such-preset")
    json.loads(path.read_text())


def test_default_preset_follows_the_geometry():
    """A config that names no preset starts from hash-cone for 3D cone beam, hash-ct for a 2D
    slice (parallel or fan: a fan is a one-row cone), hash-mr for MR; a named preset wins."""
    from inr_cases import sparse_cone_case, sparse_ct_case

    from INRReconLib.io.measurement import Measurement
    from INRReconLib.methods.presets import measurement_context
    from INRReconLib.physics import fan_geometry

    def _context(m):
        return measurement_context(m.modality, m.geometry.type, m.grid)

    cone, _, _ = sparse_cone_case()
    parallel, _, _ = sparse_ct_case()
    fan_geo = fan_geometry(np.linspace(0, 2 * np.pi, 8, endpoint=False), 96, 2.0, 500.0, 500.0)
    fan = Measurement("CT", np.ones(fan_geo.sinogram_shape, np.float32), parallel.grid, fan_geo)
    assert load_config(None, **_context(cone))["preset"] == "hash-cone"
    assert load_config({"iterations": 5}, **_context(fan))["preset"] == "hash-ct"
    assert load_config(None, **_context(parallel))["preset"] == "hash-ct"
    assert load_config(None, modality="MR")["preset"] == "hash-mr"
    assert load_config("hash-ct", **_context(cone))["preset"] == "hash-ct"
    cone_cfg, ct_cfg = load_config("hash-cone"), load_config("hash-ct")
    assert cone_cfg["tv_weight"] < ct_cfg["tv_weight"] and cone_cfg["coarse_to_fine_prior"] == "off"


def _first_reaching(history, target):
    for it, value in history:
        if value >= target:
            return it
    return None


def test_fls_and_admm_converge_faster_than_l2():
    """INR without prior on 64², 15 views: FLS and ADMM reach L2's final PSNR in fewer steps."""
    from inr_cases import psnr, sparse_ct_case

    from INRReconLib.methods.monitor import Monitor
    from INRReconLib.methods.registry import reconstruct

    m, truth, _ = sparse_ct_case()

    class Track(Monitor):
        def __init__(self):
            super().__init__()
            self.psnr = []

        def report(self, stage, iteration, total, loss=None, current=None, **extra):
            super().report(stage, iteration, total, loss, current, **extra)
            if iteration % 10 == 0:
                self.psnr.append((iteration, psnr(current(), truth)))

    n = 80
    runs = {}
    for name, cfg in {"l2": {}, "fls": {"loss": "fls"},
                      "admm": {"optimizer": "admm", "admm": {"adam_steps": 20, "cgls_steps": 10}}}.items():
        mon = Track()
        result = reconstruct(m, "inr", config=cfg, iterations=n, monitor=mon)
        runs[name] = mon.psnr
        assert result.config["loss"] == cfg.get("loss", "l2")
    target = runs["l2"][-1][1]
    print({k: v[-1] for k, v in runs.items()}, target)
    assert target > 15.0  # L2 is still far from converged here (measured 22.5 dB at 80 steps; FLS 26.8, ADMM 26.5)
    for name in ("fls", "admm"):
        it = _first_reaching(runs[name], target - 0.1)
        assert it is not None and it <= 0.75 * n, (name, runs[name], target)
    assert any("primal_residual" in h for h in mon.history)


def test_fls_handover_blends_to_l2():
    """fls_handover: the loss goes linearly from FLS (share 0) to plain L2 (share 1)."""
    from inr_cases import sparse_ct_case

    from INRReconLib.methods.engine.problem import Problem
    from INRReconLib.methods.registry import reconstruct

    m, truth, prior = sparse_ct_case(n=32, views=8)
    cfg = load_config({"preset": "hash-ct", "loss": "fls"})
    problem = Problem(m, cfg, "cpu")
    problem.set_scale(float(truth.max()))
    image = torch.as_tensor(prior) / problem.scale  # a wrong image: both losses are far from 0
    fls = float(problem.loss(image, cfg))
    l2 = float(problem.loss(image, {**cfg, "loss": "l2"}))
    assert abs(fls - l2) > 0.1 * l2  # the two losses differ, so the blend is visible
    assert float(problem.loss(image, cfg, l2_share=1.0)) == pytest.approx(l2, rel=1e-6)
    assert float(problem.loss(image, cfg, l2_share=0.25)) == pytest.approx(0.75 * fls + 0.25 * l2, rel=1e-6)
    with pytest.raises(InputError, match="fls_handover"):
        reconstruct(m, "inr", config={"loss": "fls", "fls_handover": 1.5}, iterations=2)


def test_every_preset_holds_exactly_the_inr_options():
    from INRReconLib.methods import options

    keys = {o.key for o in options.INR}
    for name in preset_names():
        cfg = load_config(name)
        assert set(cfg) == keys, (name, set(cfg) ^ keys)
        options.check_config(cfg, options.INR, name, defaults=False)
        assert set(cfg["admm"]) == {o.key for o in options.ADMM}


def test_one_validator_one_message_format():
    """Every method's config goes through options.check_config: the field is "config <key>", the
    fix says what to set; NumPy numbers are accepted and stored as plain numbers."""
    import numpy as np

    from INRReconLib.methods import options

    cfg = options.check_config({"iterations": np.int64(7), "lambda": np.float32(0.01)}, options.TV_CT, "tv")
    assert cfg == {"iterations": 7, "lambda": pytest.approx(0.01), "tolerance": 5e-4, "nonneg": True,
                   "projector": "auto"}
    assert type(cfg["iterations"]) is int and type(cfg["lambda"]) is float
    cases = [({"iterations": 0}, "config iterations", "an integer >= 1"),
             ({"iterations": 2.5}, "config iterations", "an integer"),
             ({"lambda": -1.0}, "config lambda", "a number >= 0"),
             ({"nonneg": "yes"}, "config nonneg", "true or false"),
             ({"projector": "gpu"}, "config projector", "one of 'auto', 'torch', 'astra'"),
             ({"lamda": 1}, "config lamda", "lambda")]
    for bad, field, fix in cases:
        with pytest.raises(InputError) as info:
            options.check_config(bad, options.TV_CT, "tv")
        assert info.value.field == field and fix in str(info.value).split("Fix:")[1], (bad, str(info.value))
    with pytest.raises(InputError) as info:
        load_config({"preset": "hash-ct", "admm": {"rho": 0}}, method="nerp")
    assert info.value.field == "config admm.rho"
    with pytest.raises(InputError, match="nerp has no option 'lerning_rate'"):
        load_config({"lerning_rate": 1e-3}, method="nerp")
