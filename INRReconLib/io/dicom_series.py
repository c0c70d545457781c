"""A DICOM series in a folder as one volume: which series, its values in HU, its slices checked.

A folder of slice files is what a planning system exports, so a prior may be given as that folder
(`volume.read_volume` sends folders here). Such a folder often holds more than one series (the
planning CT, a second reconstruction kernel, a scout); guessing would embed the wrong image
without a word, so several candidates are an error that lists them, and the user names one by
its Series Instance UID (`--prior-series`, the job and study key `prior_series`). Radiotherapy
objects (structure set, plan, dose) are never a prior and are left out of that choice, so the
usual CT + RTSTRUCT + RTPLAN + RTDOSE export needs no UID.

The slice geometry is checked before any pixel is read: ITK's series reader builds one regular
grid from the slices' positions and at most logs a warning, so a missing slice, uneven spacing or
a tilted gantry (a sheared stack) would give a volume whose anatomy lies at the wrong place, and
NeRP would embed it as truth.

Values: GDCM applies every file's Rescale Slope and Intercept (0028,1053 / 0028,1052) while it
reads, each slice its own, so CT comes out in HU (Testing/Python/test_dicom_prior.py checks the
values against the integers stored in the files).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, last_line
from ..physics.grid import ImageGrid

log = logging.getLogger("INRReconLib.io")

# DICOM tags as GDCM names them in the metadata dictionary.
DESCRIPTION = "0008|103e"
MODALITY = "0008|0060"
POSITION = "0020|0032"      # Image Position (Patient): LPS mm of the first voxel's centre
ORIENTATION = "0020|0037"   # Image Orientation (Patient): row and column direction cosines
PIXEL_SPACING = "0028|0030"  # row spacing (between rows, y), column spacing (x)
ROWS, COLUMNS = "0028|0010", "0028|0011"
FRAMES = "0028|0008"
TILT = "0018|1120"          # Gantry/Detector Tilt, degrees

# Series that are never a prior image: radiotherapy objects, segmentations, reports. Left out of
# the automatic choice (they can still be named by UID).
NOT_A_PRIOR = frozenset({"RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "RTIMAGE", "REG", "SEG", "PR", "KO", "SR",
                         "DOC", "RWV", "OT"})

# Tolerances of the slice checks. Positions are decimal strings of at most 16 characters, so
# exact equality is never expected.
DUPLICATE_MM = 0.01       # two slices closer than this along the normal are the same position
GAP_FACTOR = 1.5          # a step this many times the median step is a missing slice
EVEN_FRACTION = 0.1       # a slice farther than this fraction of the step from an even stack
SHEAR_FRACTION = 0.2      # in-plane drift of the stack beyond this fraction of a pixel: sheared
TILT_DEGREES = 0.01       # a Gantry/Detector Tilt above this is a tilt
_ORTHO_TOL = 1e-3         # ImageOrientationPatient: unit, orthogonal vectors within this
_SAME_ORIENTATION = 1e-4  # all slices' direction cosines equal within this

_SERIES_FIX = "Choose one with --prior-series UID (job and study key 'prior_series')."
_RESAMPLE = ("resample the series onto an even, non-tilted grid first (e.g. load it in 3D Slicer with the DICOM "
             "setting 'Acquisition geometry regularization' set to harden the transform, and save it as NRRD), "
             "then give that file as the prior.")
_REGULARIZE = _RESAMPLE[0].upper() + _RESAMPLE[1:]


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a folder: its UID, files (GDCM's order), modality and description."""

    uid: str
    files: tuple
    modality: str
    description: str

    def summary(self) -> str:
        description = f", {self.description!r}" if self.description else ""
        return f"{self.uid} ({self.modality or 'no modality'}{description}, {len(self.files)} file(s))"


def _sitk():
    import SimpleITK as sitk

    return sitk


def _header(path) -> dict:
    """The tags of one file (values stripped of DICOM's padding), without its pixels."""
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()}


def _numbers(header: dict, tag: str, count: int, name: str, path) -> np.ndarray:
    text = header.get(tag, "")
    try:
        values = np.array([float(v) for v in text.split("\\")], dtype=np.float64)
    except ValueError:
        values = np.zeros(0)
    if values.size != count or not np.all(np.isfinite(values)):
        raise InputError("DICOM series", f"{Path(path).name} has no valid {name} ({tag.replace('|', ',')}): "
                         f"{text!r}.", "Export the series again from the scanner or planning system.")
    return values


def _listing(series) -> str:
    return "; ".join(s.summary() for s in series)


def list_series(folder) -> list:
    """The DICOM series directly in `folder` (not its subfolders), as SeriesInfo."""
    sitk = _sitk()
    folder = Path(folder)
    out = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        try:
            header = _header(files[0])
        except RuntimeError:
            header = {}  # no image in it (a structure set, a report): listed without details
        out.append(SeriesInfo(uid, files, header.get(MODALITY, ""), header.get(DESCRIPTION, "")))
    return out


def choose_series(folder, series_uid=None) -> SeriesInfo:
    """The series of `folder` to read: the one named by `series_uid`, else the only candidate
    (series of NOT_A_PRIOR modalities do not count). InputError when there is none, when the
    UID is not there, or when several candidates remain (the message lists them)."""
    folder = Path(folder)
    series = list_series(folder)
    if not series:
        subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())[:5]
        hint = (f" It has subfolders ({', '.join(subfolders)}): the slices may be in one of them."
                if subfolders else "")
        raise InputError("prior", f"folder {str(folder)!r} holds no DICOM image series.{hint}",
                         "Give the folder that directly holds the series' slice files, or an image file "
                         "(NRRD, NIfTI, MHA).")
    if series_uid is not None:
        uid = str(series_uid).strip()
        chosen = [s for s in series if s.uid == uid]
        if not chosen:
            raise InputError("prior_series", f"{uid!r} is not a series of {str(folder)!r}, which holds: "
                             f"{_listing(series)}.", "Give one of the UIDs listed.")
        return chosen[0]
    candidates = [s for s in series if s.modality.upper() not in NOT_A_PRIOR]
    if len(candidates) == 1:
        if len(series) > 1:
            log.info("DICOM folder %s: using series %s; not a prior: %s", folder, candidates[0].summary(),
                     _listing(s for s in series if s not in candidates))
        return candidates[0]
    if not candidates:
        raise InputError("prior", f"folder {str(folder)!r} holds no image series to use as a prior, only "
                         f"{_listing(series)}.", "Add the CT/MR series to the folder, or name one with "
                         "--prior-series UID (job and study key 'prior_series').")
    raise InputError("prior_series", f"folder {str(folder)!r} holds {len(candidates)} DICOM series: "
                     f"{_listing(candidates)}.", _SERIES_FIX)


def _checked_grid(info: SeriesInfo, headers: list) -> tuple:
    """(file order along the slice normal, ImageGrid) of a series whose slices form one evenly
    spaced, non-tilted stack; InputError naming the slice and the fix otherwise."""
    files = info.files
    where = f"series {info.uid}"
    for path, h in zip(files, headers):
        if FRAMES in h and h[FRAMES] not in ("", "1"):
            raise InputError("DICOM series", f"{where}: {Path(path).name} holds {h[FRAMES]} frames; a folder prior "
                             "must be one file per slice.", "Give that multi-frame file itself as the prior.")
        tilt = h.get(TILT, "")
        try:
            tilt_degrees = float(tilt) if tilt else 0.0
        except ValueError:
            tilt_degrees = 0.0
        if abs(tilt_degrees) > TILT_DEGREES:
            raise InputError("DICOM series", f"{where} was acquired with a gantry/detector tilt of "
                             f"{tilt_degrees:g} degrees ({Path(path).name}, tag 0018,1120): its slices form a "
                             "sheared stack that one regular grid cannot hold.", _REGULARIZE)
    orientations = np.stack([_numbers(h, ORIENTATION, 6, "Image Orientation (Patient)", p)
                             for p, h in zip(files, headers)])
    positions = np.stack([_numbers(h, POSITION, 3, "Image Position (Patient)", p) for p, h in zip(files, headers)])
    spacings = np.stack([_numbers(h, PIXEL_SPACING, 2, "Pixel Spacing", p) for p, h in zip(files, headers)])
    shapes = {(h.get(ROWS), h.get(COLUMNS)) for h in headers}
    if any(not (r or "").isdigit() or not (c or "").isdigit() for r, c in shapes):
        raise InputError("DICOM series", f"{where}: a file lacks Rows/Columns (0028,0010 / 0028,0011).",
                         "Export the series again from the scanner or planning system.")
    if len(shapes) > 1:
        raise InputError("DICOM series", f"{where} mixes slice sizes (rows, columns) {sorted(shapes)}.",
                         "Export the series again; it should hold one image size.")
    bad = np.flatnonzero(np.abs(orientations - orientations[0]).max(axis=1) > _SAME_ORIENTATION)
    if bad.size:
        raise InputError("DICOM series", f"{where} mixes slice orientations ({Path(files[0]).name} and "
                         f"{Path(files[bad[0]]).name} differ).",
                         "Give a series of parallel slices (a localizer or a reformat is a series of its own).")
    if np.abs(spacings - spacings[0]).max() > 1e-4 * spacings[0].max():
        raise InputError("DICOM series", f"{where} mixes pixel spacings.", "Export the series again.")
    row, col = orientations[0, :3], orientations[0, 3:]
    if (abs(np.linalg.norm(row) - 1) > _ORTHO_TOL or abs(np.linalg.norm(col) - 1) > _ORTHO_TOL
            or abs(row @ col) > _ORTHO_TOL):
        raise InputError("DICOM series", f"{where}: Image Orientation (Patient) {list(orientations[0])} is not two "
                         "orthogonal unit vectors.", "Export the series again from the scanner or planning system.")
    # Orthonormalise: the decimal strings are rounded, ImageGrid wants 1e-4.
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)  # as ITK: the third axis is row x column

    z = positions @ normal
    order = np.argsort(z, kind="stable")
    z, positions = z[order], positions[order]
    names = [Path(files[i]).name for i in order]
    steps = np.diff(z)

    def at(k):
        return f"slice {k} (z = {z[k]:.2f} mm, {names[k]})"

    same = np.flatnonzero(steps < DUPLICATE_MM)
    if same.size:
        k = int(same[0])
        raise InputError("DICOM series", f"{where} has two slices at one position: {at(k)} and {names[k + 1]}.",
                         "Remove the duplicated files (or give the series' other acquisition its own folder).")
    pixel = float(spacings[0].min())
    drift = (positions - positions[0]) - np.outer(z - z[0], normal)
    worst = int(np.argmax(np.linalg.norm(drift, axis=1)))
    if np.linalg.norm(drift[worst]) > SHEAR_FRACTION * pixel:
        angle = np.degrees(np.arctan2(np.linalg.norm(drift[-1]), z[-1] - z[0]))
        raise InputError("DICOM series", f"{where}: the slices' positions do not follow the slice normal ({at(worst)} "
                         f"lies {np.linalg.norm(drift[worst]):.2f} mm to the side of slice 0; a sheared stack, "
                         f"about {angle:.2f} degrees, as a gantry tilt gives).", _REGULARIZE)
    if len(z) >= 3:
        median = float(np.median(steps))
        gaps = np.flatnonzero(steps >= GAP_FACTOR * median)
        if gaps.size:
            k = int(gaps[0])
            missing = int(round(steps[k] / median)) - 1
            raise InputError("DICOM series", f"{where} has a gap of {steps[k]:.2f} mm between {at(k)} and "
                             f"{at(k + 1)}, where slices are {median:.2f} mm apart: about {max(missing, 1)} "
                             f"slice(s) missing ({len(gaps)} gap(s) in all).",
                             "Export the whole series again; if the scan itself has the gap, " + _RESAMPLE)
    step = float((z[-1] - z[0]) / (len(z) - 1))
    off = z - (z[0] + step * np.arange(len(z)))
    k = int(np.argmax(np.abs(off)))
    if abs(off[k]) > EVEN_FRACTION * step:
        raise InputError("DICOM series", f"{where} is unevenly spaced: steps of {steps.min():.3f} to "
                         f"{steps.max():.3f} mm; {at(k)} lies {abs(off[k]):.2f} mm from an evenly spaced stack.",
                         _REGULARIZE)
    rows, cols = (int(v) for v in shapes.pop())
    direction = np.column_stack([row, col, normal])
    grid = ImageGrid((cols, rows, len(z)), (spacings[0, 1], spacings[0, 0], step), tuple(positions[0]),
                     tuple(direction.ravel()))
    return order, grid


def read_dicom_series(folder, series_uid=None) -> tuple:
    """The series of `folder` (see `choose_series`) as (float32 array [z, y, x] in the files' real
    units, CT HU, and its ImageGrid, LPS). Slices sorted along their normal; InputError for a
    single file, a missing or unevenly spaced slice, duplicated positions or a tilted gantry."""
    sitk = _sitk()
    info = choose_series(folder, series_uid)
    if len(info.files) < 2:
        raise InputError("DICOM series", f"series {info.uid} in {str(folder)!r} is a single file: a folder prior "
                         "must hold the whole series, one file per slice, so that the slice positions can be "
                         "checked.", "Copy all the series' files into the folder, or give a single image or "
                         "multi-frame file itself as the prior.")
    try:
        headers = [_header(f) for f in info.files]
    except RuntimeError as exc:
        raise InputError("DICOM series", f"series {info.uid}: a file could not be read "
                         f"({last_line(exc)}).", "Export the series again.") from None
    order, grid = _checked_grid(info, headers)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([info.files[i] for i in order])
    # float32 whatever the stored type: a slope like 0.5, or slices with different slopes, would
    # otherwise be cast to the first slice's integer type.
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError("DICOM series", f"series {info.uid} could not be read "
                         f"({last_line(exc)}).", "Export the series again.") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("DICOM series", f"series {info.uid} has {image.GetNumberOfComponentsPerPixel()} "
                         "components per pixel (colour).", "Give a grey-value CT or MR series.")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if array.shape != grid.shape:
        raise InputError("DICOM series", f"series {info.uid}: pixel data {list(array.shape)} do not match the "
                         f"headers' {list(grid.shape)} (slices, rows, columns).", "Export the series again.")
    log.info("DICOM series %s: %s, grid %s", info.summary(), folder, grid.to_dict())
    return array, grid
