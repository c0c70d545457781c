"""`inrrecon bench --cases disinr:ACQ[/both]`: DisINR on the cohorts of cohorts.py.

ACQ names the acquisition of the training and test data. CT (fan_v60_noisy, fan_v20_noisy, ...):
a model is pre-trained on the thorax patient's training slices (`/both`: also one on both
patients'), then every test slice of both patients (thorax: in patient; lung1: out of patient) is
reconstructed. MR (cartesian_r6, cartesian_r8: 8 coils, 24 ACS lines): a model pre-trained on the
brain's training slices, tested on its tumour slices. Methods:
- tv (auto λ) and inr (hash-ct / hash-mr preset): the baselines;
- scratch: the same disentangled field and iterations as DisINR, from a random start (inr with the
  model's field), the "INR from scratch" the targets compare with;
- disinr: the frozen shared pair, a fresh subject encoder; disinr-ft: everything fine-tuned.
Per row PSNR / SSIM / lesion-ROI PSNR, seconds, and the steps DisINR needed to reach scratch's
final PSNR. `--iterations N` sets the adaptation (and scratch) steps.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def scored(case, method, config=None, iterations=None, device="cpu", every=10, prior=None):
    """One reconstruction of `case` scored against its truth, with its PSNR curve."""
    from .bench_monitor import CurveMonitor, magnitude
    from .methods.metrics import image_metrics, scale_to_reference
    from .methods.registry import reconstruct

    mon = CurveMonitor(case.truth, every)
    res = reconstruct(case.measurement, method, prior=prior, config=config, iterations=iterations, device=device,
                      monitor=mon)
    img = np.asarray(res.image)
    if case.measurement.modality == "MR":  # MR magnitude after the least-squares scale, as everywhere
        img = scale_to_reference(magnitude(img), case.truth)
    m = image_metrics(img.reshape(case.truth.shape), case.truth, roi=case.roi)
    return {"psnr": m["psnr"], "ssim": m["ssim"], "roi_psnr": m.get("roi_psnr"), "seconds": round(res.seconds, 1),
            "iterations": res.iterations, "curve": mon.curve}


def pretrained(train: list, label: str, folder: Path, preset: str, device):
    """Pre-train on the measurements `train` and write the model to `folder`; what it took."""
    from .io.model_dir import save_model
    from .methods.pretrain import pretrain

    t0 = time.perf_counter()
    field, meta = pretrain(train, config=preset, device=device)
    save_model(folder, field.shared_state(), meta)
    t = meta["training"]
    return {"model": label, "subjects": len(train), "steps": t["steps"],
            "loss_first": t["loss_first"], "loss_last": t["loss_last"], "seconds": round(time.perf_counter() - t0, 1)}


def acquisition(spec: str, prefix: str = "disinr", mr: bool = True):
    """ACQ of `PREFIX:ACQ` (fan_v60_noisy, cartesian_r6 where `mr`) as a cohorts acquisition."""
    from . import cohorts

    try:
        if mr and spec.startswith("cartesian_r"):
            return cohorts.MrAcquisition(float(spec[len("cartesian_r"):]))
        geometry, views, noise = spec.split("_")
        if noise not in ("clean", "noisy") or geometry not in ("fan", "parallel"):
            raise ValueError(spec)
        return cohorts.Acquisition(int(views.lstrip("v")), noise == "noisy", geometry)
    except ValueError:
        raise SystemExit(f"{prefix}:{spec}: use {prefix}:fan|parallel_vVIEWS_clean|noisy (e.g. {prefix}:fan_v60_noisy)"
                         + (" or disinr:cartesian_rR (e.g. disinr:cartesian_r6)" if mr else "")) from None


def disinr_rows(spec: str, methods=None, device="cpu", iterations=None) -> list:
    from . import cohorts
    from .methods.presets import load_config

    acq_name, _, extra = spec.partition("/")
    acq = acquisition(acq_name)
    if isinstance(acq, cohorts.MrAcquisition):
        preset, inr_preset, models, tests = "disinr-mr-fast", "hash-mr", [("brain",)], cohorts.brain_tests(acq)
    else:
        preset, inr_preset = "disinr-ct-fast", "hash-ct"
        models = [("thorax",)] + ([("thorax", "lung1")] if extra == "both" else [])
        tests = cohorts.thorax_tests(acq) + cohorts.lung1_tests(acq)
    rows = []
    with tempfile.TemporaryDirectory(prefix="disinr-bench-") as tmp:
        for patients in models:
            folder = Path(tmp) / "_".join(patients)
            train = [m for p in patients for m in getattr(cohorts, f"{p}_training")(acq)]
            pre = pretrained(train, "+".join(patients), folder, preset, device)
            print(f"pre-trained {pre}", file=sys.stderr)
            field = load_config(preset)["field"]
            steps = iterations or load_config(preset)["iterations"]
            for case in tests:
                row = {"acquisition": acq.name, "model": pre["model"], "case": case.name,
                       "patient": case.info["patient"],
                       "in_patient": case.info["patient"] in patients, "pretrain": pre}
                if patients == models[0]:  # the baselines do not depend on the model
                    row["tv"] = scored(case, "tv", device=device)
                    row["inr"] = scored(case, "inr", config={"preset": inr_preset}, device=device)
                    row["scratch"] = scored(case, "inr", config={"preset": preset, "field": field},
                                            iterations=steps, device=device)
                row["disinr"] = scored(case, "disinr", config={"model": str(folder)}, iterations=steps, device=device)
                row["disinr-ft"] = scored(case, "disinr", config={"model": str(folder), "finetune_shared": True},
                                          iterations=steps, device=device)
                scratch_final = _baseline(row, rows, "scratch")["psnr"]
                row["steps_to_scratch_final"] = next((it for it, p in row["disinr"]["curve"] if p >= scratch_final),
                                                     None)
                rows.append(row)
                print(_line(row, rows), file=sys.stderr)
    return rows


def _baseline(row, rows, key):
    if key in row:
        return row[key]
    return next(r[key] for r in rows if r["case"] == row["case"] and key in r)


def cell(r) -> str:
    roi = f" / {r['roi_psnr']:.2f}" if r.get("roi_psnr") is not None else ""
    return f"{r['psnr']:.2f} / {r['ssim']:.4f}{roi} ({r['seconds']:.0f} s)"


def _line(row, rows) -> str:
    return " | ".join([row["case"], row["model"]] + [cell(_baseline(row, rows, k))
                                                     for k in ("tv", "inr", "scratch", "disinr", "disinr-ft")]
                      + [str(row["steps_to_scratch_final"])])


def print_disinr_table(rows) -> None:
    if not rows:
        return
    for pre in {r["model"]: r["pretrain"] for r in rows}.values():
        print(f"pre-training ({pre['model']}): {pre['subjects']} slices, {pre['steps']} steps, loss "
              f"{pre['loss_first']:.4g} -> {pre['loss_last']:.4g}, {pre['seconds']:.0f} s")
    print("PSNR / SSIM / lesion ROI (seconds); 'steps' = DisINR's steps to scratch's final PSNR")
    print("| case | model | TV (auto) | INR (hash preset) | scratch (same field) | DisINR | DisINR fine-tuned | steps |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + _line(row, rows) + " |")
    for model in dict.fromkeys(r["model"] for r in rows):
        for inside in (True, False):
            sel = [r for r in rows if r["model"] == model and r["in_patient"] == inside]
            if not sel:
                continue
            mean = {k: np.mean([_baseline(r, rows, k)["psnr"] for r in sel])
                    for k in ("tv", "inr", "scratch", "disinr", "disinr-ft")}
            print(f"mean ({model} model, {'in' if inside else 'out of'} patient, {len(sel)} slices): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in mean.items())
                  + f"; DisINR − scratch {mean['disinr'] - mean['scratch']:+.2f}, − TV {mean['disinr'] - mean['tv']:+.2f},"
                  f" − fine-tuned {mean['disinr'] - mean['disinr-ft']:+.2f} dB")
