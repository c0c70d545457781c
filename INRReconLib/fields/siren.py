"""SIREN: an MLP with sine activations (Sitzmann et al. 2020), NeRP's network."""

from __future__ import annotations

import math

import torch
from torch import nn


class SineLayer(nn.Module):
    """y = sin(ω0 (W x + b)). The SIREN initialisation keeps activations ~ arcsine-distributed at
    every depth, so deep sine networks train; ω0 scales the frequencies the layer can express."""

    def __init__(self, n_in: int, n_out: int, omega_0: float, first: bool, gen: torch.Generator):
        super().__init__()
        self.omega_0 = float(omega_0)
        self.linear = nn.Linear(n_in, n_out)
        bound = 1.0 / n_in if first else math.sqrt(6.0 / n_in) / self.omega_0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound, generator=gen)
            self.linear.bias.uniform_(-1.0 / math.sqrt(n_in), 1.0 / math.sqrt(n_in), generator=gen)

    def forward(self, x):
        return torch.sin(self.omega_0 * self.linear(x))


class Siren(nn.Module):
    """n_hidden_layers sine layers of width n_neurons, then a linear output layer.

    x: [N, n_in] -> [N, n_out]. Seeded so that the config reproduces the initial weights."""

    KEYS = {"otype", "n_neurons", "n_hidden_layers", "first_omega_0", "hidden_omega_0", "seed"}

    def __init__(self, n_in: int, n_out: int, n_neurons: int = 256, n_hidden_layers: int = 8,
                 first_omega_0: float = 30.0, hidden_omega_0: float = 30.0, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        layers = []
        width = n_in
        for i in range(int(n_hidden_layers)):
            layers.append(SineLayer(width, int(n_neurons), first_omega_0 if i == 0 else hidden_omega_0, i == 0, gen))
            width = int(n_neurons)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_out)
        bound = math.sqrt(6.0 / width) / float(hidden_omega_0)
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound, generator=gen)
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.body(x))
