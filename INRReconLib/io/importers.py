"""`inrrecon import KIND INPUT... --out MEAS.h5`: one entry per scanner format.

Each importer turns what a scanner wrote (one file, several files or a folder) into a validated
Measurement; the CLI writes it as a v1 file. `options` names the CLI options the importer reads:
an option set (to other than its default) for a kind that does not read it is an error, not
silently ignored. The same
readers are behind `read_measurement` (io/readers.py) where one path holds the whole scan, so
reconstruct, info and the Slicer module take those inputs directly too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InputError
from .measurement import Measurement

# The CLI options of `inrrecon import` beyond kind, inputs and --out, with their defaults; an
# importer lists the ones it reads.
OPTION_DEFAULTS = {"slice": None, "echo": 0, "coil_maps": "espirit", "dataset": None,
                   # CBCT: the grid (an image's, or size/spacing about the isocentre), the patient
                   # position, where the isocentre lies (LPS mm), detector binning, every Nth view
                   "like": None, "size": None, "spacing": None, "patient_position": "HFS", "isocenter": None,
                   "bin": 1, "every": 1}
_CBCT_OPTIONS = ("like", "size", "spacing", "patient_position", "isocenter", "bin", "every")


@dataclass(frozen=True)
class Importer:
    """kind (the CLI word); summary (for --help); inputs (what INPUT... must be, for messages);
    options (keys of OPTION_DEFAULTS it reads); run(inputs: list[Path], **options) -> Measurement;
    single: it takes exactly one INPUT (a file or a folder)."""

    kind: str
    summary: str
    inputs: str
    options: tuple
    run: Callable[..., Measurement]
    single: bool = True


def _twix(inputs, *, slice, echo, coil_maps):
    from .twix import read_twix

    (path,) = inputs
    return read_twix(path, slice_index=slice, echo=echo, coil_maps=coil_maps)


def _ismrmrd(inputs, *, slice, echo, coil_maps, dataset):
    from .ismrmrd_reader import read_ismrmrd

    (path,) = inputs
    return read_ismrmrd(path, slice_index=slice, echo=echo, dataset=dataset, coil_maps=coil_maps)


def _rtk(inputs, **options):
    from .cbct import read_rtk

    return read_rtk(inputs, **options)


def _elekta(inputs, **options):
    from .cbct_vendors import read_elekta

    return read_elekta(inputs, **options)


def _varian(inputs, **options):
    from .cbct_vendors import read_varian

    return read_varian(inputs, **options)


IMPORTERS = {
    "rtk": Importer("rtk", "cone-beam projections with RTK's geometry XML (any stack RTK reads; needs itk-rtk)",
                    "the geometry .xml, then the projection files (or one folder holding both)", _CBCT_OPTIONS,
                    _rtk, single=False),
    "elekta": Importer("elekta", "Elekta XVI CBCT (.his with _Frames.xml, or before XVI 5 the patient's IMAGE/FRAME.DBF; needs itk-rtk)",
                       "the scan folder (or its _Frames.xml, optionally followed by the .his files)", _CBCT_OPTIONS,
                       _elekta, single=False),
    "varian": Importer("varian", "Varian kV CBCT: TrueBeam/ProBeam (Scan.xml + .xim) or OBI (Scan.xml + .hnd); "
                       "needs itk-rtk",
                       "the scan folder (or its Scan.xml, optionally followed by the .xim files)", _CBCT_OPTIONS,
                       _varian, single=False),
    "twix": Importer("twix", "Siemens raw data (.dat, VB/VD/VE; 2D Cartesian)", "one .dat file",
                     ("slice", "echo", "coil_maps"), _twix),
    "ismrmrd": Importer("ismrmrd", "ISMRMRD raw data (HDF5 v1; Cartesian, radial, spiral)", "one ISMRMRD file "
                        "(.h5, .mrd)", ("slice", "echo", "coil_maps", "dataset"), _ismrmrd),
}


def run_import(kind: str, inputs, **given) -> Measurement:
    """The Measurement of `inputs` read by the importer `kind`. `given`: the CLI's options; those
    left at their default are dropped, any other the importer does not read is an InputError."""
    if kind not in IMPORTERS:
        raise InputError("import kind", f"unknown kind {kind!r}.", f"Use one of: {', '.join(IMPORTERS)}.")
    importer = IMPORTERS[kind]
    inputs = [Path(p) for p in inputs]
    if not inputs or (importer.single and len(inputs) > 1):
        raise InputError(f"import {kind}", f"got {len(inputs)} inputs.", f"Give {importer.inputs}.")
    for path in inputs:
        if not path.exists():
            raise InputError(f"import {kind}", f"{str(path)!r} does not exist.", f"Give {importer.inputs}.")
    unknown = [k for k, v in given.items() if k not in OPTION_DEFAULTS]
    if unknown:
        raise InputError("import options", f"unknown option(s) {unknown}.")
    stray = [k for k, v in given.items() if v != OPTION_DEFAULTS[k] and k not in importer.options]
    if stray:
        flags = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise InputError(f"import {kind}", f"does not read {flags}.",
                         f"Options of {kind}: {', '.join('--' + k.replace('_', '-') for k in importer.options) or 'none'}.")
    options = {k: given.get(k, OPTION_DEFAULTS[k]) for k in importer.options}
    return importer.run(inputs, **options)
