"""astra-toolbox CUDA backend for `CTProjector` (used when the device is CUDA and astra has CUDA).

Zero-copy: CUDA tensors are handed to `astra.experimental.direct_FP3D` / `direct_BP3D` through
DLPack (astra >= 2.2) or, failing that, through `astra.pythonutils.GPULink` pointers. 2D images
are projected as a 3D volume of one slice. astra is imported lazily, only when this backend is
used.

Conventions (our grid frame -> astra 3D):
- volume array [nz, ny, nx] = astra's [slices, rows, cols]; window = the grid's physical extent
  centred on 0, so the per-view vectors (mm) are passed unchanged as `cone_vec` /
  `parallel3d_vec` (same meaning as docs/measurement-format.md's vectors).
- astra's projection array is [n_rows, n_views, n_cols]; we permute to [n_views, n_rows, n_cols].
Not run on these development machines (no GPU): `test_ct_projector.py` compares this backend with
the torch one when CUDA is available.
"""

from __future__ import annotations

import torch

from .ct_geometry import CTGeometry
from .grid import ImageGrid


def astra_cuda_available() -> bool:
    """True when astra-toolbox imports and reports CUDA support."""
    try:
        import astra
    except ImportError:
        return False
    try:
        return bool(astra.use_cuda())
    except Exception:  # astra raises different errors without a driver; treat all as "no CUDA"
        return False


class AstraCTBackend:
    """Forward/adjoint with astra's CUDA 3D projectors; same shapes and units as CTProjector."""

    def __init__(self, geometry: CTGeometry, grid: ImageGrid):
        import astra

        self._astra = astra
        self.geometry = geometry
        self.grid = grid
        nx, ny, nz = grid.size
        ex, ey, ez = grid.extent_mm
        self.vol_geom = astra.create_vol_geom(ny, nx, nz, -ex / 2, ex / 2, -ey / 2, ey / 2, -ez / 2, ez / 2)
        kind = "cone_vec" if geometry.type == "cone" else "parallel3d_vec"
        self.proj_geom = astra.create_proj_geom(kind, geometry.n_rows, geometry.n_cols, geometry.vectors)
        self.projector_id = astra.create_projector("cuda3d", self.proj_geom, self.vol_geom)

    def __del__(self):
        try:
            self._astra.projector3d.delete(self.projector_id)
        except Exception:
            pass

    # Raw (non-autograd) operations on [nz, ny, nx] / [n_views, n_rows, n_cols] float32 CUDA tensors.
    def _link(self, t: torch.Tensor):
        """A DLPack-capable tensor for astra, or a GPULink for astra versions without DLPack."""
        if getattr(self, "_use_gpulink", False):
            from astra.pythonutils import GPULink

            z, y, x = t.shape
            return GPULink(t.data_ptr(), x, y, z, x * 4)
        return t

    def _call(self, fn, vol, proj):
        from astra import experimental

        try:
            getattr(experimental, fn)(self.projector_id, self._link(vol), self._link(proj))
        except (TypeError, ValueError):
            if getattr(self, "_use_gpulink", False):
                raise
            self._use_gpulink = True
            getattr(experimental, fn)(self.projector_id, self._link(vol), self._link(proj))

    def fp_raw(self, image: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        vol = image.detach().to(torch.float32).contiguous()
        proj = torch.zeros((g.n_rows, g.n_views, g.n_cols), dtype=torch.float32, device=image.device)
        torch.cuda.synchronize(image.device)  # astra uses its own stream
        self._call("direct_FP3D", vol, proj)
        return proj.permute(1, 0, 2).contiguous().to(image.dtype)

    def bp_raw(self, sino: torch.Tensor) -> torch.Tensor:
        proj = sino.detach().to(torch.float32).permute(1, 0, 2).contiguous()
        vol = torch.zeros(self.grid.shape, dtype=torch.float32, device=sino.device)
        torch.cuda.synchronize(sino.device)
        self._call("direct_BP3D", vol, proj)
        return vol.to(sino.dtype)

    # CTProjector's forward/adjoint (physics.linear) call these two, with or without a batch dim.
    def forward_raw(self, image):
        if image.dim() == 4:
            return torch.stack([self.fp_raw(im) for im in image])
        return self.fp_raw(image)

    def adjoint_raw(self, sino):
        if sino.dim() == 4:
            return torch.stack([self.bp_raw(s) for s in sino])
        return self.bp_raw(sino)
