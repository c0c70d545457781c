"""The MR forward model (docs/measurement-format.md, MR part): coil sensitivities, then a Cartesian FFT with a
sampling mask or a non-Cartesian NUFFT along a trajectory (backends in mr_nufft.py).

Images are complex [n_frames, nz, ny, nx] (nz == 1 for 2D), k-space is complex
[n_frames, n_coils, n_samples]. The operator is linear over the complex numbers; `forward` and
`adjoint` are autograd-aware (physics.linear) and the backward of each is the other, so INR
losses can call `op(image)` directly.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .grid import ImageGrid
from .linear import LinearOperator
from .mr_geometry import MRGeometry
from .mr_nufft import check_nufft, choose_nufft, make_nufft

_SPATIAL = (-3, -2, -1)  # FFT axes of a [..., nz, ny, nx] array; a size-1 z axis is a no-op


class MROperator(LinearOperator):
    """A: image [n_frames, nz, ny, nx] complex64 -> k-space [n_frames, n_coils, n_samples].

    Cartesian: k = fftshift(fftn(ifftshift(S_c x), norm="ortho")) over (z, y, x), then the mask's
    true entries of each frame in C order. Frames whose masks hold fewer than n_samples (the
    largest count) entries are padded at the end: `forward` writes 0 there and `adjoint` ignores
    those entries, so A stays an exact linear map with an exact adjoint.

    Non-Cartesian: the NUFFT backend `nufft` (mr_nufft.py: "torchkbnufft", "finufft" or "auto"; the
    one in use is `self.nufft`), one trajectory per frame. Its scale is 1/sqrt(prod(2 im_size)),
    unlike the orthonormal Cartesian FFT (docs/measurement-format.md). Density compensation is never applied
    here; methods pass it where they want it (`normal(x, dcf=...)`).

    Coil maps [n_coils, (nz,) ny, nx] multiply the image first; without them there is one coil of
    unit sensitivity. Coil maps are constants (no gradient flows into them).

    toeplitz: let `normal` use the backend's Toeplitz-embedded kernel for non-Cartesian data
    (mr_nufft.py: two FFTs on the 2x grid instead of an interpolation round trip; 1e-5 (finufft)
    to 1e-3 (torchkbnufft) from adjoint(forward(x)), and self-adjoint, so it is safe inside CG
    and for autograd).
    """

    dtype = torch.complex64
    data_name = "k-space"
    _shape_hint = ("Images are [n_frames, nz, ny, nx] and k-space [n_frames, n_coils, n_samples]: check "
                   "n_frames, n_coils and the grid of the measurement.")

    def __init__(self, geometry: MRGeometry, grid: ImageGrid, device="cpu", toeplitz: bool = True,
                 nufft: str = "auto"):
        if not isinstance(geometry, MRGeometry):
            raise InputError("/geometry", f"expected an MRGeometry, got {type(geometry).__name__}.")
        self.geometry, self.grid = geometry, grid
        self.device = torch.device(device)
        self.toeplitz = bool(toeplitz)
        nz, ny, nx = grid.shape
        self.n_frames = int(geometry.n_frames)
        self.image_shape = (self.n_frames, nz, ny, nx)
        self.im_size = (ny, nx) if nz == 1 else (nz, ny, nx)
        self.type = geometry.type
        # Cartesian data need no NUFFT (self.nufft None); a wrong name is still reported.
        self.nufft = choose_nufft(nufft, self.device) if self.type != "cartesian" else check_nufft(nufft)
        self.smaps = self._coil_maps(geometry.coil_maps)  # [C, nz, ny, nx] or None
        self.n_coils = 1 if self.smaps is None else self.smaps.shape[0]
        if self.type == "cartesian":
            self._setup_cartesian(geometry.mask)
        else:
            self._setup_noncartesian(geometry.trajectory)
        self.data_shape = (self.n_frames, self.n_coils, self.n_samples)

    # ---- construction ---------------------------------------------------------------------
    def _spatial_array(self, a: np.ndarray, field: str, lead: int, what: str) -> np.ndarray:
        """Accept [lead..., ny, nx] for a 2D grid as well as [lead..., nz, ny, nx]."""
        nz, ny, nx = self.grid.shape
        full = (nz, ny, nx)
        if a.ndim == lead + 2 and nz == 1:
            a = a[(slice(None),) * lead + (None,)]
        if a.ndim != lead + 3 or tuple(a.shape[lead:]) != full:
            expect = f"[{what}, {nz}, {ny}, {nx}]" + (f" or [{what}, {ny}, {nx}]" if nz == 1 else "")
            raise InputError(field, f"has shape {list(a.shape)}, the grid needs {expect}.",
                             "Store it on the measurement's grid (NumPy order z, y, x).")
        return a

    def _coil_maps(self, maps):
        if maps is None:
            return None
        maps = self._spatial_array(np.asarray(maps), "/geometry/coil_maps", 1, "n_coils")
        if not np.all(np.isfinite(maps)):
            raise InputError("/geometry/coil_maps", "contains NaN or Inf.")
        return torch.as_tensor(np.ascontiguousarray(maps, dtype=np.complex64), device=self.device)

    def _setup_cartesian(self, mask):
        mask = self._spatial_array(np.asarray(mask, dtype=bool), "/geometry/mask", 1, "n_frames")
        counts = mask.reshape(self.n_frames, -1).sum(axis=1)
        if counts.min() < 1:
            raise InputError("/geometry/mask", f"frame {int(np.argmin(counts))} samples no k-space point.",
                             "Every frame needs at least one true entry.")
        self.n_samples = int(counts.max())
        idx = np.zeros((self.n_frames, self.n_samples), dtype=np.int64)
        valid = np.zeros((self.n_frames, self.n_samples), dtype=bool)
        for f in range(self.n_frames):
            flat = np.flatnonzero(mask[f].ravel())  # C order, as docs/measurement-format.md says
            idx[f, :flat.size] = flat
            valid[f, :flat.size] = True
        self.mask = torch.as_tensor(mask, device=self.device)
        self._idx = torch.as_tensor(idx, device=self.device)
        self._valid = torch.as_tensor(valid, device=self.device)
        self._all_valid = bool(valid.all())

    def _setup_noncartesian(self, traj):
        traj = np.asarray(traj, dtype=np.float32)
        ndim = len(self.im_size)
        if traj.ndim != 3 or traj.shape[0] != self.n_frames or traj.shape[1] != ndim:
            raise InputError("/geometry/trajectory",
                             f"has shape {list(traj.shape)}, the {ndim}D grid needs "
                             f"[n_frames, {ndim}, n_samples] (axes {'y, x' if ndim == 2 else 'z, y, x'}).",
                             "Give one k-space coordinate per image axis, in rad/voxel.")
        if not np.all(np.isfinite(traj)) or np.abs(traj).max() > np.pi + 1e-3:
            raise InputError("/geometry/trajectory", "must be finite and within [-pi, pi) rad/voxel, "
                             f"got max |k| = {float(np.nanmax(np.abs(traj))):.4g}.",
                             "Scale k-space positions to radians per voxel (k_max = pi at Nyquist).")
        self.n_samples = int(traj.shape[2])
        self.omega = torch.as_tensor(traj, device=self.device)
        smaps = None if self.smaps is None else self.smaps.reshape(self.n_coils, *self.im_size)
        self._backend = make_nufft(self.nufft, self.omega, self.im_size, smaps, self.device)
        self._toeplitz = {}  # None / "weighted" -> the backend's Toeplitz normal (see _toeplitz_for)

    # ---- the maps themselves (no autograd bookkeeping) -------------------------------------
    def _forward_impl(self, x):
        f = self.n_frames
        if self.type == "cartesian":
            coil = x[:, None] if self.smaps is None else x[:, None] * self.smaps[None]
            k = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(coil, dim=_SPATIAL), dim=_SPATIAL,
                                                  norm="ortho"), dim=_SPATIAL)
            k = k.reshape(f, self.n_coils, -1)
            out = torch.gather(k, 2, self._idx[:, None, :].expand(f, self.n_coils, self.n_samples))
            return out if self._all_valid else out * self._valid[:, None, :]
        return self._backend.forward(x).reshape(self.data_shape)

    def _adjoint_impl(self, y):
        f = self.n_frames
        if self.type == "cartesian":
            if not self._all_valid:
                y = y * self._valid[:, None, :]
            nvox = int(np.prod(self.grid.shape))
            k = torch.zeros((f, self.n_coils, nvox), dtype=y.dtype, device=y.device)
            # padded entries point at voxel 0 with value 0, so scatter_add leaves it unchanged
            k.scatter_add_(2, self._idx[:, None, :].expand(f, self.n_coils, self.n_samples), y)
            k = k.reshape(f, self.n_coils, *self.grid.shape)
            coil = torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(k, dim=_SPATIAL), dim=_SPATIAL,
                                                      norm="ortho"), dim=_SPATIAL)
            return coil[:, 0] if self.smaps is None else (coil * self.smaps.conj()[None]).sum(dim=1)
        return self._backend.adjoint(y).reshape(self.image_shape)

    # ---- public (forward, adjoint: physics.linear) -----------------------------------------
    def normal(self, x: torch.Tensor, dcf: torch.Tensor | None = None) -> torch.Tensor:
        """Aᴴ diag(dcf) A x (dcf: float [n_frames, n_samples] or None for Aᴴ A x). Autograd-aware.

        Cartesian: one FFT round trip with the full-grid mask (dcf not supported there).
        Non-Cartesian with `toeplitz`: the backend's Toeplitz kernel, cached per dcf tensor."""
        x = self._prepare(x, self.image_shape, "image")
        if self.type == "cartesian":
            if dcf is not None:
                raise InputError("dcf", "density compensation applies to non-Cartesian data only.")
            coil = x[:, None] if self.smaps is None else x[:, None] * self.smaps[None]
            k = torch.fft.fftn(torch.fft.ifftshift(coil, dim=_SPATIAL), dim=_SPATIAL, norm="ortho")
            k = k * torch.fft.ifftshift(self.mask, dim=_SPATIAL)[:, None]
            coil = torch.fft.fftshift(torch.fft.ifftn(k, dim=_SPATIAL, norm="ortho"), dim=_SPATIAL)
            return coil[:, 0] if self.smaps is None else (coil * self.smaps.conj()[None]).sum(dim=1)
        if dcf is not None:
            dcf = torch.as_tensor(dcf, device=self.device, dtype=torch.float32)
            if tuple(dcf.shape) != (self.n_frames, self.n_samples):
                raise InputError("dcf", f"has shape {list(dcf.shape)}, the operator expects "
                                 f"{[self.n_frames, self.n_samples]} [n_frames, n_samples].")
        if not self.toeplitz:
            y = self.forward(x)
            return self.adjoint(y if dcf is None else y * dcf[:, None, :])
        return self._toeplitz_for(dcf)(x.reshape(self.n_frames, *self.im_size)).reshape(self.image_shape)

    def _toeplitz_for(self, dcf):
        """The backend's Toeplitz normal for these weights: the unweighted one and the latest
        weighted one are kept, the latter found by comparing the weights themselves (an address
        can be reused by the next temporary tensor)."""
        if dcf is None:
            if None not in self._toeplitz:
                self._toeplitz[None] = self._backend.toeplitz(None)
            return self._toeplitz[None]
        cached = self._toeplitz.get("weighted")
        if cached is None or not torch.equal(cached[0], dcf):
            cached = (dcf.clone(), self._backend.toeplitz(dcf))
            self._toeplitz["weighted"] = cached
        return cached[1]

    def __repr__(self):
        return (f"MROperator({self.type}, {self.nufft}, image {list(self.image_shape)} -> k-space {list(self.data_shape)}, "
                f"device={self.device})")
