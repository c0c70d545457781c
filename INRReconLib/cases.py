"""Benchmark and demo cases built from the real scans in ../shared/data (data/README.md).

No second time point of the same patient exists offline, so the longitudinal prior is simulated
as the data README prescribes: the lesion is contracted radially (the current scan shows growth),
then a small rigid shift and a smooth deformation are applied and ≈10 HU of noise added. A lesion
ROI marks the changed region, so "reconstructed, not copied" can be measured there.

CT cases are simulated from the 512² full-resolution slices and reconstructed on the 256² grid
(2× finer projection grid: no inverse crime).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError
from .physics.grid import ImageGrid

CT_FULLRES = "ct_thorax/ct_thorax_hu_512x512_slices055-085.nrrd"
CT_VOLUME = "ct_thorax/ct_thorax_hu_256x256x141.nrrd"
MR_IMAGE = "mr_brain/brain1_image.nrrd"
MR_LABEL = "mr_brain/brain1_label.nrrd"

# The right-lung nodule, located by eye on the data (see data README: ≈25 mm, around slice 62).
NODULE_SLICE_FULLRES = 7  # index in the 512² file (slices 55..85) -> scan slice 62
NODULE_CENTRE_FULLRES_XY = (190.0, 260.0)  # (x, y) pixels in the 512² slice
NODULE_RADIUS_MM = 13.0
PRIOR_SLICE_OFFSET = 2  # 2 slices of 2 mm: the prior is a real slice 4 mm away

# Shipped with the package (data/README.md): slices 57-67 of the same scan at 256² (1.953 mm),
# so the demo, the Slicer self-test and the tests have real anatomy without ../shared/data.
EMBEDDED_CT = Path(__file__).resolve().parent / "data" / "thorax_nodule_hu_256x256x11.nrrd"
EMBEDDED_NODULE_SLICE = 5  # -> scan slice 62


@dataclass(frozen=True)
class ThoraxSlices:
    """Axial slices around the nodule: HU [nz, ny, nx], their grid, and where the nodule is."""

    hu: np.ndarray
    grid: ImageGrid
    nodule_slice: int
    nodule_centre_xy_px: tuple


def thorax_slices(source: str = "shared") -> ThoraxSlices:
    """"shared": the 512² slices 55-85 of ../shared/data (the benchmarks); "embedded": the 256²
    slices 57-67 that ship with the package."""
    if source == "embedded":
        hu, grid = read_image(EMBEDDED_CT)
        f = 512 / hu.shape[-1]
        centre = (NODULE_CENTRE_FULLRES_XY[0] / f, NODULE_CENTRE_FULLRES_XY[1] / f)
        return ThoraxSlices(np.asarray(hu), grid, EMBEDDED_NODULE_SLICE, centre)
    if source != "shared":
        raise ValueError(f"source must be 'shared' or 'embedded', got {source!r}")
    hu, grid = read_image(require_data() / CT_FULLRES)
    return ThoraxSlices(np.asarray(hu), grid, NODULE_SLICE_FULLRES, NODULE_CENTRE_FULLRES_XY)


def data_dir() -> Optional[Path]:
    """The shared data folder: $INRRECON_DATA, else ../shared/data next to the repo or cwd."""
    candidates = []
    if os.environ.get("INRRECON_DATA"):
        candidates.append(Path(os.environ["INRRECON_DATA"]))
    here = Path(__file__).resolve().parent
    candidates += [here.parent.parent / "shared" / "data", Path.cwd().parent / "shared" / "data",
                   Path.cwd() / "shared" / "data"]
    for c in candidates:
        if (c / CT_FULLRES).exists():
            return c
    return None


@dataclass
class Case:
    """One benchmark case: the measurement, the truth and the prior on the measurement grid."""

    name: str
    measurement: object  # Measurement
    truth: np.ndarray  # CT μ (1/mm) grid.shape; MR magnitude in [0, 1], grid.shape
    prior: object  # None, an array on the grid, or an io.prior.PriorSlices
    roi: Optional[np.ndarray]  # bool grid.shape: the changed (lesion) region
    info: dict = field(default_factory=dict)


def read_image(path):
    from .io.volume import read_volume

    return read_volume(path)


def mean_pool(a, f=2):
    ny, nx = a.shape[-2] // f * f, a.shape[-1] // f * f
    a = a[..., :ny, :nx]
    return a.reshape(a.shape[:-2] + (ny // f, f, nx // f, f)).mean(axis=(-3, -1))


def _smooth_field(shape, sigma_px, amplitude_px, rng):
    """A smooth random displacement of given RMS amplitude (pixels)."""
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma_px)
    return f * amplitude_px / max(np.sqrt(np.mean(f ** 2)), 1e-12)


def longitudinal_prior(image, centre_px, radius_px, *, contraction=0.45, shift_px=(1.0, -1.5),
                       rotation_deg=1.0, deformation_px=1.0, noise=10.0, z_aspect=1.0, seed=0):
    """The earlier scan, simulated from the current one (2D, [ny, nx], or 3D [nz, ny, nx]).

    centre_px, radius_px: lesion centre ((z,) y, x) and radius in pixels. Inside the lesion the image
    is sampled further out (factor 1 + contraction at the centre, fading with a Gaussian profile),
    so the lesion appears smaller: in the current scan it has grown. z_aspect (3D): slice spacing
    over pixel size, so that the lesion and the deformation's smoothness are round in millimetres.
    Returns (prior, roi)."""
    rng = np.random.default_rng(seed)
    image = np.asarray(image, dtype=np.float64)
    nd = image.ndim
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in image.shape], indexing="ij"))
    c = np.asarray(centre_px, dtype=np.float64).reshape((nd,) + (1,) * nd)
    d = coords - c
    aspect = np.asarray([z_aspect] * (nd - 2) + [1.0, 1.0]).reshape((nd,) + (1,) * nd)
    r = np.sqrt(((d * aspect) ** 2).sum(0))
    scale = 1.0 + contraction * np.exp(-(r / (1.2 * radius_px)) ** 2)
    src = c + d * scale
    # Rigid motion in the axial plane (last two axes) about the image centre.
    centre_img = (np.asarray(image.shape[-2:], dtype=np.float64) - 1) / 2
    t = np.deg2rad(rotation_deg)
    y, x = src[-2] - centre_img[0], src[-1] - centre_img[1]
    src[-2] = np.cos(t) * y - np.sin(t) * x + centre_img[0] + shift_px[0]
    src[-1] = np.sin(t) * y + np.cos(t) * x + centre_img[1] + shift_px[1]
    sigma = [12.0 / z_aspect] * (nd - 2) + [12.0, 12.0]
    for axis in range(nd - 2, nd):
        src[axis] += _smooth_field(image.shape, sigma, deformation_px, rng)
    prior = ndi.map_coordinates(image, src, order=3, mode="nearest")
    prior += noise * rng.standard_normal(image.shape)
    roi = r <= 1.5 * radius_px
    return prior.astype(np.float32), roi


def require_data():
    d = data_dir()
    if d is None:
        raise InputError("data", "the shared real scans (../shared/data) were not found.",
                         "Set INRRECON_DATA to the folder that holds ct_thorax/ and mr_brain/.")
    return d


def ct2d_case(geometry="parallel", views=20, noisy=False, *, size=256, prior_offset_slices=PRIOR_SLICE_OFFSET,
              prior_volume=False, seed=0, source="shared") -> Case:
    """Thorax slice through the nodule; truth on a `size`² grid, data simulated from the finer
    slice (512² for the shared data, 256² for the embedded slices: `size` must be smaller).
    The prior is the slice `prior_offset_slices` × 2 mm away; 0 takes the nodule's own slice, an
    upper bound for what a prior of the same anatomy brings (it still gets the changed lesion,
    the shift, the deformation and the noise).
    prior_volume: the prior is instead the whole changed stack (changed in 3D), placed so that
    its slice `prior_offset_slices` away lies in the measured plane: the same setup error along
    the table, handed over as the volume it was cut from (a PriorSlices, as the worker builds it
    from a prior volume and 2D data)."""
    from .io.volume import MU_WATER_PER_MM, hu_to_mu
    from .simulate import simulate_ct

    slices = thorax_slices(source)
    fine_hu, fine_grid, nodule = slices.hu, slices.grid, slices.nodule_slice
    n_fine = fine_hu.shape[-1]
    factor = n_fine // size
    if factor < 2 and source == "embedded":
        raise InputError("size", f"{size} needs data finer than the embedded {n_fine}² slices (no inverse crime).",
                         f"Use a size up to {n_fine // 2}, or the shared data (../shared/data) for {size}.")
    cur_fine = fine_hu[nodule]
    spacing_fine = fine_grid.spacing[0]
    cx, cy = slices.nodule_centre_xy_px
    # The ROI depends only on the lesion's centre and radius, the same in both slices.
    if prior_volume:
        stack, roi_stack = longitudinal_prior(fine_hu, (nodule, cy, cx), NODULE_RADIUS_MM / spacing_fine,
                                              z_aspect=fine_grid.spacing[2] / spacing_fine, seed=seed)
        roi_fine = roi_stack[nodule]
    else:
        prior_fine, roi_fine = longitudinal_prior(fine_hu[nodule + prior_offset_slices], (cy, cx),
                                                  NODULE_RADIUS_MM / spacing_fine, seed=seed)
    fine = ImageGrid.centred((1, n_fine, n_fine), (spacing_fine, spacing_fine, 2.0))
    grid = ImageGrid.centred((1, size, size), (spacing_fine * factor, spacing_fine * factor, 2.0))
    mu_fine = np.clip(hu_to_mu(cur_fine, MU_WATER_PER_MM), 0, None)[None].astype(np.float32)
    arc = 180.0 if geometry == "parallel" else 360.0
    meas = simulate_ct(mu_fine, fine, geometry=geometry, n_views=views, arc_deg=arc,
                       source_to_isocenter_mm=500.0, isocenter_to_detector_mm=500.0,
                       photons=1e5 if noisy else None, seed=seed, upsample=1, recon_grid=grid)
    truth = mean_pool(mu_fine, factor).astype(np.float32)
    roi = mean_pool(roi_fine[None].astype(np.float32), factor) > 0.5
    name = f"ct2d_longitudinal_{geometry}_v{views}_{'noisy' if noisy else 'clean'}"
    if size != 256:
        name += f"_{size}"
    if prior_offset_slices != PRIOR_SLICE_OFFSET:
        name += f"_prior{2 * prior_offset_slices}mm"
    if prior_volume:
        from .io.prior import load_prior_slices

        mu_stack = np.clip(hu_to_mu(mean_pool(stack, factor), MU_WATER_PER_MM), 0, None).astype(np.float32)
        z0 = -(nodule + prior_offset_slices) * fine_grid.spacing[2]
        vgrid = ImageGrid((size, size, mu_stack.shape[0]), grid.spacing[:2] + (fine_grid.spacing[2],),
                          grid.origin[:2] + (z0,))
        prior = load_prior_slices((mu_stack, vgrid), meas, units="mu")
        name += "_priorvolume"
    else:
        prior = np.clip(hu_to_mu(mean_pool(prior_fine[None], factor), MU_WATER_PER_MM), 0, None).astype(np.float32)
    if source == "embedded":
        name += "_embedded"
    info = {"mu_water_per_mm": MU_WATER_PER_MM}
    if prior_volume:
        info["prior_volume_mu"] = (mu_stack, vgrid)  # what a user would load as the prior volume
    return Case(name, meas, truth, prior, roi, info)


def ct3d_case(views=20, noisy=False, *, shape=(64, 128, 128), seed=0) -> Case:
    """Cone-beam crop around the nodule from the 256²×141 volume (1.953 mm, 2 mm slices)."""
    from .io.volume import MU_WATER_PER_MM, hu_to_mu
    from .simulate import simulate_ct

    d = require_data()
    vol_hu, vgrid = read_image(d / CT_VOLUME)
    nz, ny, nx = shape
    cz, cy, cx = 55 + NODULE_SLICE_FULLRES, NODULE_CENTRE_FULLRES_XY[1] / 2, NODULE_CENTRE_FULLRES_XY[0] / 2
    # Crop centred on the body in-plane (the nodule sits off centre, as in a real scan).
    z0 = int(np.clip(cz - nz // 2, 0, vol_hu.shape[0] - nz))
    y0 = int(np.clip(128 - ny // 2 + 10, 0, vol_hu.shape[1] - ny))
    x0 = int(np.clip(cx - nx // 2 + 20, 0, vol_hu.shape[2] - nx))
    crop = vol_hu[z0:z0 + nz, y0:y0 + ny, x0:x0 + nx]
    centre = (cz - z0, cy - y0, cx - x0)
    spacing = vgrid.spacing
    radius_px = NODULE_RADIUS_MM / spacing[0]
    prior_hu, roi = longitudinal_prior(crop, centre, radius_px, seed=seed)
    grid = ImageGrid.centred(shape, spacing)
    mu = np.clip(hu_to_mu(crop, MU_WATER_PER_MM), 0, None).astype(np.float32)
    meas = simulate_ct(mu, grid, geometry="cone", n_views=views, arc_deg=360.0, source_to_isocenter_mm=500.0,
                       isocenter_to_detector_mm=500.0, photons=1e5 if noisy else None, seed=seed, upsample=2)
    prior = np.clip(hu_to_mu(prior_hu, MU_WATER_PER_MM), 0, None).astype(np.float32)
    name = f"ct3d_longitudinal_cone_v{views}_{'noisy' if noisy else 'clean'}"
    return Case(name, meas, mu, prior, roi, {"mu_water_per_mm": MU_WATER_PER_MM})


def mr2d_case(spokes=40, coils=1, *, size=256, noise=0.01, seed=0) -> Case:
    """Brain slice through the enhancing tumour; golden-angle radial, birdcage coils."""
    from .simulate import simulate_mr

    d = require_data()
    img, g = read_image(d / MR_IMAGE)
    lab, _ = read_image(d / MR_LABEL)
    k = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(1)))
    sl = img[k].astype(np.float64)
    sl = sl / np.percentile(sl, 99.8)
    sl = np.clip(sl, 0, 1)
    yy, xx = np.nonzero(lab[k] > 0)
    centre = (yy.mean(), xx.mean())
    radius_px = np.sqrt(len(yy) / np.pi)
    prior, _ = longitudinal_prior(sl, centre, radius_px, noise=0.01, seed=seed)
    roi = ndi.binary_dilation(lab[k] > 0, iterations=3)
    if size != sl.shape[0]:
        f = sl.shape[0] // size
        sl, prior, roi = mean_pool(sl, f), mean_pool(prior, f), mean_pool(roi.astype(float), f) > 0.5
    grid = ImageGrid.centred((1,) + sl.shape, (g.spacing[0] * 256 / sl.shape[0],) * 2 + (g.spacing[2],))
    meas = simulate_mr(sl[None].astype(np.float32), grid, trajectory="radial", n_spokes=spokes, n_coils=coils,
                       noise_std=noise, seed=seed)
    truth = sl[None].astype(np.float32)
    name = f"mri2d_longitudinal_s{spokes}_c{coils}" + ("" if size == 256 else f"_{size}")
    return Case(name, meas, truth, np.clip(prior, 0, None)[None].astype(np.float32), roi[None], {})


DYNAMIC_FRAMES = 20
DYNAMIC_SCAN_S = 2.0  # 20 frames of 0.1 s: about 1.3 breathing and 2 cardiac cycles of mrphantom


def mr_dynamic_case(spokes_per_frame=13, *, frames=DYNAMIC_FRAMES, size=128, coils=8, noise=0.01, seed=0,
                    fit_every=1) -> Case:
    """Dynamic MR (data/README.md): mrphantom's 2D slime with breathing and cardiac motion at twice
    its default amplitudes, bSSFP contrast at 1.5 T with a smooth random phase, `frames` frames of
    0.1 s, golden-angle radial continuing from frame to frame, birdcage coils. The spokes carry
    their acquisition times (a continuous acquisition). ROI: the moving region (voxels whose
    magnitude changes over the frames, dilated by 2). fit_every k > 1: the measurement keeps every
    k-th frame (temporal super-resolution: fit those, score all `frames`). truth: magnitude
    [frames, 1, size, size], max 1. Needs the optional mrphantom package (Python 3.10+)."""
    try:
        import mrphantom
    except ImportError:
        raise InputError("mrphantom", "is not installed: the dynamic MR cases are generated with it.",
                         "pip install 'INRRecon[dynamic]' (Python 3.10 or newer).") from None
    from .physics.mr_frames import frame_times, select_frames
    from .simulate import simulate_mr

    state = np.random.get_state()
    np.random.seed(seed)  # mrphantom draws from NumPy's global generator
    try:
        dt = DYNAMIC_SCAN_S / DYNAMIC_FRAMES
        breathing = 2 * mrphantom.genResAmp(dt * frames, dt)
        cardiac = 2 * mrphantom.genCarAmp(dt * frames, dt)
        mrphantom.initSS_bSSFP(1.5)
        phase = mrphantom.genPhMap((size, size))
        series = np.stack([mrphantom.Enum2SS(mrphantom.genPhant((size, size), breathing[f], cardiac[f]))
                           for f in range(frames)])
    finally:
        np.random.set_state(state)
    series = series / series.max()
    moving = ndi.binary_dilation(series.std(axis=0) > 0.02, iterations=2)
    grid = ImageGrid.centred((1, size, size), (2.0, 2.0, 5.0))
    volume = (series * phase)[:, None].astype(np.complex64)
    meas = simulate_mr(volume, grid, trajectory="radial", n_spokes=spokes_per_frame, n_coils=coils,
                       n_frames=frames, noise_std=noise, seed=seed, spoke_interval_s=dt / spokes_per_frame)
    truth = series[:, None].astype(np.float32)
    name = f"mri_dynamic_spf{spokes_per_frame}" + ("" if size == 128 else f"_{size}")
    info = {}
    if fit_every > 1:
        all_times = frame_times(meas.geometry)
        fitted = list(range(0, frames, fit_every))
        meas = select_frames(meas, fitted)
        name += f"_tsr{fit_every}"
        info = {"all_times_s": all_times.tolist(), "fitted_times_s": all_times[fitted].tolist(),
                "skipped_frames": [f for f in range(frames) if f not in fitted]}
    roi = np.broadcast_to(moving[None, None], truth.shape)
    return Case(name, meas, truth, None, roi, info)


# 2D CT (data/README.md, since 2026-12): the standard prior is the earlier scan as a volume, as
# the Slicer module hands it over; NeRP must find the matching slice itself.
_PV = dict(prior_volume=True)
CASE_GROUPS = {
    "ct2d": [("ct2d", dict(geometry=g, views=v, noisy=n, **_PV)) for g in ("parallel", "fan") for v in (20, 60)
             for n in (False, True)],
    "ct2d-v20": [("ct2d", dict(geometry=g, views=20, noisy=n, **_PV)) for g in ("parallel", "fan")
                 for n in (False, True)],
    "ct2d-v20-parallel": [("ct2d", dict(geometry="parallel", views=20, noisy=n, **_PV)) for n in (False, True)],
    "ct2d-v20-fan": [("ct2d", dict(geometry="fan", views=20, noisy=n, **_PV)) for n in (False, True)],
    "ct2d-v60": [("ct2d", dict(geometry=g, views=60, noisy=n, **_PV)) for g in ("parallel", "fan")
                 for n in (False, True)],
    # Stress case, no target: the prior as one real slice 4 mm away (other anatomy, not only a
    # changed lesion), the standard case until 2026-12.
    "ct2d-v20-priorslice": [("ct2d", dict(geometry=g, views=20, noisy=n)) for g in ("parallel", "fan")
                            for n in (False, True)],
    # Control, not a README case: the prior from the nodule's own slice, to separate what NeRP does
    # from how far the prior's anatomy is from the new slice.
    "ct2d-v20-prior0mm": [("ct2d", dict(geometry=g, views=20, noisy=False, prior_offset_slices=0))
                          for g in ("parallel", "fan")],
    "ct3d": [("ct3d", dict(views=20, noisy=False))],
    "ct3d-noisy": [("ct3d", dict(views=20, noisy=True))],
    "mr2d": [("mr2d", dict(spokes=s, coils=c)) for s in (30, 40, 50) for c in (1, 8)],
    "mr2d-s40": [("mr2d", dict(spokes=40, coils=c)) for c in (1, 8)],
    "mr2d-s30-s50": [("mr2d", dict(spokes=s, coils=c)) for s in (30, 50) for c in (1, 8)],
    "mr-dynamic": [("mrdyn", dict(spokes_per_frame=s)) for s in (21, 13, 8, 5)],
    "mr-dynamic-s13": [("mrdyn", dict(spokes_per_frame=13))],
    "mr-dynamic-s5": [("mrdyn", dict(spokes_per_frame=5))],
    "mr-dynamic-s21-s8": [("mrdyn", dict(spokes_per_frame=s)) for s in (21, 8)],
    # Temporal super-resolution: fit every second frame, score all 20.
    "mr-dynamic-tsr": [("mrdyn", dict(spokes_per_frame=s, fit_every=2)) for s in (13, 5)],
}
BUILDERS = {"ct2d": ct2d_case, "ct3d": ct3d_case, "mr2d": mr2d_case, "mrdyn": mr_dynamic_case}


def build_cases(spec: str):
    """Cases for a comma list of group names (see CASE_GROUPS)."""
    out = []
    for group in [s.strip() for s in spec.split(",") if s.strip()]:
        if group not in CASE_GROUPS:
            raise InputError("--cases", f"unknown case group {group!r}.", f"Use one of {', '.join(CASE_GROUPS)}.")
        for kind, kw in CASE_GROUPS[group]:
            out.append((kind, kw))
    return out
