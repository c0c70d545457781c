"""`inrrecon bench --cases auto:GROUP`: the classical methods with their `auto` parameters against
the best fixed setting of a sweep scored on the truth (for reference only: no user has the truth)
and the oracle-tuned peers of ../shared/data/README.md, on the cases of GROUP (cases.py).

One row per case and method: auto (PSNR / SSIM / lesion-ROI PSNR, the value it chose, iterations,
seconds), the best swept value and its scores, the peer's PSNR / SSIM.
"""

from __future__ import annotations

import sys
import time

import numpy as np

# the key each method's sweep varies, and its values
SWEEPS = {
    ("CT", "tv"): ("lambda", (0.0005, 0.001, 0.002, 0.004, 0.008)),
    ("CT", "sirt"): ("iterations", (50, 100, 200, 400, 800)),
    ("CT", "cgls"): ("iterations", (10, 20, 50, 100)),
    ("MR", "tv"): ("lambda", (5e-5, 1e-4, 2e-4, 5e-4, 1e-3)),
    ("MR", "cgsense"): ("iterations", (5, 10, 20, 30, 50)),
    ("MR dynamic", "grasp"): ("lambda", (2e-4, 5e-4, 1e-3, 2e-3)),
}
# Peers on the same case definitions (../shared/data/README.md): PSNR, SSIM of "SIRT / CGLS / CG"
# (CT: SIRT 200 it and CGLS 50 it share one column there; MR: SigPy CG-SENSE) and "TV (best λ)".
PEERS = {
    "ct2d_longitudinal_fan_v20_clean": {"iterative": (23.24, 0.3312), "tv": (29.23, 0.8108)},
    "ct2d_longitudinal_fan_v20_noisy": {"iterative": (23.13, 0.3192), "tv": (29.10, 0.8081)},
    "ct2d_longitudinal_fan_v60_clean": {"iterative": (27.87, 0.5574), "tv": (35.81, 0.9324)},
    "ct2d_longitudinal_fan_v60_noisy": {"iterative": (26.85, 0.4918), "tv": (34.11, 0.9096)},
    "ct2d_longitudinal_parallel_v20_clean": {"iterative": (25.45, 0.4700), "tv": (30.56, 0.8641)},
    "ct2d_longitudinal_parallel_v20_noisy": {"iterative": (25.33, 0.4574), "tv": (30.18, 0.8554)},
    "ct2d_longitudinal_parallel_v60_clean": {"iterative": (30.59, 0.7353), "tv": (37.59, 0.9575)},
    "ct2d_longitudinal_parallel_v60_noisy": {"iterative": (29.55, 0.6639), "tv": (34.90, 0.9338)},
    "mri2d_longitudinal_s30_c1": {"iterative": (25.83, 0.6497), "tv": (27.27, 0.8145)},
    "mri2d_longitudinal_s30_c8": {"iterative": (29.66, 0.7510), "tv": (30.74, 0.8957)},
    "mri2d_longitudinal_s40_c1": {"iterative": (27.38, 0.6984), "tv": (29.08, 0.8609)},
    "mri2d_longitudinal_s40_c8": {"iterative": (31.51, 0.7888), "tv": (33.17, 0.9188)},
    "mri2d_longitudinal_s50_c1": {"iterative": (28.92, 0.7356), "tv": (30.86, 0.8677)},
    "mri2d_longitudinal_s50_c8": {"iterative": (32.95, 0.8125), "tv": (34.75, 0.9282)},
    "mri_dynamic_spf13": {"tv": (30.11, 0.6920)},
    "mri_dynamic_spf21": {"tv": (33.27, 0.7591)},
    "mri_dynamic_spf5": {"tv": (24.81, 0.5944)},
    "mri_dynamic_spf8": {"tv": (27.15, 0.6327)},
}
_PEER_COLUMN = {"tv": "tv", "grasp": "tv", "sirt": "iterative", "cgls": "iterative", "cgsense": "iterative"}


def peer_scores(case_name: str, method: str):
    """(PSNR, SSIM) of the README's peer for this case and method, or None. The classical methods
    ignore the prior, so "…_priorvolume" cases are the README's cases."""
    return PEERS.get(case_name.removesuffix("_priorvolume"), {}).get(_PEER_COLUMN[method])


def _kind(case) -> str:
    m = case.measurement
    return "MR dynamic" if m.modality == "MR" and len(case.truth) > 1 else m.modality


def case_metrics(case, image) -> dict:
    """PSNR / SSIM / ROI PSNR of `image` against the case's truth (MR: magnitude on the truth's
    scale, methods.metrics.scale_to_reference, as `inrrecon bench` scores it)."""
    from .methods.metrics import image_metrics, scale_to_reference

    img = np.asarray(image)
    if case.measurement.modality == "MR":
        img = scale_to_reference(np.abs(img).reshape(case.truth.shape), case.truth)
    m = image_metrics(img, case.truth, roi=case.roi)
    return {"psnr": m["psnr"], "ssim": m["ssim"], "roi_psnr": m.get("roi_psnr")}


def score_method(case, config, method, device) -> dict:
    """One reconstruction of the case: its scores, iterations, seconds, config and auto record."""
    from .methods.registry import reconstruct

    start = time.perf_counter()
    res = reconstruct(case.measurement, method, config=config, device=device)
    seconds = time.perf_counter() - start
    auto = next((v for k, v in res.extra.items() if k.startswith("auto_")), None)
    return {**case_metrics(case, res.image), "iterations": res.iterations, "seconds": round(seconds, 2),
            "config": res.config, "auto": auto}


def classical_rows(group: str, methods=None, device="cpu") -> list:
    """Auto against the sweep for every case of `group` and classical method of its modality."""
    from .cases import BUILDERS, build_cases

    rows = []
    for kind, kw in build_cases(group):
        case = BUILDERS[kind](**kw)
        for (modality, method), (key, values) in SWEEPS.items():
            if modality != _kind(case) or (methods and method not in methods):
                continue
            print(f"bench: {case.name} / {method} auto and {key} sweep ...", file=sys.stderr, flush=True)
            auto = score_method(case, {key: "auto"}, method, device)
            sweep = [{"value": v, **score_method(case, {key: v}, method, device)} for v in values]
            rows.append({"case": case.name, "method": method, "key": key, "auto": auto,
                         "chosen": auto["config"].get(key), "sweep": sweep,
                         "peer": peer_scores(case.name, method)})
            print_classical_table(rows[-1:], sys.stderr)
    return rows


def _cell(r) -> str:
    roi = f" / {r['roi_psnr']:.2f}" if r.get("roi_psnr") is not None else ""
    return f"{r['psnr']:.2f} / {r['ssim']:.4f}{roi}"


def print_classical_table(rows, stream=sys.stdout):
    print("| case | method | auto: PSNR / SSIM / ROI | auto chose (it, s) | best swept | its PSNR / SSIM / ROI "
          "| auto − best | peer |", file=stream)
    print("|---|---|---|---|---|---|---|---|", file=stream)
    for row in rows:
        a, b = row["auto"], max(row["sweep"], key=lambda r: r["psnr"])
        chosen = row["chosen"]
        chosen = f"{chosen:.3g}" if isinstance(chosen, float) else str(chosen)
        peer = f"{row['peer'][0]:.2f} / {row['peer'][1]:.4f}" if row["peer"] else "–"
        print(f"| {row['case']} | {row['method']} | {_cell(a)} | {row['key']} {chosen} ({a['iterations']} it, "
              f"{a['seconds']:.1f} s) | {row['key']} {b['value']:g} | {_cell(b)} ({b['seconds']:.1f} s) | "
              f"{a['psnr'] - b['psnr']:+.2f} | {peer} |", file=stream)
