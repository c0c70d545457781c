"""Evaluating a FieldImage: on the fitting grid (with autograd, for the loops) and on any grid
or time points (for results and previews), in physics units."""

from __future__ import annotations

import math

import numpy as np
import torch

from ...fields.lattice import lattice_points


def evaluate(field, axes, chunk: int, grad: bool) -> torch.Tensor:
    """The field on the product grid of `axes`, [N, n_out]; in chunks of `chunk` points if the
    grid has more (chunk <= 0: all at once, through the field's fast whole-grid path)."""
    n_points = math.prod(a.numel() for a in axes)
    if chunk <= 0 or n_points <= chunk:
        return field.forward_grid(axes)
    parts = []
    for c in lattice_points(axes).split(chunk):
        if grad:
            # Recompute activations in backward: memory of one chunk instead of the whole grid.
            parts.append(torch.utils.checkpoint.checkpoint(field, c, use_reentrant=False))
        else:
            parts.append(field(c))
    return torch.cat(parts, 0)


def to_image(values: torch.Tensor, shape, complex_out: bool) -> torch.Tensor:
    """Field values [N, n_out] in lattice order -> an image tensor: real `shape`, or complex
    [n_frames, nz, ny, nx] for `shape` (nz, ny, nx) (MR: one frame) or (n_frames, nz, ny, nx)."""
    if complex_out:
        return torch.complex(values[:, 0], values[:, 1]).reshape(-1, *shape[-3:])
    return values[:, 0].reshape(*shape)


def raster_fn(model, axes, shape, chunk: int):
    """() -> the model on `axes` as a normalised image tensor, autograd-aware (the fitting loops)."""
    return lambda: to_image(evaluate(model, axes, chunk, grad=True), shape, model.complex_output)


@torch.no_grad()
def render(model, grid, upsample: int = 1, chunk: int = 262144, times_s=None) -> np.ndarray:
    """The model on `grid` (upsample u: u× finer, same extent), in physics units.

    CT: float32 [nz', ny', nx'] μ (1/mm); MR: complex64 [1, nz', ny', nx']. With `times_s` (a
    spatiotemporal model): one frame per time, [n_times, nz', ny', nx'] (CT) or complex
    [n_times, nz', ny', nx'] (MR). `grid` may be any grid with the fitted grid's orientation and
    dimension (a 2D field: in its own plane); coords.CoordinateFrame.spatial_axes says so otherwise."""
    device = next(model.parameters()).device
    u = int(upsample)
    axes = model.frame.spatial_axes(grid, u, device)
    nz, ny, nx = grid.shape
    shape = (nz if grid.is_2d else nz * u, ny * u, nx * u)
    if times_s is not None:
        # The time axis is the product grid's slowest: frame by frame in the values.
        axes = axes + [model.frame.time_axis(times_s, device)]
        shape = (len(axes[-1]),) + shape
    values = evaluate(model, axes, chunk, grad=False)
    image = to_image(values, shape, model.complex_output)
    image = (image * model.intensity_scale).cpu().numpy()
    return image.astype(np.complex64 if np.iscomplexobj(image) else np.float32)
