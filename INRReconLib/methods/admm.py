"""ADMM for INR reconstruction: split z = raster(f) so the physics and the network are solved apart.

    min_f ‖A raster(f) − y‖²   ⇔   min_{f,z} ‖A z − y‖²  s.t.  z = raster(f)

Scaled-dual ADMM, inexact inner solves:
    z ← argmin_z ‖A z − y‖² + ρ/2 ‖z − raster(f) + u‖²     (a few warm-started CGLS steps)
    f ← Adam steps on ‖raster(f) − (z + u)‖²                 (an image-space fit: no operator)
    u ← u + z − raster(f)
The z-step sees the physics through CGLS (fast on the least-squares part, which gradient descent
through a network struggles with); the network only does image regression, which it is good at.
Everything here works in the caller's normalised units, real (CT) or complex (MR) tensors.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..numerics.krylov import cgls, power_method


def admm_fit(raster: Callable[[], torch.Tensor], optimizer, scheduler, forward: Callable, adjoint: Callable,
             y: torch.Tensor, *, total_steps: int, adam_steps: int = 50, cgls_steps: int = 50, rho: float = 0.1,
             regulariser: Callable | None = None, report: Callable | None = None,
             should_stop: Callable[[], bool] = lambda: False,
             on_step: Callable[[int], None] = lambda step: None) -> tuple[int, bool, dict]:
    """Run ADMM until `total_steps` Adam steps of the network are done.

    raster(): the field on the grid (normalised units, autograd-aware). rho is relative to ‖A‖², so
    one value works across geometries. regulariser(image) -> scalar is weighted as in the Adam path,
    where the objective is ‖Af − y‖²/‖y‖² + R(f): ADMM splits ‖Az − y‖² + ‖y‖² R(f) with penalty
    ρ/2‖z − f + u‖², so the image fit mean((f − t)²) carries R with the factor 2‖y‖²/(ρ N) (N the
    number of voxels). Both optimizers then minimise the same objective and a tv_weight tuned for
    one holds for the other.
    report(step, loss, **extra) is called after every Adam step; extra carries primal_residual and
    dual_residual (relative) after the last step of each outer iteration. on_step(step) runs before
    every Adam step (the coarse-to-fine level schedule).
    Returns (steps done, stopped early?, last residuals)."""
    with torch.no_grad():
        f = raster().detach()
    # ‖A‖² by the power method from a seeded uniform start (rho is relative to it).
    start = torch.rand(f.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(f)
    rho_abs = float(rho) * power_method(lambda v: adjoint(forward(v)), start, 15) ** 2
    reg_factor = 2.0 * float(y.abs().pow(2).sum()) / (rho_abs * f.numel())
    z = f.clone()
    u = torch.zeros_like(f)
    step = 0
    residuals = {}
    outer = math.ceil(total_steps / max(int(adam_steps), 1))
    for _ in range(outer):
        # ρ/2‖z − (f − u)‖²: CGLS damping ρ/2 with anchor f − u.
        z = cgls(forward, adjoint, y, z, cgls_steps, damping=rho_abs / 2, anchor=f - u)
        target = z + u
        n_inner = min(int(adam_steps), total_steps - step)
        for k in range(n_inner):
            on_step(step)
            optimizer.zero_grad(set_to_none=True)
            image = raster()
            diff = image - target
            loss = (diff.real ** 2 + diff.imag ** 2).mean() if diff.is_complex() else (diff ** 2).mean()
            if regulariser is not None:
                loss = loss + reg_factor * regulariser(image)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            extra = {}
            if k == n_inner - 1:
                with torch.no_grad():
                    f_new = raster().detach()
                    u += z - f_new
                    zn = float(z.abs().pow(2).sum().sqrt().clamp_min(1e-30))
                    residuals = {"primal_residual": float((z - f_new).abs().pow(2).sum().sqrt()) / zn,
                                 "dual_residual": float((f_new - f).abs().pow(2).sum().sqrt()) / zn}
                    f = f_new
                extra = residuals
            if report is not None:
                report(step, float(loss.detach()), **extra)
            if should_stop():
                return step, True, residuals
        if step >= total_steps:
            break
    return step, False, residuals
