"""`inrrecon bench`: every method on the shared cases; prints a table and writes JSON.

Methods are given as NAME or NAME:PRESET (e.g. `nerp:hash-ct`). The `convergence` group fits the
same INR with plain L2, filtered least squares and ADMM and records PSNR against iterations; the
`nufft` group times the NUFFT backends (bench_nufft.py); the `batch` group times `inrrecon
batch` against running the same rows one after the other (bench_batch.py); `auto:GROUP` runs
the classical methods with `auto` parameters against a sweep on GROUP's cases (bench_classical.py);
`sigpy:GROUP` runs SigPy's SENSE and TV on the same MR files (bench_sigpy.py, the peers extra);
`import:cbct` imports RTK-written cone-beam scans and compares with RTK's FDK (bench_import.py);
`disinr:ACQ[/both]` pre-trains DisINR on a chest-CT cohort and adapts it to test slices of both
patients (bench_disinr.py); `disinr-series:ACQ` pre-trains it on a patient's earlier fractions
and compares with NeRP from the earlier fraction's image (bench_disinr_series.py).
Quality numbers are PSNR/SSIM against the ground truth (data range = truth max − min); seconds
are wall time of `reconstruct` on the chosen device.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np

from .bench_monitor import CurveMonitor, magnitude

DEFAULT_METHODS = {
    "CT": ["fbp", "sirt", "cgls", "tv", "inr:hash-ct", "nerp:hash-ct"],
    "MR": ["adjoint", "cgsense", "tv", "inr:hash-mr", "nerp:hash-mr"],
    "MR dynamic": ["adjoint", "cgsense", "grasp", "lps", "stinr:stinr-fast"],
}


def interpolate_frames(frames, times_s, to_times_s) -> np.ndarray:
    """Frames [F, ...] at times_s, linearly interpolated in time to to_times_s (held constant
    outside): the baseline of temporal super-resolution."""
    frames = np.asarray(frames)
    t, to = np.asarray(times_s, dtype=float), np.asarray(to_times_s, dtype=float)
    j = np.clip(np.searchsorted(t, to) - 1, 0, len(t) - 2) if len(t) > 1 else np.zeros(len(to), int)
    if len(t) == 1:
        return np.repeat(frames[:1], len(to), axis=0)
    w = np.clip((to - t[j]) / (t[j + 1] - t[j]), 0.0, 1.0).reshape((-1,) + (1,) * (frames.ndim - 1))
    return (1.0 - w) * frames[j] + w * frames[j + 1]


def _scale_mr(img, truth):
    """MR magnitude after the least-squares scale to the truth (metrics.scale_to_reference)."""
    from .methods.metrics import scale_to_reference

    return scale_to_reference(magnitude(img), truth)


def _run_one(case, spec, iterations, device, curve_every=0):
    from .methods.metrics import image_metrics
    from .methods.presets import load_config
    from .methods.registry import METHODS, reconstruct

    name, _, preset = spec.partition(":")
    config = load_config(preset) if preset else None
    iters = iterations if METHODS[name].field else None
    monitor = CurveMonitor(case.truth, curve_every) if curve_every else None
    all_times = case.info.get("all_times_s")  # temporal super-resolution: score every frame
    if all_times is not None and METHODS[name].field:
        config = {**(config or {}), "times_out_s": [float(t) for t in all_times]}
    res = reconstruct(case.measurement, name, prior=case.prior if METHODS[name].uses_prior else None,
                      config=config, iterations=iters, device=device, monitor=monitor)
    image = res.image
    if all_times is not None and len(image) != len(all_times):
        image = interpolate_frames(image, case.info["fitted_times_s"], all_times)
    img = _scale_mr(image, case.truth) if case.measurement.modality == "MR" else image
    m = image_metrics(img, case.truth, roi=case.roi)
    if res.aligned_prior is not None and case.roi is not None:
        from .methods.change import change_map
        from .methods.metrics import roc_auc

        m["change_auc"] = roc_auc(change_map(res.image, res.aligned_prior, case.measurement.grid.shape), case.roi)
    row = {"case": case.name, "method": spec, "psnr": m["psnr"], "ssim": m["ssim"], "roi_psnr": m.get("roi_psnr"),
           "change_auc": m.get("change_auc"),
           "iterations": res.iterations, "seconds": round(res.seconds, 2), "device": str(device),
           "cancelled": res.cancelled}
    if all_times is not None:
        skipped = case.info["skipped_frames"]
        row["skipped_psnr"] = image_metrics(img[skipped], case.truth[skipped])["psnr"]
    return row, res, (monitor.curve if monitor else None)


def _interpolated_row(case, row, res):
    """Temporal super-resolution's baseline for a field method: its own frames at the fitted
    times, linearly interpolated to every frame (what the field's rendering must beat)."""
    from .methods.engine.render import render
    from .methods.metrics import image_metrics

    fitted = render(res.field, case.measurement.grid, times_s=case.info["fitted_times_s"])
    img = _scale_mr(interpolate_frames(fitted, case.info["fitted_times_s"], case.info["all_times_s"]), case.truth)
    m = image_metrics(img, case.truth, roi=case.roi)
    skipped = case.info["skipped_frames"]
    return {**row, "method": row["method"] + " interp", "psnr": m["psnr"], "ssim": m["ssim"],
            "roi_psnr": m["roi_psnr"], "skipped_psnr": image_metrics(img[skipped], case.truth[skipped])["psnr"]}


def _prior_row(case, image=None, label="prior alone"):
    """The prior as a reconstruction: as given, or (image, label) as NeRP aligned it to the data."""
    from .io.prior import prior_image
    from .methods.metrics import image_metrics

    image = prior_image(case.prior) if image is None else image
    img = _scale_mr(image, case.truth) if case.measurement.modality == "MR" else image
    m = image_metrics(img, case.truth, roi=case.roi)
    return {"case": case.name, "method": label, "psnr": m["psnr"], "ssim": m["ssim"],
            "roi_psnr": m.get("roi_psnr"), "iterations": 0, "seconds": 0.0, "device": "-"}


def print_table(rows, stream=sys.stdout):
    w = max([40] + [len(r["case"]) for r in rows])
    head = (f"{'case':<{w}} {'method':<22} {'PSNR':>7} {'SSIM':>7} {'ROI PSNR':>9} {'change AUC':>10} {'iter':>6} "
            f"{'sec':>8}  device")
    print(head, file=stream)
    print("-" * len(head), file=stream)
    for r in rows:
        roi = f"{r['roi_psnr']:.2f}" if r.get("roi_psnr") is not None else "-"
        auc = f"{r['change_auc']:.3f}" if r.get("change_auc") is not None else "-"
        skipped = f"  skipped frames {r['skipped_psnr']:.2f}" if r.get("skipped_psnr") is not None else ""
        print(f"{r['case']:<{w}} {r['method']:<22} {r['psnr']:7.2f} {r['ssim']:7.4f} {roi:>9} {auc:>10} {r['iterations']:>6} "
              f"{r['seconds']:8.1f}  {r['device']}{skipped}", file=stream)
    stream.flush()


def _write_json(path: Path, obj):
    from .io.atomic import atomic_write_json

    atomic_write_json(path, obj, default=float)


def _convergence(out: Path, device, iterations):
    """LS vs FLS vs ADMM on the 2D thorax case (INR without prior, hash-grid field)."""
    from .cases import ct2d_case
    from .methods.presets import load_config
    from .methods.registry import reconstruct
    from .report import convergence_plot

    case = ct2d_case("parallel", 20, noisy=False, size=128)
    iters = iterations or 600
    curves, rows = {}, []
    # Each variant with its best schedule on this slice. L2 with the preset's coarse-to-fine ramp
    # (0.3); FLS and ADMM get the coarse image fast, so they bring the levels in over 0.15 (L2 with
    # 0.15 is slower: 30.36 dB at 200 steps). Pure FLS fits streaks once the fine levels come in
    # (plain ramp: 26.3 dB at 75 steps, 22 dB at 100), so the preset hands over to L2.
    variants = (("L2", {"loss": "l2"}), ("FLS", {"loss": "fls", "coarse_to_fine": 0.15}),
                ("ADMM", {"optimizer": "admm", "coarse_to_fine": 0.15}))
    for label, overrides in variants:
        config = load_config({"preset": "hash-ct", **overrides})
        mon = CurveMonitor(case.truth, 10)
        res = reconstruct(case.measurement, "inr", config=config, iterations=iters, device=device, monitor=mon)
        curves[label] = ([c[0] for c in mon.curve], [c[1] for c in mon.curve])
        rows.append((label, mon.curve, res.seconds))
    final_l2 = curves["L2"][1][-1]
    table = []
    for label, curve, secs in rows:
        reach = next((it for it, p in curve if p >= final_l2), None)
        table.append({"variant": label, "final_psnr": curve[-1][1], "iterations_to_L2_final": reach,
                      "iterations": curve[-1][0], "seconds": round(secs, 1)})
    print(f"\nconvergence on {case.name} (128², INR without prior, hash-ct): L2 final PSNR {final_l2:.2f} dB")
    print(f"{'variant':<8} {'final PSNR':>10} {'it to L2 final':>15} {'iterations':>10} {'sec':>7}")
    for t in table:
        print(f"{t['variant']:<8} {t['final_psnr']:10.2f} {str(t['iterations_to_L2_final']):>15} {t['iterations']:>10} "
              f"{t['seconds']:7.1f}")
    convergence_plot(curves, out / "convergence.png", title=f"{case.name}, 128²: PSNR vs iteration")
    return {"case": case.name, "curves": {k: list(zip(*v)) for k, v in curves.items()}, "table": table}


def _sigpy():
    from .bench_sigpy import print_sigpy_table, sigpy_rows

    return "sigpy", lambda group, methods, device: sigpy_rows(group), print_sigpy_table


def _import():
    from .bench_import import import_rows, print_import_table

    return "import", import_rows, print_import_table


def _auto():
    from .bench_classical import classical_rows, print_classical_table

    return "classical", classical_rows, print_classical_table


def _disinr():
    from .bench_disinr import disinr_rows, print_disinr_table

    return "disinr", disinr_rows, print_disinr_table


def _disinr_series():
    from .bench_disinr_series import print_series_table, series_rows

    return "disinr_series", series_rows, print_series_table


# `--cases PREFIX:GROUP`: (result key, rows(group, methods, device), print(rows)), imported when used
_PREFIXED = {"sigpy:": _sigpy, "import:": _import, "auto:": _auto, "disinr:": _disinr,
             "disinr-series:": _disinr_series}


def run_bench(args) -> int:
    from .cases import BUILDERS, CASE_GROUPS, build_cases
    from .worker.run import resolve_device

    if args.list:
        for g, specs in CASE_GROUPS.items():
            print(f"{g}: " + ", ".join(f"{k}({', '.join(f'{a}={b}' for a, b in kw.items())})" for k, kw in specs))
        print("convergence: LS vs FLS vs ADMM curves on the 128² thorax slice")
        print("batch: 8 small CT rows serially and with inrrecon batch --workers 2 (needs the batch extra)")
        print("auto:GROUP: the classical methods' auto parameters against a sweep scored on the truth, on GROUP's "
              "cases (e.g. auto:ct2d-v20; --methods tv,sirt to restrict)")
        print("sigpy:GROUP: SigPy's SenseRecon / TotalVariationRecon (best of a sweep) against our cgsense / tv "
              "with auto, on GROUP's static 2D radial MR cases (needs the peers extra)")
        print("disinr:ACQ[/both]: pre-train DisINR on the thorax patient's slices (/both: also on both patients'), "
              "adapt to test slices of both, against TV, INR and the same field from scratch (e.g. disinr:fan_v60_noisy)")
        print("disinr-series:ACQ: DisINR pre-trained on fractions 1..k of one patient's series, adapted to fraction "
              "k+1, against NeRP with fraction k's image or reconstruction as the prior (e.g. disinr-series:fan_v60_noisy)")
        print("import:cbct: RTK-written cone-beam scans (full, half-fan, short) of the real thorax imported with "
              "inrrecon import rtk, against RTK's FDK and the direct path (needs itk-rtk; --methods tv adds TV)")
        print("nufft: forward / adjoint / normal of each NUFFT backend, 256² x 8 coils x 40 spokes and "
              "128² x 20 frames x 8 coils")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)[0]
    groups = [g.strip() for g in args.cases.split(",") if g.strip()]
    result = {"host": platform.node(), "cpu_threads": os.cpu_count(), "device": str(device), "rows": []}
    try:
        import torch

        result["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    rows = result["rows"]
    for group in groups:
        if group == "convergence":
            result["convergence"] = _convergence(out, device, args.iterations)
            _write_json(out / "bench.json", result)
            continue
        if group == "batch":
            from .bench_batch import batch_timings, print_batch_table

            result["batch"] = batch_timings()
            print()
            print_batch_table(result["batch"])
            _write_json(out / "bench.json", result)
            continue
        prefix = group.split(":", 1)[0] + ":" if ":" in group else None
        if prefix in _PREFIXED:
            key, run, show = _PREFIXED[prefix]()
            methods = args.methods.split(",") if args.methods else None
            result.setdefault(key, []).extend(run(group[len(prefix):], methods, device))
            print()
            show(result[key])
            _write_json(out / "bench.json", result)
            continue
        if group == "nufft":
            from .bench_nufft import nufft_timings, print_nufft_table

            result["nufft"] = nufft_timings(device)
            print()
            print_nufft_table(result["nufft"])
            _write_json(out / "bench.json", result)
            continue
        for kind, kw in build_cases(group):
            case = BUILDERS[kind](**kw)
            modality = case.measurement.modality
            dynamic = modality == "MR" and len(case.truth) > 1
            default = DEFAULT_METHODS["MR dynamic" if dynamic else modality]
            methods = args.methods.split(",") if args.methods else default
            if case.prior is not None:
                rows.append(_prior_row(case))
            for spec in methods:
                print(f"bench: {case.name} / {spec} ...", file=sys.stderr, flush=True)
                row, res, _ = _run_one(case, spec, args.iterations, device)
                rows.append(row)
                print_table([row], sys.stderr)
                if "skipped_psnr" in row and res.field is not None:
                    rows.append(_interpolated_row(case, row, res))
                if res.aligned_prior is not None:
                    # What the registration alone gives, so NeRP's gain over it shows, and for a
                    # prior volume the slice it picked.
                    search = res.extra.get("prior_registration", {}).get("slice_search")
                    label = f"prior aligned {search['offset_mm']:+.1f} mm" if search else "prior aligned"
                    rows.append(_prior_row(case, res.aligned_prior, label))
            _write_json(out / "bench.json", result)
    print()
    print_table(rows)
    _write_json(out / "bench.json", result)
    print(f"\nwrote {out / 'bench.json'}")
    return 0
