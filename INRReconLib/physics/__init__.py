"""Forward models: CT projectors and MR encoding operators, and the geometries they read.

Operators are physics.linear.LinearOperator objects built from (geometry, grid, device, backend)
with `forward`, `adjoint` and `normal` on torch tensors; gradients through `forward` are the
adjoint. The backend is the config key `projector` (CT: torch | astra) or `nufft` (MR:
torchkbnufft | finufft) of every method, "auto" by default. Backends are imported by the operator
modules themselves, so importing this package does not import torch.
"""

from .ct_geometry import CTGeometry, cone_geometry, fan_geometry, parallel_geometry
from .grid import ImageGrid
from .mr_geometry import MRGeometry


def operator_for(measurement, device="cpu", *, projector="auto", nufft="auto", **options):
    """The forward operator that produced `measurement.data` (a physics.linear.LinearOperator:
    CTProjector with the backend `projector`, or MROperator with the NUFFT `nufft`; `options`
    go to MROperator, e.g. toeplitz)."""
    if measurement.modality == "CT":
        from .ct_projector import CTProjector

        if options:
            raise TypeError(f"CTProjector takes no options {sorted(options)}")

        return CTProjector(measurement.geometry, measurement.grid, device=device, backend=projector)
    from .mr_operator import MROperator

    return MROperator(measurement.geometry, measurement.grid, device=device, nufft=nufft, **options)


__all__ = ["CTGeometry", "ImageGrid", "MRGeometry", "cone_geometry", "fan_geometry", "operator_for",
           "parallel_geometry"]
