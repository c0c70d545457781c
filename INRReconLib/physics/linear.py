"""The one interface every forward model has: a linear operator A with its adjoint.

Subclasses (CTProjector, MROperator) set `image_shape`, `data_shape`, `device` and `dtype` and
implement `_forward_impl` / `_adjoint_impl` on tensors of those shapes without autograd
bookkeeping; their backends (torch or astra for CT, torchkbnufft or finufft for MR) live behind
those two methods. Everything a method needs is here, so a method never asks which operator or
backend it holds:
  forward(x), adjoint(y), normal(x) = Aᴴ A x — autograd-aware, the backward of each is the other;
  norm_estimate() — the largest singular value, by the power method;
  adjoint_test() — the dot-product test of the pair, relative.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..numerics.krylov import power_method


class _Apply(torch.autograd.Function):
    """y = A x (adjoint False) or y = Aᴴ x (True), with the other as backward.

    torch's complex convention: the vector-Jacobian product of a C-linear map is its conjugate
    transpose, so the backward of A is Aᴴ (and of a real A, Aᵀ). Calling `apply` inside backward
    keeps higher-order gradients available."""

    @staticmethod
    def forward(ctx, x, op, adjoint):
        ctx.op, ctx.adjoint = op, adjoint
        with torch.no_grad():
            return op._adjoint_impl(x) if adjoint else op._forward_impl(x)

    @staticmethod
    def backward(ctx, grad):
        return _Apply.apply(grad.contiguous(), ctx.op, not ctx.adjoint), None, None


class LinearOperator:
    """Base of the forward models (see the module docstring)."""

    image_shape: tuple
    data_shape: tuple
    device: torch.device
    dtype: torch.dtype = torch.float32
    # Leading dimensions a caller may stack in front of image_shape / data_shape (CT: a batch).
    batch_dims: int = 0
    data_name = "data"  # what error messages call the measurement side

    # -- what subclasses implement -----------------------------------------------------------
    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _adjoint_impl(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- the public maps ---------------------------------------------------------------------
    def forward(self, x) -> torch.Tensor:
        return _Apply.apply(self._prepare(x, self.image_shape, "image"), self, False)

    __call__ = forward

    def adjoint(self, y) -> torch.Tensor:
        return _Apply.apply(self._prepare(y, self.data_shape, self.data_name), self, True)

    def normal(self, x) -> torch.Tensor:
        """Aᴴ A x; subclasses with a faster route (MR Toeplitz) override it."""
        return self.adjoint(self.forward(x))

    def zeros_image(self) -> torch.Tensor:
        return torch.zeros(self.image_shape, dtype=self.dtype, device=self.device)

    def norm_estimate(self, n_iter: int = 20, seed: int = 0) -> float:
        """‖A‖ (largest singular value), by the power method on AᴴA; cached after the first call."""
        cached = getattr(self, "_norm_cache", None)
        if cached is not None:
            return cached
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand(self.image_shape, generator=gen, dtype=torch.float32)
        if self.dtype.is_complex:
            x = torch.complex(x, torch.rand(self.image_shape, generator=gen, dtype=torch.float32))
        self._norm_cache = power_method(self.normal, x.to(device=self.device, dtype=self.dtype), n_iter)
        return self._norm_cache

    def adjoint_test(self, seed: int = 0, dtype: torch.dtype | None = None) -> float:
        """|⟨A x, y⟩ − ⟨x, Aᴴ y⟩| / (‖A x‖ ‖y‖) for random x, y: 0 up to rounding for an exact pair.
        dtype: of x and y (default the operator's; a real operator also runs in float64)."""
        dtype = dtype or self.dtype
        gen = torch.Generator().manual_seed(seed)

        def rand(shape):
            a = torch.randn(shape, generator=gen, dtype=torch.float64)
            if dtype.is_complex:
                a = torch.complex(a, torch.randn(shape, generator=gen, dtype=torch.float64))
            return a.to(device=self.device, dtype=dtype)

        x, y = rand(self.image_shape), rand(self.data_shape)
        with torch.no_grad():
            ax, aty = self.forward(x), self.adjoint(y)
            wide = torch.complex128
            lhs = torch.vdot(ax.reshape(-1).to(wide), y.reshape(-1).to(wide))
            rhs = torch.vdot(x.reshape(-1).to(wide), aty.reshape(-1).to(wide))
            scale = float(torch.linalg.vector_norm(ax.to(wide)) * torch.linalg.vector_norm(y.to(wide)))
        return float(abs(lhs - rhs)) / max(scale, 1e-300)

    # -- input checks ------------------------------------------------------------------------
    def _prepare(self, x, shape, name) -> torch.Tensor:
        """x as a tensor on the operator's device, of its dtype (a real operator keeps float64, for
        exact dot-product tests), with the shape checked: `shape`, or up to `batch_dims` leading dims more."""
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x), device=self.device)
        else:
            x = x.to(self.device)
        if self.dtype.is_complex:
            if x.dtype != torch.complex64:
                x = x.to(torch.complex64)
        elif x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float32)
        shape = tuple(shape)
        lead = x.dim() - len(shape)
        if tuple(x.shape[lead:] if lead >= 0 else x.shape) != shape or not 0 <= lead <= self.batch_dims:
            batch = " (or with a leading batch dimension)" if self.batch_dims else ""
            raise InputError(name, f"has shape {list(x.shape)}, the operator expects {list(shape)}{batch}.",
                             self._shape_hint)
        return x

    _shape_hint = "Check that the data, the grid and the geometry belong to the same measurement."
