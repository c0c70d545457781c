"""Clinical cone-beam CT in: RTK's geometry and projections → a cone-beam CT Measurement on a
patient grid (the vendors' files reach `cbct_measurement` through cbct_vendors.py).

RTK (`itk-rtk`, `from itk import RTK`) reads the geometry (ThreeDCircularProjectionGeometry) and
every projection format it knows, and turns raw vendor intensities into line integrals the way
its applications do (rtk.ProjectionsReader: Elekta's lookup table, Varian's I0 normalisation).
What this module adds is the frame: RTK's geometry lives in its fixed world frame, which is IEC
61217's fixed system (origin at the isocentre, X to the right of an observer at the couch foot
facing the gantry, Y towards the gantry, Z up). For the patient position at the scan, each point of
that frame is a point of the patient (LPS, as DICOM and ITK images):

    HFS (head first supine)  (X, Y, Z) → L = X,  P = −Z, S = Y
    HFP (head first prone)               L = −X, P = Z,  S = Y
    FFS (feet first supine)              L = −X, P = −Z, S = −Y
    FFP (feet first prone)               L = X,  P = Z,  S = −Y

(HFS: the patient's left is the observer's right, the head points at the gantry, the face up; the
others follow by turning the patient, each a proper rotation.) The isocentre sits at LPS
`isocenter` (default: the `like` image's centre, else (0, 0, 0)). Every view then becomes our
per-view vectors (source, detector centre, u, v) in the grid frame (ct_geometry.py), read from RTK's
per-projection matrices, so offsets (half-fan), tilts and non-circular orbits carry over as they are.

Projection pixels: RTK places pixel (i, j) at origin + (i·su, j·sv) in the detector's own frame
(the projection image's direction must be the identity, as RTK's readers write it); our rows are
its j, our columns its i.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import InputError, last_line
from ..physics.ct_filters import view_angles
from ..physics.ct_geometry import CTGeometry
from ..physics.grid import ImageGrid
from .measurement import Measurement, validate_measurement
from .provenance import source_attribute

INSTALL = "pip install itk-rtk (or pip install -e \".[cbct]\")"
PATIENT_POSITIONS = {
    "HFS": ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
    "HFP": ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),
    "FFS": ((-1, 0, 0), (0, 0, -1), (0, -1, 0)),
    "FFP": ((1, 0, 0), (0, 0, 1), (0, -1, 0)),
}
# The default grid's largest in-plane size (voxels): finer than this is rarely what a sparse-view
# reconstruction wants, and a clinical detector at full resolution would ask for ~1000³.
DEFAULT_MAX_VOXELS = 256
# Line integrals of a patient stay well below this (e^-20 of the beam reaches the detector);
# larger values are raw intensities that nobody converted.
_MAX_LINE_INTEGRAL = 20.0


def rtk():
    """RTK's Python module (itk-rtk), or an InputError naming the install."""
    try:
        from itk import RTK
    except (ImportError, AttributeError):
        raise InputError("cbct", "reading cone-beam projections needs RTK (the itk-rtk package), which is not "
                         "installed.", f"Install it: {INSTALL}.") from None
    return RTK


def run_rtk(step, field: str, problem: str, fix: str):
    """step() (an RTK reader's Update or the like); RTK's C++ exceptions become one InputError:
    `problem` followed by the reason RTK gave."""
    try:
        return step()
    except RuntimeError as exc:
        raise InputError(field, f"{problem} ({last_line(exc)}).", fix) from None


def patient_rotation(position: str) -> np.ndarray:
    """3x3 matrix taking RTK's fixed frame (IEC 61217) to LPS for a patient position."""
    key = str(position).upper()
    if key not in PATIENT_POSITIONS:
        raise InputError("--patient-position", f"unknown patient position {position!r}.",
                         f"Use one of: {', '.join(PATIENT_POSITIONS)}.")
    return np.asarray(PATIENT_POSITIONS[key], dtype=np.float64)


# ------------------------------------------------------------------------------------ geometry
def read_rtk_geometry(path):
    """An RTK geometry XML file (ThreeDCircularProjectionGeometryXMLFileReader)."""
    path = Path(path)
    reader = rtk().ThreeDCircularProjectionGeometryXMLFileReader.New()
    reader.SetFilename(str(path))
    run_rtk(reader.GenerateOutputInformation, "RTK geometry", f"{path.name} cannot be read as an RTK geometry file",
            "Give the XML that rtksimulatedgeometry, RTK's vendor readers or "
            "ThreeDCircularProjectionGeometryXMLFileWriter wrote.")
    geometry = reader.GetOutputObject()
    if len(geometry.GetGantryAngles()) == 0:
        raise InputError("RTK geometry", f"{path.name} describes no projections (is it an RTK geometry file?).",
                         "Give the XML that RTK's ThreeDCircularProjectionGeometryXMLFileWriter or its vendor "
                         "readers wrote.")
    return geometry


def fixed_frame_views(geometry, n_rows: int, n_cols: int, origin, spacing) -> np.ndarray:
    """[n_views, 12] (source, detector centre, u, v) in RTK's fixed frame (mm), from its
    per-projection matrices, for a detector of n_rows x n_cols pixels at `origin` with `spacing`
    (projection coordinates, mm)."""
    import itk

    n_views = len(geometry.GetGantryAngles())
    centre = np.array([origin[0] + (n_cols / 2 - 0.5) * spacing[0], origin[1] + (n_rows / 2 - 0.5) * spacing[1], 0.0, 1.0])
    out = np.empty((n_views, 12))
    for i in range(n_views):
        m = np.asarray(itk.array_from_matrix(geometry.GetProjectionCoordinatesToFixedSystemMatrix(i)), float)
        source = np.asarray(geometry.GetSourcePosition(i), float)[:3]
        out[i, 0:3] = source
        out[i, 3:6] = (m @ centre)[:3]
        out[i, 6:9] = m[:3, 0] * spacing[0]
        out[i, 9:12] = m[:3, 1] * spacing[1]
    return out


def to_grid_frame(views: np.ndarray, rotation: np.ndarray, isocenter_lps, grid: ImageGrid) -> np.ndarray:
    """Fixed-frame view vectors → the grid frame of `grid` (positions about its centre, along its
    index axes): p_grid = Dᵀ (iso + R p_fixed − centre), directions Dᵀ R d."""
    d = np.asarray(grid.direction, float).reshape(3, 3)
    shift = np.asarray(isocenter_lps, float) - grid.centre_mm
    out = np.empty_like(views)
    for k in range(4):
        part = views[:, 3 * k:3 * k + 3] @ rotation.T
        if k < 2:  # source and detector centre are points; u and v directions
            part = part + shift
        out[:, 3 * k:3 * k + 3] = part @ d
    return out


def default_grid(views_fixed: np.ndarray, n_rows: int, n_cols: int, rotation, isocenter_lps, size=None,
                 spacing=None) -> ImageGrid:
    """A patient-aligned (identity direction) grid centred at the isocentre. Without `size`, it
    covers the field of view: in-plane the circle every view's fan reaches, along the axis the
    detector's height at the isocentre; without `spacing`, the detector pitch at the isocentre,
    coarsened so that the in-plane size stays ≤ DEFAULT_MAX_VOXELS."""
    source, centre, u, v = (views_fixed[:, 3 * k:3 * k + 3] for k in range(4))
    sid = np.linalg.norm(source, axis=1)
    normal = np.cross(u, v)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    sdd = np.abs(((centre - source) * normal).sum(1))
    magnification = float(np.mean(sdd / sid))
    du, dv = float(np.linalg.norm(u[0])), float(np.linalg.norm(v[0]))
    # the rotation axis in LPS: RTK's fixed Y (the gantry axis) through the rotation
    axis = np.abs(np.asarray(rotation, float) @ np.array([0.0, 1.0, 0.0]))
    # furthest reach of the fan from the isocentre, per view: the detector edge columns
    half_widths = []
    for sign in (-1, 1):
        edge = centre + sign * (n_cols / 2) * u
        ray = edge - source
        t = -(source * ray).sum(1) / (ray * ray).sum(1)  # closest approach to the isocentre
        half_widths.append(np.linalg.norm(source + t[:, None] * ray, axis=1))
    radius = float(np.max(np.minimum(np.max(half_widths, axis=0), sid)))
    height = n_rows * dv / magnification
    if spacing is None:
        pitch = du / magnification
        pitch = max(pitch, 2 * radius / DEFAULT_MAX_VOXELS)
        spacing = (pitch, pitch, pitch)
    spacing = np.asarray(spacing, float)
    if size is None:
        extent = np.where(axis > 0.5, height, 2 * radius)
        size = np.maximum(1, np.ceil(extent / spacing - 1e-6)).astype(int)
    size = np.asarray(size, int)
    origin = np.asarray(isocenter_lps, float) - (size - 1) / 2.0 * spacing
    return ImageGrid(tuple(int(n) for n in size), tuple(spacing), tuple(origin))


# --------------------------------------------------------------------------------- projections
def read_projection_stack(files) -> tuple[np.ndarray, tuple, tuple]:
    """Projections as RTK reads them (rtk.ProjectionsReader: line integrals for vendor raw
    files, as stored for .mha/.nrrd stacks): (float32 [n_views, n_rows, n_cols], origin (u, v),
    spacing (u, v))."""
    import itk

    files = [str(f) for f in files]
    image_type = itk.Image[itk.F, 3]
    reader = rtk().ProjectionsReader[image_type].New()
    reader.SetFileNames(files)
    run_rtk(reader.Update, "projections", "RTK cannot read the projections",
            "Give projection files RTK reads (.his, .hnd, .xim, .mha, .nrrd, ...), complete and of one scan.")
    image = reader.GetOutput()
    direction = np.asarray(itk.array_from_matrix(image.GetDirection()), float)
    if not np.allclose(direction, np.eye(3), atol=1e-6):
        raise InputError("projections", "the projection images have a non-identity direction matrix, which RTK's "
                         "geometry does not describe.", "Write the projection stack with identity direction.")
    data = np.ascontiguousarray(itk.array_from_image(image), dtype=np.float32)
    origin, spacing = tuple(image.GetOrigin()), tuple(image.GetSpacing())
    # RTK crops (e.g. Elekta's 4-pixel border) by moving the region's start index, not the origin
    start = tuple(image.GetLargestPossibleRegion().GetIndex())
    origin = [float(origin[k]) + start[k] * float(spacing[k]) for k in (0, 1)]
    return data, (origin[0], origin[1]), (float(spacing[0]), float(spacing[1]))


def bin_projections(data: np.ndarray, views: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Average factor x factor detector pixels (line integrals; trailing rows/columns that fill
    no bin are dropped) and scale the view vectors to match: u, v grow by `factor` and the centre
    moves to the mean of the kept pixels."""
    factor = int(factor)
    if factor < 1:
        raise InputError("--bin", f"must be a positive integer, got {factor}.")
    if factor == 1:
        return data, views
    n, rows, cols = data.shape
    r2, c2 = rows // factor, cols // factor
    if min(r2, c2) < 1:
        raise InputError("--bin", f"{factor} is larger than the detector ({rows} x {cols}).")
    binned = data[:, :r2 * factor, :c2 * factor].reshape(n, r2, factor, c2, factor).mean(axis=(2, 4))
    out = views.copy()
    u, v = views[:, 6:9], views[:, 9:12]
    # pixel centres of a bin average to (old centre + u (factor·c2/2 − cols/2) + v (...)) offset
    out[:, 3:6] = views[:, 3:6] + u * (factor * c2 / 2 - cols / 2) + v * (factor * r2 / 2 - rows / 2)
    out[:, 6:9], out[:, 9:12] = u * factor, v * factor
    return np.ascontiguousarray(binned, dtype=np.float32), out


def _check_line_integrals(data: np.ndarray, name: str) -> None:
    finite = np.isfinite(data)
    if not finite.all():
        raise InputError("projections", f"{int((~finite).sum())} NaN or Inf values in {name}.",
                         "Replace dead pixels (e.g. interpolate them) before importing.")
    if float(np.percentile(data, 99)) > _MAX_LINE_INTEGRAL:
        raise InputError("projections", f"1% of the values in {name} exceed {_MAX_LINE_INTEGRAL:g} (up to "
                         f"{float(data.max()):.3g}): these are raw "
                         "intensities, not line integrals.",
                         "Give the vendor's raw files (RTK converts them), or store −ln(I/I0) in the stack.")


# ---------------------------------------------------------------------------------- the import
def cbct_measurement(geometry, projection_files, *, source_fields: dict, inputs, like=None, size=None,
                     spacing=None, patient_position="HFS", isocenter=None, bin=1, every=1) -> Measurement:
    """The Measurement of an RTK geometry object and its projection files (module docstring)."""
    n_views = len(geometry.GetGantryAngles())
    every = int(every)
    if every < 1:
        raise InputError("--every", f"must be a positive integer, got {every}.")
    keep = np.arange(0, n_views, every)
    files = list(projection_files)
    one_per_view = len(files) == n_views  # vendor scans: then only the kept views are read at all
    data, origin, pitch = read_projection_stack([files[i] for i in keep] if one_per_view else files)
    if one_per_view and data.shape[0] != len(keep):
        raise InputError("projections", f"{len(keep)} files hold {data.shape[0]} projections; one per view was "
                         "expected.", "Give one projection per file, or one stack of all of them.")
    if not one_per_view and data.shape[0] != n_views:
        raise InputError("projections", f"{data.shape[0]} projections but the geometry has {n_views} views.",
                         "Give the projection files of this geometry, all of them, in acquisition order.")
    if not one_per_view:
        data = data[keep]
    views = fixed_frame_views(geometry, data.shape[1], data.shape[2], origin, pitch)[keep]
    data, views = bin_projections(data, views, bin)
    data = np.ascontiguousarray(data)
    _check_line_integrals(data, "the projections")
    rotation = patient_rotation(patient_position)
    if like is not None:
        from .volume import read_volume

        if size is not None or spacing is not None:
            raise InputError("--like", "takes the grid of an image; --size/--spacing cannot be given with it.")
        _, grid = read_volume(like)
        iso = grid.centre_mm if isocenter is None else np.asarray(isocenter, float)
    else:
        iso = np.zeros(3) if isocenter is None else np.asarray(isocenter, float)
        grid = default_grid(views, data.shape[1], data.shape[2], rotation, iso, size, spacing)
    vectors = to_grid_frame(views, rotation, iso, grid)
    sid = np.asarray(geometry.GetSourceToIsocenterDistances(), float)[keep]
    sdd = np.asarray(geometry.GetSourceToDetectorDistances(), float)[keep]
    circular = {"source_to_isocenter_mm": float(np.mean(sid)), "isocenter_to_detector_mm": float(np.mean(sdd - sid))}
    ct = CTGeometry("cone", vectors, data.shape[1], data.shape[2], circular)
    ct.circular["angles_rad"] = view_angles(ct)  # ours (about the grid z), not RTK's gantry angles
    source = source_attribute(
        source_fields.pop("importer"), inputs, patient_position=str(patient_position).upper(),
        isocenter_lps_mm=[float(v) for v in iso], bin=int(bin), every=every, views_kept=int(len(keep)),
        views_in_scan=int(n_views), grid_from=("like " + Path(like).name) if like is not None else "field of view",
        **source_fields)
    attrs = {"description": f"cone-beam CT, {len(keep)} of {n_views} views, {source_fields.get('scanner', 'RTK')}",
             "source": source}
    m = Measurement("CT", data, grid, ct, attrs)
    validate_measurement(m)
    return m


def scan_files(inputs, kind: str, geometry_glob: str, projection_suffixes: tuple, usage: str):
    """(geometry file, projection files) of a scan given as its folder, its geometry file (the
    projections beside it) or the geometry file followed by the projection files."""
    inputs = [Path(p) for p in inputs]
    first = inputs[0]
    if first.is_dir():
        found = sorted(first.glob(geometry_glob))
        if len(found) != 1:
            raise InputError(f"import {kind}", f"{first.name} holds {len(found)} files matching {geometry_glob}; "
                             "one is the scan's geometry.", usage)
        first, folder = found[0], first
    else:
        folder = first.parent
    projections = inputs[1:] or sorted((p for p in folder.iterdir()
                                        if p.is_file() and p.suffix.lower() in projection_suffixes), key=natural)
    if not projections:
        raise InputError(f"import {kind}", f"no projection files ({', '.join(projection_suffixes)}) next to "
                         f"{first.name}.", usage)
    kinds = sorted({p.suffix.lower() for p in projections})
    if len(kinds) > 1:  # e.g. a reconstruction saved into the scan's folder
        raise InputError(f"import {kind}", f"the projections next to {first.name} are of {len(kinds)} kinds "
                         f"({', '.join(kinds)}).", "Keep only the scan's projection files in its folder, or list "
                         "them after the geometry file.")
    return first, projections


def natural(path: Path):
    """Sort key: numbers in file names by value (proj_2 before proj_10), as scanners number frames."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


# Projection formats RTK reads that a CBCT folder may hold (the geometry file is an .xml)
_STACK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nii", ".tif", ".tiff", ".his", ".hnd", ".xim")


def read_rtk(inputs, **options) -> Measurement:
    """`inrrecon import rtk GEOMETRY.xml [PROJ...]` (or the folder holding both): RTK's geometry
    XML and any projection stack RTK reads, taken as line integrals unless RTK converts them."""
    usage = "inrrecon import rtk GEOMETRY.xml PROJ.mha [PROJ2.mha ...] --out MEAS.h5"
    xml, projections = scan_files(inputs, "rtk", "*.xml", _STACK_SUFFIXES, usage)
    if xml.suffix.lower() != ".xml":
        raise InputError("import rtk", f"{xml.name} is not an .xml file: give the geometry XML first, then the "
                         "projection files.", usage)
    geometry = read_rtk_geometry(xml)
    return cbct_measurement(geometry, projections, source_fields={"importer": "rtk", "scanner": "RTK geometry"},
                            inputs=[xml, *projections], **options)


def file_head(path: Path, n: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(n).decode("utf-8", "replace")
    except OSError:
        return ""


def geometry_file(path: Path, glob: str):
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob(glob))
        return found[0] if len(found) == 1 else None
    return path if path.is_file() and path.suffix.lower() == ".xml" else None


def is_rtk_scan(path) -> bool:
    """An RTK geometry XML (or a folder with exactly one) — cheap: the root element's name."""
    xml = geometry_file(path, "*.xml")
    return xml is not None and "<RTKThreeDCircularGeometry" in file_head(xml)
