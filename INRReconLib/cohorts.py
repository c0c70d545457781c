"""DisINR benchmark cohorts from the real scans of ../shared/data (its README, "Population prior
cohorts"): sparse raw data simulated with the test's acquisition from training slices of a
patient, and test slices at least 20 mm from every training slice, of the same patient and (CT)
of the other one.

- thorax: the radiotherapy thorax scan. Training slices from the 256² volume (1.953 mm, 2 mm
  slices; projected from a 2× upsampled image), test slices from the 512² file (0.977 mm,
  reconstructed on the 256² grid), around the nodule (scan slice 62).
- lung1: the second patient, 512² at 0.570 mm, 5 mm slices, a 292 mm field of view: 256² grid
  at 1.14 mm (data projected from the 512² slice), tumour on slices 32-34.

- thorax series (`thorax_series`): one patient's fractions, as a longitudinal series sees them:
  the earlier fractions simulated from the current scan with the nodule smaller (the standard
  cases' change, `cases.longitudinal_prior`, a little less each fraction), a setup shift and a
  deformation; each fraction measured on a slab of slices around the nodule, the last fraction
  on the nodule's slice.
- brain (MR): the post-contrast T1, 256² at 0.78 mm, 6.5 mm slices, tumour on slices 11-17;
  multi-coil Cartesian k-space (birdcage maps), each slice scaled to its 99.8th percentile.

The two chest patients' grids differ in field of view and voxel size: a model's millimetre frame
(methods/population.py) is what places one patient's slices where the other's were learnt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .cases import (CT_FULLRES, CT_VOLUME, MR_IMAGE, MR_LABEL, NODULE_CENTRE_FULLRES_XY, NODULE_RADIUS_MM,
                    NODULE_SLICE_FULLRES, Case, longitudinal_prior, mean_pool, read_image, require_data)
from .physics.grid import ImageGrid

LUNG1_IMAGE = "ct_lung1/lung1_image.nrrd"
LUNG1_LABEL = "ct_lung1/lung1_label.nrrd"
MIN_DISTANCE_MM = 20.0
THORAX_FULLRES_FIRST = 55  # the 512² file holds scan slices 55..85
THORAX_TEST = (58, 62, 66)  # scan slices (2 mm apart); 62 holds the nodule
THORAX_TRAIN = tuple(range(14, 49, 3)) + tuple(range(80, 125, 5))  # 12 + 9 = 21 slices, >= 20 mm away
LUNG1_TEST = (29, 33, 37)  # 5 mm slices; 33 holds the tumour
LUNG1_TRAIN = tuple(range(2, 26, 2)) + tuple(range(41, 48, 2))  # 12 + 4 = 16 slices, >= 20 mm away
SERIES_SLAB = (-2, -1, 0, 1, 2)  # slices (2 mm) around the nodule that each fraction measures
# Earlier fractions, first to last: how much smaller the nodule was (cases.longitudinal_prior's
# contraction; the standard prior's is 0.45), the setup shift (pixels of 0.98 mm) and rotation.
SERIES_CHANGES = ({"contraction": 0.45, "shift_px": (1.0, -1.5), "rotation_deg": 1.0, "seed": 11},
                  {"contraction": 0.25, "shift_px": (-1.2, 0.8), "rotation_deg": -0.6, "seed": 12})
BRAIN_TEST = (12, 14, 16)  # 6.5 mm slices through the tumour
BRAIN_TRAIN = tuple(range(0, 9)) + tuple(range(20, 25))  # 14 slices, >= 26 mm away


@dataclass(frozen=True)
class Acquisition:
    """The sparse acquisition of a cohort and its tests (fan beam, 500 / 500 mm)."""

    views: int = 60
    noisy: bool = True
    geometry: str = "fan"

    @property
    def name(self) -> str:
        return f"{self.geometry}_v{self.views}_{'noisy' if self.noisy else 'clean'}"


@dataclass(frozen=True)
class MrAcquisition:
    """Multi-coil Cartesian k-space: 1D variable-density masks, `acs` fully sampled centre lines."""

    acceleration: float = 6.0
    acs: int = 24
    coils: int = 8
    noise: float = 0.01

    @property
    def name(self) -> str:
        return f"cartesian_r{self.acceleration:g}"


def _simulate(mu, source_grid, recon_grid, acq: Acquisition, seed: int, description: str):
    from .simulate import simulate_ct

    arc = 180.0 if acq.geometry == "parallel" else 360.0
    kw = dict(recon_grid=recon_grid, upsample=1) if recon_grid is not None else dict(upsample=2)
    meas = simulate_ct(mu[None].astype(np.float32), source_grid, geometry=acq.geometry, n_views=acq.views,
                       arc_deg=arc, source_to_isocenter_mm=500.0, isocenter_to_detector_mm=500.0,
                       photons=1e5 if acq.noisy else None, seed=seed, description=description, **kw)
    return meas


def _mu(hu):
    from .io.volume import MU_WATER_PER_MM, hu_to_mu

    return np.clip(hu_to_mu(np.asarray(hu, dtype=np.float32), MU_WATER_PER_MM), 0, None)


def _check_distance(train, test, spacing_mm: float) -> None:
    near = [(a, b) for a in train for b in test if abs(a - b) * spacing_mm < MIN_DISTANCE_MM]
    if near:
        raise ValueError(f"training slices closer than {MIN_DISTANCE_MM} mm to a test slice: {near}")


def thorax_training(acq: Acquisition, slices=THORAX_TRAIN) -> list:
    """Measurements of the thorax scan's training slices (256², projected from 2× upsampled)."""
    _check_distance(slices, THORAX_TEST, 2.0)
    hu, g = read_image(require_data() / CT_VOLUME)
    grid = ImageGrid.centred((1, hu.shape[1], hu.shape[2]), (g.spacing[0], g.spacing[1], g.spacing[2]))
    return [_simulate(_mu(hu[k]), grid, None, acq, seed=k, description=f"thorax slice {k}") for k in slices]


def lung1_training(acq: Acquisition, slices=LUNG1_TRAIN) -> list:
    """Measurements of lung1's training slices (256² at 1.14 mm, projected from the 512² slice)."""
    _check_distance(slices, LUNG1_TEST, 5.0)
    hu, g = read_image(require_data() / LUNG1_IMAGE)
    fine, grid = _lung1_grids(g)
    return [_simulate(_mu(hu[k]), fine, grid, acq, seed=100 + k, description=f"lung1 slice {k}") for k in slices]


def _lung1_grids(g):
    fine = ImageGrid.centred((1, 512, 512), (g.spacing[0], g.spacing[1], g.spacing[2]))
    grid = ImageGrid.centred((1, 256, 256), (2 * g.spacing[0], 2 * g.spacing[1], g.spacing[2]))
    return fine, grid


def thorax_tests(acq: Acquisition) -> list:
    """Cases on the thorax test slices (truth 256², data from the 512² slice; ROI: the nodule's disc
    on slice 62, none elsewhere)."""
    hu, g = read_image(require_data() / CT_FULLRES)
    sp = g.spacing[0]
    fine = ImageGrid.centred((1, 512, 512), (sp, sp, 2.0))
    grid = ImageGrid.centred((1, 256, 256), (2 * sp, 2 * sp, 2.0))
    yy, xx = np.mgrid[0:512, 0:512]
    cx, cy = NODULE_CENTRE_FULLRES_XY
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2) * sp ** 2 <= NODULE_RADIUS_MM ** 2
    out = []
    for s in THORAX_TEST:
        mu = _mu(hu[s - THORAX_FULLRES_FIRST])
        meas = _simulate(mu, fine, grid, acq, seed=1000 + s, description=f"thorax test slice {s}")
        roi = mean_pool(disc[None].astype(np.float32)) > 0.5 if s == 62 else None
        out.append(Case(f"thorax_s{s}_{acq.name}", meas, mean_pool(mu[None]).astype(np.float32), None, roi,
                        {"patient": "thorax"}))
    return out


def lung1_tests(acq: Acquisition) -> list:
    """Cases on lung1's test slices (ROI: the dilated tumour label, where it has one)."""
    d = require_data()
    hu, g = read_image(d / LUNG1_IMAGE)
    label, _ = read_image(d / LUNG1_LABEL)
    fine, grid = _lung1_grids(g)
    out = []
    for s in LUNG1_TEST:
        mu = _mu(hu[s])
        meas = _simulate(mu, fine, grid, acq, seed=2000 + s, description=f"lung1 test slice {s}")
        lab = ndi.binary_dilation(np.asarray(label[s]) > 0, iterations=4)
        roi = mean_pool(lab[None].astype(np.float32)) > 0.5 if lab.any() else None
        out.append(Case(f"lung1_s{s}_{acq.name}", meas, mean_pool(mu[None]).astype(np.float32), None, roi,
                        {"patient": "lung1"}))
    return out


def _brain():
    d = require_data()
    img, g = read_image(d / MR_IMAGE)
    label, _ = read_image(d / MR_LABEL)
    grid = ImageGrid.centred((1, img.shape[1], img.shape[2]), (g.spacing[0], g.spacing[1], g.spacing[2]))
    return np.asarray(img, dtype=np.float64), np.asarray(label), grid


def _brain_slice(img, k):
    sl = img[k] / max(np.percentile(img[k], 99.8), 1e-12)
    return np.clip(sl, 0, 1).astype(np.float32)[None]


def _simulate_mr(image, grid, acq: MrAcquisition, seed: int, description: str):
    from .simulate import simulate_mr

    return simulate_mr(image, grid, trajectory="cartesian", acceleration=acq.acceleration, acs_lines=acq.acs,
                       n_coils=acq.coils, noise_std=acq.noise, seed=seed, description=description)


def brain_training(acq: MrAcquisition, slices=BRAIN_TRAIN) -> list:
    """k-space of the brain's training slices (a new mask and noise draw per slice)."""
    _check_distance(slices, BRAIN_TEST, 6.5)
    img, _, grid = _brain()
    return [_simulate_mr(_brain_slice(img, k), grid, acq, seed=300 + k, description=f"brain slice {k}")
            for k in slices]


def brain_tests(acq: MrAcquisition) -> list:
    """Cases on the brain's test slices (truth: the magnitude in [0, 1]; ROI: the dilated label)."""
    img, label, grid = _brain()
    out = []
    for s in BRAIN_TEST:
        truth = _brain_slice(img, s)
        meas = _simulate_mr(truth, grid, acq, seed=3000 + s, description=f"brain test slice {s}")
        lab = ndi.binary_dilation(label[s] > 0, iterations=3)
        out.append(Case(f"brain_s{s}_{acq.name}", meas, truth, None, lab[None] if lab.any() else None,
                        {"patient": "brain"}))
    return out


@dataclass
class Fraction:
    """One fraction of `thorax_series`: its slab's measurements (SERIES_SLAB order), the truth
    on the 256² grid ([slab, 256, 256] μ and its grid, 2 mm slices) and the changed region."""

    index: int
    measurements: list
    truth: np.ndarray
    volume_grid: ImageGrid
    roi: np.ndarray


def thorax_series(acq: Acquisition, fractions: int = 3) -> list:
    """The thorax patient's fractions 1..`fractions` (the last is the real scan; at most
    len(SERIES_CHANGES) + 1). Each fraction's slab is measured with `acq`, slice by slice, from
    the 512² file onto the 256² grid (no inverse crime). The earlier fractions carry the ≈10 HU
    noise of longitudinal_prior, as the standard cases' prior does."""
    if not 2 <= fractions <= len(SERIES_CHANGES) + 1:
        raise ValueError(f"thorax_series has 2 to {len(SERIES_CHANGES) + 1} fractions, not {fractions}")
    hu, g = read_image(require_data() / CT_FULLRES)
    sp = g.spacing[0]
    margin = 5  # slices of context around the slab for the 3D change and deformation
    k0 = max(NODULE_SLICE_FULLRES - max(map(abs, SERIES_SLAB)) - margin, 0)
    block = np.asarray(hu[k0:NODULE_SLICE_FULLRES + max(SERIES_SLAB) + margin + 1], dtype=np.float64)
    centre_z = NODULE_SLICE_FULLRES - k0
    cx, cy = NODULE_CENTRE_FULLRES_XY
    fine = ImageGrid.centred((1, 512, 512), (sp, sp, 2.0))
    grid = ImageGrid.centred((1, 256, 256), (2 * sp, 2 * sp, 2.0))
    changes = SERIES_CHANGES[len(SERIES_CHANGES) - (fractions - 1):]  # the last ones: closest to the scan
    # The changed region (the nodule's disc, 1.5 radii) is the same in every fraction's plane.
    _, roi = longitudinal_prior(block[centre_z], (cy, cx), NODULE_RADIUS_MM / sp, noise=0.0)
    roi_mid = mean_pool(roi[None].astype(np.float32)) > 0.5
    out = []
    for f in range(1, fractions + 1):
        vol = block
        if f < fractions:
            c = changes[f - 1]
            vol, _ = longitudinal_prior(block, (centre_z, cy, cx), NODULE_RADIUS_MM / sp, contraction=c["contraction"],
                                        shift_px=c["shift_px"], rotation_deg=c["rotation_deg"], z_aspect=2.0 / sp,
                                        seed=c["seed"])
        slices = [centre_z + d for d in (SERIES_SLAB if f < fractions else (0,))]
        mus = [_mu(vol[k]) for k in slices]
        meas = [_simulate(mu, fine, grid, acq, seed=5000 + 100 * f + k, description=f"thorax fraction {f} slice {k}")
                for mu, k in zip(mus, slices)]
        truth = np.stack([mean_pool(mu) for mu in mus]).astype(np.float32)
        z0 = -slices.index(centre_z) * 2.0  # the nodule's slice in the measured plane (z = 0)
        vgrid = ImageGrid((256, 256, len(slices)), grid.spacing[:2] + (2.0,), grid.origin[:2] + (z0,))
        out.append(Fraction(f, meas, truth, vgrid, roi_mid))
    return out


def series_test(fraction: Fraction, acq: Acquisition) -> Case:
    """The nodule slice of `fraction` as a benchmark case (its measurement, truth and ROI)."""
    k = SERIES_SLAB.index(0) if len(fraction.measurements) > 1 else 0
    return Case(f"thorax_fraction{fraction.index}_{acq.name}", fraction.measurements[k], fraction.truth[k:k + 1],
                None, fraction.roi, {"patient": "thorax", "fraction": fraction.index})
