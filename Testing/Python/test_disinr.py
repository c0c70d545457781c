"""DisINR: pre-training from measurements, the model folder, adaptation, torchrun, bad input.

Tiny 2D CT cohorts (32² grids, 20 parallel views of random ellipse phantoms projected from 64²)
keep each test to seconds on two cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from INRReconLib.errors import InputError
from INRReconLib.io.measurement import write_measurement
from INRReconLib.io.model_dir import META_FILE, WEIGHTS_FILE, load_model, save_model
from INRReconLib.methods.metrics import psnr
from INRReconLib.methods.population import population_field
from INRReconLib.methods.pretrain import pretrain
from INRReconLib.methods.registry import reconstruct
from INRReconLib.physics.grid import ImageGrid
from INRReconLib.simulate import simulate_ct, simulate_mr

GRID = ImageGrid.centred((1, 32, 32), (4.0, 4.0, 2.0))
FINE = ImageGrid.centred((1, 64, 64), (2.0, 2.0, 2.0))
# Small field and few steps: what the tests need is behaviour, not quality.
TINY = {"preset": "disinr-ct-fast", "subjects_per_step": 2, "pretrain_iterations": 40, "iterations": 40,
        "pretrain_lr": 5e-3, "lr": 5e-3, "coarse_to_fine": 0,
        "field": {"encoding": {"n_levels": 6, "log2_hashmap_size": 12},
                  "network": {"n_neurons": 32, "code_dims": 32}}}


def phantom(seed: int, n: int = 64) -> np.ndarray:
    """A body ellipse with a few inserts whose positions and contrasts vary with the seed."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    img = ((x / 0.8) ** 2 + (y / 0.6) ** 2 < 1) * 0.02
    for _ in range(4):
        cx, cy, rr = r.uniform(-0.4, 0.4), r.uniform(-0.3, 0.3), r.uniform(0.05, 0.15)
        img = img + ((x - cx) ** 2 + (y - cy) ** 2 < rr ** 2) * r.uniform(-0.01, 0.01)
    return np.clip(img, 0, None).astype(np.float32)[None]


def ct(seed: int):
    return simulate_ct(phantom(seed), FINE, geometry="parallel", n_views=20, arc_deg=180, recon_grid=GRID,
                       upsample=1, description=f"phantom {seed}")


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    paths = []
    for k in range(4):
        paths.append(folder / f"s{k}.h5")
        write_measurement(ct(k), paths[-1])
    return paths


@pytest.fixture(scope="module")
def model(cohort_files, tmp_path_factory):
    """A model pre-trained on the first three files; the fourth is the new scan."""
    field, meta = pretrain(cohort_files[:3], config=TINY)
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model(folder, field.shared_state(), meta)
    return folder, field, meta


def test_pretraining_lowers_every_subjects_measurement_loss(model):
    _, _, meta = model
    t = meta["training"]
    assert t["steps"] == 40 and not t["stopped_early"]
    # subjects_per_step 2 of 3: every subject is fitted in the first two steps, and often after
    assert sorted(t["subject_loss_first"]) == [0, 1, 2]
    for k, first in t["subject_loss_first"].items():
        assert t["subject_loss_last"][k] < 0.3 * first, (k, first, t["subject_loss_last"][k])
    assert meta["modality"] == "CT" and meta["frame"]["units"] == "mm"
    assert [c["name"] for c in meta["cohort"]] == ["s0.h5", "s1.h5", "s2.h5"]
    assert all(len(c["sha256"]) == 64 for c in meta["cohort"])


def test_save_load_round_trip_gives_identical_output(model):
    folder, field, meta = model
    loaded_meta, state = load_model(folder, "CT")
    assert loaded_meta["weights_sha256"] == json.loads((folder / META_FILE).read_text())["weights_sha256"]
    fresh = population_field(loaded_meta["field"], loaded_meta["frame"], "CT", "cpu")
    fresh.load_state_dict(state, strict=False)
    fresh.subjects[0].load_state_dict(field.subjects[1].state_dict())  # subject 1 of the cohort
    field.active = 1
    axes = [torch.linspace(-0.9, 0.9, 32)] * 2
    with torch.no_grad():
        assert torch.equal(fresh.forward_grid(axes), field.forward_grid(axes))
    field.active = 0
    assert not any(k.startswith("subjects.") for k in state)  # the cohort's encoders stay out of the model


def test_adaptation_trains_only_the_subject_encoder_and_beats_the_same_field_from_scratch(model, cohort_files):
    folder, _, _ = model
    _, state = load_model(folder)
    new = ct(3)
    truth = phantom(3).reshape(1, 32, 2, 32, 2).mean(axis=(2, 4))  # the 64² phantom pooled onto the grid
    res = reconstruct(new, "disinr", config={"model": str(folder)}, iterations=40)
    after = res.field.field.state_dict()
    for k, v in state.items():
        assert torch.equal(after[k], v), k  # bit-identical shared encoder and decoder
    fresh = population_field(res.config["field"], json.loads((folder / META_FILE).read_text())["frame"], "CT", "cpu")
    moved = [k for k, v in fresh.state_dict().items() if k.startswith("subjects.") and not torch.equal(v, after[k])]
    assert moved, "the subject encoder did not train"
    assert res.extra["model"]["shared_frozen"] and res.config["model"] == str(folder)
    scratch = reconstruct(new, "inr", config={**TINY, "field": res.config["field"]}, iterations=40)
    ours = psnr(np.asarray(res.image)[0], truth[0])
    theirs = psnr(np.asarray(scratch.image)[0], truth[0])
    assert ours > theirs + 1.0, (ours, theirs)
    tuned = reconstruct(new, "disinr", config={"model": str(folder), "finetune_shared": True}, iterations=5)
    assert not torch.equal(tuned.field.field.state_dict()["decoder.linears.0.weight"], state["decoder.linears.0.weight"])


def test_a_scan_with_another_field_of_view_is_placed_in_millimetres(model):
    folder, _, meta = model
    small = ImageGrid.centred((1, 24, 24), (4.0, 4.0, 2.0))
    fine = ImageGrid.centred((1, 48, 48), (2.0, 2.0, 2.0))
    m = simulate_ct(phantom(3)[:, 8:56, 8:56], fine, geometry="parallel", n_views=20, arc_deg=180, recon_grid=small,
                    upsample=1)
    res = reconstruct(m, "disinr", config={"model": str(folder)}, iterations=3)
    frame = res.field.frame
    assert frame.half_extent_mm == pytest.approx(meta["frame"]["half_extent_mm"])  # not the scan's own 48 mm
    assert not res.extra.get("warnings")
    big = ImageGrid.centred((1, 48, 48), (4.0, 4.0, 2.0))
    fine_big = ImageGrid.centred((1, 96, 96), (2.0, 2.0, 2.0))
    m = simulate_ct(np.pad(phantom(3), ((0, 0), (16, 16), (16, 16))), fine_big, geometry="parallel", n_views=20,
                    arc_deg=180, recon_grid=big, upsample=1)
    res = reconstruct(m, "disinr", config={"model": str(folder)}, iterations=2)
    assert "larger than the model's frame" in res.extra["warnings"][0]


def test_bad_inputs_say_what_is_wrong(model, cohort_files, tmp_path):
    folder, field, meta = model
    with pytest.raises(InputError, match="empty"):
        pretrain([], config=TINY)
    mr = simulate_mr(phantom(1, 32)[:, :, :] / 0.03, GRID, trajectory="radial", n_spokes=16, n_coils=1)
    write_measurement(mr, tmp_path / "mr.h5")
    with pytest.raises(InputError, match="mixes modalities.*CT.*MR|mixes modalities.*MR.*CT"):
        pretrain([cohort_files[0], tmp_path / "mr.h5"], config=TINY)
    with pytest.raises(InputError, match="pre-trained on CT data; this measurement is MR"):
        reconstruct(mr, "disinr", config={"model": str(folder)})
    with pytest.raises(InputError, match="needs a pre-trained model"):
        reconstruct(ct(3), "disinr")
    cube = ImageGrid.centred((8, 8, 8), (4.0, 4.0, 4.0))
    with pytest.raises(InputError, match="pre-trained on 2D scans; this measurement is 3D"):
        reconstruct(simulate_ct(np.full((8, 8, 8), 0.02, np.float32), cube, geometry="cone", n_views=8, upsample=1),
                    "disinr", config={"model": str(folder)})

    def copy(name):
        out = tmp_path / name
        out.mkdir()
        for f in (META_FILE, WEIGHTS_FILE):
            (out / f).write_bytes((folder / f).read_bytes())
        return out

    corrupt = copy("corrupt")
    data = bytearray((corrupt / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF
    (corrupt / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256 differs"):
        load_model(corrupt)
    # A file of another network, with its hash written into model.json: the names do not fit.
    foreign = tmp_path / "foreign"
    other = {"shared.encoding.params": torch.zeros(10), "decoder.linears.0.weight": torch.zeros(2, 2)}
    save_model(foreign, other, {k: v for k, v in meta.items()})
    with pytest.raises(InputError, match="do not fit the network"):
        reconstruct(ct(3), "disinr", config={"model": str(foreign)}, iterations=2)
    # A pickle in place of the safetensors file is never unpickled.
    pickled = copy("pickled")
    torch.save(field.shared_state(), pickled / WEIGHTS_FILE)
    m = json.loads((pickled / META_FILE).read_text())
    from INRReconLib.io.provenance import file_sha256

    m["weights_sha256"] = file_sha256(pickled / WEIGHTS_FILE)
    (pickled / META_FILE).write_text(json.dumps(m))
    with pytest.raises(InputError, match="cannot be read as safetensors"):
        load_model(pickled)
    future = copy("future")
    m = json.loads((future / META_FILE).read_text())
    m["version"] = 99
    (future / META_FILE).write_text(json.dumps(m))
    with pytest.raises(InputError, match="version 99"):
        load_model(future)
    with pytest.raises(InputError, match="not a DisINR model"):
        load_model(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    from INRReconLib.io.model_dir import prepare_folder

    with pytest.raises(InputError, match="holds other files"):
        prepare_folder(tmp_path / "notes")


def test_cli_pretrain_then_reconstruct_and_ctrl_c_keeps_a_model(cohort_files, tmp_path):
    from INRReconLib import pretrain_command
    from INRReconLib.cli import main

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "model"
    assert main(["pretrain", *map(str, cohort_files[:3]), "--out", str(out), "--config", str(config),
                 "--iterations", "6", "--device", "cpu"]) == 0
    assert json.loads((out / META_FILE).read_text())["training"]["steps"] == 6
    result = tmp_path / "r.nrrd"
    assert main(["reconstruct", str(cohort_files[3]), "--method", "disinr", "--model", str(out),
                 "--iterations", "3", "--out", str(result), "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "r.metrics.json").read_text())
    assert metrics["model"] == str(out.resolve()) and metrics["extra"]["model"]["weights_sha256"]
    assert json.loads((tmp_path / "r.config.json").read_text())["model"] == str(out.resolve())
    assert main(["reconstruct", str(cohort_files[3]), "--method", "inr", "--model", str(out), "--out",
                 str(tmp_path / "x.nrrd")]) == 2

    # Ctrl-C (the stop event the SIGINT handler sets) after the 3rd step: the model so far is written.
    args = SimpleNamespace(measurements=[str(p) for p in cohort_files[:3]], config=str(config), iterations=50,
                           device="cpu", out=str(tmp_path / "stopped"))
    events = []

    def bar():
        def draw(event):
            events.append(event)
            if event["iteration"] == 3:
                os.kill(os.getpid(), __import__("signal").SIGINT)
        return draw

    assert pretrain_command.run(args, bar) == 0
    t = json.loads((tmp_path / "stopped" / META_FILE).read_text())["training"]
    assert t["stopped_early"] and 3 <= t["steps"] < 50
    assert load_model(tmp_path / "stopped")[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RANK_SCRIPT = """
import json, sys, torch
from safetensors.torch import save_file
from INRReconLib.methods.pretrain import pretrain
torch.set_num_threads(1)
torch.distributed.init_process_group("gloo")
rank = torch.distributed.get_rank()
field, meta = pretrain(sys.argv[2:], config=json.loads(sys.argv[1]))
save_file({k: v.contiguous() for k, v in field.shared_state().items()}, f"rank{rank}.safetensors")
json.dump(meta["training"]["loss_history"], open(f"loss{rank}.json", "w"))
"""


def test_two_gloo_processes_keep_the_shared_weights_equal_and_match_one_process(cohort_files, tmp_path):
    from safetensors.torch import load_file

    config = {**TINY, "pretrain_iterations": 12, "subjects_per_step": 1}
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(script), json.dumps(config), *map(str, cohort_files[:2])]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # One process fitting both subjects per step: the same mean loss, the same gradients.
    field, meta = pretrain(cohort_files[:2], config={**config, "subjects_per_step": 2})
    single = meta["training"]["loss_history"]
    both = json.loads((tmp_path / "loss0.json").read_text())
    assert np.allclose(both, single, rtol=1e-4), (both, single)
    ref = field.shared_state()
    assert max(float((w0[k] - ref[k]).abs().max()) for k in ref) < 1e-4


def test_mr_pretraining_and_adaptation_give_a_complex_image_in_the_scans_own_unit(tmp_path):
    ms = [simulate_mr(phantom(k, 32) / 0.03, GRID, trajectory="radial", n_spokes=24, n_coils=2, noise_std=0.01,
                      seed=k) for k in range(3)]
    field, meta = pretrain(ms[:2], config={**TINY, "preset": "disinr-mr-fast"})
    assert meta["modality"] == "MR" and meta["intensity_scale"] is None  # k-space has no absolute unit
    assert all(meta["training"]["subject_loss_last"][k] < 0.5 * v
               for k, v in meta["training"]["subject_loss_first"].items())
    save_model(tmp_path / "mr", field.shared_state(), meta)
    res = reconstruct(ms[2], "disinr", config={"model": str(tmp_path / "mr")}, iterations=5)
    assert res.image.dtype == np.complex64 and res.image.shape == (1, 1, 32, 32)


def test_the_worker_pretrains_on_earlier_fractions_then_adapts(cohort_files, tmp_path):
    """`pretrain_on` (the series mode's and `reconstruct --pretrain-on`'s way): the worker writes the
    model next to the output, names it in metrics.json, and the adaptation starts from it."""
    import threading

    from INRReconLib.worker import run_job

    events = []
    # subsets 2 (ordered subsets in the adaptation): the pre-training still sees every view.
    job = {"measurement": str(cohort_files[3]), "method": "disinr", "config": {**TINY, "subsets": 2}, "iterations": 3,
           "device": "cpu", "output": str(tmp_path / "fx4.nrrd"), "pretrain_on": [str(p) for p in cohort_files[:2]]}
    final = run_job(job, tmp_path, events.append, threading.Event())
    assert final["event"] == "result", final
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    assert stages[0] == "pretraining" and stages[-1] != "pretraining"
    assert sum(s == "pretraining" for s in stages) >= 2  # the first and the last pre-training step at least
    folder = tmp_path / "fx4.model"
    meta, _ = load_model(folder, "CT")
    assert [c["name"] for c in meta["cohort"]] == ["s0.h5", "s1.h5"] and meta["training"]["steps"] == 40
    metrics = json.loads((tmp_path / "fx4.metrics.json").read_text())
    assert metrics["model"] == str(folder) and metrics["extra"]["model"]["cohort"] == ["s0.h5", "s1.h5"]
    assert metrics["extra"]["model"]["weights_sha256"] == meta["weights_sha256"]
    assert meta["config"]["subsets"] == 1 and json.loads((tmp_path / "fx4.config.json").read_text())["subsets"] == 2
    assert all(h.get("stage") != "pretraining" for h in metrics["history"])  # the adaptation's alone

    # A stop during the pre-training: the model so far is written, the result is the partial one.
    stop = threading.Event()

    def emit(event):
        if event.get("stage") == "pretraining" and event.get("iteration", 0) >= 2:
            stop.set()

    final = run_job({**job, "output": str(tmp_path / "stopped.nrrd")}, tmp_path, emit, stop)
    assert final["event"] == "result" and final["cancelled"], final
    assert load_model(tmp_path / "stopped.model", "CT")[0]["training"]["stopped_early"]


def test_pretrain_on_bad_input_says_what_is_wrong(cohort_files, tmp_path):
    import threading

    from INRReconLib.worker import run_job
    from INRReconLib.worker.job import check_job

    base = {"measurement": str(cohort_files[3]), "method": "disinr", "pretrain_on": [str(cohort_files[0])]}
    assert check_job({**base, "pretrain_on": str(cohort_files[0])}, tmp_path)["pretrain_on"] == [str(cohort_files[0])]
    cases = [({"model": str(tmp_path)}, "together with 'model'"), ({"method": "nerp"}, "takes no pre-trained model"),
             ({"pretrain_on": [str(cohort_files[3])]}, "lists the measurement being reconstructed"),
             ({"pretrain_on": [str(tmp_path / "gone.h5")]}, "file not found"), ({"pretrain_on": []}, "non-empty list"),
             ({"pretrain_on": [3]}, "non-empty list")]
    for change, message in cases:
        with pytest.raises(InputError, match=message):
            check_job({**base, **change}, tmp_path)
    # An MR scan among a CT measurement's earlier fractions: refused before any pre-training step.
    mr = simulate_mr(phantom(1, 32) / 0.03, GRID, trajectory="radial", n_spokes=16, n_coils=1)
    write_measurement(mr, tmp_path / "mr.h5")
    events = []
    final = run_job({**base, "pretrain_on": [str(cohort_files[0]), str(tmp_path / "mr.h5")], "config": TINY,
                     "device": "cpu", "output": str(tmp_path / "x.nrrd")}, tmp_path, events.append, threading.Event())
    assert final["event"] == "error" and "mr.h5 is MR 2D and the measurement is CT 2D" in final["message"], final
    assert not any(e.get("stage") == "pretraining" for e in events)


def test_the_cli_pretrains_on_the_files_given(cohort_files, tmp_path):
    from INRReconLib.cli import main

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY, "pretrain_iterations": 4}))
    assert main(["reconstruct", str(cohort_files[3]), "--method", "disinr", "--pretrain-on", *map(str, cohort_files[:2]),
                 "--config", str(config), "--iterations", "2", "--out", str(tmp_path / "r.nrrd"), "--device", "cpu"]) == 0
    assert load_model(tmp_path / "r.model", "CT")[0]["training"]["steps"] == 4


def test_the_hash_grid_is_sized_for_the_models_frame_not_the_first_scan(cohort_files):
    from INRReconLib.methods.population import resolution_shape

    fine = simulate_ct(phantom(7), FINE, geometry="parallel", n_views=20, arc_deg=180,
                       recon_grid=ImageGrid.centred((1, 64, 64), (2.0, 2.0, 2.0)), upsample=1)
    config = {**TINY, "pretrain_iterations": 1}

    def scale(cohort):
        meta = pretrain(cohort, config=config)[1]
        return meta["field"]["encoding"]["per_level_scale"], meta

    coarse_first, meta = scale([cohort_files[0], fine])  # the 32² scan at 4 mm first
    assert coarse_first == scale([fine, cohort_files[0]])[0]  # the order does not matter
    assert coarse_first > scale([cohort_files[0]])[0]  # finer than for the coarse scan alone
    assert resolution_shape(meta["frame"])[-1] > 64  # the 2 mm voxels over 1.1 x the largest extent
    with pytest.raises(InputError, match="subsets.*does not implement"):
        pretrain(cohort_files[:2], config={**config, "subsets": 4})


def test_tcnn_encoding_weights_carry_the_torch_encodings_names(monkeypatch):
    """A model pre-trained with tiny-cuda-nn loads where only the torch encoding exists, and back:
    the table is `params` in both state dicts (tinycudann stood in for by a module with a table)."""
    import types

    from INRReconLib.fields.hashgrid import HashGridEncoding, TcnnHashGridEncoding

    class FakeEncoding(torch.nn.Module):
        def __init__(self, n_dims, config, seed=1337, dtype=None):
            super().__init__()
            self.seed, self.n_output_dims = seed, 2 * int(config["n_levels"])
            self.params = torch.nn.Parameter(torch.zeros(HashGridEncoding(n_dims, **cfg).params.numel()))

    cfg = {"n_levels": 4, "log2_hashmap_size": 10, "per_level_scale": 1.5, "seed": 3}
    monkeypatch.setitem(sys.modules, "tinycudann", types.SimpleNamespace(Encoding=FakeEncoding))
    fast, plain = TcnnHashGridEncoding(2, cfg), HashGridEncoding(2, **cfg)
    assert fast.enc.seed == 3  # the config's seed reaches tcnn
    assert set(fast.state_dict()) == set(plain.state_dict()) == {"params"}
    fast.load_state_dict(plain.state_dict())
    assert torch.equal(fast.enc.params, plain.params)
    plain.load_state_dict({"params": torch.ones_like(plain.params)})
    fast.load_state_dict(plain.state_dict())
    assert torch.equal(fast.state_dict()["params"], torch.ones_like(plain.params))
