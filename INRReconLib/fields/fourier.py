"""Gaussian random Fourier features (Tancik et al. 2020), the encoding NeRP puts before its SIREN."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError


class FourierEncoding(nn.Module):
    """gamma(x) = [sin(2π B x), cos(2π B x)] with B ~ N(0, σ²) of shape [n_features, n_dims].

    x: [N, n_dims] coordinates in [-1, 1] (grid frame, normalised); output [N, 2 * n_features].
    B is a fixed buffer (not trained), drawn from `seed` so a config reproduces the field.
    σ sets the bandwidth: larger σ resolves finer detail but fits noise sooner (4 CT, 3 MR in NeRP).
    """

    KEYS = {"otype", "n_features", "sigma", "seed"}

    def __init__(self, n_dims: int, n_features: int = 256, sigma: float = 4.0, seed: int = 0):
        super().__init__()
        if n_features < 1 or not (sigma > 0):
            raise InputError("field.encoding", f"Fourier needs n_features >= 1 and sigma > 0, got {n_features}, {sigma}.")
        gen = torch.Generator().manual_seed(int(seed))
        self.register_buffer("B", torch.randn(int(n_features), int(n_dims), generator=gen) * float(sigma))
        self.n_dims = n_dims
        self.n_output_dims = 2 * int(n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = (2.0 * math.pi) * (x @ self.B.T)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class IdentityEncoding(nn.Module):
    """The raw coordinates (a SIREN on its own)."""

    KEYS = {"otype"}

    def __init__(self, n_dims: int):
        super().__init__()
        self.n_dims = n_dims
        self.n_output_dims = n_dims

    def forward(self, x):
        return x
