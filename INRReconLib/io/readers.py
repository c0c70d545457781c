"""The one entry point for measurement files: `read_measurement` finds the reader that recognises
the file (a cheap sniff of its content, not its name) and reads it.

Every reader turns a file into a validated Measurement (docs/measurement-format.md): INRRecon's
own HDF5 format (FORMAT v1) and Siemens raw data (twix.py, coil maps estimated on reading);
importers of more scanner formats (ISMRMRD, CBCT projections) are added as one more Reader in
READERS, and `inrrecon import` writes any of them as a v1 file. The CLI, the worker, the scene's
display and the Slicer file reader all go through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InputError
from .measurement import Measurement, is_v1_file, read_v1, read_v1_header
from .twix import is_twix_file, read_twix, twix_header


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
    Reader("twix", "Siemens raw data, twix VB/VD/VE (2D Cartesian; needs twixtools)", (".dat",),
           is_twix_file, read_twix, twix_header),
)
SUFFIXES = tuple(s for reader in READERS for s in reader.suffixes)


def reader_for(path) -> Reader:
    """The reader that recognises `path`. A file nobody recognises goes to the reader of its
    suffix, whose error then says what is wrong with it; without one, InputError."""
    path = Path(path)
    if not path.is_file():
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


def is_measurement_file(path) -> bool:
    """True when some reader recognises `path` (the Slicer file reader's confidence)."""
    path = Path(path)
    return path.is_file() and any(reader.sniff(path) for reader in READERS)
