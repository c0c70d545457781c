"""Forward differences and their exact adjoint, along any axes: space (2D, 3D) and time alike.

    gradient(u, axes)[k]_i = w_k (u_{i+1} − u_i) along axes[k], 0 in the last row (Neumann)
    gradient_adjoint(q, axes) = Dᵀ q = −div q

The weights w_k (default 1) let anisotropic voxels count as h_min/h_axis (classical CT TV).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def _weights(axes, weights):
    return [1.0] * len(axes) if weights is None else list(weights)


def gradient(u: torch.Tensor, axes: Sequence[int], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Forward differences of u along each of `axes`, stacked first: [len(axes), *u.shape]."""
    out = []
    for axis, w in zip(axes, _weights(axes, weights)):
        d = torch.zeros_like(u)
        n = u.shape[axis]
        if n > 1:
            d.narrow(axis, 0, n - 1).copy_(u.narrow(axis, 1, n - 1) - u.narrow(axis, 0, n - 1))
        out.append(d * w if w != 1.0 else d)
    return torch.stack(out)


def gradient_adjoint(q: torch.Tensor, axes: Sequence[int], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """The exact transpose of `gradient` (minus the divergence): q [len(axes), *shape] -> shape."""
    out = torch.zeros_like(q[0])
    for qa, axis, w in zip(q, axes, _weights(axes, weights)):
        n = qa.shape[axis]
        if n == 1:
            continue
        qa = qa * w if w != 1.0 else qa
        # (Dᵀ q)_i = q_{i-1} − q_i, with q_{n-1} unused (it multiplies the zero last row)
        out.narrow(axis, 0, n - 1).sub_(qa.narrow(axis, 0, n - 1))
        out.narrow(axis, 1, n - 1).add_(qa.narrow(axis, 0, n - 1))
    return out
