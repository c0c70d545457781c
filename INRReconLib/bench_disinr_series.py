"""`inrrecon bench --cases disinr-series:ACQ`: DisINR that learns from the patient's own earlier
fractions, against NeRP from the earlier fraction's image, on one patient's series
(cohorts.thorax_series: 3 fractions; the earlier ones measured on a 5-slice slab around the
nodule, each with ACQ, e.g. fan_v60_noisy).

For k = 1, 2: a model is pre-trained on the raw data of fractions 1..k (5k slices; what the
series mode and `reconstruct --pretrain-on` do) and adapted to fraction k+1's nodule slice.
Methods (`--methods` picks some):
- tv (auto λ), inr (hash-ct), scratch (DisINR's field and steps from a random start);
- disinr: the model from fractions 1..k, frozen shared pair, fresh subject encoder;
- nerp-recon: NeRP (hash-ct) with fraction k's reconstruction as the prior (TV of its slab,
  stacked as a volume: what a series that chains results hands over);
- nerp-scan: NeRP with fraction k's image itself (a full-quality earlier scan of the slab);
- prior: fraction k's image alone, scored as the reconstruction (no data).
PSNR / SSIM / lesion ROI (the changed nodule), seconds.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from .bench_disinr import acquisition, cell, pretrained, scored

METHODS = ("tv", "inr", "scratch", "disinr", "nerp-recon", "nerp-scan")
PRESET, INR_PRESET = "disinr-ct-fast", "hash-ct"


def series_rows(spec: str, methods=None, device="cpu", iterations=None) -> list:
    from . import cohorts
    from .io.prior import load_prior_slices
    from .methods.metrics import image_metrics
    from .methods.presets import load_config

    acq = acquisition(spec, "disinr-series", mr=False)  # the series is a chest CT patient's
    chosen = [m for m in METHODS if methods is None or m in methods]
    fractions = cohorts.thorax_series(acq, 3)
    field = load_config(PRESET)["field"]
    steps = iterations or load_config(PRESET)["iterations"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="disinr-series-") as tmp:
        for k in range(1, len(fractions)):
            case = cohorts.series_test(fractions[k], acq)
            earlier = fractions[k - 1]
            mid = len(earlier.measurements) // 2
            row = {"acquisition": acq.name, "case": case.name, "trained_on": list(range(1, k + 1)),
                   "prior": image_metrics(earlier.truth[mid:mid + 1], case.truth, roi=case.roi)}
            if "disinr" in chosen:
                folder = Path(tmp) / f"fractions-1-{k}"
                train = [m for f in fractions[:k] for m in f.measurements]
                row["pretrain"] = pretrained(train, f"fractions 1..{k}", folder, PRESET, device)
                print(f"pre-trained {row['pretrain']}", file=sys.stderr)
                row["disinr"] = scored(case, "disinr", config={"model": str(folder)}, iterations=steps, device=device)
            if "tv" in chosen:
                row["tv"] = scored(case, "tv", device=device)
            if "inr" in chosen:
                row["inr"] = scored(case, "inr", config={"preset": INR_PRESET}, device=device)
            if "scratch" in chosen:
                row["scratch"] = scored(case, "inr", config={"preset": PRESET, "field": field}, iterations=steps,
                                        device=device)
            if "nerp-recon" in chosen:
                slab = np.concatenate([_tv_image(m, device) for m in earlier.measurements])
                prior = load_prior_slices((slab, earlier.volume_grid), case.measurement, units="mu")
                row["nerp-recon"] = scored(case, "nerp", config={"preset": INR_PRESET}, device=device, prior=prior)
            if "nerp-scan" in chosen:
                prior = load_prior_slices((earlier.truth, earlier.volume_grid), case.measurement, units="mu")
                row["nerp-scan"] = scored(case, "nerp", config={"preset": INR_PRESET}, device=device, prior=prior)
            rows.append(row)
            print(_line(row), file=sys.stderr)
    return rows


def _tv_image(measurement, device):
    from .methods.registry import reconstruct

    return np.asarray(reconstruct(measurement, "tv", device=device).image, dtype=np.float32).reshape(
        (1,) + measurement.grid.shape[1:])


def _line(row) -> str:
    p = row["prior"]
    cells = [f"{p['psnr']:.2f} / {p['ssim']:.4f} / {p['roi_psnr']:.2f}"]
    cells += [cell(row[m]) if m in row else "" for m in METHODS]
    return " | ".join([row["case"], ",".join(map(str, row["trained_on"]))] + cells)


def print_series_table(rows) -> None:
    if not rows:
        return
    for row in rows:
        if "pretrain" in row:
            pre = row["pretrain"]
            print(f"pre-training ({pre['model']}): {pre['subjects']} slices, {pre['steps']} steps, loss "
                  f"{pre['loss_first']:.4g} -> {pre['loss_last']:.4g}, {pre['seconds']:.0f} s")
    print("PSNR / SSIM / lesion ROI (seconds); DisINR pre-trained on the fractions listed, NeRP's prior from the "
          "last of them")
    print("| test | fractions before | earlier image alone | TV (auto) | INR (hash-ct) | scratch (same field) | DisINR | "
          "NeRP, prior = earlier TV | NeRP, prior = earlier image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + _line(row) + " |")
