"""Forward models: CT projectors and MR encoding operators, and the geometries they read.

Operators are objects built from (geometry, grid, device) with `forward` and `adjoint` on torch
tensors; gradients through `forward` are the adjoint. Backends are imported by the operator
modules themselves, so importing this package does not import torch.
"""

from .ct_geometry import CTGeometry, cone_geometry, fan_geometry, parallel_geometry
from .grid import ImageGrid
from .mr_geometry import MRGeometry


def operator_for(measurement, device="cpu"):
    """The forward operator that produced `measurement.data` (CTProjector or MROperator)."""
    if measurement.modality == "CT":
        from .ct_projector import CTProjector

        return CTProjector(measurement.geometry, measurement.grid, device=device)
    from .mr_operator import MROperator

    return MROperator(measurement.geometry, measurement.grid, device=device)


__all__ = ["CTGeometry", "ImageGrid", "MRGeometry", "cone_geometry", "fan_geometry", "operator_for",
           "parallel_geometry"]
