"""Every reconstruction method, by the name the CLI, the worker and the Slicer module use.

A method is a function
    fn(measurement, *, prior, config, iterations, device, monitor) -> ReconResult
with `prior` a NumPy image on the measurement grid in physics units (or None), `config` a dict
(the method's defaults updated with the user's), `iterations` an int or None (method default),
`device` a torch.device and `monitor` a Monitor. Methods are imported lazily so that listing them
costs nothing.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass

from ..errors import InputError
from .monitor import Monitor
from .result import ReconResult


@dataclass(frozen=True)
class MethodSpec:
    name: str
    targets: dict  # modality -> "module:function" inside INRReconLib.methods
    summary: str
    uses_prior: bool = False
    # The result carries a continuous field (ReconResult.field) that can be evaluated on a finer
    # grid than the measurement's; the other methods reconstruct voxels of that grid only.
    field: bool = False

    @property
    def modalities(self) -> tuple:
        return tuple(self.targets)


METHODS = {
    s.name: s
    for s in [
        MethodSpec("fbp", {"CT": "classical_ct:fbp"}, "FBP (parallel/fan) or FDK (cone), ramp or Hann filter"),
        MethodSpec("sirt", {"CT": "classical_ct:sirt"}, "SIRT, non-negative"),
        MethodSpec("cgls", {"CT": "classical_ct:cgls"}, "CGLS on the least-squares problem"),
        MethodSpec("tv", {"CT": "classical_ct:tv", "MR": "classical_mr:tv"}, "total variation, Chambolle-Pock PDHG"),
        MethodSpec("adjoint", {"MR": "classical_mr:adjoint"},
                   "density-compensated adjoint NUFFT / zero-filled IFFT, coil-combined"),
        MethodSpec("cgsense", {"MR": "classical_mr:cgsense"}, "CG-SENSE"),
        MethodSpec("inr", {"CT": "nerp:inr", "MR": "nerp:inr"}, "INR without prior (random init)", field=True),
        MethodSpec("nerp", {"CT": "nerp:nerp", "MR": "nerp:nerp"},
                   "NeRP: embed the prior in the INR, then fit the data", uses_prior=True, field=True),
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
    result = fn(measurement, prior=prior, config=dict(config or {}), iterations=iterations, device=device,
                monitor=monitor)
    result.method = method
    result.seconds = time.perf_counter() - start
    if not result.history:
        result.history = list(monitor.history)
    return result
