"""Regular lattices of points: the reconstruction grid as seen by a field."""

from __future__ import annotations

import torch


def lattice_points(axes) -> torch.Tensor:
    """axes: 1D coordinate tensors [x, y(, z)] -> every point of their product, [N, d],
    in C order of ((z,) y, x): x varies fastest, as in a NumPy image."""
    mesh = torch.meshgrid(*axes[::-1], indexing="ij")[::-1]
    return torch.stack([m.reshape(-1) for m in mesh], dim=1)
