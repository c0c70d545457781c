"""The prior: an earlier scan of the patient, brought onto a measurement's grid in physics units.

`load_prior` resamples it onto the grid. For 2D data (one table position) and a prior volume,
`load_prior_slices` also keeps the prior's own slices near the measured plane: the patient lies
a few millimetres differently along the table too, so the prior's slice at the plane's nominal
position may show other anatomy. NeRP then picks the slice that best matches the data
(methods/registration.py `pick_slice`) before registering it in-plane.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..physics.grid import ImageGrid
from .volume import MU_WATER_PER_MM, hu_to_mu, overlap_fraction, read_volume, resample_to_grid

# Below this fraction of the measurement grid covered, a prior is almost certainly misplaced
# (wrong origin, other patient position) rather than merely cropped.
MIN_PRIOR_OVERLAP = 0.1
# Slices of a prior volume kept as candidates for 2D data: within this distance of the plane.
# Setup errors along the table are a few millimetres; the config key prior_slice_search_mm
# narrows the search further.
SLICE_SEARCH_MAX_MM = 20.0
# The prior's slice axis must be this close to the plane's normal (cosine of 1 degree) for its
# slices to be planes of the measurement.
_PARALLEL_COS = float(np.cos(np.deg2rad(1.0)))


@dataclass(frozen=True)
class PriorSlices:
    """A prior volume for 2D data.

    plane:      the prior at the measured plane, as `load_prior` gives it ([1, ny, nx]);
    images:     [k, ny, nx]: the prior's own slices within SLICE_SEARCH_MAX_MM of the plane, each
                resampled in-plane onto the grid (k = 0 for an oblique or 2D prior);
    offsets_mm: each slice's signed distance from the plane along the plane's normal.
    Only the prior's own slice positions are candidates: a plane interpolated between two slices
    is blurred, and a blurred plane correlates better with the smooth TV image of sparse data
    than a sharp one of the right anatomy (thorax volume with 2 mm slices shifted 4 mm: 1 mm
    steps picked -5 mm, halfway between two slices; its NeRP 31.69 dB, -4 mm 31.84 dB)."""

    plane: np.ndarray
    images: np.ndarray
    offsets_mm: tuple

    def within(self, mm: float) -> tuple[np.ndarray, tuple]:
        """(images, offsets_mm) of the slices at most `mm` from the plane."""
        keep = [i for i, o in enumerate(self.offsets_mm) if abs(o) <= float(mm) + 1e-6]
        return self.images[keep], tuple(self.offsets_mm[i] for i in keep)


def prior_image(prior):
    """The prior at the measured plane: `prior` itself, or the plane of a PriorSlices."""
    return prior.plane if isinstance(prior, PriorSlices) else prior


def _grids_equal(a: ImageGrid, b: ImageGrid) -> bool:
    return (a.size == b.size and np.allclose(a.spacing, b.spacing, rtol=1e-5)
            and np.allclose(a.origin, b.origin, atol=1e-3 * min(a.spacing))
            and np.allclose(a.direction, b.direction, atol=1e-6))


def _ct_prior_units(values: np.ndarray) -> str:
    """Guess "HU" or "mu" from the value range; raise when it is neither."""
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= 1.0 and lo >= -0.05:
        return "mu"
    if lo <= -300.0:
        return "HU"
    raise InputError("prior", f"values range {lo:.4g} to {hi:.4g}: neither HU (air near -1000) nor attenuation "
                     "(1/mm, below 1).",
                     "If it is CT stored without its rescale intercept, subtract 1024; if it is an MR image, "
                     "use it with an MR measurement; or state the units explicitly (units='HU' or 'mu').")


def _prior_values(prior, measurement, units: str, series=None) -> tuple[np.ndarray, ImageGrid]:
    """Read and check the prior; returns (values in physics units before resampling, its grid):
    CT μ (1/mm), MR magnitude. series: the Series Instance UID of a DICOM folder prior."""
    dst = measurement.grid
    if isinstance(prior, (str, os.PathLike)):
        array, src = read_volume(prior, series)
    elif isinstance(prior, tuple) and len(prior) == 2 and isinstance(prior[1], ImageGrid):
        array, src = np.asarray(prior[0]), prior[1]
    else:
        array, src = np.asarray(prior), dst
        if array.ndim == 2 and dst.is_2d:
            array = array[None]
        if array.shape != dst.shape:
            raise InputError("prior", f"array shape {list(array.shape)} differs from the measurement grid "
                             f"{list(dst.shape)} (nz, ny, nx) and no grid was given.",
                             "Pass (array, ImageGrid) or a volume file so the prior can be resampled.")
    if array.ndim == 2 and src.is_2d:
        array = array[None]
    if array.shape != src.shape:
        raise InputError("prior", f"array shape {list(array.shape)} does not match its grid {list(src.shape)}.")
    if np.iscomplexobj(array):
        if measurement.modality == "CT":
            raise InputError("prior", "a complex image cannot be a CT prior.", "Give a CT volume in HU or 1/mm.")
        array = np.abs(array)
    array = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise InputError("prior", "contains NaN or Inf values.", "Fill them (e.g. with air) before using the image.")
    if src.is_2d and not dst.is_2d:
        raise InputError("prior", "is a 2D image but the measurement is 3D.", "Give a 3D prior volume.")
    covered = overlap_fraction(src, dst)
    if covered < MIN_PRIOR_OVERLAP:
        raise InputError("prior", f"covers only {100 * covered:.0f}% of the measurement grid (their physical "
                         "extents barely overlap: different origin, direction or patient position).",
                         "Register the prior to the new scan (e.g. to a quick FBP/FDK of it) or fix its origin.")
    if measurement.modality != "CT":
        return array, src
    if units == "auto":
        units = _ct_prior_units(array)
    if units not in ("HU", "mu"):
        raise InputError("units", f"must be 'auto', 'HU' or 'mu', got {units!r}.")
    mu_water = measurement.mu_water_per_mm or MU_WATER_PER_MM
    return (hu_to_mu(array, mu_water).astype(np.float32) if units == "HU" else array), src


def _on_grid(values: np.ndarray, src: ImageGrid, dst: ImageGrid, modality: str) -> np.ndarray:
    """Values from _prior_values resampled onto `dst`: CT μ clipped at 0; MR divided by its
    99.9th percentile and clipped to [0, 1]."""
    out = values if _grids_equal(src, dst) else resample_to_grid(values, src, dst, default=0.0)
    if modality == "CT":
        return np.clip(out, 0.0, None).astype(np.float32)
    out = np.abs(out)
    scale = float(np.percentile(out, 99.9))
    if scale <= 0:
        raise InputError("prior", "is zero (after resampling onto the measurement grid).",
                         "Check that the prior shows the same anatomy as the measurement.")
    return np.clip(out / scale, 0.0, 1.0).astype(np.float32)


def load_prior(prior, measurement, *, units: str = "auto", series=None) -> np.ndarray:
    """The prior image on the measurement's grid, in physics units, float32 [nz, ny, nx].

    prior: a file path (anything SimpleITK reads), a DICOM folder (io/dicom_series.py; `series`:
           its Series Instance UID when it holds several), an (array, ImageGrid) pair, or an array
           already on the measurement grid (shape grid.shape).
    CT: HU are converted to μ (1/mm) with the measurement's `mu_water_per_mm` (default
        MU_WATER_PER_MM) and clipped at 0. units: "auto" (guess from the value range), "HU" or "mu".
    MR: magnitude divided by its 99.9th percentile and clipped to [0, 1] (robust to a few very
        bright voxels).
    A prior on another grid is resampled (linear) onto the measurement grid; outside its extent it
    counts as air (CT) or 0 (MR). InputError when it covers less than MIN_PRIOR_OVERLAP of the
    grid, when a 2D prior meets a 3D measurement, or when a CT prior's values fit no unit.
    """
    values, src = _prior_values(prior, measurement, units, series)
    return _on_grid(values, src, measurement.grid, measurement.modality)


def load_prior_slices(prior, measurement, *, units: str = "auto", series=None) -> PriorSlices:
    """`load_prior`'s image, and for 2D data and a prior volume whose slices are parallel to the
    measured plane, the prior's slices within SLICE_SEARCH_MAX_MM of it (see PriorSlices)."""
    values, src = _prior_values(prior, measurement, units, series)
    dst = measurement.grid
    plane = _on_grid(values, src, dst, measurement.modality)
    empty = np.zeros((0,) + dst.shape[1:], np.float32)
    if not dst.is_2d or src.is_2d:
        return PriorSlices(plane, empty, ())
    d_src = np.asarray(src.direction).reshape(3, 3)
    d_dst = np.asarray(dst.direction).reshape(3, 3)
    normal = d_dst[:, 2]
    if abs(float(normal @ d_src[:, 2])) < _PARALLEL_COS:
        return PriorSlices(plane, empty, ())
    ks = np.arange(src.size[2])
    centres = np.asarray(src.origin)[:, None] + np.outer(d_src[:, 2], ks * src.spacing[2])
    offsets = (centres - np.asarray(dst.origin)[:, None]).T @ normal
    near = np.flatnonzero(np.abs(offsets) <= SLICE_SEARCH_MAX_MM)
    if near.size == 0:
        return PriorSlices(plane, empty, ())
    # Resample from the slab around those slices (one slice of margin), not the whole volume:
    # 1.10 s -> 0.24 s (plane included) for the 21 candidates of the 256x256x141 thorax.
    k0, k1 = max(int(near[0]) - 1, 0), min(int(near[-1]) + 2, src.size[2])
    slab = ImageGrid(src.size[:2] + (k1 - k0,), src.spacing, tuple(centres[:, k0]), src.direction)
    images = []
    for k in near:
        # The measurement grid moved along its normal onto slice k's centre.
        moved = ImageGrid(dst.size, dst.spacing, tuple(np.asarray(dst.origin) + offsets[k] * normal), dst.direction)
        images.append(_on_grid(values[k0:k1], slab, moved, measurement.modality)[0])
    return PriorSlices(plane, np.stack(images), tuple(round(float(offsets[k]), 3) for k in near))
