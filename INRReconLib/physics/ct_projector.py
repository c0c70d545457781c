"""Differentiable CT projector: line integrals through an image on an `ImageGrid`.

The torch backend is ray-driven (Joseph's method): every detector pixel centre defines a ray
(from the source for cone/fan beam, along the ray direction for parallel beam); the ray is
sampled where it crosses the planes of voxel centres normal to its dominant axis, the image is
interpolated there (linear in the other axes, zero beyond the outer voxel centres, via
`grid_sample`) and the samples are summed times the ray length per plane (mm). So the sinogram is in
μ [1/mm] × mm. The adjoint is the exact transpose of that sampling (the input-gradient of
`grid_sample`), so the dot-product test holds to float precision and gradients through
`forward` are `adjoint`.

Geometry is read from the per-view vectors (docs/measurement-format.md), so detector offsets, half-fan scans and
non-circular orbits need no special code. On a CUDA device with a CUDA-enabled astra-toolbox the
astra backend (`ct_astra.py`) is used instead when `backend="auto"`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .backends import PROJECTORS
from .ct_geometry import CTGeometry
from .grid import ImageGrid
from .linear import LinearOperator


# Sample coordinates of all views are cached when they fit in this many bytes (the 64x128x128,
# 20-view, 100x200 cone case needs ~410 MiB); otherwise they are recomputed per chunk of views
# on every call, which costs 3-5x the interpolation itself on a CPU.
CACHE_BYTES = 512 * 2**20
# Chunks of views are sized so one chunk's sample coordinates stay below this (small enough for
# the allocator to reuse memory instead of mapping fresh pages for every chunk).
CHUNK_BYTES = 24 * 2**20


class CTProjector(LinearOperator):
    """A = line-integral operator for `geometry` on `grid` (physics.linear.LinearOperator).

    forward(image):  image [nz, ny, nx] or [batch, nz, ny, nx] (μ, 1/mm)
                     -> sinogram [n_views, n_rows, n_cols] (or with the batch dim), dimensionless.
    adjoint(sino):   the exact transpose, sinogram -> image.
    Both accept torch tensors (or NumPy arrays) and are autograd-aware: the gradient of forward
    is adjoint and vice versa.

    backend (the config key `projector`): "auto" (astra on CUDA when astra has CUDA, else torch),
    "torch" or "astra"; `self.backend` is the one in use.
    """

    dtype = torch.float32
    batch_dims = 1
    data_name = "sinogram"
    _shape_hint = "Check that the image grid and the geometry belong to the same measurement."

    def __init__(self, geometry: CTGeometry, grid: ImageGrid, device="cpu", backend: str = "auto"):
        if not isinstance(geometry, CTGeometry):
            raise InputError("geometry", f"expected a CTGeometry, got {type(geometry).__name__}.")
        if grid.is_2d and geometry.n_rows != 1:
            raise InputError("/geometry", f"a 2D grid (nz = 1) needs a one-row detector, got {geometry.n_rows} rows.",
                             "Use a 3D grid for a multi-row detector, or keep one row.")
        if backend not in PROJECTORS:
            raise InputError("projector", f"must be 'auto', 'torch' or 'astra', got {backend!r}.",
                             "Use 'auto' (astra on a CUDA device when it has CUDA, else torch).")
        self.geometry = geometry
        self.grid = grid
        self.device = torch.device(device)
        self.requested_backend = backend
        self.backend = self._choose_backend(backend)
        self._astra = None
        self._cache = {}  # (device, dtype) -> list of (view slice, coords, step) per chunk
        self._plan = self._plan_rays()
        self.image_shape = tuple(grid.shape)
        self.data_shape = tuple(geometry.sinogram_shape)

    def _forward_impl(self, image):
        if self.backend == "astra":
            return self._astra_backend().forward_raw(image)
        return self._forward_raw(image)

    def _adjoint_impl(self, sino):
        if self.backend == "astra":
            return self._astra_backend().adjoint_raw(sino)
        return self._adjoint_raw(sino)

    def subset(self, view_indices) -> "CTProjector":
        """The projector for some views only (ordered subsets, mini-batches of views)."""
        return CTProjector(self.geometry.subset(view_indices), self.grid, self.device, self.requested_backend)

    def backproject_voxel_driven(self, sino, view_weights=None, fdk_weighting: bool = False):
        """Σ_views w_i · sino_i(projection of each voxel centre), linear interpolation on the detector.

        Not the transpose of `forward`: this is the backprojection step of FBP/FDK, smoother and
        free of the ray-driven adjoint's sampling pattern. With `fdk_weighting` (cone beam) every
        term is multiplied by (SID / depth)², depth = distance of the voxel from the source along
        the detector normal, SID = that of the isocentre (grid centre).
        sino: [n_views, n_rows, n_cols]; view_weights: [n_views] or None. Returns grid.shape.
        """
        sino = self._prepare(sino, self.data_shape, "sinogram")
        if sino.dim() != 3:
            raise InputError("sinogram", "voxel-driven backprojection takes one sinogram, not a batch.")
        dtype = sino.dtype if sino.is_floating_point() else torch.float32
        sino = sino.to(dtype)
        g = self.geometry
        vec = torch.as_tensor(g.vectors, dtype=torch.float64, device=sino.device)
        nz, ny, nx = self.grid.shape
        xs, ys, zs = (torch.as_tensor(a, dtype=torch.float64, device=sino.device) for a in self.grid.voxel_centres())
        zz, yy, xx = torch.meshgrid(zs, ys, xs, indexing="ij")
        pts = torch.stack([xx.reshape(-1), yy.reshape(-1), zz.reshape(-1)], dim=1)  # [nvox, 3]
        w = torch.ones(g.n_views, dtype=torch.float64, device=sino.device) if view_weights is None else \
            torch.as_tensor(view_weights, dtype=torch.float64, device=sino.device)
        out = torch.zeros(pts.shape[0], dtype=dtype, device=sino.device)
        n_chunk = max(1, int(CHUNK_BYTES // (pts.shape[0] * 8 * 4)))
        for v0 in range(0, g.n_views, n_chunk):
            sl = slice(v0, min(v0 + n_chunk, g.n_views))
            src_or_dir, centre, u, v = vec[sl, 0:3], vec[sl, 3:6], vec[sl, 6:9], vec[sl, 9:12]
            n = torch.linalg.cross(u, v)
            u_dual = torch.linalg.cross(v, n) / (u * torch.linalg.cross(v, n)).sum(1, keepdim=True)
            v_dual = torch.linalg.cross(n, u) / (v * torch.linalg.cross(n, u)).sum(1, keepdim=True)
            p = pts.unsqueeze(0)  # [1, nvox, 3]
            weight = None
            if g.type == "cone":
                s = src_or_dir.unsqueeze(1)
                ray = p - s  # [c, nvox, 3]
                depth = (ray * n.unsqueeze(1)).sum(-1)
                t = ((centre - src_or_dir) * n).sum(1, keepdim=True) / depth
                hit = s + t.unsqueeze(-1) * ray
                if fdk_weighting:
                    nhat = n / n.norm(dim=1, keepdim=True)
                    sid = (-(src_or_dir * nhat).sum(1, keepdim=True))
                    weight = (sid / (ray * nhat.unsqueeze(1)).sum(-1)) ** 2
            else:
                d = src_or_dir.unsqueeze(1)
                t = ((centre.unsqueeze(1) - p) * n.unsqueeze(1)).sum(-1) / (d * n.unsqueeze(1)).sum(-1)
                hit = p + t.unsqueeze(-1) * d
            rel = hit - centre.unsqueeze(1)
            a = (rel * u_dual.unsqueeze(1)).sum(-1)  # column coordinate, 0 at the detector centre
            b = (rel * v_dual.unsqueeze(1)).sum(-1)
            # align_corners=False: normalised = 2 * (index + 0.5) / n - 1 = 2 * a / n here
            coords = torch.stack([2 * a / g.n_cols, 2 * b / g.n_rows], dim=-1).to(dtype)
            vals = F.grid_sample(sino[sl].unsqueeze(1), coords.unsqueeze(1), mode="bilinear",
                                 padding_mode="zeros", align_corners=False)[:, 0, 0, :]  # [c, nvox]
            if weight is not None:
                vals = vals * weight.to(dtype)
            out += (vals * w[sl].to(dtype).unsqueeze(1)).sum(0)
        return out.reshape(nz, ny, nx)

    # ----------------------------------------------------------------- internals
    def _choose_backend(self, backend):
        if backend == "torch":
            return "torch"
        cuda_ok = self.device.type == "cuda"
        astra_ok = False
        if cuda_ok:
            try:
                from .ct_astra import astra_cuda_available

                astra_ok = astra_cuda_available()
            except ImportError:
                astra_ok = False
        if backend == "astra":
            if not (cuda_ok and astra_ok):
                raise InputError("projector", "the astra backend needs a CUDA device and astra-toolbox with CUDA.",
                                 "Use projector 'torch' or 'auto'.")
            return "astra"
        return "astra" if (cuda_ok and astra_ok) else "torch"

    def _astra_backend(self):
        if self._astra is None:
            from .ct_astra import AstraCTBackend

            self._astra = AstraCTBackend(self.geometry, self.grid)
        return self._astra

    def _plan_rays(self):
        """Number of samples per ray and how views are chunked."""
        g, grid = self.geometry, self.grid
        dims = 2 if grid.is_2d else 3
        half = np.asarray(grid.extent_mm) / 2.0
        n_samples = max(grid.size[:dims])
        per_view = g.n_rows * g.n_cols * n_samples * 2 * 4  # two float32 coordinates per sample
        n_chunk = max(1, int(CHUNK_BYTES // per_view))
        cache = per_view * g.n_views <= CACHE_BYTES
        return {"half": half, "dims": dims, "n_samples": n_samples, "n_chunk": n_chunk, "cache": cache}

    def _chunks(self, device, dtype):
        """Yield (view slice, normalised sample coords, step length [mm] per ray) per chunk of views."""
        key = (str(device), dtype)
        if key in self._cache:
            yield from self._cache[key]
            return
        built = []
        for v0 in range(0, self.geometry.n_views, self._plan["n_chunk"]):
            sl = slice(v0, min(v0 + self._plan["n_chunk"], self.geometry.n_views))
            item = (sl,) + self._ray_samples(sl, device, dtype)
            if self._plan["cache"]:
                built.append(item)
            yield item
        if self._plan["cache"]:
            self._cache[key] = built

    def _ray_samples(self, sl, device, dtype):
        """Joseph-style samples for views `sl`: grid_sample grids and per-ray weights (mm).

        Each ray is sampled where it crosses the planes of voxel centres normal to its dominant
        axis (largest |d_k| / h_k), so along that axis the samples sit on voxel centres and the
        interpolation is bi-/trilinear in the others; each sample stands for h_k / |d_k| mm of
        ray. Samples past the volume (or, for cone beam, behind the source or beyond the
        detector) are moved outside the grid, where zero padding drops them.
        """
        g, plan, grid = self.geometry, self._plan, self.grid
        dims = plan["dims"]
        vec = torch.as_tensor(g.vectors[sl], dtype=torch.float64, device=device)
        c = vec.shape[0]
        cols = torch.arange(g.n_cols, dtype=torch.float64, device=device) - g.n_cols / 2 + 0.5
        rows = torch.arange(g.n_rows, dtype=torch.float64, device=device) - g.n_rows / 2 + 0.5
        centre, u, v = vec[:, 3:6], vec[:, 6:9], vec[:, 9:12]
        pix = (centre[:, None, None, :] + cols[None, None, :, None] * u[:, None, None, :]
               + rows[None, :, None, None] * v[:, None, None, :])  # [c, R, C, 3]
        if g.type == "cone":
            origin = vec[:, None, None, 0:3].expand_as(pix)
            delta = pix - origin
            length = delta.norm(dim=-1)
            direction = delta / length[..., None]
        else:
            direction = vec[:, None, None, 0:3].expand_as(pix).clone()
            origin = pix
            length = None
        origin, direction = origin[..., :dims], direction[..., :dims]
        spacing = torch.as_tensor(grid.spacing[:dims], dtype=torch.float64, device=device)
        size = torch.as_tensor(grid.size[:dims], dtype=torch.float64, device=device)
        half = torch.as_tensor(plan["half"][:dims], dtype=torch.float64, device=device)
        axis = (direction.abs() / spacing).argmax(dim=-1, keepdim=True)  # [c, R, C, 1]
        d_k = direction.gather(-1, axis)[..., 0]
        o_k = origin.gather(-1, axis)[..., 0]
        h_k = spacing[axis[..., 0]]
        n_k = size[axis[..., 0]]
        d_k = torch.where(d_k.abs() < 1e-12, torch.full_like(d_k, 1e-12), d_k)
        # Ray parameter at sample i: t_i = alpha * i + beta (the i-th voxel-centre plane).
        alpha = h_k / d_k
        beta = (-(n_k - 1) / 2 * h_k - o_k) / d_k
        # Normalised coordinates are affine in i as well: coords_i = A + i * B, per ray.
        A = (origin + beta[..., None] * direction) / half
        B = (alpha[..., None] * direction) / half
        # Valid sample range per ray: i in [0, n_k - 1], and for cone beam 0 <= t <= length.
        lo = torch.zeros_like(alpha)
        hi = n_k - 1
        if length is not None:
            i0 = -beta / alpha
            i1 = (length - beta) / alpha
            lo = torch.maximum(lo, torch.minimum(i0, i1))
            hi = torch.minimum(hi, torch.maximum(i0, i1))
        weight = (h_k / d_k.abs()).to(dtype)  # [c, R, C] mm of ray per sample
        if dims == 3:
            return self._plane_groups(axis, A, B, lo, hi, dtype, device), weight
        n = plan["n_samples"]
        idx = torch.arange(n, dtype=dtype, device=device)
        coords = torch.addcmul(A.to(dtype)[..., None, :], idx[:, None], B.to(dtype)[..., None, :])
        outside = (idx < (lo - 1e-6).to(dtype)[..., None]) | (idx > (hi + 1e-6).to(dtype)[..., None])
        coords.masked_fill_(outside[..., None], 4.0)  # beyond the grid: zero padding drops it
        return coords.reshape(1, c * g.n_rows * g.n_cols, n, 2), weight

    def _plane_groups(self, axis, A, B, lo, hi, dtype, device):
        """3D: rays grouped by dominant axis k; per group (k, ray indices, grid [n_k, M, 1, 2]).

        Every sample lies on a voxel-centre plane normal to k, so the volume is handed to a 2D
        `grid_sample` as a batch of n_k planes and each plane is sampled bilinearly: the same
        numbers as trilinear sampling on those planes, with far more coherent memory access."""
        axis, A, B = axis.reshape(-1), A.reshape(-1, 3), B.reshape(-1, 3)
        lo, hi = lo.reshape(-1), hi.reshape(-1)
        groups = []
        for k, others in _PLANE_AXES.items():
            sel = (axis == k).nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            n_k = self.grid.size[k]
            idx = torch.arange(n_k, dtype=dtype, device=device)
            a, b = A[sel][:, others].to(dtype), B[sel][:, others].to(dtype)
            coords = torch.addcmul(a[None], idx[:, None, None], b[None])  # [n_k, M, 2]
            lo_k, hi_k = lo[sel], hi[sel]
            # Only cone rays that start or end inside the volume need masking (rare, costly).
            if bool((lo_k > 1e-6).any()) or bool((hi_k < n_k - 1 - 1e-6).any()):
                outside = (idx[:, None] < (lo_k - 1e-6).to(dtype)[None]) | \
                          (idx[:, None] > (hi_k + 1e-6).to(dtype)[None])
                coords.masked_fill_(outside[..., None], 4.0)
            groups.append((k, sel, coords.unsqueeze(2)))
        return groups

    def _forward_raw(self, image):
        batched = image.dim() == 4
        img = image if batched else image.unsqueeze(0)
        if not img.is_floating_point():
            img = img.float()
        img = img.contiguous()
        B = img.shape[0]
        g = self.geometry
        out = torch.empty((B,) + g.sinogram_shape, dtype=img.dtype, device=img.device)
        if self._plan["dims"] == 2:
            vol = img[:, 0].unsqueeze(0)  # [1, B, ny, nx]: the batch rides along as channels
            for sl, coords, step in self._chunks(img.device, img.dtype):
                vals = F.grid_sample(vol, coords, mode="bilinear", padding_mode="zeros", align_corners=False)
                out[:, sl] = vals.sum(-1).reshape(B, step.shape[0], g.n_rows, g.n_cols) * step
            return out if batched else out[0]
        planes = {}
        for sl, groups, step in self._chunks(img.device, img.dtype):
            c = step.shape[0]
            line = torch.zeros((B, c * g.n_rows * g.n_cols), dtype=img.dtype, device=img.device)
            for k, sel, coords in groups:
                if k not in planes:  # [n_k, B, H, W]: the planes normal to axis k as a batch
                    planes[k] = img.permute(_PLANE_PERMUTE[k]).contiguous()
                vals = F.grid_sample(planes[k], coords, mode="bilinear", padding_mode="zeros", align_corners=False)
                line[:, sel] = vals.sum(0)[..., 0]
            out[:, sl] = line.reshape(B, c, g.n_rows, g.n_cols) * step
        return out if batched else out[0]

    def _adjoint_raw(self, sino):
        batched = sino.dim() == 4
        s = sino if batched else sino.unsqueeze(0)
        if not s.is_floating_point():
            s = s.float()
        B = s.shape[0]
        nz, ny, nx = self.grid.shape
        g = self.geometry
        if self._plan["dims"] == 2:
            shape = (1, B, ny, nx)
            template = torch.zeros(shape, dtype=s.dtype, device=s.device)
            acc = torch.zeros(shape, dtype=s.dtype, device=s.device)
            n = self._plan["n_samples"]
            for sl, coords, step in self._chunks(s.device, s.dtype):
                c = step.shape[0]
                weighted = s[:, sl] * step  # [B, c, R, C]
                grad_out = weighted.reshape(1, B, c * g.n_rows * g.n_cols, 1).expand(-1, -1, -1, n)
                acc += _grid_sample_input_grad(grad_out, template, coords)
            img = acc[0].unsqueeze(1)
            return img if batched else img[0]
        acc, templates = {}, {}
        for sl, groups, step in self._chunks(s.device, s.dtype):
            weighted = (s[:, sl] * step).reshape(B, -1)
            for k, sel, coords in groups:
                if k not in acc:
                    shape = torch.empty((B, nz, ny, nx), device="meta").permute(_PLANE_PERMUTE[k]).shape
                    templates[k] = torch.zeros(shape, dtype=s.dtype, device=s.device)
                    acc[k] = torch.zeros(shape, dtype=s.dtype, device=s.device)
                grad_out = weighted[:, sel][None, :, :, None].expand(coords.shape[0], -1, -1, -1)
                acc[k] += _grid_sample_input_grad(grad_out, templates[k], coords)
        img = torch.zeros((B, nz, ny, nx), dtype=s.dtype, device=s.device)
        for k, a in acc.items():
            img += a.permute(_PLANE_UNPERMUTE[k])
        return img if batched else img[0]


# Dominant axis k (0 = x, 1 = y, 2 = z) -> the two other coordinates as grid_sample's (W, H),
# the permutation of [B, nz, ny, nx] to [n_k, B, H, W], and its inverse.
_PLANE_AXES = {0: [1, 2], 1: [0, 2], 2: [0, 1]}
_PLANE_PERMUTE = {0: (3, 0, 1, 2), 1: (2, 0, 1, 3), 2: (1, 0, 2, 3)}
_PLANE_UNPERMUTE = {0: (1, 2, 3, 0), 1: (1, 2, 0, 3), 2: (1, 0, 2, 3)}


def _grid_sample_input_grad(grad_out, template, coords):
    """Transpose of bilinear/trilinear `grid_sample` (zeros padding, align_corners=False) w.r.t. its input."""
    try:
        if coords.shape[-1] == 2:
            op = torch.ops.aten.grid_sampler_2d_backward
        else:
            op = torch.ops.aten.grid_sampler_3d_backward
        return op(grad_out, template, coords, 0, 0, False, [True, False])[0]
    except (AttributeError, RuntimeError, TypeError):
        # Fallback through autograd if the aten signature ever changes.
        with torch.enable_grad():
            leaf = template.clone().requires_grad_(True)
            out = F.grid_sample(leaf, coords, mode="bilinear", padding_mode="zeros", align_corners=False)
            return torch.autograd.grad(out, leaf, grad_out)[0]
