"""What every INR method does around its own part: the config, the problem, the model, the result.

    run = InrRun("inr", measurement, config, iterations, device, monitor)
    with run.guard():                       # a GPU out of memory becomes a DeviceError with a fix
        problem = run.open_problem()
        model = run.new_model(problem.quick_estimate())
        return run.fit(model)               # fit_measurements, then the ReconResult

A method with a prior (nerp.py) aligns and embeds it between new_model and fit.
"""

from __future__ import annotations

import contextlib
import time

import torch

from ...errors import DeviceError, InputError
from ...fields import build_field, resolve_field_config
from .. import options
from ..monitor import Monitor
from ..presets import load_config, measurement_context
from ..result import ReconResult
from .coords import CoordinateFrame
from .fitting import embed_image, fit_measurements
from .model import FieldImage
from .problem import Problem, robust_max
from .render import render

OOM_FIX = ("Reduce the work per step: set points_per_chunk (e.g. 65536) to evaluate the field in chunks, "
           "raise subsets (fewer views per step), lower the hash table size (log2_hashmap_size) or the "
           "network width, or run on the CPU.")


def inr_config(method: str, measurement, config, iterations, field_shape=None) -> dict:
    """The full config of an INR method on this measurement: its default preset (or the one the
    config names) updated with the user's keys, checked (options.INR), the field made explicit
    for the measurement's grid (or for `field_shape`, zyx: DisINR's model frame)."""
    from ..registry import METHODS

    context = measurement_context(measurement.modality, measurement.geometry.type, measurement.grid)
    cfg = load_config(dict(config or {}), method=method,
                      default=METHODS[method].preset_rule(context["modality"], context["cone_3d"]), **context)
    if iterations is not None:
        cfg["iterations"] = int(iterations)
    # The preset's own values too (a preset file edited by hand).
    cfg = options.check_config(cfg, options.INR, method, defaults=False)
    cfg["admm"] = options.check_config(cfg["admm"], options.ADMM, "admm", defaults=False, prefix="admm.")
    if measurement.modality == "CT" and cfg["loss"] == "rel_l2":
        raise InputError("config loss", "'rel_l2' is meant for MR k-space.", "Use 'l2', 'l1' or 'fls' for CT.")
    if measurement.modality == "MR" and cfg["loss"] == "fls":
        raise InputError("config loss", "'fls' is a CT loss (ramp filter on sinograms).",
                         "Use 'rel_l2' or 'l2' for MR.")
    cfg["field"] = resolve_field_config(cfg["field"], measurement.grid.shape if field_shape is None else field_shape)
    return cfg


class InrRun:
    """One run of an INR method. Keeps the config (the result records it whole), the start time,
    the problem, the numbers for the result's `extra` and the aligned prior (NeRP). frames: the
    method reads multi-frame MR data (the dynamic methods); otherwise one frame is required."""

    def __init__(self, method: str, measurement, config, iterations, device, monitor, *, frames: bool = False):
        self.measurement = measurement
        self.monitor = monitor or Monitor()
        self.device = torch.device(device)
        self.frames = frames
        self.cfg = inr_config(method, measurement, config, iterations)
        self.start = time.perf_counter()
        self.problem = None
        self.axes = None  # the fitting grid's coordinates, set with the model
        self.times_s = None  # a spatiotemporal model's frame times
        self.extra: dict = {}
        self.aligned_prior = None

    @contextlib.contextmanager
    def guard(self):
        try:
            yield self
        except torch.cuda.OutOfMemoryError as exc:
            raise DeviceError("out-of-memory", f"The GPU ran out of memory ({str(exc).splitlines()[0]}). {OOM_FIX}") \
                from None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def open_problem(self) -> Problem:
        self.problem = Problem(self.measurement, self.cfg, self.device, frames=self.frames)
        return self.problem

    def new_model(self, reference: torch.Tensor, times_s=None) -> FieldImage:
        """A freshly initialised model whose unit is set by `reference` (an image in physics units:
        the prior, or a quick estimate from the data): its robust maximum becomes 1. times_s: the
        frame times of a spatiotemporal model (a field of space and time, one frame per time)."""
        scale = robust_max(reference)
        if not scale > 0:
            scale = float(reference.abs().max()) or 1.0
        torch.manual_seed(int(self.cfg["seed"]))
        grid = self.measurement.grid
        span = None if times_s is None else (float(times_s[0]), float(times_s[-1]))
        frame = CoordinateFrame.of_grid(grid, span, self.cfg["temporal_extent"] if span is not None else 1.0)
        field = build_field(self.cfg["field"], frame.n_dims, 2 if self.problem.mr else 1, self.device)
        return self.adopt(field, frame, scale, times_s)

    def adopt(self, field, frame: CoordinateFrame, scale: float, times_s=None) -> FieldImage:
        """The model of `field` (built or loaded by the method) in `frame`, `scale` physics units
        per field unit; the problem's data are normalised by the same scale."""
        self.problem.set_scale(scale)
        self.extra["intensity_scale"] = scale
        model = FieldImage(field, frame, intensity_scale=scale, complex_output=self.problem.mr)
        self.axes = frame.spatial_axes(self.measurement.grid, 1, self.device)
        if times_s is not None:
            self.times_s = [float(t) for t in times_s]
            self.axes = self.axes + [frame.time_axis(self.times_s, self.device)]
        return model

    def embed(self, model, image: torch.Tensor) -> bool:
        """Fit the model to `image` (physics units, the grid's shape). Returns True if cancelled."""
        _, cancelled = embed_image(model, self.axes, self.problem, image / model.intensity_scale, self.cfg,
                                   self.monitor)
        self.extra["embed_seconds"] = self.elapsed()
        return cancelled

    def fit(self, model, embedded: bool = False, times_out=None) -> ReconResult:
        """Fit the model to the data; the result at `times_out` (a spatiotemporal model; default:
        its frame times)."""
        steps, cancelled, fit_extra = fit_measurements(model, self.axes, self.problem, self.cfg, self.monitor,
                                                       embedded=embedded, times_s=self.times_s)
        self.extra.update(fit_extra)
        return self.result(model, steps, cancelled, times_out)

    def result(self, model, steps: int, cancelled: bool, times_s=None) -> ReconResult:
        """The result on the measurement grid; a spatiotemporal model at `times_s` (default: the
        frame times it was fitted at), which extra["frame_times_s"] records."""
        times_s = self.times_s if times_s is None else [float(t) for t in times_s]
        if times_s is not None:
            self.extra["frame_times_s"] = times_s
        return ReconResult(image=render(model, self.measurement.grid, times_s=times_s), config=self.cfg,
                           iterations=steps, seconds=self.elapsed(), cancelled=cancelled,
                           history=list(self.monitor.history), extra=self.extra, aligned_prior=self.aligned_prior,
                           field=model)

    def stopped_early(self, image) -> ReconResult:
        """Cancelled before a model exists: `image` (e.g. a reference reconstruction) is the result."""
        return ReconResult(image=image, config=self.cfg, iterations=0, seconds=self.elapsed(), cancelled=True,
                           history=list(self.monitor.history), extra=self.extra)
