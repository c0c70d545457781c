"""MR sampling patterns and coil sensitivities for simulation: golden-angle radial trajectories,
variable-density Cartesian masks, birdcage-like coil maps and Pipe–Menon density compensation.

Conventions follow docs/measurement-format.md: trajectories in rad/voxel in [-pi, pi) with axes in image array
order ([z,] y, x); Cartesian masks on the centred k-space grid (DC at index n // 2).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

GOLDEN_ANGLE_DEG = 180.0 / ((1.0 + 5.0 ** 0.5) / 2.0)  # 111.246..°: each spoke splits the largest gap


def golden_angle_radial(n_spokes: int, n_readout: int, n_frames: int = 1, *, angle_deg: float = GOLDEN_ANGLE_DEG,
                        first_spoke: int = 0) -> np.ndarray:
    """Golden-angle radial 2D trajectory, float32 [n_frames, 2, n_spokes * n_readout] (ky, kx).

    Spoke s (counted over all frames, from `first_spoke`) has angle s * angle_deg; frame f holds
    spokes f*n_spokes ... (f+1)*n_spokes - 1, so consecutive frames continue the sequence and
    any window of frames samples k-space nearly uniformly. Readout samples are
    k_r = (r - n_readout/2) * 2*pi / n_readout, r = 0..n_readout-1: the DC sample is on every
    spoke and a readout of 2*N samples oversamples an N-voxel image 2x along the spoke.
    Samples are ordered spoke by spoke. Values are wrapped into [-pi, pi) (the NUFFT model is
    2*pi-periodic, so wrapping the rare sample at exactly +pi changes nothing)."""
    if int(n_spokes) < 1 or int(n_readout) < 2 or int(n_frames) < 1:
        raise InputError("trajectory", f"needs n_spokes >= 1, n_readout >= 2, n_frames >= 1, "
                         f"got {n_spokes}, {n_readout}, {n_frames}.")
    n_spokes, n_readout, n_frames = int(n_spokes), int(n_readout), int(n_frames)
    spoke = first_spoke + np.arange(n_frames * n_spokes, dtype=np.float64)
    theta = np.deg2rad(angle_deg) * spoke
    k = (np.arange(n_readout, dtype=np.float64) - n_readout / 2.0) * (2.0 * np.pi / n_readout)
    ky = np.sin(theta)[:, None] * k[None, :]
    kx = np.cos(theta)[:, None] * k[None, :]
    traj = np.stack([ky, kx], axis=0).reshape(2, n_frames, n_spokes * n_readout).transpose(1, 0, 2)
    traj = np.mod(traj + np.pi, 2.0 * np.pi) - np.pi
    return np.ascontiguousarray(traj, dtype=np.float32)


def cartesian_mask(shape, acceleration: float, acs_lines: int = 16, seed: int = 0, *, n_frames: int | None = None,
                   density_power: float = 2.0) -> np.ndarray:
    """Variable-density random phase-encode mask with a fully sampled centre.

    shape: (ny, nx) -> whole ky lines are chosen (readout along x is always full);
           (nz, ny, nx) -> (kz, ky) points are chosen, each a full readout line along x.
    acceleration: total phase encodes / sampled ones (>= 1). acs_lines: width of the fully
    sampled centre (lines in 2D, a square of acs_lines x acs_lines phase encodes in 3D).
    The other phase encodes are drawn without replacement with probability
    ~ (1 - |k|/k_max) ** density_power (plus a small floor so the edge is never empty).
    Returns bool `shape`, or [n_frames, *shape] with independent draws per frame when n_frames
    is given."""
    shape = tuple(int(v) for v in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError("mask shape", f"must be (ny, nx) or (nz, ny, nx), got {shape}.")
    if not acceleration >= 1.0:
        raise InputError("acceleration", f"must be >= 1, got {acceleration}.")
    pe_shape = shape[:-1]  # phase-encode axes
    n_pe = int(np.prod(pe_shape))
    rng = np.random.default_rng(seed)
    # normalised distance of every phase encode from the DC index n // 2
    axes = [(np.arange(n) - n // 2) / max(n / 2.0, 1.0) for n in pe_shape]
    dist = np.sqrt(sum(a ** 2 for a in np.meshgrid(*axes, indexing="ij"))).ravel() / np.sqrt(len(pe_shape))
    acs = np.ones(pe_shape, dtype=bool)
    for ax, n in enumerate(pe_shape):
        keep = np.zeros(n, dtype=bool)
        w = min(int(acs_lines), n)
        keep[n // 2 - w // 2: n // 2 - w // 2 + w] = True
        acs &= keep.reshape([-1 if i == ax else 1 for i in range(len(pe_shape))])
    acs = acs.ravel()
    n_target = max(int(round(n_pe / float(acceleration))), int(acs.sum()))
    masks = []
    for _ in range(1 if n_frames is None else int(n_frames)):
        chosen = acs.copy()
        free = np.flatnonzero(~acs)
        n_more = min(n_target - int(acs.sum()), free.size)
        if n_more > 0:
            p = np.clip(1.0 - dist[free], 0.0, None) ** density_power + 1e-3
            chosen[rng.choice(free, size=n_more, replace=False, p=p / p.sum())] = True
        masks.append(np.broadcast_to(chosen.reshape(pe_shape + (1,)), shape).copy())
    return masks[0] if n_frames is None else np.stack(masks)


def birdcage_coil_maps(n_coils: int, shape, *, coil_radius: float = 1.5) -> np.ndarray:
    """Smooth birdcage-like sensitivities, complex64 [n_coils, *shape], shape (ny, nx) or (nz, ny, nx).

    Coil c is a long straight conductor at angle 2*pi*c/n_coils on a ring of radius
    `coil_radius` (in units of the half field of view, so 1.5 lies outside the image), in the
    plane z = 0. Its field falls off as 1/distance and turns with the direction from the
    conductor (a Biot–Savart-like model), which gives the smooth magnitude and the phase rolls
    of real receive arrays. The maps are divided by their root sum of squares, so
    sum_c |S_c|^2 == 1 at every voxel (hence also inside the field of view)."""
    shape = tuple(int(v) for v in shape)
    if int(n_coils) < 1 or len(shape) not in (2, 3):
        raise InputError("coil maps", f"need n_coils >= 1 and shape (ny, nx) or (nz, ny, nx), got {n_coils}, {shape}.")
    nz, ny, nx = (1,) + shape if len(shape) == 2 else shape
    half = max(ny, nx) / 2.0  # isotropic in voxels, so a square image gets circular coil geometry
    z, y, x = np.meshgrid((np.arange(nz) - (nz - 1) / 2.0) / half, (np.arange(ny) - (ny - 1) / 2.0) / half,
                          (np.arange(nx) - (nx - 1) / 2.0) / half, indexing="ij")
    maps = np.empty((int(n_coils), nz, ny, nx), dtype=np.complex128)
    for c in range(int(n_coils)):
        phi = 2.0 * np.pi * c / n_coils
        rel = (x - coil_radius * np.cos(phi)) + 1j * (y - coil_radius * np.sin(phi))
        dist2 = np.abs(rel) ** 2 + z ** 2
        maps[c] = np.conj(rel) / dist2 * np.exp(1j * phi)
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=0, keepdims=True))
    maps = maps.astype(np.complex64)
    return maps[:, 0] if len(shape) == 2 else maps


def density_compensation(trajectory, im_size, n_iterations: int = 10):
    """Pipe–Menon iterative density compensation, float32 [n_frames, n_samples].

    trajectory: [n_frames, ndim, n_samples] rad/voxel (NumPy or torch; the result has the same
    kind, on the same device). im_size: image size in array order ((ny, nx) or (nz, ny, nx)).
    Uses torchkbnufft's estimate (grid 2x im_size), then scales every frame so that
    Aᴴ diag(dcf) A has unit gain on a smooth image (a centred Gaussian blob, width 1/8 of the
    field of view) with the ortho-normalised NUFFT A: the density-compensated adjoint then
    has the magnitude of the image."""
    import torchkbnufft as tkbn

    as_numpy = not isinstance(trajectory, torch.Tensor)
    traj = torch.as_tensor(np.asarray(trajectory, dtype=np.float32) if as_numpy else trajectory).float()
    im_size = tuple(int(v) for v in im_size)
    if traj.ndim != 3 or traj.shape[1] != len(im_size):
        raise InputError("trajectory", f"has shape {list(traj.shape)}, expected [n_frames, {len(im_size)}, n_samples] "
                         f"for an image of size {im_size}.")
    dcf = tkbn.calc_density_compensation_function(traj, im_size=im_size, num_iterations=n_iterations)
    dcf = dcf.real.reshape(traj.shape[0], traj.shape[2]).float() if dcf.is_complex() else \
        dcf.reshape(traj.shape[0], traj.shape[2]).float()

    grids = torch.meshgrid(*[(torch.arange(n, device=traj.device) - n // 2) / (n / 8.0) for n in im_size],
                           indexing="ij")
    blob = torch.exp(-0.5 * sum(g ** 2 for g in grids)).to(torch.complex64)
    blob = blob.expand(traj.shape[0], 1, *im_size)
    nufft = tkbn.KbNufft(im_size=im_size, device=traj.device)
    adj = tkbn.KbNufftAdjoint(im_size=im_size, device=traj.device)
    omega = traj[0] if traj.shape[0] == 1 else traj
    k = nufft(blob, omega, norm="ortho")
    back = adj(k * dcf[:, None, :], omega, norm="ortho")
    dims = tuple(range(1, back.ndim))
    gain = (torch.sum(back * blob.conj(), dim=dims).real / torch.sum(blob.abs() ** 2, dim=dims)).float()
    dcf = dcf / gain[:, None]
    return dcf.cpu().numpy().astype(np.float32) if as_numpy else dcf
