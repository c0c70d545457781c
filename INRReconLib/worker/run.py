"""One reconstruction job, start to finish, in this process.

`run_job` is the single code path behind both the background worker (`python -m
INRReconLib.worker`, which wires stdout/stdin/SIGTERM to it) and `inrrecon reconstruct` (which
passes an `emit` that draws a progress bar). It never raises for a failed job: it emits an
`error` event and returns it, so every caller handles failures the same way.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .. import __version__
from ..errors import DeviceError, InputError
from ..methods import auto_params
from ..methods.monitor import Monitor
from ..io.atomic import atomic_save_npy, atomic_write_text
from .events import (PROTOCOL_VERSION, error_from_exception,
                     preview_payload, to_jsonable)
from .job import check_job

log = logging.getLogger("INRReconLib.worker")

CHECKPOINT_FILE = "checkpoint.npy"
CHECKPOINT_INFO_FILE = "checkpoint.json"
PREVIEWS_KEPT = 3  # older preview files are deleted; a reader may still be loading the last ones
PROGRESS_MIN_INTERVAL_S = 0.1  # progress lines are thinned to ~10 per second (first/last always)
MAX_OUTPUT_VOXELS = 512 ** 3  # an upsampled output: 512 MiB as float32 (MR renders complex: twice that)

Emit = Callable[[dict], None]


def run_job(job: dict, job_dir, emit: Emit, stop: threading.Event) -> dict:
    """Run the job and emit its events; returns the final event (`result` or `error`).

    job: as from `load_job` (checked again here, so a hand-built dict works too).
    job_dir: folder for previews, the checkpoint and relative paths.
    emit: called with each event dict, from this thread.
    stop: set it (from any thread) to stop at the next iteration and keep the partial result.
    """
    job_dir = Path(job_dir)
    t0 = time.perf_counter()
    try:
        job = check_job(job, job_dir)
        device, device_info = resolve_device(job["device"])
        emit({"event": "started", "protocol": PROTOCOL_VERSION, "pid": os.getpid(), "device": str(device),
              **device_info, "versions": library_versions(), "method": job["method"],
              "measurement": job["measurement"], "output": job["output"],
              "ignored_keys": job["ignored_keys"]})
        final = _reconstruct_and_save(job, job_dir, device, emit, stop, t0)
    except Exception as exc:  # every failure becomes an event; KeyboardInterrupt still propagates
        final = error_from_exception(exc)
        checkpoint = job_dir / CHECKPOINT_FILE
        if checkpoint.is_file():
            final["checkpoint"] = str(checkpoint)
        if final["kind"] == "internal":
            log.error("job failed (internal): %s\n%s", final["message"], final["detail"])
        else:
            # Bad input, no GPU, out of memory: the message names the problem and the fix, and a
            # traceback on the console (the CLI's) would bury it; worker.log keeps it at DEBUG.
            log.error("job failed (%s): %s", final["kind"], final["message"])
            log.debug("%s", final["detail"])
    emit(final)
    return final


def resolve_device(requested: str):
    """("auto" | "cpu" | "cuda" | "cuda:N") -> (torch.device, fields for the `started` event).

    Raises DeviceError("no-gpu") when CUDA is asked for and there is none."""
    import torch

    cuda = torch.cuda.is_available()
    info = {"device_requested": requested}
    if requested == "auto":
        if cuda:
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            device = torch.device("cpu")
            info["cpu_fallback"] = True
            info["note"] = ("No CUDA GPU is available to this Python (torch " + torch.__version__ +
                            "); running on the CPU, which is much slower for INR methods.")
    elif requested == "cpu":
        device = torch.device("cpu")
    else:
        device = torch.device(requested if ":" in requested else "cuda")
        if not cuda:
            raise DeviceError("no-gpu", f"Device {requested!r} was requested but this Python's torch "
                                        f"({torch.__version__}) sees no CUDA GPU. Choose device 'auto' or "
                                        "'cpu', or install a CUDA build of PyTorch and the GPU driver.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError("no-gpu", f"Device {requested!r} was requested but only "
                                        f"{torch.cuda.device_count()} CUDA device(s) exist.")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_name"] = props.name
        info["device_memory_gb"] = round(props.total_memory / 2**30, 2)
    else:
        info["device_name"] = "cpu"
        info["threads"] = torch.get_num_threads()
    return device, info


def library_versions() -> dict:
    """Versions of what the reconstruction runs on; read from package metadata where possible so
    that optional GPU libraries are not imported just to be named."""
    import torch
    from importlib import metadata

    def dist_version(*names):
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return None

    return {"python": sys.version.split()[0], "inrrecon": __version__, "numpy": np.__version__,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            "tinycudann": dist_version("tinycudann", "tiny-cuda-nn"),
            "astra": dist_version("astra-toolbox", "astra_toolbox"),
            "torchkbnufft": dist_version("torchkbnufft")}


class WorkerMonitor(Monitor):
    """Turns a method's per-iteration reports into progress and preview events, and the stop
    flag into `stop_requested()`.

    display(image, frame): maps the method's current image (physics units; frame: which one of a
    dynamic series, None for the middle) to a real [nz, ny, nx] array in the
    units the output will have (HU, 1/mm or MR magnitude)."""

    def __init__(self, emit: Emit, stop: threading.Event, job_dir: Path, grid, preview_every: int,
                 preview_mode: str, display: Callable[..., np.ndarray], t0: float,
                 info: Optional[dict] = None):
        super().__init__()
        self.emit, self.stop, self.job_dir, self.grid = emit, stop, Path(job_dir), grid
        self.preview_every, self.preview_mode, self.display, self.t0 = preview_every, preview_mode, display, t0
        self.info = dict(info or {})
        self.previews_written = 0
        self._preview_files: list[Path] = []
        self._stage = None
        self._stage_t0 = t0
        self._last_progress = -1e9

    def report(self, stage, iteration, total, loss=None, current=None, *, eta_known=True, **extra) -> None:
        super().report(stage, iteration, total, loss=loss, **extra)
        now = time.perf_counter()
        if stage != self._stage:
            self._stage, self._stage_t0 = stage, now
            self._stage_first_iteration = iteration
        preview_due = bool(self.preview_every) and current is not None and (
            iteration % self.preview_every == 0 or iteration == total)
        if preview_due or iteration in (1, total) or now - self._last_progress >= PROGRESS_MIN_INTERVAL_S:
            self._last_progress = now
            done = iteration - self._stage_first_iteration + 1
            per_iteration = (now - self._stage_t0) / done if done > 0 else None
            eta = per_iteration * max(total - iteration, 0) if eta_known and per_iteration and done > 1 else None
            numbers = {k: v for k, v in extra.items() if isinstance(v, (int, float, np.number))}
            self.emit({"event": "progress", "stage": stage, "iteration": int(iteration), "total": int(total),
                       "loss": None if loss is None else float(loss), "elapsed": round(now - self.t0, 3),
                       "eta": None if eta is None else round(eta, 3), **numbers})
        if preview_due:
            self.preview(stage, iteration, total, current())

    def preview(self, stage: str, iteration: int, total: int, image: np.ndarray) -> None:
        """Write the checkpoint (full image, physics units) and a small preview, then emit it."""
        image = np.asarray(image)
        save_checkpoint(self.job_dir, image, {"stage": stage, "iteration": iteration, "total": total,
                                              "grid": self.grid.to_dict(), **self.info})
        n_frames = image.size // int(np.prod(self.grid.shape)) if np.iscomplexobj(image) else 1
        # Dynamic MR: every preview shows the next frame, so the views play the series as it fits.
        frame = self.previews_written % n_frames if n_frames > 1 else None
        array, fields = preview_payload(self.display(image, frame), self.preview_mode)
        if frame is not None:
            fields.update({"frame": int(frame), "n_frames": int(n_frames)})
        self.previews_written += 1
        path = self.job_dir / f"preview_{self.previews_written:05d}.npy"
        atomic_save_npy(path, array)
        self._preview_files.append(path)
        while len(self._preview_files) > PREVIEWS_KEPT:
            old = self._preview_files.pop(0)
            try:
                old.unlink()
            except OSError:
                pass  # a reader still has it open (Windows); it is tiny, leave it
        self.emit({"event": "preview", "path": str(path), "stage": stage, "iteration": int(iteration),
                   "total": int(total), "dtype": "float32", **fields, "units": self.info.get("units"),
                   "grid": self.grid.to_dict()})

    def stop_requested(self) -> bool:
        return self.stop.is_set()


def save_checkpoint(job_dir: Path, image: np.ndarray, info: dict) -> Path:
    """JOB_DIR/checkpoint.npy (the current image, physics units: CT μ [nz,ny,nx] float32, MR
    complex64 [n_frames,nz,ny,nx]) and checkpoint.json (which iteration), both written atomically,
    so a killed worker leaves its latest state behind."""
    path = atomic_save_npy(Path(job_dir) / CHECKPOINT_FILE, image)
    atomic_write_text(Path(job_dir) / CHECKPOINT_INFO_FILE,
                      json.dumps(to_jsonable({**info, "time": time.time()}), indent=1))
    return path


# --- the job itself ------------------------------------------------------------------------

def _reconstruct_and_save(job, job_dir, device, emit, stop, t0) -> dict:
    import SimpleITK  # noqa: F401  (imported now, so that saving after a cancel is quick)
    from ..io.readers import read_measurement
    from ..methods.registry import METHODS, reconstruct

    measurement = read_measurement(job["measurement"])
    log.info("measurement %s: %s, data %s, grid %s", job["measurement"], measurement.modality,
             list(measurement.data.shape), measurement.grid.to_dict())
    prior = None
    if job["prior"] is not None and METHODS[job["method"]].uses_prior:
        from ..io.prior import load_prior_slices

        # With 2D data and a prior volume, NeRP may pick the prior's slice that matches the data.
        prior = load_prior_slices(job["prior"], measurement, series=job["prior_series"])
    elif job["prior"] is not None:
        # A baseline run must neither wait for nor fail on a prior it ignores; a warning, since
        # the user may have meant a method that uses it.
        users = ", ".join(name for name, spec in METHODS.items() if spec.uses_prior)
        log.warning("the prior %s is not used: method %s reconstructs from the data alone (a prior is used by: %s).",
                    job["prior"], job["method"], users)
    config = _load_config(job["config"], job["method"], measurement)
    if job["config_overrides"]:
        config = {**(config or {}), **job["config_overrides"]}
    if job["model"]:
        config = {**(config or {}), "model": job["model"]}
    output_plan = OutputPlan.for_job(job, measurement)
    fine_plan = None
    if job["upsample"] > 1:
        # Checked before the run, not after it: the output must fit in memory.
        fine_plan = output_plan.moved(grid=measurement.grid.refined(job["upsample"]))
        if int(np.prod(fine_plan.grid.shape)) > MAX_OUTPUT_VOXELS:
            raise InputError("upsample", f"{job['upsample']}x gives an output of {list(fine_plan.grid.shape)} voxels, "
                             f"more than {MAX_OUTPUT_VOXELS:,}.", "Use a smaller factor.")

    def new_monitor():
        return WorkerMonitor(emit, stop, job_dir, measurement.grid, job["preview_every"], job["preview"],
                             output_plan.display, t0, info={"method": job["method"], "units": output_plan.units})

    if job["pretrain_on"]:
        # Its own monitor: the result's history is the adaptation's alone.
        config = {**(config or {}), "model": str(_pretrain_first(job, measurement, config, device, new_monitor()))}
    monitor = new_monitor()
    result = reconstruct(measurement, job["method"], prior=prior, config=config, iterations=job["iterations"],
                         device=device, monitor=monitor)
    image = np.asarray(result.image)
    if result.cancelled:
        log.info("cancelled after %d iterations; saving the partial result", result.iterations)

    written_plan, written_image = output_plan, image
    warnings = list(result.extra.get("warnings") or [])  # the method's (e.g. a prior that does not match)
    # an `auto` parameter that fell back or could not reach the noise level
    warnings += [f"{key}: {c['warning']}" for key, c in auto_params.choices(result.extra).items() if "warning" in c]
    if fine_plan is not None:
        fine_image, warning = _field_on_finer_grid(result, measurement.grid, job["upsample"])
        if fine_image is None:
            warnings.append(warning)
        else:
            written_plan, written_image = fine_plan, fine_image
    # Dynamic MR: the times of the frames reconstructed (methods/registry.reconstruct records them).
    written = written_plan.write(written_image, result.extra.get("frame_times_s"), job["frame_files"])
    used_config = result.config or config or {}
    stem_path = output_stem(Path(job["output"]))
    config_path = atomic_write_text(stem_path.with_name(stem_path.name + ".config.json"),
                                    json.dumps(to_jsonable(used_config), indent=2) + "\n")
    change = None
    if prior is not None:
        # Where the new data moved the result away from the prior NeRP embedded (methods/change.py).
        from ..io.prior import prior_image
        from ..methods.change import change_map

        change = change_map(image, result.aligned_prior if result.aligned_prior is not None else prior_image(prior),
                            measurement.grid.shape)
    metrics = _metrics(job, measurement, image, result, change)
    aligned = result.aligned_prior
    if aligned is not None:
        # The prior as NeRP embedded it, registered to the data, in the output's units: the place
        # to check the alignment (and the change the data had to add).
        aligned_path = stem_path.with_name(stem_path.name + ".prior_aligned" + _extension(Path(job["output"])))
        output_plan.moved(path=aligned_path).write(np.asarray(aligned))
    change_path = None
    if change is not None:
        from ..io.volume import write_volume

        change_path = stem_path.with_name(stem_path.name + ".change" + _extension(Path(job["output"])))
        write_volume(change_path, change, measurement.grid)
    maps_path = _save_estimated_maps(measurement, stem_path)
    metrics_path = atomic_write_text(stem_path.with_name(stem_path.name + ".metrics.json"), json.dumps(to_jsonable({
        "method": job["method"], "config": str(config_path), "device": str(device), "measurement": job["measurement"],
        "prior": job["prior"] if prior is not None else None, "output": written["output"],
        "prior_series": job["prior_series"] if prior is not None else None,
        "model": (result.extra.get("model") or {}).get("folder"),  # DisINR: the model folder it used
        "cancelled": bool(result.cancelled), "iterations": int(result.iterations), "seconds": float(result.seconds),
        "metrics": metrics, "extra": result.extra, "history": result.history, "meta": job["meta"],
        "prior_aligned": str(aligned_path) if aligned is not None else None,
        "change_map": str(change_path) if change_path is not None else None,
        "output_grid": written_plan.grid.to_dict(), "warnings": warnings,
        "coil_maps": str(maps_path) if maps_path is not None else None}), indent=1) + "\n")
    event = {"event": "result", "output": written["output"], "units": output_plan.units, "metrics": metrics, "cancelled": bool(result.cancelled),
            "iterations": int(result.iterations), "seconds": round(time.perf_counter() - t0, 3),
            "method_seconds": round(float(result.seconds), 3), "config": str(config_path),
            "metrics_path": str(metrics_path), "method": job["method"], "grid": written_plan.grid.to_dict(),
            "meta": job["meta"]}
    if warnings:
        event["warnings"] = warnings
    chosen = auto_params.choices(result.extra)
    if chosen:
        event["chosen"] = chosen  # the parameters `auto` picked, and by which rule
    if aligned is not None:
        event["prior_aligned"] = str(aligned_path)
    if change_path is not None:
        event["change_map"] = str(change_path)
    search = (result.extra.get("prior_registration") or {}).get("slice_search")
    if search:
        # Which of the prior volume's slices NeRP embedded (2D data): worth showing, since a wrong
        # slice means other anatomy in the prior.
        event["prior_slice_offset_mm"] = search["offset_mm"]
    for key in ("sequence", "frame_times_s", "frames"):
        if key in written:
            event[key] = written[key]
    return event


def _save_estimated_maps(measurement, stem_path: Path):
    """Coil maps the reader estimated (raw data, or a file without maps) go next to the result
    as <stem>.coil_maps.npy (complex64 [n_coils, (nz,) ny, nx], no pickles), since they shaped
    it and a later run may want the same ones; None when the file had its own maps."""
    try:
        source = json.loads(measurement.attrs.get("source") or "{}")
    except (TypeError, ValueError):
        source = {}  # another tool's free-text `source`
    estimated = "coil_maps_estimated" in measurement.attrs or (isinstance(source, dict) and "coil_maps" in source)
    maps = getattr(measurement.geometry, "coil_maps", None)
    if not estimated or maps is None:
        return None
    return atomic_save_npy(stem_path.with_name(stem_path.name + ".coil_maps.npy"), np.asarray(maps, np.complex64))


def _field_on_finer_grid(result, grid, factor: int):
    """(image, None): the fitted field evaluated at the voxel centres of grid.refined(factor); or
    (None, warning) when there is no field (cancelled before it was built) or evaluating it fails,
    and the output stays on the measurement grid, so a finished run's result is never lost."""
    if result.field is None:
        return None, (f"upsample {factor}: the run ended before the field was built; "
                      "the output is on the measurement grid.")
    from ..methods.engine.render import render

    try:
        return render(result.field, grid, upsample=factor, times_s=result.extra.get("frame_times_s")), None
    except (RuntimeError, MemoryError) as exc:  # torch's out-of-memory errors are RuntimeErrors
        log.warning("evaluating the field %dx finer failed: %s", factor, exc)
        return None, (f"upsample {factor}: evaluating the field on the finer grid failed "
                      f"({str(exc).splitlines()[0]}); the output is on the measurement grid.")


def _pretrain_first(job, measurement, config, device, monitor) -> Path:
    """DisINR on `pretrain_on` (e.g. the patient's earlier fractions): pre-train a model on those
    files (stage "pretraining", progress like any stage) and write it next to the output as
    <stem>.model/ (the CLI's stays; the module's goes with its job folder). A stop request ends
    the pre-training after its current step; the model so far is written and the adaptation then
    stops at once, so the partial result is saved as for any cancel."""
    from ..io.model_dir import prepare_folder, save_model
    from ..io.readers import header_kind, scan_kind
    from ..methods.pretrain import PRETRAIN_FITTING, pretrain

    cohort = job["pretrain_on"]
    want = scan_kind(measurement.modality, measurement.grid)
    for path in cohort:  # checked before the pre-training, not after it
        kind = header_kind(path)
        if kind != want:
            raise InputError("pretrain_on", f"{Path(path).name} is {kind} and the measurement is {want}.",
                             "Pre-train on scans of the measurement's modality and dimension (e.g. its earlier fractions).")
    stem = output_stem(Path(job["output"]))
    target = stem.with_name(stem.name + ".model")
    try:
        folder = prepare_folder(target)
    except InputError as exc:
        raise InputError("output", f"the model pre-trained on pretrain_on is written to {target} (the output's name "
                         f"+ .model), and {exc.problem}", "Choose another output name, or move that folder.") from None
    if config and config.get("model"):
        log.info("the config's model %s is replaced by the one pre-trained on pretrain_on", config["model"])
    # One config serves the pre-training and the adaptation; what the pre-training loop does not
    # implement (methods/pretrain.py refuses it) is set aside for the pre-training only.
    config = config or {}
    changed = {k: config[k] for k, v in PRETRAIN_FITTING.items() if k in config and config[k] != v}
    if changed:
        log.info("pre-training with %s (the adaptation keeps %s)", PRETRAIN_FITTING, changed)
    log.info("pre-training on %d measurement(s) first: %s", len(cohort), ", ".join(cohort))
    field, meta = pretrain(cohort, config={**config, **PRETRAIN_FITTING}, device=device, monitor=monitor)
    save_model(folder, field.shared_state(), meta)
    t = meta["training"]
    log.info("model written to %s: %d of %d steps, loss %.4g -> %.4g, %.0f s", folder, t["steps"], t["planned_steps"],
             t["loss_first"] or 0.0, t["loss_last"] or 0.0, t["seconds"])
    return folder


def _load_config(spec, method: str, measurement):
    """None -> None (the method's own defaults). INR methods: preset name, file or object through
    methods.presets.load_config (checked, merged onto the preset). Classical methods have no
    presets: an object is passed as is, a string must be a JSON/YAML file holding one."""
    if spec is None:
        return None
    from ..methods.registry import METHODS

    target = METHODS[method].targets.get(measurement.modality, "")
    if not target.startswith("classical"):
        from ..methods.presets import load_config, measurement_context

        context = measurement_context(measurement.modality, measurement.geometry.type, measurement.grid)
        rule = METHODS[method].preset_rule
        return load_config(spec, method=method, default=rule(context["modality"], context["cone_3d"]) if rule else None,
                           **context)
    if isinstance(spec, dict):
        return dict(spec)
    path = Path(spec)
    if not path.is_file():
        raise InputError("config", f"{spec!r} is not a file; method {method!r} has no presets.",
                         "Give a JSON/YAML file or an object with the method's settings, or null for its defaults.")
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError("config", f"{path} is not valid JSON/YAML ({exc}).") from None
    if not isinstance(loaded, dict):
        raise InputError("config", f"{path} must hold an object (key: value pairs).")
    return loaded


def output_stem(path: Path) -> Path:
    """out.nii.gz -> out, out.seq.nrrd -> out, out.nrrd -> out (same folder)."""
    name = path.name
    for ext in (".nii.gz", ".seq.nrrd"):
        if name.lower().endswith(ext):
            return path.with_name(name[: -len(ext)])
    return path.with_name(path.stem)


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in (".nii.gz",):
        if name.endswith(ext):
            return path.name[-len(ext):]
    return path.suffix


class OutputPlan:
    """How the method's image becomes the output file: units (CT HU or μ, MR magnitude) and, for
    dynamic MR, one file per frame."""

    def __init__(self, path: Path, grid, modality: str, units: str, mu_water: Optional[float]):
        self.path, self.grid, self.modality, self.units, self.mu_water = path, grid, modality, units, mu_water

    @classmethod
    def for_job(cls, job: dict, measurement) -> "OutputPlan":
        path = Path(job["output"])
        if not _extension(path):
            raise InputError("output", f"{path} has no file extension, so its format is unknown.",
                             "End it with .nrrd, .nii.gz or .mha.")
        if not path.parent.is_dir():
            raise InputError("output", f"the folder {path.parent} does not exist.", "Create it first.")
        if measurement.modality == "MR":
            return cls(path, measurement.grid, "MR", "magnitude", None)
        if job["output_units"] == "mu":
            return cls(path, measurement.grid, "CT", "1/mm", None)
        # HU with the job's mu_water, else the measurement's, else the documented default (the
        # same one load_prior used to turn an HU prior into μ, so prior and result agree).
        mu_water = job["mu_water_per_mm"] or measurement.mu_water_per_mm
        if mu_water is None:
            from ..io.volume import MU_WATER_PER_MM

            mu_water = MU_WATER_PER_MM
            log.info("output in HU with the default mu_water = %g /mm", mu_water)
        return cls(path, measurement.grid, "CT", "HU", mu_water)

    def moved(self, path: Optional[Path] = None, grid=None) -> "OutputPlan":
        """The same units, written to another path and/or on another grid."""
        return OutputPlan(path or self.path, grid or self.grid, self.modality, self.units, self.mu_water)

    def display(self, image: np.ndarray, frame: Optional[int] = None) -> np.ndarray:
        """A real [nz, ny, nx] array in output units (dynamic MR: frame `frame`, default the middle one)."""
        image = np.asarray(image)
        if self.modality == "MR":
            frames = image.reshape((-1,) + tuple(self.grid.shape))
            index = frames.shape[0] // 2 if frame is None else int(frame) % frames.shape[0]
            return np.abs(frames[index]).astype(np.float32)
        return self._ct_units(image.reshape(self.grid.shape))

    def _ct_units(self, mu: np.ndarray) -> np.ndarray:
        if self.units != "HU":
            return mu.astype(np.float32)
        from ..io.volume import mu_to_hu

        return np.asarray(mu_to_hu(mu, self.mu_water), dtype=np.float32)

    def write(self, image: np.ndarray, times_s=None, frame_files: bool = False) -> dict:
        """Write the output file(s); returns {"output": path} and, for dynamic MR, "sequence" (the
        4D .seq.nrrd Slicer opens as a Sequence, frame times `times_s`, default the frame index)
        and, with `frame_files`, "frames" (one file per frame)."""
        if self.modality == "CT":
            self._write(self.path, self._ct_units(image.reshape(self.grid.shape)))
            return {"output": str(self.path)}
        frames = np.abs(image.reshape((-1,) + tuple(self.grid.shape))).astype(np.float32)
        if frames.shape[0] == 1:
            self._write(self.path, frames[0])
            return {"output": str(self.path)}
        from ..io.sequence import write_sequence

        # Dynamic MR: the series as one Sequence file, and at the output path the mean over time,
        # which is what a static scan of the same data shows.
        times = np.arange(frames.shape[0], dtype=float) if times_s is None else np.asarray(times_s, dtype=float)
        stem, ext = output_stem(self.path), _extension(self.path)
        sequence = write_sequence(stem.with_name(stem.name + ".seq.nrrd"), frames, self.grid, times)
        out = {"output": str(self.path), "sequence": str(sequence), "frame_times_s": times.tolist()}
        if self.path.name.lower().endswith(".seq.nrrd"):
            return {**out, "output": str(sequence)}
        self._write(self.path, frames.mean(axis=0))
        if frame_files:
            out["frames"] = []
            for n, frame in enumerate(frames):
                p = stem.with_name(f"{stem.name}_frame{n:03d}{ext}")
                self._write(p, frame)
                out["frames"].append(str(p))
        return out

    def _write(self, path: Path, array: np.ndarray) -> None:
        from ..io.volume import write_volume

        write_volume(path, array, self.grid)  # atomic: temporary name, then rename


def _metrics(job: dict, measurement, image: np.ndarray, result, change=None) -> dict:
    """Final loss always; image metrics against `reference` (inside `roi` too) when given, and
    with an ROI how well the `change` map finds it (change_auc).
    Computed in physics units (CT μ, MR magnitude)."""
    metrics = {}
    losses = [h["loss"] for h in result.history if isinstance(h, dict) and h.get("loss") is not None]
    if losses:
        metrics["final_loss"] = float(losses[-1])
    if job["reference"] is None:
        return metrics
    from ..io.prior import load_prior
    from ..io.volume import read_volume
    from ..methods.metrics import image_metrics, scale_to_reference

    grid = measurement.grid
    reference = np.asarray(load_prior(job["reference"], measurement))
    if measurement.modality == "MR":
        # MR magnitudes have no absolute scale: the result after its least-squares scale onto
        # the reference, as `inrrecon bench` scores them
        frames = np.abs(image.reshape((-1,) + tuple(grid.shape)))
        reference = np.abs(reference).reshape(grid.shape)
        x = scale_to_reference(frames[0] if frames.shape[0] == 1 else frames,
                               reference if frames.shape[0] == 1 else np.broadcast_to(reference, frames.shape))
    else:
        x = image.reshape(grid.shape)
    if reference.size != x.size:
        log.warning("reference %s has %s values, the result %s: no image metrics", job["reference"],
                    list(reference.shape), list(x.shape))
        return metrics
    reference = reference.reshape(x.shape)
    roi = None
    if job["roi"] is not None:
        roi, _ = read_volume(job["roi"])
        roi = np.asarray(roi)
        if roi.size != int(np.prod(grid.shape)):
            raise InputError("roi", f"has shape {list(roi.shape)}, the measurement grid {list(grid.shape)}.",
                             "Resample the ROI label onto the measurement grid.")
        if change is not None:
            from ..methods.metrics import roc_auc

            metrics["change_auc"] = roc_auc(change, roi.reshape(grid.shape) > 0)
        roi = np.broadcast_to(roi.reshape(grid.shape) > 0, x.shape)
    metrics.update(image_metrics(x, reference, roi=roi))
    return metrics
