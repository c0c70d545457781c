"""A fitted field with the meaning of its output declared."""

from __future__ import annotations

from torch import nn

from .coords import CoordinateFrame


class FieldImage(nn.Module):
    """field: coordinates in (-1, 1) -> values (fields.build_field); frame: where its coordinates
    come from; intensity_scale: physics units per field unit (μ in 1/mm for CT, the k-space
    scale for MR); complex_output: the two output channels are the real and imaginary part (MR).

    Its parameters are the field's, in the same order, so an optimiser over either is the same."""

    def __init__(self, field: nn.Module, frame: CoordinateFrame, *, intensity_scale: float, complex_output: bool):
        super().__init__()
        self.field = field
        self.frame = frame
        self.intensity_scale = float(intensity_scale)
        self.complex_output = bool(complex_output)

    def forward(self, coords):
        return self.field(coords)

    def forward_grid(self, axes):
        return self.field.forward_grid(axes)
