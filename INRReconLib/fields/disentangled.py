"""The disentangled field of DisINR: a shared encoder, one encoder per subject, a shared decoder.

    value(x) = decoder( [ relu(shared(x)), relu(subject_k(x)) ] )

Both encoders have the same shape: a hash-grid encoding followed by `encoder_layers` fully
connected ReLU layers of `n_neurons`, the last one `code_dims` wide; the decoder maps the
concatenated codes through `decoder_layers` ReLU layers to the output (1 channel for CT, 2 for
MR). Pre-training fits the shared pair and every subject's encoder to the measurements of a
cohort; for a new scan the shared pair is frozen and only a fresh subject encoder is fitted
(methods/disinr.py). The field evaluates the subject `active` (0 for a single-scan field).

Its network section in a field config:

    {"otype": "Disentangled", "n_neurons": 128, "encoder_layers": 2, "decoder_layers": 1,
     "code_dims": 128, "seed": 0}

State-dict names: shared.*, decoder.* (the population prior) and subjects.<k>.* (per subject).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .mlp import ReluMLP

SHARED_PREFIXES = ("shared.", "decoder.")


class DisentangledField(nn.Module):
    """make_encoding(seed) -> a fresh encoding module; make_field(encoding, network, config) ->
    a Field (the factory's class, passed in so that this file does not import the factory).
    subject_ids: the cohort indices of the subjects held here (one, 0, by default); they seed
    the subject encoders, so a subject starts the same in one process or in any rank of several."""

    KEYS = {"otype", "n_neurons", "encoder_layers", "decoder_layers", "code_dims", "seed", "activation",
            "output_activation"}

    def __init__(self, make_encoding, make_field, n_out: int, config: dict, *, n_neurons: int = 128,
                 encoder_layers: int = 2, decoder_layers: int = 1, code_dims: int = 128, seed: int = 0,
                 subject_ids=(0,)):
        super().__init__()
        subject_ids = [int(k) for k in subject_ids]
        if int(encoder_layers) < 1 or int(decoder_layers) < 0 or int(code_dims) < 1 or not subject_ids:
            raise InputError("field.network", "Disentangled needs encoder_layers >= 1, decoder_layers >= 0, "
                             "code_dims >= 1 and at least one subject.")
        self.config = config
        self._make_encoding, self._make_field = make_encoding, make_field
        self._encoder_args = (int(code_dims), int(n_neurons), int(encoder_layers) - 1)
        self.seed = int(seed)
        self.shared = self._encoder(self.seed)
        # Subject encoders get seeds of their own: two subjects do not start as the same function.
        self.subjects = nn.ModuleList(self._encoder(self.seed + 1 + k) for k in subject_ids)
        self.decoder = ReluMLP(2 * int(code_dims), n_out, int(n_neurons), int(decoder_layers), self.seed)
        self.n_dims = self.shared.n_dims
        self.active = 0

    def _encoder(self, seed: int):
        code, width, hidden = self._encoder_args
        encoding = self._make_encoding(seed)
        # The encoding's config section: the Field reads its level count from it.
        return self._make_field(encoding, ReluMLP(encoding.n_output_dims, code, width, hidden, seed),
                                {"encoding": self.config.get("encoding", {})})

    def shared_parameters(self) -> list:
        """The population prior: the shared encoder and the decoder."""
        return list(self.shared.parameters()) + list(self.decoder.parameters())

    def freeze_shared(self, frozen: bool = True) -> None:
        for p in self.shared_parameters():
            p.requires_grad_(not frozen)

    def shared_state(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if k.startswith(SHARED_PREFIXES)}

    # -- what the engine calls on a field (coarse to fine acts on the active subject's encoder:
    # the shared one is either being learnt with it or frozen) --
    @property
    def n_levels(self) -> int:
        return self.subjects[self.active].n_levels

    def set_active_levels(self, t) -> None:
        self.subjects[self.active].set_active_levels(t)

    def set_trainable_levels(self, t) -> None:
        self.subjects[self.active].set_trainable_levels(t)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self._decode(self.shared(coords), self.subjects[self.active](coords))

    def forward_grid(self, axes) -> torch.Tensor:
        return self._decode(self.shared.forward_grid(axes), self.subjects[self.active].forward_grid(axes))

    def _decode(self, shared_code, subject_code):
        return self.decoder(torch.cat([shared_code.relu(), subject_code.relu()], dim=1))
