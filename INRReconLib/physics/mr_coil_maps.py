"""Coil sensitivities estimated from the k-space itself, for data that come without maps (all
real multi-coil data).

`espirit` (Uecker et al., MRM 2014): the fully sampled calibration region's k×k patches span a
low-dimensional signal subspace; projecting onto it is, in image space, a pointwise nc×nc matrix
whose eigenvector with eigenvalue ≈ 1 is the coil sensitivity at that voxel, and whose largest
eigenvalue falls below 1 outside the object (the maps are zero there, below `crop`).
`lowres`: the calibration region alone (Hann-windowed) gives smooth coil images, divided by
their root sum of squares; the fallback when the calibration region is too small for ESPIRiT.

The calibration region: Cartesian, the largest fully sampled block around the k-space centre;
non-Cartesian, the samples within `calibration` grid units of the centre gridded per coil by the
adjoint NUFFT and transformed to a Cartesian block. Maps are phase-referenced to the first coil,
so the combined image keeps a smooth phase.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

COIL_MAP_METHODS = ("espirit", "lowres")
CALIBRATION = 24     # calibration block width (k-space samples per axis) to aim for
MIN_CALIBRATION = 5  # fewer fully sampled samples per axis give maps without variation along it
MIN_ESPIRIT_CALIBRATION = 12  # below this ESPIRiT's patches do not span the subspace: low-res maps
KERNEL = 6           # ESPIRiT kernel width
THRESHOLD = 0.02     # singular values kept: above this fraction of the largest
CROP = 0.9           # eigenvalue below which a voxel is outside the object (map 0)
VOXEL_BLOCK = 16384  # voxels per eigen-decomposition call (memory)


def centred_fft(x, axes):
    """k-space of an image over `axes`, as the measurement format defines it (centre at n // 2)."""
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def centred_ifft(k, axes):
    """The inverse of centred_fft."""
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(k, axes=axes), axes=axes, norm="ortho"), axes=axes)


def cartesian_calibration(kspace: np.ndarray, mask: np.ndarray, width: int = CALIBRATION) -> np.ndarray:
    """The fully sampled centre of Cartesian k-space [nc, (nz,) ny, nx] (zeros off the mask) as a
    block [nc, (cz,) cy, cx], at most `width` + 1 wide per axis: grown one sample per side on
    each axis in turn while the whole block stays sampled."""
    mask = np.asarray(mask, bool)
    centre = [n // 2 for n in mask.shape]
    half = [0] * mask.ndim

    def block(h):
        return tuple(slice(c - hh, c + hh + 1) for c, hh in zip(centre, h))

    if not mask[block(half)]:
        raise InputError("coil_maps", "the k-space centre is not sampled: coil sensitivities cannot be estimated.",
                         "Sample the centre of k-space (ACS lines), or give coil maps in the measurement file.")
    grown = True
    while grown:
        grown = False
        for axis, n in enumerate(mask.shape):
            trial = list(half)
            trial[axis] += 1
            if 2 * trial[axis] <= width and centre[axis] - trial[axis] >= 0 and centre[axis] + trial[axis] < n \
                    and mask[block(trial)].all():
                half, grown = trial, True
    return np.asarray(kspace)[(slice(None),) + block(half)]


def estimate_coil_maps(calibration: np.ndarray, shape, method: str = "espirit", *, kernel: int = KERNEL,
                       threshold: float = THRESHOLD, crop: float = CROP):
    """Coil maps complex64 [nc, *shape] from a calibration block [nc, *cal] (same number of axes
    as `shape`, centred k-space, orthonormal FFT convention of the measurement format).
    Returns (maps, info) where info says what was done (for the measurement's provenance)."""
    cal = np.asarray(calibration, np.complex128)
    if cal.ndim != len(shape) + 1:
        raise ValueError(f"calibration has {cal.ndim - 1} spatial axes, shape {len(shape)}")
    if method not in COIL_MAP_METHODS:
        raise InputError("coil_maps", f"unknown estimation method {method!r}.", f"Use one of: {', '.join(COIL_MAP_METHODS)}.")
    in_plane = [n for n, s in zip(cal.shape[1:], shape) if s > 1]
    if not np.any(cal):
        raise InputError("coil_maps", "the k-space centre holds no data: the coil sensitivities cannot be estimated.",
                         "Check the data, or give coil maps in the measurement file.")
    if min(in_plane) < MIN_CALIBRATION:
        raise InputError("coil_maps", f"the fully sampled k-space centre is only {list(cal.shape[1:])} samples: too "
                         "small to estimate coil sensitivities.",
                         "Acquire calibration (ACS) lines, or give coil maps in the measurement file.")
    info = {"method": method, "calibration": list(cal.shape[1:])}
    if method == "espirit" and min(in_plane) < MIN_ESPIRIT_CALIBRATION:
        info.update(method="lowres", fallback=f"calibration {list(cal.shape[1:])} is narrower than "
                                              f"{MIN_ESPIRIT_CALIBRATION} samples: low-resolution maps")
        method = "lowres"
    if method == "lowres":
        maps = _lowres_maps(cal, shape)
    else:
        maps, kept = _espirit_maps(cal, shape, kernel, threshold, crop)
        info.update(kernel=kernel, threshold=threshold, crop=crop, subspace=kept)
    return _phase_reference(maps).astype(np.complex64), info


def _embed(block: np.ndarray, shape) -> np.ndarray:
    """Centre `block` [nc, *b] in zeros [nc, *shape] (k-space centre at n // 2 on both)."""
    out = np.zeros((block.shape[0],) + tuple(shape), block.dtype)
    sl = tuple(slice(n // 2 - b // 2, n // 2 - b // 2 + b) for n, b in zip(shape, block.shape[1:]))
    out[(slice(None),) + sl] = block
    return out


def _lowres_maps(cal: np.ndarray, shape) -> np.ndarray:
    window = np.ones(cal.shape[1:])
    for axis, n in enumerate(cal.shape[1:]):
        if n > 1:
            w = np.hanning(n + 2)[1:-1]
            window = window * w.reshape([-1 if a == axis else 1 for a in range(len(cal.shape) - 1)])
    axes = tuple(range(1, len(shape) + 1))
    images = centred_ifft(_embed(cal * window, shape), axes)
    rss = np.sqrt(np.sum(np.abs(images) ** 2, axis=0))
    return images / np.maximum(rss, 1e-6 * rss.max())


def _espirit_maps(cal: np.ndarray, shape, kernel: int, threshold: float, crop: float):
    nc = cal.shape[0]
    spatial = cal.shape[1:]
    k = [min(kernel, n) for n in spatial]  # a 2D grid's nz = 1 axis takes a kernel of 1
    # Calibration matrix: every k-patch (all coils) as one row.
    windows = np.lib.stride_tricks.sliding_window_view(cal, tuple(k), axis=tuple(range(1, cal.ndim)))
    rows = np.moveaxis(windows, 0, -len(k) - 1).reshape(-1, nc * int(np.prod(k)))
    _, s, vh = np.linalg.svd(rows, full_matrices=False)
    kept = int(np.sum(s >= threshold * s[0]))
    kernels = vh[:kept].reshape((kept, nc) + tuple(k))  # the signal subspace's basis, patch-shaped
    # G(r) = (1/|k|) Σ_n a_n(r) a_n(r)^H with a_n the kernels' DFT at the image's voxels: computed
    # from the kernels' cross-correlations (size 2k-1), so no [kept, nc, *shape] array is needed.
    corr_shape = tuple(2 * n - 1 for n in k)
    axes = tuple(range(2, 2 + len(k)))
    f = np.fft.fftn(kernels, s=corr_shape, axes=axes)
    cross = np.einsum("nc...,nd...->cd...", f, f.conj())
    corr = np.fft.ifftn(cross, axes=tuple(range(2, 2 + len(k))))  # circular index d, |d| < k
    # One coil row of G at a time, in complex64: [voxels, nc, nc] is the largest array (32 coils
    # at 256²: 0.5 GB), and the eigenvectors are taken over blocks of voxels.
    n_voxels = int(np.prod(shape))
    g = np.empty((n_voxels, nc, nc), np.complex64)
    grid_axes = tuple(range(1, 1 + len(shape)))
    lags = [(tuple(dd % s for dd, s in zip([i if i < n else i - (2 * n - 1) for i, n in zip(idx, k)], shape)), idx)
            for idx in np.ndindex(*corr_shape)]  # (where the signed lag lands on the grid, its index)
    for c in range(nc):
        embedded = np.zeros((nc,) + tuple(shape), np.complex64)
        for at, idx in lags:
            embedded[(slice(None),) + at] = corr[(c, slice(None)) + idx]
        row = np.fft.fftshift(np.fft.ifftn(embedded, axes=grid_axes), axes=grid_axes) * (n_voxels / np.prod(k))
        g[:, c, :] = row.reshape(nc, -1).T
    maps = np.empty((n_voxels, nc), np.complex64)
    for start in range(0, n_voxels, VOXEL_BLOCK):
        block = slice(start, start + VOXEL_BLOCK)
        values, vectors = np.linalg.eigh(g[block])  # Hermitian, eigenvalues ascending
        maps[block] = vectors[:, :, -1] * (values[:, -1] > crop)[:, None]
    maps = maps.T.reshape((nc,) + tuple(shape))
    return maps, kept


def _phase_reference(maps: np.ndarray) -> np.ndarray:
    ref = maps[0]
    phase = np.where(np.abs(ref) > 0, ref / np.maximum(np.abs(ref), 1e-12), 1.0)
    return maps * phase.conj()[None]


def measurement_calibration(measurement, width: int = CALIBRATION) -> np.ndarray:
    """The calibration block [nc, *spatial] of a measurement's first frame (spatial: (ny, nx)
    for a 2D grid, else (nz, ny, nx)). Cartesian: the fully sampled centre. Non-Cartesian: the
    samples within width/2 k-space steps of the centre, density-compensated and gridded per coil
    by the adjoint NUFFT, then Fourier transformed and cropped to width + 1 per axis."""
    import torch

    from .mr_geometry import MRGeometry
    from .mr_operator import MROperator
    from .mr_sampling import density_compensation

    g, grid = measurement.geometry, measurement.grid
    spatial = grid.shape[1:] if grid.shape[0] == 1 else grid.shape
    data = np.asarray(measurement.data)[0]  # [nc, n_samples]
    nc = data.shape[0]
    if g.type == "cartesian":
        mask = np.asarray(g.mask[0]).reshape(spatial)
        kspace = np.zeros((nc,) + tuple(spatial), np.complex64)
        kspace[:, mask] = data
        return cartesian_calibration(kspace, mask, width)
    traj = np.asarray(g.trajectory[0])  # [ndim, n_samples], rad/voxel
    radius = np.pi * width / min(spatial)  # width/2 steps of 2π/N
    central = np.sqrt(np.sum(traj ** 2, axis=0)) <= radius
    if central.sum() < nc * KERNEL ** len(spatial):
        raise InputError("coil_maps", f"only {int(central.sum())} samples lie in the k-space centre: too few to estimate "
                         "coil sensitivities.", "Give coil maps in the measurement file.")
    dcf = np.asarray(g.dcf[0]) if g.dcf is not None else np.asarray(density_compensation(traj[None], spatial)[0])
    op = MROperator(MRGeometry("noncartesian", trajectory=traj[None][:, :, central]), grid)
    weighted = torch.as_tensor((data[:, central] * dcf[central])[:, None, None, :].astype(np.complex64))
    images = np.stack([op.adjoint(weighted[c]).numpy().reshape(spatial) for c in range(nc)])
    kspace = centred_fft(images, tuple(range(1, len(spatial) + 1)))
    half = width // 2
    block = tuple(slice(n // 2 - half, n // 2 + half + 1) for n in spatial)
    return kspace[(slice(None),) + block]


def with_estimated_maps(measurement, method: str = "espirit"):
    """(measurement with coil maps estimated from its own data, info): for multi-coil data that
    come without maps. The maps are on the measurement grid ([nc, ny, nx] for 2D)."""
    grid = measurement.grid
    spatial = grid.shape[1:] if grid.shape[0] == 1 else grid.shape
    maps, info = estimate_coil_maps(measurement_calibration(measurement), spatial, method)
    import dataclasses

    geometry = dataclasses.replace(measurement.geometry, coil_maps=maps)
    return dataclasses.replace(measurement, geometry=geometry), info
