"""The `inrrecon` command: simulate, reconstruct, import, batch, pretrain, info, methods, demo, bench.

`reconstruct` runs the worker's `run_job` in this process, so the terminal progress bar reads the
same event stream the Slicer module reads from the background worker.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from . import pretrain_command
from .errors import DeviceError, InputError


def _add_simulate(sub):
    p = sub.add_parser("simulate", help="simulate sparse measurements from an image (any SimpleITK format)")
    p.add_argument("image", help="input image; CT in HU (or μ with --units mu), MR magnitude")
    p.add_argument("--out", required=True, help="measurement file to write (.h5)")
    p.add_argument("--modality", choices=["CT", "MR"], default="CT")
    p.add_argument("--slice", type=int, default=None, help="use one axial slice (index k) for a 2D case")
    p.add_argument("--units", choices=["hu", "mu"], default="hu", help="CT input units (default HU)")
    p.add_argument("--mu-water", type=float, default=None, help="μ of water in 1/mm for HU conversion")
    g = p.add_argument_group("CT")
    g.add_argument("--geometry", choices=["parallel", "fan", "cone"], default="parallel")
    g.add_argument("--views", type=int, default=20)
    g.add_argument("--arc", type=float, default=None, help="degrees (default 180 parallel, 360 fan/cone)")
    g.add_argument("--sid", type=float, default=500.0, help="source to isocentre, mm")
    g.add_argument("--idd", type=float, default=500.0, help="isocentre to detector, mm")
    g.add_argument("--det-cols", type=int, default=None)
    g.add_argument("--det-spacing", type=float, default=None, help="detector column spacing, mm")
    g.add_argument("--det-rows", type=int, default=None, help="cone beam detector rows")
    g.add_argument("--photons", type=float, default=None, help="incident photons per detector pixel (Poisson)")
    g = p.add_argument_group("MR")
    g.add_argument("--trajectory", choices=["radial", "cartesian"], default="radial")
    g.add_argument("--spokes", type=int, default=40, help="golden-angle radial spokes")
    g.add_argument("--acceleration", type=float, default=4.0, help="Cartesian acceleration")
    g.add_argument("--acs", type=int, default=16, help="Cartesian fully sampled centre lines")
    g.add_argument("--coils", type=int, default=1)
    g.add_argument("--noise", type=float, default=0.0, help="complex Gaussian noise std relative to k-space RMS")
    p.add_argument("--seed", type=int, default=0)


def _add_reconstruct(sub):
    from .methods.registry import METHODS

    p = sub.add_parser("reconstruct", help="reconstruct an image from a measurement file")
    p.add_argument("measurement")
    p.add_argument("--method", required=True, choices=list(METHODS))
    p.add_argument("--prior", default=None, help="earlier scan of the patient (NeRP): an image file or a DICOM folder")
    p.add_argument("--prior-series", default=None, metavar="UID",
                   help="the Series Instance UID to use when the --prior DICOM folder holds several series")
    p.add_argument("--model", default=None, metavar="MODEL_DIR",
                   help="disinr: the pre-trained model folder (inrrecon pretrain --out)")
    p.add_argument("--pretrain-on", nargs="+", default=None, metavar="MEAS",
                   help="disinr: pre-train the model on these measurement files first (e.g. the patient's earlier "
                        "fractions; the preset's pretrain_* settings), then adapt it; written as OUT's stem + .model/")
    p.add_argument("--config", default=None, help="preset name (nerp-ct, hash-ct, ...) or JSON/YAML file")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--reference", default=None, help="ground-truth image: report PSNR/SSIM against it")
    p.add_argument("--out", required=True, help="output image (.nrrd, .nii.gz, .mha, ...)")
    p.add_argument("--upsample", type=int, default=1,
                   help="inr/nerp: write the output N times finer per axis (in-plane for 2D data), the "
                        "fitted field evaluated there; metrics stay on the measurement grid")
    g = p.add_argument_group("dynamic MR")
    g.add_argument("--spokes-per-frame", type=int, default=None,
                   help="bin a continuous radial acquisition (per-spoke times) into frames of N spokes")
    g.add_argument("--frames-out", type=int, default=None,
                   help="stinr: render M frames evenly over the acquisition (temporal super-resolution)")
    g.add_argument("--times-out", default=None, help="stinr: render at these times, comma separated seconds")


def _add_import(sub):
    from .io.importers import IMPORTERS, OPTION_DEFAULTS

    p = sub.add_parser("import", help="convert scanner data to an INRRecon measurement file (reconstruct, info and "
                                      "Slicer also read them directly)")
    kinds = "; ".join(f"{imp.kind}: {imp.summary}, {imp.inputs}" for imp in IMPORTERS.values())
    p.add_argument("kind", choices=list(IMPORTERS), help=kinds)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="the scanner's file(s) or folder")
    p.add_argument("--out", required=True, help="measurement file to write (.h5)")
    g = p.add_argument_group("MR")
    g.add_argument("--slice", type=int, default=OPTION_DEFAULTS["slice"],
                   help="the slice of a multi-slice acquisition (0-based)")
    g.add_argument("--echo", type=int, default=OPTION_DEFAULTS["echo"],
                   help="the echo of a multi-echo acquisition (0-based)")
    g.add_argument("--coil-maps", choices=["espirit", "lowres"], default=OPTION_DEFAULTS["coil_maps"],
                   help="coil sensitivity estimation: ESPIRiT (default) or low-resolution coil images / RSS")
    g.add_argument("--dataset", default=OPTION_DEFAULTS["dataset"],
                   help="ISMRMRD: the HDF5 group of the scan (default: 'dataset', or the only one)")
    g = p.add_argument_group("cone-beam CT")
    g.add_argument("--like", default=OPTION_DEFAULTS["like"],
                   help="reconstruct on this image's grid (e.g. the planning CT); the isocentre at its centre "
                        "unless --isocenter")
    g.add_argument("--size", default=None, help="grid size nx,ny,nz (voxels) about the isocentre")
    g.add_argument("--spacing", default=None, help="grid spacing sx,sy,sz (mm), or one value for all")
    g.add_argument("--patient-position", default=OPTION_DEFAULTS["patient_position"],
                   choices=["HFS", "HFP", "FFS", "FFP"], help="patient position on the couch (default HFS)")
    g.add_argument("--isocenter", default=None, help="the isocentre's position x,y,z (LPS mm, the patient frame of --like); default: the --like image's centre, else 0,0,0")
    g.add_argument("--bin", type=int, default=OPTION_DEFAULTS["bin"], help="average BxB detector pixels")
    g.add_argument("--every", type=int, default=OPTION_DEFAULTS["every"],
                   help="keep every Nth projection (sparse-view from a clinical scan)")


def _numbers(text, n: int, flag: str, kind=float):
    """'a,b,c' (or one number for all n) -> a tuple of n numbers; None stays None."""
    if text is None:
        return None
    try:
        values = [kind(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) == 1 and n > 1:
        values = values * n
    if len(values) != n:
        raise InputError(flag, f"must be {n} comma-separated numbers, got {text!r}.", f"e.g. {flag} " +
                         ",".join(["256"] * n if kind is int else ["1.0"] * n))
    return tuple(values)


def _import(args) -> int:
    from .io.importers import OPTION_DEFAULTS, run_import
    from .io.measurement import describe_measurement, write_measurement

    given = {k: getattr(args, k) for k in OPTION_DEFAULTS}
    given["size"] = _numbers(args.size, 3, "--size", int)
    given["spacing"] = _numbers(args.spacing, 3, "--spacing")
    given["isocenter"] = _numbers(args.isocenter, 3, "--isocenter")
    out = Path(args.out).resolve()
    for given_input in (Path(p).resolve() for p in args.inputs):
        if out == given_input or given_input in out.parents:
            raise InputError("--out", f"{args.out} is {'an input' if out == given_input else 'inside an input folder'}"
                             "; the scanner's data would be overwritten or read back as data.",
                             "Write the measurement file somewhere else.")
    m = run_import(args.kind, args.inputs, **given)
    write_measurement(m, out)
    print(describe_measurement(m))
    print(f"wrote {args.out}")
    return 0


def _add_batch(sub):
    p = sub.add_parser("batch", help="run a study (YAML/CSV, one reconstruction per row) on Dask: resumable, "
                                     "fault tolerant, with a report")
    p.add_argument("study", help="study file: .yaml/.yml or .csv (README, 'Many patients')")
    p.add_argument("--scheduler", default="local", help="'local' (a cluster on this machine) or a Dask scheduler "
                                                        "address, e.g. tcp://host:8786")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: one per GPU, else one per 2 cores)")
    p.add_argument("--gpus-per-worker", type=int, default=None, help="GPUs per worker; rows run one per GPU")
    p.add_argument("--out", default=None, help="folder for the report and for rows without an output "
                                              "(default: <study>_results beside the study file)")


def _batch(args) -> int:
    from .batch import run_batch
    from .batch.schedule import ProgressLine

    for name in ("workers", "gpus_per_worker"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')}", f"must be at least 1, got {value}.")
    try:
        summaries, report = run_batch(args.study, out_dir=args.out, scheduler=args.scheduler, workers=args.workers,
                                      gpus_per_worker=args.gpus_per_worker, progress=ProgressLine())
    except KeyboardInterrupt:
        print("\ninrrecon batch: interrupted. Finished rows are kept; run the same command to do the rest.",
              file=sys.stderr)
        return 130
    for s in summaries:
        if s["status"] == "failed":
            print(f"inrrecon batch: row {s['id']} failed ({s.get('kind')}): {s.get('message')}", file=sys.stderr)
    print(f"report: {report['md']}, {report['csv']}")
    return 1 if any(s["status"] == "failed" for s in summaries) else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="inrrecon", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_reconstruct(sub)
    _add_import(sub)
    _add_batch(sub)
    pretrain_command.add_parser(sub)
    p = sub.add_parser("info", help="summarise a measurement file")
    p.add_argument("measurement")
    p = sub.add_parser("methods", help="list the methods, or one method's config keys with defaults and docs")
    p.add_argument("name", nargs="?", default=None, help="a method name: show its config keys")
    p = sub.add_parser("demo", help="simulate sparse CT from the bundled thorax scan and reconstruct it")
    p.add_argument("--out", default="demo-output", help="folder for images and the report")
    p.add_argument("--size", type=int, default=128, choices=[128, 256], help="reconstruction grid (pixels)")
    p.add_argument("--iterations", type=int, default=None, help="INR fitting iterations (default: preset)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p = sub.add_parser("bench", help="benchmark every method on the shared cases; prints a table, writes JSON")
    p.add_argument("--cases", default="ct2d", help="comma list of case groups or case names (see --list)")
    p.add_argument("--methods", default=None, help="comma list of methods (default: all for the modality)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--iterations", type=int, default=None, help="override INR iterations")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--out", default="bench-output")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            from .io.measurement import describe_measurement
            from .io.readers import read_measurement

            print(describe_measurement(read_measurement(args.measurement)))
            return 0
        if args.command == "methods":
            print(describe_methods(args.name))
            return 0
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "reconstruct":
            return _reconstruct(args)
        if args.command == "batch":
            return _batch(args)
        if args.command == "pretrain":
            return pretrain_command.run(args, _ProgressBar)
        if args.command == "import":
            return _import(args)
        if args.command == "demo":
            from .demo import run_demo

            run_demo(Path(args.out), size=args.size, iterations=args.iterations, device=args.device)
            return 0
        if args.command == "bench":
            from .bench import run_bench

            return run_bench(args)
    except (InputError, DeviceError) as error:
        print(f"inrrecon: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"inrrecon: file not found: {error.filename}. Check the path.", file=sys.stderr)
        return 2
    return 1


def describe_methods(name=None) -> str:
    """The registry as text: every method (name, modalities, what it reads and returns, summary),
    or one method's config keys per modality with their defaults and docs."""
    from .methods.registry import METHODS

    if name is None:
        lines = [f"{'method':9s} {'modalities':10s} {'reads':26s} {'returns':14s} summary"]
        for spec in METHODS.values():
            lines.append(f"{spec.name:9s} {','.join(spec.modalities):10s} {', '.join(spec.reads):26s} "
                         f"{', '.join(spec.returns):14s} {spec.summary}")
        lines.append("inrrecon methods NAME: its config keys (--config), defaults and docs")
        return "\n".join(lines)
    if name not in METHODS:
        raise InputError("method", f"unknown method {name!r}.", f"Choose one of: {', '.join(METHODS)}.")
    spec = METHODS[name]
    lines = [f"{spec.name}: {spec.summary}"]
    for modality, options in spec.options.items():
        defaults = spec.defaults(modality)
        rule = f" (defaults of preset {defaults['preset']!r})" if spec.preset_rule is not None else ""
        lines.append(f"\n{modality}{rule}:")
        for o in options:
            value = defaults.get(o.key)
            shown = "{...}" if isinstance(value, dict) else ("" if o.key == "description" else repr(value))
            lines.append(f"  {o.key} = {shown}\n      {o.doc}")
    return "\n".join(lines)


class _ProgressBar:
    """Draws worker events on the terminal: one updating line on a TTY, sparse lines otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last_stage = None
        self.last_fraction = -1.0

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "started":
            self._line(f"device {event.get('device')}" + (f" ({event['note']})" if event.get("note") else ""))
        elif kind == "progress":
            total = max(int(event.get("total") or 1), 1)
            it = int(event.get("iteration") or 0)
            frac = it / total
            stage = event.get("stage", "")
            if not self.tty and stage == self.last_stage and frac - self.last_fraction < 0.1 and it != total:
                return
            self.last_stage, self.last_fraction = stage, frac
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            loss = f" loss {event['loss']:.4g}" if event.get("loss") is not None else ""
            eta = f" ETA {event['eta']:.0f}s" if event.get("eta") is not None else ""
            text = f"{stage:>16} [{bar}] {it}/{total}{loss}{eta}"
            if self.tty:
                self.stream.write("\r" + text)
                self.stream.flush()
            else:
                self._line(text)
        elif kind == "result":
            if self.tty:
                self.stream.write("\n")
            note = " (cancelled: best result so far)" if event.get("cancelled") else ""
            self._line(f"wrote {event.get('output')}{note}")
            for warning in event.get("warnings") or []:
                self._line(f"warning: {warning}")
            if event.get("prior_slice_offset_mm") is not None:
                self._line(f"prior: embedded its slice {event['prior_slice_offset_mm']:+.1f} mm from the measured plane "
                           "(the one that matched the data best)")
            metrics = event.get("metrics") or {}
            if metrics:
                self._line("  " + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))))
        elif kind == "error":
            if self.tty:
                self.stream.write("\n")

    def _line(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()


def _simulate(args) -> int:
    import numpy as np

    from .io.measurement import describe_measurement, write_measurement
    from .io.volume import MU_WATER_PER_MM, hu_to_mu, read_volume
    from .physics.grid import ImageGrid
    from .simulate import simulate_ct, simulate_mr

    image, grid = read_volume(args.image)
    if args.slice is not None:
        if not 0 <= args.slice < image.shape[0]:
            raise InputError("--slice", f"index {args.slice} is outside the image's {image.shape[0]} slices.",
                             f"Use 0..{image.shape[0] - 1}.")
        origin = np.asarray(grid.origin) + args.slice * grid.spacing[2] * np.asarray(grid.direction).reshape(3, 3)[:, 2]
        grid = ImageGrid((grid.size[0], grid.size[1], 1), grid.spacing, tuple(origin), grid.direction)
        image = image[args.slice:args.slice + 1]
    if args.modality == "CT":
        mu_water = args.mu_water or MU_WATER_PER_MM
        mu = image if args.units == "mu" else np.clip(hu_to_mu(image, mu_water), 0, None)
        arc = args.arc if args.arc is not None else (180.0 if args.geometry == "parallel" else 360.0)
        meas = simulate_ct(mu.astype(np.float32), grid, geometry=args.geometry, n_views=args.views, arc_deg=arc,
                           source_to_isocenter_mm=args.sid, isocenter_to_detector_mm=args.idd, n_cols=args.det_cols,
                           col_spacing_mm=args.det_spacing, n_rows=args.det_rows, photons=args.photons,
                           seed=args.seed)
        meas.attrs["mu_water_per_mm"] = mu_water
    else:
        mag = np.abs(image).astype(np.float64)
        mag = mag / max(np.percentile(mag, 99.8), 1e-12)
        meas = simulate_mr(np.clip(mag, 0, 1).astype(np.float32), grid, trajectory=args.trajectory,
                           n_spokes=args.spokes, acceleration=args.acceleration, acs_lines=args.acs,
                           n_coils=args.coils, noise_std=args.noise, seed=args.seed)
    meas.attrs.setdefault("description", f"simulated from {Path(args.image).name}")
    write_measurement(meas, args.out)
    print(describe_measurement(meas))
    print(f"wrote {args.out}")
    return 0


def _dynamic_overrides(args) -> dict:
    """The dynamic-MR flags as config keys (spokes_per_frame, frames_out, times_out_s)."""
    out = {}
    if args.spokes_per_frame is not None:
        out["spokes_per_frame"] = args.spokes_per_frame
    if args.frames_out is not None:
        out["frames_out"] = args.frames_out
    if args.times_out:
        try:
            out["times_out_s"] = [float(t) for t in args.times_out.split(",") if t.strip()]
        except ValueError:
            raise InputError("--times-out", f"must be comma-separated seconds, got {args.times_out!r}.",
                             "e.g. --times-out 0.05,0.15,0.25") from None
    from .methods.registry import METHODS

    # A flag the method would ignore is an error, not a silent static reconstruction.
    rules = {"--spokes-per-frame": (("spokes_per_frame",), lambda spec: "frames" in spec.reads),
             "--frames-out / --times-out": (("frames_out", "times_out_s"),
                                            lambda spec: "frames" in spec.reads and spec.field)}
    for flag, (keys, applies) in rules.items():
        if any(k in out for k in keys) and not applies(METHODS[args.method]):
            users = ", ".join(n for n, spec in METHODS.items() if applies(spec))
            raise InputError(flag, f"does not apply to method {args.method!r}.", f"Use it with: {users}.")
    return out


def _reconstruct(args) -> int:
    from .worker.run import run_job

    job = {"measurement": str(Path(args.measurement).resolve()),
           "prior": str(Path(args.prior).resolve()) if args.prior else None, "prior_series": args.prior_series,
           "method": args.method, "config": args.config, "iterations": args.iterations,
           "device": args.device, "output": str(Path(args.out).resolve()), "preview_every": 0,
           "upsample": args.upsample, "config_overrides": _dynamic_overrides(args),
           "model": str(Path(args.model).resolve()) if args.model else None,
           "pretrain_on": [str(Path(m).resolve()) for m in args.pretrain_on] if args.pretrain_on else None}
    if args.reference:
        job["reference"] = str(Path(args.reference).resolve())
    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\ninrrecon: stopping at the next iteration and keeping the result so far "
              "(Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    bar = _ProgressBar()
    try:
        with tempfile.TemporaryDirectory(prefix="inrrecon-") as job_dir:
            final = run_job(job, Path(job_dir), bar, stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    if final.get("event") == "error":
        print(f"inrrecon: {final.get('message')}", file=sys.stderr)
        return 2 if final.get("kind") in ("bad-input", "no-gpu", "out-of-memory") else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
