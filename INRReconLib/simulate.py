"""Simulated measurements from any image, so people can try INRRecon on their own volumes.

To avoid the *inverse crime* (simulating with the very discretisation the reconstruction uses,
which flatters every method), the data are computed from a finer image than the
reconstruction grid: either the input upsampled `upsample`x in-plane with cubic splines
(different from the operators' linear interpolation), or, for CT, an already finer source image
on its own grid (`recon_grid=` then names the coarser grid the measurement lives on). The
operators are the library's own (`CTProjector`, `MROperator`) applied on the fine grid with the
same physical geometry. `upsample=1` gives the exact operator data (for tests).

Noise models:
- CT: Poisson counts with `photons` incident per detector pixel,
  y = -ln(max(Poisson(I0 e^{-p}), 1) / I0) (a zero count is clamped to one photon).
- MR: complex white Gaussian noise with E|n|^2 = (noise_std * RMS(k-space))^2.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .errors import InputError
from .io.measurement import Measurement, validate_measurement
from .io.volume import MU_WATER_PER_MM, grid_centre_lps
from .physics.ct_geometry import cone_geometry, parallel_geometry
from .physics.grid import ImageGrid
from .physics.mr_geometry import MRGeometry

CT_GEOMETRIES = ("parallel", "fan", "cone")
MR_TRAJECTORIES = ("radial", "cartesian")

# Simulated k-space comes from one fixed NUFFT, so the benchmark data do not change with what is
# installed or with the `auto` choice of the reconstruction (the cases were made with this one).
SIMULATION_NUFFT = "torchkbnufft"


# --------------------------------------------------------------------------------------------
# shared helpers


def upsample_in_plane(volume: np.ndarray, factor: int) -> np.ndarray:
    """[..., ny, nx] -> [..., ny*factor, nx*factor] by cubic-spline interpolation at the fine voxel
    centres (same extent: fine centre i_f sits at coarse index (i_f + 0.5)/factor - 0.5).
    Complex input is interpolated as real and imaginary parts."""
    from scipy.ndimage import map_coordinates

    factor = int(factor)
    vol = np.asarray(volume)
    if factor == 1:
        return vol.copy()
    if np.iscomplexobj(vol):
        return upsample_in_plane(vol.real, factor) + 1j * upsample_in_plane(vol.imag, factor)
    ny, nx = vol.shape[-2:]
    yf = (np.arange(ny * factor) + 0.5) / factor - 0.5
    xf = (np.arange(nx * factor) + 0.5) / factor - 0.5
    coords = np.stack(np.meshgrid(yf, xf, indexing="ij"))
    flat = vol.reshape(-1, ny, nx).astype(np.float64)
    out = np.stack([map_coordinates(s, coords, order=3, mode="mirror") for s in flat])
    return out.reshape(vol.shape[:-2] + (ny * factor, nx * factor))


def _volume_on_grid(volume, grid: ImageGrid, name: str, allow_frames: bool = False) -> np.ndarray:
    """Input image as [F, nz, ny, nx] (F = 1 unless frames are allowed and given)."""
    vol = np.asarray(volume)
    if vol.ndim == 2 and grid.is_2d:
        vol = vol[None]
    if vol.shape == grid.shape:
        vol = vol[None]
    elif not (allow_frames and vol.ndim == 4 and vol.shape[1:] == grid.shape):
        expected = f"{list(grid.shape)} (nz, ny, nx)" + (" or [n_frames, nz, ny, nx]" if allow_frames else "")
        raise InputError(name, f"has shape {list(vol.shape)}, expected {expected}.",
                         "Pass the image with the grid it lives on (NumPy order z, y, x).")
    if not np.all(np.isfinite(vol)):
        raise InputError(name, "contains NaN or Inf values.", "Fill them before simulating.")
    return vol


def _check_upsample(upsample) -> int:
    if int(upsample) != upsample or int(upsample) < 1:
        raise InputError("upsample", f"must be a positive integer, got {upsample}.", "Use 2 (default) or 1.")
    return int(upsample)


# --------------------------------------------------------------------------------------------
# CT


def _ct_geometry_for(grid: ImageGrid, kind: str, n_views: int, arc_deg, sid, idd, n_cols, col_spacing_mm,
                     n_rows, row_spacing_mm, detector_offset_mm):
    """Circular scan about the grid's z axis, detector covering the in-plane FOV diagonal."""
    sx, sy, sz = grid.spacing
    ex, ey, ez = grid.extent_mm
    radius = 0.5 * math.hypot(ex, ey)  # in-plane circle that holds the whole grid
    arc = (180.0 if kind == "parallel" else 360.0) if arc_deg is None else float(arc_deg)
    if int(n_views) < 1 or not arc > 0:
        raise InputError("n_views / arc_deg", f"need n_views >= 1 and arc_deg > 0, got {n_views}, {arc_deg}.")
    angles = np.deg2rad(np.linspace(0.0, arc, int(n_views), endpoint=False))
    if kind == "parallel":
        cs = float(col_spacing_mm or min(sx, sy))
        nc = int(n_cols or 2 * math.ceil((2 * radius + 2 * abs(detector_offset_mm)) / cs / 2.0))
        if grid.is_2d:
            nr, rs = 1, sz
        else:
            rs = float(row_spacing_mm or sz)
            nr = int(n_rows or math.ceil(ez / rs))
        return parallel_geometry(angles, nc, cs, n_rows=nr, row_spacing_mm=rs, detector_offset_mm=detector_offset_mm)
    if kind == "fan" and not grid.is_2d:
        raise InputError("geometry", "fan beam is a 2D geometry but the grid is 3D.",
                         "Use geometry='cone' for a 3D volume, or a 2D slice for fan beam.")
    sid, idd = float(sid), float(idd)
    if not sid > radius:
        raise InputError("source_to_isocenter_mm", f"{sid:g} mm puts the source inside the image field of view "
                         f"(radius {radius:.1f} mm).", "Increase the distance or crop the image.")
    if idd < 0:
        raise InputError("isocenter_to_detector_mm", f"must be >= 0, got {idd:g}.")
    sdd = sid + idd
    magnification = sdd / sid
    cs = float(col_spacing_mm or min(sx, sy) * magnification)
    half_u = radius * sdd / math.sqrt(sid ** 2 - radius ** 2)  # tangent ray to the FOV circle
    nc = int(n_cols or 2 * math.ceil((2 * half_u + 2 * abs(detector_offset_mm)) / cs / 2.0))
    if grid.is_2d:
        nr, rs = 1, sz
    else:
        rs = float(row_spacing_mm or sz * magnification)
        half_v = 0.5 * ez * sdd / (sid - radius)  # slab edge seen from the nearest point to the source
        nr = int(n_rows or 2 * math.ceil(2 * half_v / rs / 2.0))
    return cone_geometry(angles, nc, cs, sid, idd, n_rows=nr, row_spacing_mm=rs, detector_offset_mm=detector_offset_mm)


def _shift_vectors(vectors: np.ndarray, kind: str, shift: np.ndarray) -> np.ndarray:
    """Vectors in a frame whose origin is `shift` (mm, old frame) away: positions move, directions not."""
    out = vectors.copy()
    out[:, 3:6] -= shift
    if kind == "cone":
        out[:, 0:3] -= shift
    return out


def simulate_ct(volume_zyx_mu, grid: ImageGrid, *, geometry: str = "parallel", n_views: int = 60, arc_deg=None,
                source_to_isocenter_mm: float = 500.0, isocenter_to_detector_mm: float = 500.0, n_cols=None,
                col_spacing_mm=None, n_rows=None, row_spacing_mm=None, detector_offset_mm: float = 0.0,
                photons=None, seed: int = 0, upsample: int = 2, recon_grid: ImageGrid | None = None,
                mu_water_per_mm: float = MU_WATER_PER_MM, description: str | None = None,
                device="cpu") -> Measurement:
    """Line integrals of `volume_zyx_mu` (μ, 1/mm, shape grid.shape) for a circular scan.

    geometry: "parallel", "fan" (2D grids) or "cone" (3D; a cone on a 2D grid is a fan);
    arc_deg: default 180 (parallel) or 360 (fan/cone), views evenly spaced, first at 0.
    Detector defaults: wide enough for the in-plane FOV diagonal; column spacing = the grid's
    in-plane spacing (x magnification (SID+IDD)/SID for fan/cone); cone rows cover the z extent.
    photons: incident photons per detector pixel for Poisson noise (None: noise-free).
    upsample: in-plane factor for the projected image when recon_grid is None.
    recon_grid: the grid the measurement lives on, when `grid` is a finer source grid (then no
    upsampling; directions must agree; the source covers the recon grid; a centre offset between
    the two is honoured).
    Returns a Measurement on the reconstruction grid with the circular-scan attributes, a
    description and `mu_water_per_mm`.
    """
    import torch

    from .physics.ct_projector import CTProjector

    if geometry not in CT_GEOMETRIES:
        raise InputError("geometry", f"must be one of {CT_GEOMETRIES}, got {geometry!r}.")
    upsample = _check_upsample(upsample)
    vol = _volume_on_grid(volume_zyx_mu, grid, "volume")[0].astype(np.float32)
    if np.iscomplexobj(vol):
        raise InputError("volume", "a CT image must be real (μ in 1/mm).")
    hi = float(np.percentile(vol, 99.9)) if vol.size else 0.0
    if hi > 1.0 or float(vol.min()) < -0.05:
        raise InputError("volume", f"values from {float(vol.min()):.4g} to {float(vol.max()):.4g} do not look like "
                         "attenuation in 1/mm (water ~0.02).", "Convert HU first: hu_to_mu(image).")
    kind = "cone" if geometry == "fan" else geometry
    rgrid = grid if recon_grid is None else recon_grid
    geom = _ct_geometry_for(rgrid, geometry, n_views, arc_deg, source_to_isocenter_mm, isocenter_to_detector_mm,
                            n_cols, col_spacing_mm, n_rows, row_spacing_mm, detector_offset_mm)

    if recon_grid is None:
        src_grid = grid.refined(upsample, in_plane=True) if upsample > 1 else grid
        src = np.clip(upsample_in_plane(vol, upsample), 0.0, None).astype(np.float32) if upsample > 1 else vol
        vectors = geom.vectors
    else:
        if recon_grid.is_2d != grid.is_2d:
            raise InputError("recon_grid", "must be 2D when the source image is 2D and 3D when it is 3D.")
        d_src = np.asarray(grid.direction).reshape(3, 3)
        if not np.allclose(d_src, np.asarray(recon_grid.direction).reshape(3, 3), atol=1e-6):
            raise InputError("recon_grid", "has another direction than the source image.",
                             "Resample the source onto a grid with the reconstruction grid's direction first.")
        # recon-frame position q <-> LPS c_rec + D q; source frame p <-> c_src + D p  =>  p = q - D^T (c_src - c_rec)
        shift = d_src.T @ (grid_centre_lps(grid) - grid_centre_lps(recon_grid))
        if grid.is_2d:
            shift[2] = 0.0  # slices are matched in-plane (as in resample_to_grid)
        src_extent = np.asarray(grid.extent_mm)
        rec_extent = np.asarray(recon_grid.extent_mm)
        dims = 2 if grid.is_2d else 3
        if np.any((np.abs(shift) + rec_extent / 2 > src_extent / 2 + 1e-3 + np.asarray(grid.spacing))[:dims]):
            raise InputError("recon_grid", "extends beyond the source image.",
                             "Choose a reconstruction grid inside the finer source image.")
        src_grid, src = grid, vol
        vectors = _shift_vectors(geom.vectors, kind, shift)
    proj_geom = type(geom)(geom.type, vectors, geom.n_rows, geom.n_cols, dict(geom.circular))
    if src_grid.is_2d:
        proj_geom.vectors[:, 9:12] = (0.0, 0.0, src_grid.spacing[2])

    with torch.no_grad():
        sino = CTProjector(proj_geom, src_grid, device).forward(torch.as_tensor(src, device=device))
    p = sino.detach().cpu().numpy().astype(np.float64)
    if photons is not None:
        i0 = float(photons)
        if not i0 > 0:
            raise InputError("photons", f"must be positive, got {photons}.")
        counts = np.random.default_rng(seed).poisson(i0 * np.exp(-p))
        p = -np.log(np.maximum(counts, 1) / i0)

    name = {"parallel": "parallel-beam", "fan": "fan-beam", "cone": "cone-beam"}[geometry]
    arc = float(np.degrees(geom.circular["angles_rad"][1] - geom.circular["angles_rad"][0]) * geom.n_views) \
        if geom.n_views > 1 else float(arc_deg or 0.0)
    noise = f"Poisson noise, {photons:g} photons/pixel" if photons is not None else "noise-free"
    source = (f"projected from a {upsample}x finer in-plane upsampling" if recon_grid is None and upsample > 1
              else "projected from a finer source grid" if recon_grid is not None else "projected on the same grid")
    text = description or f"Simulated {name} CT, {geom.n_views} views over {arc:.0f} deg, {noise}; {source}."
    sim = {"geometry": geometry, "n_views": int(n_views), "arc_deg": arc, "photons": photons, "seed": int(seed),
           "upsample": upsample if recon_grid is None else None}
    attrs = {"description": text, "mu_water_per_mm": float(mu_water_per_mm), "simulation": json.dumps(sim)}
    m = Measurement("CT", p.astype(np.float32), rgrid, geom, attrs)
    validate_measurement(m)
    return m


# --------------------------------------------------------------------------------------------
# MR


def _stack_of_stars(n_spokes, n_readout, n_frames, nz):
    """3D radial (stack of stars): the 2D golden-angle spokes at every Cartesian kz partition."""
    from .physics.mr_sampling import golden_angle_radial

    spokes = golden_angle_radial(n_spokes, n_readout, n_frames)  # [F, 2, S]
    kz = (np.arange(nz) - nz // 2) * (2.0 * np.pi / nz)
    f, _, s = spokes.shape
    traj = np.empty((f, 3, nz * s), dtype=np.float32)
    traj[:, 0] = np.repeat(kz, s)[None]
    traj[:, 1:] = np.tile(spokes, (1, 1, nz))
    return traj


def _unit_gain(dcf: np.ndarray, traj: np.ndarray, grid: ImageGrid, device) -> np.ndarray:
    """Scale per-frame density weights so that A^H diag(dcf) A has unit gain on a smooth centred
    blob (the convention of physics.mr_sampling.density_compensation; the NUFFT's scale depends
    on the oversampled grid, so weights from a 2D estimate need this for 3D)."""
    import torch

    from .physics.mr_operator import MROperator

    op = MROperator(MRGeometry("noncartesian", trajectory=traj), grid, device, nufft=SIMULATION_NUFFT)
    axes = [(np.arange(n) - n // 2) / (n / 8.0) for n in grid.shape]
    blob = np.exp(-0.5 * sum(a ** 2 for a in np.meshgrid(*axes, indexing="ij")))
    x = np.broadcast_to(blob, op.image_shape).astype(np.complex64)
    with torch.no_grad():
        k = op.forward(torch.as_tensor(x, device=device))
        back = op.adjoint(k * torch.as_tensor(dcf, device=device)[:, None, :]).cpu().numpy()
    gain = np.sum(back * np.conj(x), axis=(1, 2, 3)).real / np.sum(np.abs(x) ** 2, axis=(1, 2, 3))
    return (dcf / gain[:, None]).astype(np.float32)


def _phase_origin_offset(n: int, factor: int) -> float:
    """(a - a_f)/s: how far the FFT phase origin (index n//2) of the coarse grid lies from that of the
    fine grid, in coarse voxels (grid-frame positions; voxel i sits at (i - (n-1)/2) s)."""
    nf = n * factor
    return (n // 2 - (n - 1) / 2.0) - (nf // 2 - (nf - 1) / 2.0) / factor


def simulate_mr(volume_zyx_real_or_complex, grid: ImageGrid, *, trajectory: str = "radial", n_spokes: int = 40,
                acceleration: float = 4.0, acs_lines: int = 16, n_coils: int = 1, noise_std: float = 0.0,
                n_frames: int = 1, seed: int = 0, mask_seed=None, n_readout=None, upsample: int = 2,
                dcf: bool = True, spoke_interval_s: float | None = None, description: str | None = None,
                device="cpu") -> Measurement:
    """k-space of an image (shape grid.shape, or [n_frames, nz, ny, nx] for a moving object).

    trajectory: "radial" (golden-angle, `n_spokes` per frame, readout 2 x max(ny, nx) samples;
    3D grids: stack of stars with every kz partition) or "cartesian" (variable-density random
    phase encodes, `acceleration`, `acs_lines` fully sampled centre lines, a new draw per frame).
    n_coils: 1 (unit sensitivity, no maps stored) or more (birdcage maps, stored).
    noise_std: complex Gaussian noise std relative to the k-space RMS.
    seed: noise (and, unless `mask_seed` is given, the Cartesian mask draw).
    upsample: the image is upsampled in-plane with cubic splines and encoded on that finer grid
    (trajectory scaled to the fine grid, FFT phase origin and NUFFT/FFT scale corrected), so the
    data are not those of the reconstruction's own discretisation. 1: exact operator data.
    dcf: store Pipe–Menon density compensation (radial only).
    spoke_interval_s: radial 2D, a continuous acquisition: spoke s (counted over all frames) is
    measured at s × spoke_interval_s; stores /geometry/spoke_times_s and the frame times (their
    means), so the spokes can be re-binned (physics/mr_frames.py). Each frame's image is the
    object during that frame.
    """
    import torch

    from .physics.mr_operator import MROperator
    from .physics.mr_sampling import birdcage_coil_maps, cartesian_mask, density_compensation, golden_angle_radial

    if trajectory not in MR_TRAJECTORIES:
        raise InputError("trajectory", f"must be one of {MR_TRAJECTORIES}, got {trajectory!r}.")
    upsample = _check_upsample(upsample)
    if int(n_frames) < 1 or int(n_coils) < 1:
        raise InputError("n_frames / n_coils", f"must be >= 1, got {n_frames}, {n_coils}.")
    n_frames, n_coils = int(n_frames), int(n_coils)
    vol = _volume_on_grid(volume_zyx_real_or_complex, grid, "volume", allow_frames=True).astype(np.complex128)
    if vol.shape[0] not in (1, n_frames):
        raise InputError("volume", f"has {vol.shape[0]} frames but n_frames = {n_frames}.",
                         "Pass one image (static) or one per frame.")
    vol = np.broadcast_to(vol, (n_frames,) + vol.shape[1:])
    nz, ny, nx = grid.shape
    spatial = (ny, nx) if grid.is_2d else (nz, ny, nx)

    # sampling on the reconstruction grid
    if trajectory == "radial":
        n_read = int(n_readout or 2 * max(ny, nx))
        traj = golden_angle_radial(n_spokes, n_read, n_frames) if grid.is_2d else \
            _stack_of_stars(n_spokes, n_read, n_frames, nz)
        geom = MRGeometry("noncartesian", trajectory=traj)
    else:
        mask = cartesian_mask(spatial, acceleration, acs_lines, seed if mask_seed is None else int(mask_seed),
                              n_frames=n_frames)
        geom = MRGeometry("cartesian", mask=mask)
    maps = birdcage_coil_maps(n_coils, spatial) if n_coils > 1 else None
    geom.coil_maps = maps

    # encoding on the fine grid
    fgrid = grid.refined(upsample, in_plane=True) if upsample > 1 else grid
    fine_img = upsample_in_plane(vol, upsample)  # [F, nz, ny*u, nx*u]
    fine_maps = None if maps is None else upsample_in_plane(maps.reshape((n_coils,) + grid.shape), upsample)
    fny, fnx = ny * upsample, nx * upsample
    fine_spatial = (fny, fnx) if grid.is_2d else (nz, fny, fnx)
    if fine_maps is not None:
        fine_maps = fine_maps.reshape((n_coils,) + fine_spatial)
    if trajectory == "radial":
        ftraj = geom.trajectory.copy()
        ftraj[:, -2:] /= upsample  # rad per coarse voxel -> rad per fine voxel (in-plane axes)
        fgeom = MRGeometry("noncartesian", trajectory=ftraj, coil_maps=fine_maps)
        omega_yx = geom.trajectory[:, -2:].astype(np.float64)  # [F, 2, S]
    else:
        fmask = np.zeros((n_frames,) + fine_spatial, dtype=bool)
        oy, ox = fny // 2 - ny // 2, fnx // 2 - nx // 2
        fmask[..., oy:oy + ny, ox:ox + nx] = geom.mask
        fgeom = MRGeometry("cartesian", mask=fmask, coil_maps=fine_maps)
        # angular frequency (rad/voxel, coarse) of every sample, in the data's C order
        ky = (np.arange(ny) - ny // 2) * (2 * np.pi / ny)
        kx = (np.arange(nx) - nx // 2) * (2 * np.pi / nx)
        kyy = np.broadcast_to(ky[:, None], spatial)
        kxx = np.broadcast_to(kx[None, :], spatial)
        omega_yx = np.stack([np.stack([kyy[geom.mask[f]], kxx[geom.mask[f]]]) for f in range(n_frames)])
    op = MROperator(fgeom, fgrid, device, nufft=SIMULATION_NUFFT)
    with torch.no_grad():
        k = op.forward(torch.as_tensor(fine_img.astype(np.complex64), device=device)).cpu().numpy()
    k = k.astype(np.complex128)
    if upsample > 1:
        shift = np.array([_phase_origin_offset(ny, upsample), _phase_origin_offset(nx, upsample)])
        phase = np.exp(1j * np.einsum("a,fas->fs", shift, omega_yx))  # [F, S]
        k = k * phase[:, None, :] / upsample  # upsample^(-d/2), d = 2 upsampled axes
    if noise_std:
        if noise_std < 0:
            raise InputError("noise_std", f"must be >= 0, got {noise_std}.")
        rng = np.random.default_rng(seed)
        rms = float(np.sqrt(np.mean(np.abs(k) ** 2)))
        k = k + noise_std * rms / np.sqrt(2.0) * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    if trajectory == "radial" and dcf:
        if grid.is_2d:
            geom.dcf = density_compensation(geom.trajectory, spatial)
        else:
            # Stack of stars: kz is fully sampled on the Cartesian grid, so the 3D density is the
            # 2D one repeated per partition (and with ortho scaling the gain carries over); a 3D
            # Pipe-Menon iteration would take minutes for nothing.
            dcf2 = density_compensation(golden_angle_radial(n_spokes, n_read, n_frames), (ny, nx))
            geom.dcf = _unit_gain(np.tile(dcf2, (1, nz)), geom.trajectory, grid, device)

    if spoke_interval_s is not None:
        if trajectory != "radial" or not grid.is_2d or not float(spoke_interval_s) > 0:
            raise InputError("spoke_interval_s", "applies to 2D radial acquisitions and must be > 0 s.",
                             "Leave it out for Cartesian or 3D data.")
        times = np.arange(n_frames * n_spokes, dtype=np.float64).reshape(n_frames, n_spokes) * float(spoke_interval_s)
        geom.spoke_times_s, geom.frame_times_s = times, times.mean(axis=1)
    if trajectory == "radial":
        what = f"golden-angle radial, {n_spokes} spokes/frame" + ("" if grid.is_2d else " (stack of stars)")
    else:
        what = f"Cartesian, acceleration {acceleration:g}, {acs_lines} ACS lines"
    noise = f"noise {noise_std:g} x k-space RMS" if noise_std else "noise-free"
    text = description or (f"Simulated MR, {what}, {n_coils} coil(s), {n_frames} frame(s), {noise}; "
                           + (f"encoded from a {upsample}x finer in-plane upsampling." if upsample > 1
                              else "encoded on the same grid."))
    attrs = {"description": text, "noise_std": float(noise_std),
             "simulation": json.dumps({"trajectory": trajectory, "n_coils": n_coils, "n_frames": n_frames,
                                       "seed": int(seed), "mask_seed": mask_seed, "upsample": upsample})}
    if trajectory == "radial":
        attrs.update({"n_spokes": int(n_spokes), "n_readout": n_read})
    else:
        attrs.update({"acceleration": float(acceleration), "acs_lines": int(acs_lines)})
    m = Measurement("MR", k.astype(np.complex64), grid, geom, attrs)
    validate_measurement(m)
    return m
