"""`inrrecon demo`: the whole pipeline on the embedded default case.

Sparse-view CT (parallel beam, 20 views) is simulated from the real thorax slices that ship with
the package (INRReconLib/data, around a lung nodule); the prior is that scan as an earlier
fraction would show it: the nodule smaller, the patient shifted (also along the table) and
deformed, handed over as the volume, as the Slicer module hands it over. FBP, TV, the INR
without prior and NeRP (hash-grid preset; it finds the matching slice and aligns it)
reconstruct it. Writes the measurement file, the images (HU, NRRD), the prior volume, NeRP's
change map, a comparison PNG, a change-map PNG and a report (Markdown + JSON) with PSNR/SSIM on
the whole image and inside the lesion, and how well the change map finds the lesion.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEMO_METHODS = (("fbp", None), ("tv", None), ("inr", "hash-ct"), ("nerp", "hash-ct"))
EMBEDDED_MAX_SIZE = 128  # the embedded slices are 256²: the data are simulated on a 2x finer grid


def run_demo(out: Path, *, size=128, iterations=None, device="auto"):
    from .cases import ct2d_case
    from .io.atomic import atomic_write_json, atomic_write_text
    from .io.prior import prior_image
    from .io.measurement import write_measurement
    from .io.volume import MU_WATER_PER_MM, mu_to_hu, write_volume
    from .methods.change import CHANGE_THRESHOLD, change_map
    from .methods.metrics import dice, image_metrics, roc_auc
    from .methods.registry import reconstruct
    from .report import change_panel, comparison_panel
    from .worker.run import resolve_device

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    embedded = size <= EMBEDDED_MAX_SIZE  # larger grids need the 512² slices of ../shared/data
    case = ct2d_case("parallel", 20, noisy=False, size=size, prior_volume=True,
                     source="embedded" if embedded else "shared")
    source = ("real thorax CT (" + ("embedded slices, INRReconLib/data" if embedded else "../shared/data") +
              "), slice through the nodule; prior = the scan as a volume, nodule shrunk, shifted 4 mm along "
              "the table and deformed")
    grid = case.measurement.grid
    mu_w = case.measurement.mu_water_per_mm or MU_WATER_PER_MM
    dev = resolve_device(device)[0]
    print(f"demo: {case.name} on {dev} — {source}", file=sys.stderr)
    write_measurement(case.measurement, out / "measurement.h5")
    write_volume(out / "truth_hu.nrrd", mu_to_hu(case.truth, mu_w), grid)
    prior_plane = prior_image(case.prior)  # the prior volume at the measured plane
    write_volume(out / "prior_hu.nrrd", mu_to_hu(prior_plane, mu_w), grid)
    volume, volume_grid = case.info["prior_volume_mu"]
    write_volume(out / "prior_volume_hu.nrrd", mu_to_hu(volume, mu_w), volume_grid)

    rows, images = [], {"truth": case.truth, "prior": prior_plane}
    rows.append({"method": "prior alone", **image_metrics(prior_plane, case.truth, roi=case.roi), "seconds": 0.0})
    for method, preset in DEMO_METHODS:
        print(f"demo: {method}{' (' + preset + ')' if preset else ''} ...", file=sys.stderr)
        config = None
        if preset:
            from .methods.presets import load_config

            config = load_config(preset)
        res = reconstruct(case.measurement, method, prior=case.prior if method == "nerp" else None, config=config,
                          iterations=iterations if preset else None, device=dev)
        metrics = image_metrics(res.image, case.truth, roi=case.roi)
        rows.append({"method": method, **metrics, "seconds": res.seconds, "iterations": res.iterations})
        images[method] = res.image
        if res.aligned_prior is not None:
            # Where the data moved NeRP away from the aligned prior, scored against the lesion.
            change = change_map(res.image, res.aligned_prior, grid.shape)
            write_volume(out / f"{method}.change.nrrd", change, grid)
            rows[-1].update(change_auc=roc_auc(change, case.roi),
                            change_dice=dice(change >= CHANGE_THRESHOLD, case.roi))
            change_panel(mu_to_hu(res.image, mu_w), change, case.roi, out / "change.png", threshold=CHANGE_THRESHOLD,
                         window=(-1000, 400), title=f"{method}: change map from {CHANGE_THRESHOLD:g} up; "
                                                    "white contour: lesion ROI")
            search = (res.extra.get("prior_registration") or {}).get("slice_search") or {}
            label = "prior aligned" + (f" (its slice {search['offset_mm']:+.0f} mm)" if "offset_mm" in search else "")
            rows.append({"method": label, **image_metrics(res.aligned_prior, case.truth, roi=case.roi),
                         "seconds": res.extra.get("registration_seconds", 0.0)})
        write_volume(out / f"{method}_hu.nrrd", mu_to_hu(res.image, mu_w), grid)
        print(f"demo:   PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}  {res.seconds:.1f} s", file=sys.stderr)

    hu = {k: mu_to_hu(v, mu_w) for k, v in images.items()}
    comparison_panel(hu, out / "demo.png", window=(-1000, 400), reference=hu["truth"],
                     title=f"{case.name}: truth | prior | reconstructions (HU, W1400 L-300)")
    report = {"case": case.name, "source": source, "device": str(dev), "grid": grid.to_dict(),
              "metrics_note": "PSNR/SSIM on μ (1/mm), data range = truth max − min; roi_* inside the lesion",
              "results": rows}
    atomic_write_json(out / "report.json", report)
    lines = [f"# INRRecon demo: {case.name}", "", source, "", f"device: {dev}", "",
             "| method | PSNR dB | SSIM | lesion PSNR dB | seconds |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r.get('roi_psnr', float('nan')):.2f} "
                     f"| {r['seconds']:.1f} |")
    for r in rows:
        if "change_auc" in r:
            lines += ["", f"Change map ({r['method']}.change.nrrd: |{r['method']} − aligned prior|, smoothed, in units of "
                      f"the background's spread): area under the ROC curve for the lesion ROI {r['change_auc']:.3f}; "
                      f"Dice {r['change_dice']:.3f} from {CHANGE_THRESHOLD:g} up."]
    lines += ["", "![comparison](demo.png)", "", "![change map](change.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    print("\n".join(lines[4:-5]))
    print(f"\nwrote {out}/report.md, demo.png, change.png, *_hu.nrrd, nerp.change.nrrd, measurement.h5")
    return report
