"""The one entry point for measurement files: `read_measurement` finds the reader that recognises
the file (a cheap sniff of its content, not its name) and reads it.

Every reader turns a file into a validated Measurement (docs/measurement-format.md): INRRecon's
own HDF5 format (FORMAT v1), ISMRMRD raw data (ismrmrd_reader.py, recognised by its /dataset/xml
header, not its suffix), Siemens raw data (twix.py), coil maps estimated on reading, and
cone-beam scans (cbct.py: RTK geometry XML or Elekta XVI _Frames.xml with the projections beside
it, or the scan's folder). More scanner formats are one more Reader in READERS (and an entry in
importers.py), and `inrrecon import` writes any of them as a v1 file. The CLI, the worker, the scene's
display and the Slicer file reader all go through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InputError
from .ismrmrd_reader import SUFFIXES as ISMRMRD_SUFFIXES
from .ismrmrd_reader import ismrmrd_header, is_ismrmrd_file, read_ismrmrd
from .measurement import Measurement, is_v1_file, read_v1, read_v1_header
from .twix import is_twix_file, read_twix, twix_header


def _cbct(name, module="cbct_vendors"):
    """A function of cbct.py / cbct_vendors.py, imported when called (RTK is large and optional);
    the readers take a list of inputs, the sniffs one path."""
    def call(path):
        import importlib

        function = getattr(importlib.import_module(f".{module}", __package__), name)
        return function([path]) if name.startswith("read_") else function(path)
    return call


@dataclass(frozen=True)
class Reader:
    """name; summary (for messages); suffixes it usually has (only to pick whose error to show
    when no reader recognises a file); sniff(path) -> bool, cheap; read(path) -> Measurement;
    header(path) -> {"modality", "grid", "geometry", "attrs"} without the data (the Slicer
    module reads it to choose a preset before a run)."""

    name: str
    summary: str
    suffixes: tuple
    sniff: Callable[[Path], bool]
    read: Callable[[Path], Measurement]
    header: Callable[[Path], dict]


READERS = (
    Reader("inrrecon-h5", "INRRecon measurement, HDF5 (docs/measurement-format.md)", (".h5", ".hdf5"),
           is_v1_file, read_v1, read_v1_header),
    Reader("ismrmrd", "ISMRMRD raw data, HDF5 v1 (Cartesian, radial, spiral; one slice)", ISMRMRD_SUFFIXES,
           is_ismrmrd_file, read_ismrmrd, ismrmrd_header),
    Reader("twix", "Siemens raw data, twix VB/VD/VE (2D Cartesian; needs twixtools)", (".dat",),
           is_twix_file, read_twix, twix_header),
    # cone-beam scans: the geometry XML (the projections beside it) or the scan's folder
    Reader("elekta", "Elekta XVI CBCT: _Frames.xml with the .his files beside it, or the scan folder (img_<UID> "
           "before XVI 5; needs itk-rtk)", (".xml",), _cbct("is_elekta_scan"), _cbct("read_elekta"),
           lambda path: _header_of(_cbct("read_elekta"), path)),
    Reader("varian", "Varian kV CBCT (TrueBeam/ProBeam .xim, OBI .hnd): Scan.xml with Acquisitions/*/Proj_*, or "
           "the scan folder (needs itk-rtk)", (".xml",), _cbct("is_varian_scan"), _cbct("read_varian"),
           lambda path: _header_of(_cbct("read_varian"), path)),
    Reader("rtk", "RTK geometry XML with the projections beside it, or their folder (needs itk-rtk)", (".xml",),
           _cbct("is_rtk_scan", "cbct"), _cbct("read_rtk", "cbct"),
           lambda path: _header_of(_cbct("read_rtk", "cbct"), path)),
)
SUFFIXES = tuple(dict.fromkeys(s for reader in READERS for s in reader.suffixes))  # once each


def _header_of(read, path) -> dict:
    """The header of a reader without a cheaper one: read it all."""
    m = read(path)
    return {"modality": m.modality, "grid": m.grid, "geometry": m.geometry.type, "attrs": m.attrs}


def reader_for(path) -> Reader:
    """The reader that recognises `path`. A file nobody recognises goes to the reader of its
    suffix, whose error then says what is wrong with it; without one, InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError("measurement", f"file {str(path)!r} does not exist.", "Choose an existing measurement file.")
    for reader in READERS:
        if reader.sniff(path):
            return reader
    for reader in READERS:
        if path.suffix.lower() in reader.suffixes:
            return reader
    known = "; ".join(f"{r.summary} ({', '.join(r.suffixes)})" for r in READERS)
    raise InputError("measurement", f"{path.name} is in no format INRRecon reads.",
                     f"Readable formats: {known}. Convert other data with an importer (docs/measurement-format.md).")


def read_measurement(path) -> Measurement:
    """Read and validate the measurement in `path`, whatever reader it needs."""
    return reader_for(path).read(Path(path))


def read_measurement_header(path) -> dict:
    """modality, grid (ImageGrid), geometry type and attributes of the measurement in `path`,
    without its data."""
    return reader_for(path).header(Path(path))


def scan_kind(modality: str, grid) -> str:
    """"CT 2D", "MR 3D", ...: what a DisINR model and the scans it adapts to must share."""
    return f"{modality} {'2D' if grid.shape[0] == 1 else '3D'}"


def header_kind(path) -> str:
    """scan_kind of the measurement in `path`, from its header."""
    header = read_measurement_header(path)
    return scan_kind(header["modality"], header["grid"])


def is_measurement_file(path) -> bool:
    """True when some reader recognises `path` (the Slicer file reader's confidence)."""
    path = Path(path)
    return path.exists() and any(reader.sniff(path) for reader in READERS)
