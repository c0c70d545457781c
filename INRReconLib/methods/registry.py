"""Every reconstruction method, once: the single source of truth the CLI, the worker, the Slicer
module and the settings read.

A method is a function
    fn(measurement, *, prior, config, iterations, device, monitor) -> ReconResult
with `prior` a NumPy image on the measurement grid in physics units (or None), `config` a dict
(the user's settings; the method fills in its defaults), `iterations` an int or None (method
default), `device` a torch.device and `monitor` a Monitor. Its MethodSpec says what it reads,
what it returns and which config keys it has (options.py). Methods are imported lazily, and
this file imports no torch, so listing them costs nothing (the Slicer module does it at load).

Adding a method: one file in methods/ with the function, one MethodSpec below (CONTRIBUTING.md).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import InputError
from . import options as opt
from .monitor import Monitor
from .presets import default_preset
from .result import ReconResult

READS = ("measurement", "prior", "frames", "model")
RETURNS = ("image", "field", "time series")


@dataclass(frozen=True)
class MethodSpec:
    """name: as the CLI, the worker and the module call it. targets: modality -> "module:function"
    inside INRReconLib.methods. reads: what it takes besides the measurement ("prior": needs a
    prior image; "frames": reads dynamic, multi-frame data; "model": a pre-trained model folder,
    the config key `model`). returns: "image" (voxels of the
    measurement grid), "field" (also a continuous field, ReconResult.field, that renders on a finer
    grid) or "time series". options: modality -> its config keys (options.Option); a key that
    `needs` what the method does not read (a prior) is accepted and ignored, so that one preset
    serves inr and nerp. iterative: it takes an iteration count. preset_rule: (modality,
    cone_3d) -> the preset its config starts from, for the methods configured by presets (their
    options' defaults are that preset's values)."""

    name: str
    targets: dict
    summary: str
    options: dict
    reads: tuple = ("measurement",)
    returns: tuple = ("image",)
    iterative: bool = True
    preset_rule: Optional[Callable] = None

    @property
    def modalities(self) -> tuple:
        return tuple(self.targets)

    @property
    def uses_prior(self) -> bool:
        return "prior" in self.reads

    @property
    def field(self) -> bool:
        return "field" in self.returns

    def option_keys(self) -> list:
        """The config keys that mean something for the method, over all its modalities, in
        declaration order (not those that need what it does not read)."""
        return list(dict.fromkeys(o.key for opts in self.options.values() for o in opts
                                  if not o.needs or o.needs in self.reads))

    def defaults(self, modality: str, cone_3d: bool = False) -> dict:
        """The config the method runs with when the user sets nothing."""
        if self.preset_rule is not None:
            from .presets import load_config

            return load_config(self.preset_rule(modality, cone_3d), modality=modality, cone_3d=cone_3d)
        return opt.defaults(self.options[modality])


def _inr(name, summary, modalities=("CT", "MR"), **kw):
    kw.setdefault("returns", ("image", "field"))
    kw.setdefault("preset_rule", default_preset)
    return MethodSpec(name, {m: f"{name}:{name}" for m in modalities}, summary, {m: opt.INR for m in modalities},
                      **kw)


def _dynamic_preset(modality, cone_3d=False):
    # The published stinr-mr preset needs a GPU (a 2^24 table); the fast one runs on a CPU.
    return "stinr-fast"


def _disinr_preset(modality, cone_3d=False):
    # The published disinr-ct / disinr-mr presets are GPU-sized; the fast ones run on a CPU.
    return "disinr-ct-fast" if modality == "CT" else "disinr-mr-fast"


METHODS = {
    s.name: s
    for s in [
        _inr("nerp", "NeRP: embed the prior in the INR, then fit the data", reads=("measurement", "prior")),
        _inr("inr", "INR without prior (random init)"),
        _inr("stinr", "spatiotemporal INR of (x, y, t) fitted to all frames of dynamic MR at once", ("MR",),
             reads=("measurement", "frames"), returns=("time series", "field"), preset_rule=_dynamic_preset),
        _inr("disinr", "DisINR: a population prior pre-trained from raw measurements (inrrecon pretrain), frozen; "
             "a subject encoder fitted to the scan", reads=("measurement", "model"), preset_rule=_disinr_preset),
        MethodSpec("fbp", {"CT": "classical_ct:fbp"}, "FBP (parallel/fan) or FDK (cone), ramp or Hann filter",
                   {"CT": opt.FBP}, iterative=False),
        MethodSpec("sirt", {"CT": "classical_ct:sirt"}, "SIRT, non-negative", {"CT": opt.SIRT}),
        MethodSpec("cgls", {"CT": "classical_ct:cgls"}, "CGLS on the least-squares problem", {"CT": opt.CGLS}),
        MethodSpec("tv", {"CT": "classical_ct:tv", "MR": "classical_mr:tv"}, "total variation, Chambolle-Pock PDHG",
                   {"CT": opt.TV_CT, "MR": opt.TV_MR}, reads=("measurement", "frames")),
        MethodSpec("adjoint", {"MR": "classical_mr:adjoint"},
                   "density-compensated adjoint NUFFT / zero-filled IFFT, coil-combined", {"MR": opt.ADJOINT},
                   reads=("measurement", "frames"), iterative=False),
        MethodSpec("cgsense", {"MR": "classical_mr:cgsense"}, "CG-SENSE", {"MR": opt.CGSENSE},
                   reads=("measurement", "frames")),
        MethodSpec("grasp", {"MR": "classical_mr:grasp"}, "GRASP-like: temporal TV alone, dynamic MR",
                   {"MR": opt.GRASP}, reads=("measurement", "frames"), returns=("time series",)),
        MethodSpec("lps", {"MR": "classical_mr:lps"}, "L+S: low rank plus temporally sparse, dynamic MR",
                   {"MR": opt.LPS}, reads=("measurement", "frames"), returns=("time series",)),
    ]
}


def method_names(modality: str | None = None) -> list[str]:
    return [n for n, s in METHODS.items() if modality is None or modality in s.modalities]


def get_method(name: str, modality: str):
    """The callable for `name`, checked against the measurement's modality."""
    spec = METHODS.get(name)
    if spec is None:
        raise InputError("method", f"unknown method {name!r}.", f"Choose one of: {', '.join(METHODS)}.")
    if modality not in spec.modalities:
        raise InputError("method", f"{name!r} does not apply to {modality} data.",
                         f"For {modality} use one of: {', '.join(method_names(modality))}.")
    module_name, func = spec.targets[modality].split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, func)


def reconstruct(measurement, method: str, *, prior=None, config=None, iterations=None, device="cpu",
                monitor: Monitor | None = None) -> ReconResult:
    """Run one method on one measurement; the one entry point for CLI, worker and Slicer."""
    import torch

    fn = get_method(method, measurement.modality)
    if METHODS[method].uses_prior and prior is None:
        raise InputError("prior", f"method {method!r} needs a prior image.",
                         "Give an earlier scan of the patient (--prior IMAGE), or use method 'inr'.")
    if iterations is not None and int(iterations) < 1:
        raise InputError("iterations", f"must be a positive integer, got {iterations}.")
    monitor = monitor or Monitor()
    device = torch.device(device) if not isinstance(device, torch.device) else device
    start = time.perf_counter()
    config = dict(config or {})
    binning = None
    if "frames" in METHODS[method].reads and config.get("spokes_per_frame"):
        from ..physics.mr_frames import bin_spokes

        measurement, binning = bin_spokes(measurement, config["spokes_per_frame"])
    if "time series" in METHODS[method].returns and len(measurement.data) < 2:
        static = ", ".join(n for n, s in METHODS.items() if measurement.modality in s.modalities
                           and "time series" not in s.returns and "prior" not in s.reads)
        raise InputError("/data", f"has one frame: {method} reconstructs a time series.",
                         "Bin a continuous acquisition into frames (spokes_per_frame, needs per-spoke times), "
                         f"or use {static} for a static image.")
    result = fn(measurement, prior=prior, config=config, iterations=iterations, device=device, monitor=monitor)
    if binning is not None:
        result.extra["binning"] = binning
    if "frames" in METHODS[method].reads and measurement.modality == "MR" and "frame_times_s" not in result.extra \
            and len(measurement.data) > 1:
        from ..physics.mr_frames import frame_times

        # The times of the frames reconstructed (after binning): what a time series is written with.
        result.extra["frame_times_s"] = frame_times(measurement.geometry).tolist()
    result.method = method
    result.seconds = time.perf_counter() - start
    if not result.history:
        result.history = list(monitor.history)
    return result
