"""Krylov solvers and the power method, on any callables that map tensors to tensors.

The dot products are real parts of ⟨a, b⟩, so the same code serves real (CT) and complex (MR)
problems. Every solver runs under no_grad: they solve linear problems, autograd is not wanted.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

# callback(iteration, x, residual) -> True to stop after this iteration; residual is the
# solver's own measure (CGLS: the data residual y − A x; CG: the relative residual norm).
Callback = Callable[[int, torch.Tensor, object], Optional[bool]]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.real(torch.vdot(a.reshape(-1), b.reshape(-1)))


@torch.no_grad()
def cgls(forward: Callable, adjoint: Callable, y: torch.Tensor, x0: torch.Tensor, n_iter: int, *,
         damping: float = 0.0, anchor: Optional[torch.Tensor] = None,
         callback: Optional[Callback] = None) -> torch.Tensor:
    """Conjugate gradients on min_x ‖A x − y‖² + damping ‖x − anchor‖², started at x0.

    forward/adjoint: A and Aᴴ. damping = 0 is plain CGLS (early stopping is then the
    regulariser). callback(it, x, r) after every iteration, r = y − A x; returning True stops.
    Returns x (x0's shape; x0 itself is left alone)."""
    x = x0.clone()
    r = y - forward(x)
    d = (anchor - x) if (damping > 0 and anchor is not None) else torch.zeros_like(x)
    s = adjoint(r) + damping * d
    p = s.clone()
    gamma = _dot(s, s)
    for it in range(1, int(n_iter) + 1):
        if gamma <= 1e-30:
            break
        q = forward(p)
        denom = _dot(q, q) + damping * _dot(p, p)
        if denom <= 0:
            break
        alpha = gamma / denom
        x += alpha * p
        r -= alpha * q
        d -= alpha * p
        s = adjoint(r) + damping * d
        gamma_new = _dot(s, s)
        p = s + (gamma_new / gamma) * p
        gamma = gamma_new
        if callback is not None and callback(it, x, r):
            break
    return x


@torch.no_grad()
def cg(normal: Callable, b: torch.Tensor, x0: torch.Tensor, n_iter: int, *, tolerance: float = 0.0,
       callback: Optional[Callback] = None) -> torch.Tensor:
    """Conjugate gradients on the Hermitian positive (semi-)definite system normal(x) = b from x0.

    Stops after n_iter iterations, when ‖b − normal(x)‖ / ‖b‖ < tolerance, or when
    callback(it, x, relative residual) returns True."""
    x = x0.clone()
    r = b - normal(x) if bool(x0.abs().max() > 0) else b.clone()
    p = r.clone()
    rs = float(_dot(r, r))
    b_norm = max(float(_dot(b, b)) ** 0.5, 1e-30)
    for it in range(1, int(n_iter) + 1):
        ap = normal(p)
        alpha = rs / max(float(_dot(p, ap)), 1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = float(_dot(r, r))
        rel = rs_new ** 0.5 / b_norm
        if callback is not None and callback(it, x, rel):
            break
        if rel < tolerance:
            break
        p = r + (rs_new / max(rs, 1e-300)) * p
        rs = rs_new
    return x


def power_method(normal: Callable, x0: torch.Tensor, n_iter: int = 20) -> float:
    """√(largest eigenvalue of the self-adjoint, positive map `normal`) by power iteration from
    x0: the operator norm ‖A‖ when normal = AᴴA."""
    x = x0 / torch.linalg.vector_norm(x0).clamp_min(1e-30)
    s = 0.0
    with torch.no_grad():
        for _ in range(int(n_iter)):
            y = normal(x)
            s = float(torch.linalg.vector_norm(y))
            if s == 0.0:
                break
            x = y / s
    return math.sqrt(s)
