"""`inrrecon bench --cases sigpy:GROUP`: SigPy's SenseRecon and TotalVariationRecon on the same MR
measurements as our cgsense / tv, each with its best setting of a sweep scored on the truth (an
oracle, as the peers of ../shared/data/README.md), next to ours with `auto`. Needs the `peers`
extra (`pip install -e .[peers]`: sigpy, numba); SigPy is imported only here.

SigPy is given our data, trajectory (rad/voxel → grid units: k N / 2π) and coil maps unchanged
(a 1-coil file: unit sensitivity), no density weighting: the same unweighted least-squares data
term our methods solve.
"""

from __future__ import annotations

import sys
import time

import numpy as np

SENSE_ITERATIONS = (5, 10, 20, 30, 50)
# TV weight relative to max |Aᴴy| (SigPy's λ is absolute); 200 PDHG iterations
TV_RELATIVE = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
TV_ITERATIONS = 200


def _sigpy():
    try:
        import sigpy.mri.app  # noqa: F401 (lazy: an optional extra)
    except ImportError as exc:
        from .errors import InputError

        raise InputError("--cases sigpy:", f"needs SigPy ({exc}).", "pip install -e .[peers]") from None
    import sigpy

    return sigpy


def _inputs(measurement):
    geo = measurement.geometry
    if geo.type != "noncartesian" or measurement.grid.shape[0] != 1 or np.asarray(measurement.data).shape[0] != 1:
        raise ValueError("the SigPy comparison takes static 2D non-Cartesian cases")
    ny, nx = measurement.grid.shape[1:]
    traj = np.asarray(geo.trajectory[0], dtype=np.float64)  # [2 (y, x), S] rad/voxel
    coord = np.stack([traj[0] * ny / (2 * np.pi), traj[1] * nx / (2 * np.pi)], axis=-1)
    y = np.asarray(measurement.data[0], dtype=np.complex64)  # [coils, S]
    maps = (np.ones((1, ny, nx), np.complex64) if geo.coil_maps is None
            else np.asarray(geo.coil_maps, np.complex64).reshape(-1, ny, nx))
    return y, coord, maps


def _scores(case, image, seconds, label):
    from .bench_classical import case_metrics

    return {"label": label, **case_metrics(case, image), "seconds": round(seconds, 2)}


def sigpy_rows(group: str) -> list:
    from .bench_classical import score_method
    from .cases import BUILDERS, build_cases

    sp = _sigpy()
    rows = []
    for kind, kw in build_cases(group):
        case = BUILDERS[kind](**kw)
        y, coord, maps = _inputs(case.measurement)
        print(f"bench: {case.name} / SigPy SENSE and TV sweeps ...", file=sys.stderr, flush=True)
        runs = {"sense": [], "tv": []}
        for n in SENSE_ITERATIONS:
            t = time.perf_counter()
            img = sp.mri.app.SenseRecon(y, maps, coord=coord, max_iter=n, show_pbar=False).run()
            runs["sense"].append(_scores(case, img, time.perf_counter() - t, f"max_iter {n}"))
        scale = float(np.abs(sp.mri.linop.Sense(maps, coord=coord).H * y).max())
        for c in TV_RELATIVE:
            t = time.perf_counter()
            img = sp.mri.app.TotalVariationRecon(y, maps, c * scale, coord=coord, max_iter=TV_ITERATIONS,
                                                 show_pbar=False).run()
            runs["tv"].append(_scores(case, img, time.perf_counter() - t, f"lambda {c:g} x max|A^H y|"))
        ours = {"sense": score_method(case, {"iterations": "auto"}, "cgsense", "cpu"),
                "tv": score_method(case, {"lambda": "auto"}, "tv", "cpu")}
        for what in ("sense", "tv"):
            best = max(runs[what], key=lambda r: r["psnr"])
            rows.append({"case": case.name, "method": {"sense": "CG-SENSE", "tv": "TV"}[what], "sigpy_best": best,
                         "sigpy_sweep": runs[what], "ours_auto": ours[what]})
        print_sigpy_table(rows[-2:], sys.stderr)
    return rows


def print_sigpy_table(rows, stream=sys.stdout):
    print("| case | method | SigPy, best of sweep: PSNR / SSIM / ROI (setting, s) | ours, auto: PSNR / SSIM / ROI (s) "
          "| ours − SigPy |", file=stream)
    print("|---|---|---|---|---|", file=stream)
    for r in rows:
        b, o = r["sigpy_best"], r["ours_auto"]
        print(f"| {r['case']} | {r['method']} | {b['psnr']:.2f} / {b['ssim']:.4f} / {b['roi_psnr']:.2f} "
              f"({b['label']}, {b['seconds']:.1f} s) | {o['psnr']:.2f} / {o['ssim']:.4f} / {o['roi_psnr']:.2f} "
              f"({o['seconds']:.1f} s) | {o['psnr'] - b['psnr']:+.2f} |", file=stream)
