"""Image volumes on disk (anything SimpleITK reads/writes), coordinate systems and units.

- Files and `ImageGrid` are LPS (ITK/SimpleITK/NRRD); Slicer is RAS. The one conversion lives
  here: `ijk_to_ras_matrix`, `lps_to_ras`.
- CT physics works in attenuation μ (1/mm); people read HU. `hu_to_mu` / `mu_to_hu` with a
  documented water attenuation.
- Priors (an earlier scan on a measurement's grid, in physics units) are in io/prior.py.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError, last_line
from ..physics.grid import ImageGrid

# Linear attenuation of water at ~70 keV effective energy (a 120 kVp spectrum), 1/mm. NIST XCOM:
# 0.1929 cm^2/g at 70 keV x 1 g/cm^3 = 0.0193 /mm; 0.0195 is the usual round value. Measurement
# files may carry their own `mu_water_per_mm`, which then wins.
MU_WATER_PER_MM = 0.0195

# Extensions whose header names a separate data file: an atomic rename of the header alone would
# leave the data under the temporary name, so these are written in place.
_DETACHED_HEADER = (".mhd", ".nhdr", ".hdr")


# --------------------------------------------------------------------------------------------
# units


def hu_to_mu(hu, mu_water_per_mm: float = MU_WATER_PER_MM):
    """HU -> μ (1/mm): μ = μ_water (1 + HU/1000). Air (-1000 HU) -> 0."""
    return mu_water_per_mm * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0)


def mu_to_hu(mu, mu_water_per_mm: float = MU_WATER_PER_MM):
    """μ (1/mm) -> HU: HU = 1000 (μ/μ_water - 1)."""
    return 1000.0 * (np.asarray(mu, dtype=np.float64) / mu_water_per_mm - 1.0)


# --------------------------------------------------------------------------------------------
# coordinates


def _direction_matrix(grid: ImageGrid) -> np.ndarray:
    return np.asarray(grid.direction, dtype=np.float64).reshape(3, 3)


def ijk_to_lps_matrix(grid: ImageGrid) -> np.ndarray:
    """4x4 homogeneous matrix: voxel index (i, j, k, 1) -> LPS mm. Index i runs along x (NumPy's
    last axis), k along z (NumPy's first axis)."""
    m = np.eye(4)
    m[:3, :3] = _direction_matrix(grid) @ np.diag(grid.spacing)
    m[:3, 3] = grid.origin
    return m


# LPS (ITK, files) <-> RAS (Slicer): negate x and y. Its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def ijk_to_ras_matrix(grid: ImageGrid) -> np.ndarray:
    """4x4 matrix voxel index (i, j, k, 1) -> RAS mm, as Slicer's `SetIJKToRASMatrix` wants it:
    LPS_TO_RAS · [direction · diag(spacing) | origin]."""
    m = ijk_to_lps_matrix(grid)
    m[:3] = LPS_TO_RAS @ m[:3]
    return m


def lps_to_ras(points) -> np.ndarray:
    """Points (..., 3) in LPS -> RAS (negate x and y). Its own inverse, see `ras_to_lps`."""
    p = np.array(points, dtype=np.float64, copy=True)
    if p.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3), got {p.shape}")
    p[..., :2] *= -1.0
    return p


ras_to_lps = lps_to_ras


def grid_centre_lps(grid: ImageGrid) -> np.ndarray:
    """LPS position (mm) of the grid centre, the origin of the physics' grid frame."""
    centre_index = (np.asarray(grid.size, dtype=np.float64) - 1.0) / 2.0
    return ijk_to_lps_matrix(grid)[:3] @ np.append(centre_index, 1.0)


# --------------------------------------------------------------------------------------------
# SimpleITK bridge


def _sitk():
    import SimpleITK as sitk

    return sitk


def array_to_image(array, grid: ImageGrid):
    """NumPy [z, y, x] (or [y, x] for a 2D grid) -> 3D SimpleITK image with the grid's geometry."""
    sitk = _sitk()
    arr = np.asarray(array)
    if arr.ndim == 2 and grid.is_2d:
        arr = arr[None]
    if arr.shape != grid.shape:
        raise InputError("volume", f"array shape {list(arr.shape)} does not match the grid shape (nz, ny, nx) "
                         f"{list(grid.shape)}.", "Pass an array of shape grid.shape.")
    if np.iscomplexobj(arr):
        raise InputError("volume", "complex images cannot be written as one scalar volume.",
                         "Write the magnitude (np.abs) and, if needed, the phase as a second file.")
    if arr.dtype == np.float64 or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image


def image_to_grid(image) -> ImageGrid:
    """The ImageGrid of a 2D or 3D SimpleITK image (2D images get nz = 1 and a 3x3 direction)."""
    dim = image.GetDimension()
    if dim == 3:
        return ImageGrid(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    if dim == 2:
        d2 = np.asarray(image.GetDirection()).reshape(2, 2)
        d3 = np.eye(3)
        d3[:2, :2] = d2
        return ImageGrid(tuple(image.GetSize()) + (1,), tuple(image.GetSpacing()) + (1.0,),
                         tuple(image.GetOrigin()) + (0.0,), tuple(d3.ravel()))
    raise InputError("volume", f"{dim}-D images are not supported here.", "Give a 2D or 3D scalar image.")


def read_volume(path, series=None) -> tuple[np.ndarray, ImageGrid]:
    """Read any SimpleITK-readable image: (float32 array [z, y, x], ImageGrid). Multi-component
    (RGB, vector) images are refused; 2D images come back with nz = 1.

    A folder is read as a DICOM series (io/dicom_series.py: values rescaled to HU, slice
    positions checked); `series` names its Series Instance UID when the folder holds several."""
    sitk = _sitk()
    path = Path(path)
    if not path.exists():
        raise InputError("volume", f"file {str(path)!r} does not exist.", "Check the path.")
    if path.is_dir():
        from .dicom_series import read_dicom_series

        return read_dicom_series(path, series)
    if series is not None:
        raise InputError("prior_series", f"names a DICOM series, but {str(path)!r} is a file, not a folder.",
                         "Give the DICOM folder, or drop the series UID.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError("volume", f"{str(path)!r} could not be read as an image ({last_line(exc)}).",
                         "Give an NRRD, NIfTI, MHA or another format SimpleITK reads.") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("volume", f"{str(path)!r} has {image.GetNumberOfComponentsPerPixel()} components per voxel.",
                         "Give a scalar (grey-value) image.")
    grid = image_to_grid(image)
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    return array.reshape(grid.shape), grid


def _temp_name(path: Path) -> Path:
    """A unique name in the same folder that keeps the (possibly double) extension, so that
    SimpleITK picks the same writer (".nii.gz", ".seq.nrrd")."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix.lower() == ".gz" else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:-len(suffix)] if suffix else path.name}.tmp", suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_volume(path, array, grid: ImageGrid, compress: bool = True) -> Path:
    """Write `array` ([z, y, x], or [y, x] for a 2D grid) on `grid` to `path` in the format its
    extension names, keeping origin, spacing and direction. float64 is stored as float32.
    Atomic (temporary name in the same folder, then os.replace) except for detached-header
    formats (.mhd/.nhdr), which are written in place."""
    sitk = _sitk()
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError("output", f"folder {str(path.parent)!r} does not exist.", "Create it or choose another path.")
    image = array_to_image(array, grid)
    if path.suffix.lower() in _DETACHED_HEADER:
        sitk.WriteImage(image, str(path), compress)
        return path
    tmp = _temp_name(path)
    try:
        sitk.WriteImage(image, str(tmp), compress)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path


# --------------------------------------------------------------------------------------------
# resampling


def _as_2d_image(image):
    """3D one-slice image -> 2D image with the in-plane part of its geometry."""
    sitk = _sitk()
    img2 = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[0])
    img2.SetSpacing(image.GetSpacing()[:2])
    img2.SetOrigin(image.GetOrigin()[:2])
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    img2.SetDirection(tuple(d[:2, :2].ravel()))
    return img2


def _in_plane(grid: ImageGrid) -> bool:
    """True when the grid's z axis is the LPS z axis, so its x/y geometry is a 2D geometry."""
    d = np.asarray(grid.direction).reshape(3, 3)
    return np.allclose(d[2, :2], 0, atol=1e-6) and np.allclose(d[:2, 2], 0, atol=1e-6)


def resample_to_grid(array, src_grid: ImageGrid, dst_grid: ImageGrid, default: float = 0.0,
                     interpolator: str = "linear") -> np.ndarray:
    """Resample `array` (shape src_grid.shape) onto `dst_grid` (SimpleITK, physical LPS positions);
    voxels outside the source get `default`. Returns float32 of shape dst_grid.shape.

    Two 2D grids (nz == 1) are matched in-plane only: the slices' z positions are ignored, so a
    slice from another table position still serves as a 2D prior.
    interpolator: "linear", "nearest" or "bspline".
    """
    sitk = _sitk()
    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}[interpolator]
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 2 and src_grid.is_2d:
        arr = arr[None]
    src = array_to_image(arr, src_grid)
    if src_grid.is_2d and dst_grid.is_2d and _in_plane(src_grid) and _in_plane(dst_grid):
        ref = _as_2d_image(array_to_image(np.zeros(dst_grid.shape, np.float32), dst_grid))
        out = sitk.Resample(_as_2d_image(src), ref, sitk.Transform(), interp, float(default), sitk.sitkFloat32)
        return sitk.GetArrayFromImage(out)[None].astype(np.float32, copy=False)
    if src_grid.is_2d and not dst_grid.is_2d:
        raise InputError("prior", "a 2D image cannot be resampled onto a 3D grid.", "Give a 3D prior volume.")
    ref = array_to_image(np.zeros(dst_grid.shape, np.float32), dst_grid)
    out = sitk.Resample(src, ref, sitk.Transform(), interp, float(default), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).astype(np.float32, copy=False).reshape(dst_grid.shape)


def overlap_fraction(src_grid: ImageGrid, dst_grid: ImageGrid) -> float:
    """Fraction of dst_grid's voxel centres that lie inside src_grid's extent (in-plane only when
    both are 2D, matching `resample_to_grid`)."""
    both_2d = src_grid.is_2d and dst_grid.is_2d
    # Sample dst voxel centres on a coarse lattice (at most ~32 per axis) to stay cheap.
    axes = [np.linspace(0, n - 1, min(n, 32)) for n in dst_grid.size]
    ii, jj, kk = np.meshgrid(*axes, indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
    lps = ijk_to_lps_matrix(dst_grid) @ ijk
    src_ijk = np.linalg.inv(ijk_to_lps_matrix(src_grid)) @ lps
    size = np.asarray(src_grid.size, dtype=np.float64)[:, None]
    inside = (src_ijk[:3] >= -0.5) & (src_ijk[:3] <= size - 0.5)
    if both_2d:
        inside[2] = True
    return float(np.mean(np.all(inside, axis=0)))
