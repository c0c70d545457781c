"""Build a field (coordinates -> intensity) from a plain JSON config, tiny-cuda-nn style.

    {"encoding": {"otype": "Fourier", "n_features": 256, "sigma": 4.0, "seed": 0},
     "network":  {"otype": "Siren", "n_neurons": 256, "n_hidden_layers": 8, "seed": 0},
     "backend": "auto"}

encoding otypes: "Fourier", "HashGrid", "Identity"; network otypes: "Siren", "ReLU", and
"Disentangled" (DisINR: a shared and a per-subject encoder, each the encoding + a ReLU MLP, and a
shared decoder; disentangled.py).
backend "auto" uses tiny-cuda-nn for HashGrid when it is importable and the device is CUDA,
"torch" always uses the PyTorch implementation (the reference).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import InputError
from .chunked import HEAD_CHUNK_ROWS, chunked_head
from .disentangled import DisentangledField
from .fourier import FourierEncoding, IdentityEncoding
from .hashgrid import DEFAULTS as HASHGRID_DEFAULTS
from .hashgrid import HashGridEncoding, TcnnHashGridEncoding
from .lattice import lattice_points
from .mlp import ReluMLP
from .siren import Siren

ENCODINGS = {"Fourier": FourierEncoding, "HashGrid": HashGridEncoding, "Identity": IdentityEncoding}
NETWORKS = {"Siren": Siren, "ReLU": ReluMLP, "Disentangled": DisentangledField}


def tcnn_available() -> bool:
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a binding built for another CUDA
        return False
    return True


class Field(nn.Module):
    """coords [N, n_dims] in [-1, 1] -> values [N, n_out] (1 real channel for CT, 2 = re, im for MR)."""

    def __init__(self, encoding: nn.Module, network: nn.Module, config: dict):
        super().__init__()
        self.encoding = encoding
        self.network = network
        self.config = config
        self.n_dims = encoding.n_dims
        # Per-feature weights of the encoding output (None = all on); see set_active_levels.
        self.feature_weight = None
        # First hash-table entry that gets no gradient (None = all train); see set_trainable_levels.
        self._frozen_from = None
        self._grad_hook = None

    @property
    def n_levels(self) -> int:
        """Resolution levels of a HashGrid encoding (0 for other encodings)."""
        if self.config.get("encoding", {}).get("otype") != "HashGrid":
            return 0
        return int(self.config["encoding"].get("n_levels", HASHGRID_DEFAULTS["n_levels"]))

    def _require_levels(self, t) -> None:
        if t is not None and self.n_levels == 0:
            raise InputError("coarse_to_fine", "needs a HashGrid encoding (it switches resolution levels on).",
                             "Set coarse_to_fine to 0 for Fourier/Identity encodings.")

    def set_active_levels(self, t: float | None) -> None:
        """Coarse-to-fine: level l of the hash grid is weighted by clamp(t - l, 0, 1), so levels
        below t are fully on, the next one fades in, finer ones are off (None: all on).

        Switching fine levels off early keeps a sparse-view fit from spending its first steps on
        high-frequency streaks the data cannot pin down; ramping them in smoothly avoids a jump in
        the loss when a level turns on."""
        self._require_levels(t)
        if t is None or t >= self.n_levels:
            self.feature_weight = None
            return
        n_feat = self.encoding.n_output_dims // self.n_levels
        levels = torch.arange(self.n_levels, dtype=torch.float32)
        weight = (float(t) - levels).clamp(0.0, 1.0).repeat_interleave(n_feat)
        self.feature_weight = weight.to(next(self.parameters()).device)

    def set_trainable_levels(self, t: float | None) -> None:
        """Coarse-to-fine for a field that already holds an image (NeRP after the prior
        embedding): the table entries of levels >= ceil(t) get zero gradient, so they keep the
        embedded values while the coarse levels and the network absorb the large changes first
        (None: every level trains). Adam moves an entry whose gradients have all been zero by
        exactly zero, so a frozen level stays as embedded until its turn comes."""
        self._require_levels(t)
        level = None if t is None else int(math.ceil(float(t)))
        if level is None or level >= self.n_levels:  # the last level fading in trains too
            self._frozen_from = None
            return
        self._frozen_from = self.encoding.level_offset(level) * self.encoding.n_output_dims // self.n_levels
        if self._grad_hook is None:
            self._grad_hook = self.encoding.table.register_hook(self._mask_table_grad)

    def _mask_table_grad(self, grad):
        if self._frozen_from is None:
            return grad
        grad = grad.clone()
        grad[self._frozen_from:] = 0
        return grad

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self._head(self.encoding(coords))

    def forward_grid(self, axes) -> torch.Tensor:
        """The field at every point of the product grid of 1D coordinates axes = [x, y(, z)]:
        forward(lattice_points(axes)), [N, n_out] in C order of ((z,) y, x). Encodings that know
        a faster way to evaluate a whole grid (HashGrid, separable interpolation) use it."""
        if hasattr(self.encoding, "forward_grid"):
            return self._head(self.encoding.forward_grid(axes))
        return self.forward(lattice_points(axes))

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        # On the CPU a large grid's activations do not fit the cache: chunk them (chunked.py).
        if features.device.type == "cpu" and features.shape[0] > 2 * HEAD_CHUNK_ROWS and torch.is_grad_enabled():
            params = [p for p in self.network.parameters() if p.requires_grad]
            return chunked_head(self._weighted_network, features, params)
        return self._weighted_network(features)

    def _weighted_network(self, features: torch.Tensor) -> torch.Tensor:
        if self.feature_weight is not None:
            features = features * self.feature_weight
        return self.network(features)


def _check_keys(section: str, given: dict, allowed: set):
    for key in given:
        if key not in allowed:
            raise InputError(f"field.{section}.{key}", f"unknown key for otype {given.get('otype')!r}.",
                             f"Use only: {', '.join(sorted(allowed))}.")


def resolve_field_config(config: dict, grid_shape_zyx) -> dict:
    """A copy of `config` with every HashGrid value made explicit, so the saved config
    reproduces the run: left-out keys get tcnn's defaults, and `per_level_scale` "auto" (also
    when left out) becomes the scale whose finest level has one vertex per voxel of the largest
    grid axis."""
    cfg = copy.deepcopy(config)
    enc = cfg.get("encoding", {})
    if enc.get("otype") != "HashGrid":
        return cfg
    enc.setdefault("per_level_scale", "auto")
    for key, value in HASHGRID_DEFAULTS.items():
        enc.setdefault(key, value)
    if enc["per_level_scale"] == "auto":
        finest = max(int(n) for n in grid_shape_zyx)
        base, levels = int(enc["base_resolution"]), int(enc["n_levels"])
        scale = 1.0 if levels < 2 or finest <= base else math.exp(math.log(finest / base) / (levels - 1))
        enc["per_level_scale"] = round(scale, 6)
    return cfg


def build_field(config: dict, n_dims: int, n_out: int, device="cpu", subject_ids=(0,)) -> nn.Module:
    """The field a config describes, on `device`: a Field, or a DisentangledField with one subject
    encoder per entry of `subject_ids` (cohort indices). Unknown otypes or keys raise InputError."""
    device = torch.device(device)
    enc_cfg = dict(config.get("encoding", {}))
    net_cfg = dict(config.get("network", {}))
    backend = config.get("backend", "auto")
    for key in config:
        if key not in ("encoding", "network", "backend"):
            raise InputError(f"field.{key}", "unknown key.", "A field has 'encoding', 'network' and 'backend'.")
    if backend not in ("auto", "torch", "tcnn"):
        raise InputError("field.backend", f"must be 'auto', 'torch' or 'tcnn', got {backend!r}.")
    enc_type = enc_cfg.get("otype", "Fourier")
    net_type = net_cfg.get("otype", "Siren")
    if enc_type not in ENCODINGS:
        raise InputError("field.encoding.otype", f"unknown encoding {enc_type!r}.", f"Use one of {list(ENCODINGS)}.")
    if net_type not in NETWORKS:
        raise InputError("field.network.otype", f"unknown network {net_type!r}.", f"Use one of {list(NETWORKS)}.")
    enc_cls, net_cls = ENCODINGS[enc_type], NETWORKS[net_type]
    _check_keys("encoding", enc_cfg, enc_cls.KEYS)
    _check_keys("network", net_cfg, net_cls.KEYS)
    enc_args = {k: v for k, v in enc_cfg.items() if k != "otype"}
    if enc_args.get("per_level_scale") == "auto":
        raise InputError("field.encoding.per_level_scale", "is 'auto' here.",
                         "Call resolve_field_config(config, grid_shape) first.")
    use_tcnn = enc_type == "HashGrid" and device.type == "cuda" and (
        backend == "tcnn" or (backend == "auto" and tcnn_available()))
    if backend == "tcnn" and not use_tcnn:
        raise InputError("field.backend", "'tcnn' needs a HashGrid encoding, CUDA and tinycudann installed.",
                         "Use backend 'auto' or 'torch'.")

    def make_encoding(seed=None):
        # A seeded encoding (DisINR's encoders); the identity encoding has nothing to draw.
        seeded = seed is not None and "seed" in enc_cls.KEYS
        args = {**enc_args, "seed": int(enc_args.get("seed", 0)) + seed} if seeded else enc_args
        return TcnnHashGridEncoding(n_dims, args) if use_tcnn else enc_cls(n_dims, **args)

    for k in ("activation", "output_activation"):
        if net_cfg.get(k, "ReLU" if k == "activation" else "None") not in ("ReLU", "None"):
            raise InputError(f"field.network.{k}", "only 'ReLU' hidden and 'None' output activations exist.")
    net_args = {k: v for k, v in net_cfg.items() if k not in ("otype", "activation", "output_activation")}
    if net_cls is DisentangledField:
        return DisentangledField(make_encoding, Field, n_out, copy.deepcopy(dict(config)),
                                 subject_ids=subject_ids, **net_args).to(device)
    encoding = make_encoding()
    network = net_cls(encoding.n_output_dims, n_out, **net_args)
    return Field(encoding, network, copy.deepcopy(dict(config))).to(device)
