"""Multiresolution hash-grid encoding (Müller et al. 2022, Instant-NGP), pure PyTorch, fp32.

Same config keys and the same parameter layout as tiny-cuda-nn's "HashGrid" encoding, so a
table trained here loads there and the two agree numerically (Testing/Python/test_fields.py):
- level l has scale s_l = base_resolution * per_level_scale**l - 1 and ceil(s_l) + 1 vertices
  per axis (base_resolution counts vertices, as in tcnn);
- a point x in [0, 1]^d sits at p = s_l * x + 0.5 (the 0.5 staggers the levels);
- a level whose vertices fit into the table is indexed densely (x + y*R + z*R^2), a finer one
  through the spatial hash XOR_i(p_i * prime_i) (primes 1, 2654435761, 805459861), both mod the
  level's table size; the level sizes are rounded up to multiples of 8 as in tcnn;
- a dense level is interpolated on the level's vertex lattice gathered from the table (one extra
  vertex per axis, indexed as above, so the wrap-around at the upper edge is tcnn's): scattered
  points by `grid_sample` (4-8x faster on the CPU than gathering 2^d corners per point), the
  points of a regular grid (`forward_grid`, what a reconstruction rasterises every step) by one
  linear interpolation per axis (multilinear interpolation is separable there), which in 3D
  takes about a tenth of the time of `grid_sample`, whose backward pass dominated a step. Both give the corner-gather numbers up to fp32
  rounding of the position (~R * 6e-8);
- parameters are one flat vector, level after level, n_features_per_level per entry; the output
  is level-major [l0 f0, l0 f1, l1 f0, ...].
Runs on CPU and GPU; a hashed level holds N * 2^d corner gathers in memory, so callers chunk large
3D batches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .lattice import lattice_points

_PRIMES = (1, 2654435761, 805459861, 3674653429)
_MASK32 = 0xFFFFFFFF

# tiny-cuda-nn's defaults for the keys a HashGrid config may leave out (the one place they are
# written; resolve_field_config writes them into the saved config, with per_level_scale "auto").
DEFAULTS = {"n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19, "base_resolution": 16,
            "per_level_scale": 2.0}


def level_layout(n_dims: int, n_levels: int, log2_hashmap_size: int, base_resolution: int,
                 per_level_scale: float):
    """Per level: (scale, resolution, table size, offset, dense?) as tiny-cuda-nn computes them."""
    out = []
    offset = 0
    log2_scale = math.log2(per_level_scale)
    max_params = (1 << 32) // 2 - 1
    for level in range(n_levels):
        scale = float(torch.tensor(2.0 ** (level * log2_scale) * base_resolution - 1.0, dtype=torch.float32))
        resolution = int(math.ceil(scale)) + 1
        dense_size = resolution ** n_dims
        size = min(dense_size, max_params)
        size = (size + 7) // 8 * 8
        size = min(size, 1 << log2_hashmap_size)
        out.append((scale, resolution, size, offset, dense_size <= size))
        offset += size
    return out


class HashGridEncoding(nn.Module):
    """x: [N, n_dims] in [-1, 1] (normalised grid frame) -> [N, n_levels * n_features_per_level].

    Table entries start uniform in [-1e-4, 1e-4] (tcnn's choice): the field starts near zero and
    the MLP, not the table, sets the initial scale."""

    KEYS = {"otype", "n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution",
            "per_level_scale", "seed"}

    def __init__(self, n_dims: int, n_levels: int = DEFAULTS["n_levels"],
                 n_features_per_level: int = DEFAULTS["n_features_per_level"],
                 log2_hashmap_size: int = DEFAULTS["log2_hashmap_size"],
                 base_resolution: int = DEFAULTS["base_resolution"],
                 per_level_scale: float = DEFAULTS["per_level_scale"], seed: int = 0):
        super().__init__()
        if n_dims not in (2, 3, 4):
            raise InputError("field.encoding", f"HashGrid works in 2 to 4 dimensions, got {n_dims}.")
        if not (1 <= n_levels <= 32 and 1 <= n_features_per_level <= 8 and 8 <= log2_hashmap_size <= 28
                and base_resolution >= 2 and per_level_scale >= 1.0):
            raise InputError("field.encoding",
                             "HashGrid settings out of range (n_levels 1-32, n_features_per_level 1-8, "
                             "log2_hashmap_size 8-28, base_resolution >= 2, per_level_scale >= 1).")
        self.n_dims = n_dims
        self.n_levels = int(n_levels)
        self.n_features = int(n_features_per_level)
        self.layout = level_layout(n_dims, self.n_levels, int(log2_hashmap_size), int(base_resolution),
                                   float(per_level_scale))
        n_entries = self.layout[-1][3] + self.layout[-1][2]
        gen = torch.Generator().manual_seed(int(seed))
        self.params = nn.Parameter((torch.rand(n_entries * self.n_features, generator=gen) * 2 - 1) * 1e-4)
        corners = torch.tensor([[(c >> d) & 1 for d in range(n_dims)] for c in range(2 ** n_dims)])
        self.register_buffer("corners", corners, persistent=False)
        self.register_buffer("primes", torch.tensor(_PRIMES[:n_dims], dtype=torch.int64), persistent=False)
        self.n_output_dims = self.n_levels * self.n_features
        self._lattice = {}  # (resolution, device) -> table rows of a dense level's vertex lattice

    @property
    def table(self) -> torch.Tensor:
        """The flat parameter vector (level after level)."""
        return self.params

    def level_offset(self, level: int) -> int:
        """First table row of `level` (rows hold n_features_per_level values each)."""
        return self.layout[level][3]

    def _index(self, vertex: torch.Tensor, resolution: int, size: int, dense: bool) -> torch.Tensor:
        """vertex: int64 [..., d] -> table row within the level, as tcnn's grid_index."""
        if dense:
            index = torch.zeros(vertex.shape[:-1], dtype=torch.int64, device=vertex.device)
            stride = 1
            for d in range(self.n_dims):
                index = index + vertex[..., d] * stride
                stride *= resolution
        else:
            index = torch.zeros(vertex.shape[:-1], dtype=torch.int64, device=vertex.device)
            for d in range(self.n_dims):
                index = index ^ ((vertex[..., d] * self.primes[d]) & _MASK32)
        return index % size

    def _lattice_rows(self, resolution: int, size: int, device) -> torch.Tensor:
        """A dense level's table rows (within the level) of its vertex lattice, [((R+1),) R+1, R+1]
        in ((z,) y, x) order; cached."""
        key = (resolution, device)
        if key not in self._lattice:
            ax = torch.arange(resolution + 1, device=device)
            # meshgrid in ((z,) y, x) order, reversed so that vertex[..., 0] is x (the fastest axis).
            vertex = torch.stack(torch.meshgrid(*([ax] * self.n_dims), indexing="ij")[::-1], dim=-1)
            self._lattice[key] = self._index(vertex, resolution, size, True)
        return self._lattice[key]

    def _lattice_values(self, table, resolution: int, size: int, offset: int) -> torch.Tensor:
        """A dense level's vertex values, [((R+1),) R+1, R+1, F] in ((z,) y, x) order."""
        return table[self._lattice_rows(resolution, size, table.device) + offset]

    def _all_lattice_values(self, table) -> dict:
        """level -> its vertex values, for every dense level, from ONE gather of the table: the
        backward of each gather fills a zero gradient as large as the whole table, so one gather
        instead of one per level saves n_levels - 1 of those (3D, 16 levels: 0.26 s a step)."""
        dense = [(level, res, size, offset) for level, (_, res, size, offset, d) in enumerate(self.layout) if d]
        if not dense:
            return {}
        rows = [self._lattice_rows(res, size, table.device) for _, res, size, _ in dense]
        flat = torch.cat([r.reshape(-1) + offset for r, (_, _, _, offset) in zip(rows, dense)])
        parts = torch.split(table[flat], [r.numel() for r in rows])
        return {level: part.view(*r.shape, self.n_features) for (level, *_), part, r in zip(dense, parts, rows)}

    def _dense_level(self, table, pos, resolution: int, size: int, offset: int) -> torch.Tensor:
        """Interpolate a dense level at scattered points: pos [N, d] in vertex units -> [N, F]."""
        d = self.n_dims
        volume = self._lattice_values(table, resolution, size, offset).movedim(-1, 0)[None]  # [1, F, ...]
        # align_corners=True puts vertex i at -1 + 2 i / R: pos in [0, R] maps onto [-1, 1].
        grid = (pos * (2.0 / resolution) - 1.0).view(1, *([1] * (d - 1)), -1, d)
        out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.reshape(self.n_features, -1).t()

    def _dense_level_on_lattice(self, values, pos_axes) -> torch.Tensor:
        """Interpolate a dense level at the points of a regular grid: pos_axes [x, y(, z)] in
        vertex units -> [N, F] in C order of ((z,) y, x). Multilinear interpolation at the points
        of a product grid is a product of 1D interpolations, so it runs one axis at a time on
        whole slabs (index_select + lerp, whose backward is an index_add per axis). values: the
        level's vertex values (_all_lattice_values)."""
        for axis, pos in enumerate(pos_axes):
            dim = self.n_dims - 1 - axis  # x is the last lattice dimension before F
            lower = torch.floor(pos)
            i0 = lower.long()
            shape = [1] * values.dim()
            shape[dim] = -1
            w = (pos - lower).view(shape)
            values = torch.lerp(values.index_select(dim, i0), values.index_select(dim, i0 + 1), w)
        return values.reshape(-1, self.n_features)

    def _hashed_level(self, table, pos, resolution: int, size: int, offset: int, dense: bool) -> torch.Tensor:
        """Interpolate a level by gathering its 2^d corners per point: pos [N, d] -> [N, F]."""
        base = torch.floor(pos)
        frac = pos - base
        vertex = base.long()[:, None, :] + self.corners[None]              # [N, 2^d, d]
        # Linear interpolation weights: frac for the upper vertex, 1 - frac for the lower.
        w = torch.where(self.corners[None].bool(), frac[:, None, :], 1.0 - frac[:, None, :]).prod(-1)
        rows = self._index(vertex, resolution, size, dense) + offset
        feats = table[rows]                                                # [N, 2^d, F]
        return (w[..., None] * feats).sum(1)

    @staticmethod
    def _unit(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x01 = self._unit(x)
        table = self.params.view(-1, self.n_features)
        outs = []
        for scale, resolution, size, offset, dense in self.layout:
            pos = x01 * scale + 0.5
            if dense and self.n_dims <= 3:  # grid_sample stops at 3D
                outs.append(self._dense_level(table, pos, resolution, size, offset))
            else:
                outs.append(self._hashed_level(table, pos, resolution, size, offset, dense))
        return torch.cat(outs, dim=-1)

    def forward_grid(self, axes) -> torch.Tensor:
        """forward(lattice_points(axes)) for the product grid of 1D coordinates axes = [x, y(, z)]
        in [-1, 1]: [N, n_output_dims] in C order of ((z,) y, x), dense levels interpolated
        separably."""
        axes01 = [self._unit(a) for a in axes]
        table = self.params.view(-1, self.n_features)
        points01 = None
        lattices = self._all_lattice_values(table)
        outs = []
        for level, (scale, resolution, size, offset, dense) in enumerate(self.layout):
            if dense:
                outs.append(self._dense_level_on_lattice(lattices[level], [a * scale + 0.5 for a in axes01]))
                continue
            if points01 is None:
                points01 = lattice_points(axes01)
            outs.append(self._hashed_level(table, points01 * scale + 0.5, resolution, size, offset, dense))
        return torch.cat(outs, dim=-1)


class TcnnHashGridEncoding(nn.Module):
    """The same encoding through tiny-cuda-nn (CUDA only), fp32 output.

    tcnn takes inputs in [0, 1]; it may keep the table in fp16 when built with half precision:
    gradients of tiny table entries then underflow, so we ask for fp32 where the binding allows.
    Its state dict names the table `params`, as HashGridEncoding does (tcnn's module would say
    `enc.params`): weights saved on a GPU with tcnn load on a CPU without it, and back."""

    def __init__(self, n_dims: int, config: dict):
        super().__init__()
        import tinycudann as tcnn

        enc = {"otype": "HashGrid", **DEFAULTS}
        enc.update({k: config[k] for k in DEFAULTS if k in config})
        seed = int(config.get("seed", 0))
        try:
            self.enc = tcnn.Encoding(n_dims, enc, seed=seed, dtype=torch.float32)
        except TypeError:  # older bindings have no dtype argument
            self.enc = tcnn.Encoding(n_dims, enc, seed=seed)
        self._register_state_dict_hook(_tcnn_names_out)
        self._register_load_state_dict_pre_hook(_tcnn_names_in)
        self.n_dims = n_dims
        self.n_output_dims = self.enc.n_output_dims
        # tcnn lays the table out as we do (level_layout), so level offsets are computed here.
        self.layout = level_layout(n_dims, int(enc["n_levels"]), int(enc["log2_hashmap_size"]),
                                   int(enc["base_resolution"]), float(enc["per_level_scale"]))

    @property
    def table(self) -> torch.Tensor:
        return self.enc.params

    def level_offset(self, level: int) -> int:
        return self.layout[level][3]

    def forward(self, x):
        return self.enc(((x + 1.0) * 0.5).clamp(0.0, 1.0)).float()


def _tcnn_names_out(module, state, prefix, local_metadata):
    """TcnnHashGridEncoding's state dict: `enc.params` saved as `params` (the torch encoding's name)."""
    key = prefix + "enc.params"
    if key in state:
        state[prefix + "params"] = state.pop(key)
    return state


def _tcnn_names_in(state, prefix, *args):
    """... and `params` loaded into `enc.params`."""
    key = prefix + "params"
    if key in state:
        state[prefix + "enc.params"] = state.pop(key)
