"""Plain ReLU MLP: the network after a hash-grid encoding, or a Fourier-feature ReLU variant."""

from __future__ import annotations

import math

import torch
from torch import nn


class ReluMLP(nn.Module):
    """n_hidden_layers ReLU layers of width n_neurons, then a linear output layer.

    x: [N, n_in] -> [N, n_out]. Kaiming-uniform initialisation from `seed`."""

    KEYS = {"otype", "n_neurons", "n_hidden_layers", "seed", "activation", "output_activation"}

    def __init__(self, n_in: int, n_out: int, n_neurons: int = 64, n_hidden_layers: int = 2, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        dims = [n_in] + [int(n_neurons)] * int(n_hidden_layers) + [n_out]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        with torch.no_grad():
            for lin in self.linears:
                bound = math.sqrt(6.0 / lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.zero_()
            # A small last layer starts the field near zero, so the first steps are not spent
            # undoing a random offset.
            self.linears[-1].weight.mul_(0.1)

    def forward(self, x):
        for lin in self.linears[:-1]:
            x = lin(x).relu_()  # in place: one fresh [N, width] tensor per layer, not two
        return self.linears[-1](x)
