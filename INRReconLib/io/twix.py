"""Siemens raw data (twix .dat, VB and VD/VE) → a Cartesian MR Measurement, with `twixtools`.

What is read: 2D Cartesian acquisitions (GRE, SE, ...) with any number of coils; one slice
(`slice_index`), one echo; repetitions and cardiac phases become frames, averages are averaged.
Readout oversampling is removed (the readout transformed to image space, its central
1/oversampling kept); lines go to their k-space rows from the centre line in the scan header, so
partial-Fourier and undersampled data land where they were measured (the mask says which).
Noise-adjustment scans, when the file has them, prewhiten the coils (noise covariance →
Cholesky whitening). The k-space noise variance (root attribute `noise_variance`, read by the
`auto` regularisation rules) comes from the readout-oversampling band outside the FOV. Coil maps are estimated (physics/mr_coil_maps.py), since raw data never
carry them.

Geometry: the image's x axis is the readout, y the phase encoding, z the slice normal, with the
directions twixtools derives from the slice quaternion (`Geometry.prs_to_pcs`, Siemens' patient
coordinate system: Sag, Cor, Tra = L, P, S, i.e. LPS) and the slice centre (`sPosition`) at the
FFT centre voxel (n // 2). This is twixtools' convention; it was not checked against a DICOM
image of the same scan (none is available offline).

Provenance goes into the root attribute `source` (JSON): the file's name and SHA-256, the
header fields used and how the coil maps were estimated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .measurement import Measurement, validate_measurement
from .provenance import source_attribute
from .readout import crop_readout, oversampling_noise

INSTALL = "pip install twixtools (or pip install -e \".[raw]\")"
_SKIPPED_FLAGS = ("NOISEADJSCAN", "PHASCOR", "NAVIGATOR", "RTFEEDBACK", "HPFEEDBACK", "SYNCDATA", "ACQEND")


def is_twix_file(path) -> bool:
    """A cheap check of the first bytes: VD/VE files start with (0, n_scans ≤ 64) as uint32; VB
    files with their header length, then the ASCII header."""
    path = Path(path)
    if path.suffix.lower() != ".dat" or not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        return False
    first, second = np.frombuffer(head, "<u4")
    return (first == 0 and 1 <= second <= 64) or (1000 < first < 10_000_000 and path.stat().st_size > first)


def _twixtools():
    try:
        import twixtools
    except ImportError:
        raise InputError("twix", "reading Siemens raw data needs the twixtools package, which is not installed.",
                         f"Install it: {INSTALL}.") from None
    return twixtools


def _load(path: Path):
    twixtools = _twixtools()
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # twixtools prints its progress
            scans = twixtools.read_twix(str(path), verbose=False)
    except Exception as exc:  # twixtools raises assorted errors on truncated or foreign files
        raise InputError("twix", f"{path.name} cannot be read as Siemens raw data ({type(exc).__name__}: {exc}).",
                         "Check that the file is a complete twix .dat (VB or VD/VE) copied from the scanner.") from None
    if not scans or not scans[-1].get("mdb"):
        raise InputError("twix", f"{path.name} holds no measurement data (truncated?).",
                         "Copy the complete .dat file from the scanner again.")
    return scans


def _yaps(scan, *keys, default=None):
    node = scan["hdr"]["MeasYaps"]
    for key in keys:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return default
    return node


def _check_supported(scan, name: str) -> dict:
    dimension = _yaps(scan, "sKSpace", "ucDimension")
    trajectory = _yaps(scan, "sKSpace", "ucTrajectory")
    if trajectory not in (None, 1):
        kinds = {2: "radial", 4: "spiral", 8: "PROPELLER"}
        raise InputError("twix sKSpace.ucTrajectory", f"is {trajectory} ({kinds.get(trajectory, 'non-Cartesian')}) in "
                         f"{name}; only Cartesian twix data are read today.",
                         "Convert the file to ISMRMRD (siemens_to_ismrmrd) and import that, or use a Cartesian scan.")
    if dimension not in (None, 2):
        raise InputError("twix sKSpace.ucDimension", f"is {dimension} (3D) in {name}; only 2D acquisitions are read "
                         "today.", "Use a 2D (multi-slice) scan, or convert to ISMRMRD.")
    fields = {"lBaseResolution": _yaps(scan, "sKSpace", "lBaseResolution"),
              "lPhaseEncodingLines": _yaps(scan, "sKSpace", "lPhaseEncodingLines"),
              "flReadoutOSFactor": scan["hdr"]["Meas"].get("flReadoutOSFactor"),
              "ucTrajectory": trajectory, "ucDimension": dimension}
    for key in ("lBaseResolution", "lPhaseEncodingLines"):
        if not isinstance(fields[key], (int, float)) or fields[key] < 1:
            raise InputError(f"twix sKSpace.{key}", f"is missing or invalid in {name} ({fields[key]!r}).",
                             "The header is damaged or of an unsupported software version.")
    return fields


def _flags(mdb) -> set:
    return set(mdb.get_active_flags())


def _line_data(mdb, n_coils: int, n_col: int, name: str) -> np.ndarray:
    """One readout [coils, samples]; twixtools reads it from the file only now, so a file cut
    short fails here."""
    try:
        data = np.asarray(mdb.data)
    except (ValueError, OSError, EOFError) as exc:
        data = exc
    if isinstance(data, Exception) or data.shape != (n_coils, n_col):
        got = f"{type(data).__name__}: {data}" if isinstance(data, Exception) else f"shape {list(data.shape)}"
        raise InputError("twix", f"{name} is truncated (line {mdb.cLin} cannot be read: {got}).",
                         "Copy the complete .dat file from the scanner again.")
    return data


def read_twix(path, *, slice_index=None, echo: int = 0, coil_maps="espirit") -> Measurement:
    """The Measurement of a 2D Cartesian twix file (see the module docstring). coil_maps: how to
    estimate them (physics/mr_coil_maps.py), or None for none (a header read)."""
    from ..physics.mr_coil_maps import cartesian_calibration, estimate_coil_maps
    from ..physics.mr_geometry import MRGeometry

    path = Path(path)
    scans = _load(path)
    scan = scans[-1]
    name = path.name
    fields = _check_supported(scan, name)
    mdbs = [m for m in scan["mdb"] if not (_flags(m) & set(_SKIPPED_FLAGS))]
    if any("REFLECT" in _flags(m) for m in mdbs):
        raise InputError("twix", f"{name} has reflected readouts (EPI); only conventional Cartesian readouts are read.",
                         "Convert the file to ISMRMRD with the EPI phase correction first.")
    noise = [m for s in scans for m in s["mdb"] if "NOISEADJSCAN" in _flags(m)]
    slices = sorted({m.cSlc for m in mdbs})
    if slice_index is None:
        if len(slices) > 1:
            raise InputError("twix slice", f"{name} has {len(slices)} slices; a measurement holds one 2D slice.",
                             f"Import one: inrrecon import twix {name} --slice K (0..{len(slices) - 1}) --out MEAS.h5.")
        slice_index = slices[0]
    if slice_index not in slices:
        raise InputError("twix slice", f"slice {slice_index} is not in {name} (it has {slices}).")
    mdbs = [m for m in mdbs if m.cSlc == slice_index and m.cEco == echo]
    if not mdbs:
        raise InputError("twix echo", f"echo {echo} has no data in {name}.", "Choose another echo.")
    if len({m.cPar for m in mdbs}) > 1:
        raise InputError("twix partitions", f"{name} has several partitions (3D); only 2D data are read today.")
    if len({m.cSet for m in mdbs}) > 1:
        raise InputError("twix sets", f"{name} has several sets (flow encodings, diffusion directions?); they would "
                         "be averaged together.", "Only single-set acquisitions are read today.")

    n_coils, n_col = int(mdbs[0].mdh.UsedChannels), int(mdbs[0].mdh.SamplesInScan)  # as the scan header says
    lines = [_line_data(m, n_coils, n_col, name) for m in mdbs]
    if not any("LASTSCANINMEAS" in _flags(m) for m in scan["mdb"]):
        raise InputError("twix", f"{name} is truncated (the last scan of the measurement is missing).",
                         "Copy the complete .dat file from the scanner again.")
    oversampling = float(fields["flReadoutOSFactor"] or 1.0)
    nx = int(fields["lBaseResolution"])
    ny = int(fields["lPhaseEncodingLines"])
    if abs(n_col / oversampling - nx) > 0.5 and n_col != nx:
        raise InputError("twix readout", f"{n_col} samples per readout do not match lBaseResolution {nx} x "
                         f"oversampling {oversampling:g} in {name} (asymmetric echo?).",
                         "Only symmetric readouts are read today.")
    centre_col = int(mdbs[0].mdh.CenterCol)
    if centre_col != n_col // 2:
        raise InputError("twix readout", f"the echo is at sample {centre_col} of {n_col} (asymmetric echo) in {name}.",
                         "Only symmetric readouts are read today.")
    centre_line = int(mdbs[0].mdh.CenterLin)
    frame_keys = sorted({(m.cRep, m.cPhs) for m in mdbs})
    frame_of = {key: i for i, key in enumerate(frame_keys)}
    kspace = np.zeros((len(frame_keys), n_coils, ny, n_col), np.complex128)
    counts = np.zeros((len(frame_keys), ny), np.int64)
    for m, line in zip(mdbs, lines):
        row = m.cLin - centre_line + ny // 2
        if not 0 <= row < ny:
            raise InputError("twix lines", f"line {m.cLin} (centre {centre_line}) falls outside {ny} lines in {name}.")
        f = frame_of[(m.cRep, m.cPhs)]
        kspace[f, :, row] += line
        counts[f, row] += 1
    kspace /= np.maximum(counts, 1)[:, None, :, None]  # averages (and repeated lines) are averaged
    whitening = None
    if noise:
        try:
            samples = np.concatenate([np.asarray(n.data).reshape(n_coils, -1) for n in noise], axis=1)
            cov = samples @ samples.conj().T / samples.shape[1]
            chol = np.linalg.cholesky(cov)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise InputError("twix noise scan", f"the noise-adjustment data of {name} cannot be used ({exc}).",
                             "Check that the file is complete; the noise scan must have the image scan's coils.") from None
        kspace = np.einsum("cd,fdyx->fcyx", np.linalg.inv(chol), kspace)
        whitening = {"noise_samples": int(samples.shape[1])}
    noise_variance = oversampling_noise(kspace, counts, nx) if n_col >= 2 * nx else None
    if n_col != nx:
        kspace = crop_readout(kspace, nx)
    mask = np.broadcast_to((counts > 0)[:, :, None], (len(frame_keys), ny, nx)).copy()

    geometry = scan["geometry"][slice_index] if isinstance(scan.get("geometry"), list) else scan.get("geometry")
    grid = _grid(scan, geometry, slice_index, nx, ny)
    maps, map_info = None, None
    if n_coils > 1 and coil_maps is not None:
        # the first frame's fully sampled centre; Cartesian k-space of a 2D slice is [nc, ny, nx]
        maps, map_info = estimate_coil_maps(cartesian_calibration(kspace[0], mask[0]), (ny, nx), coil_maps)
    per_frame = {int(mask[f].sum()) for f in range(len(frame_keys))}
    if len(per_frame) > 1:
        raise InputError("twix frames", f"the {len(frame_keys)} repetitions/phases of {name} sample different lines "
                         f"({sorted(per_frame)} samples); a measurement needs the same number in every frame.",
                         "Import a file whose frames share one sampling pattern.")
    data = np.stack([kspace[f][:, mask[f]] for f in range(len(frame_keys))]).astype(np.complex64)
    source = source_attribute(
        "siemens-twix", [path], slice=int(slice_index), echo=int(echo),
        frames=[{"repetition": int(r), "phase": int(p)} for r, p in frame_keys],
        header={**fields, "CenterLin": centre_line, "CenterCol": centre_col,
                "patient_position": getattr(geometry, "patient_position", None)},
        readout_oversampling_removed=n_col != nx, noise_prewhitening=whitening, coil_maps=map_info)
    attrs = {"description": f"Siemens raw data {name}, slice {slice_index}, {n_coils} coils", "source": source}
    if noise_variance is not None:
        attrs["noise_variance"] = noise_variance  # what `auto` regularisation compares the residual with
    m = Measurement("MR", data, grid, MRGeometry("cartesian", mask=mask, coil_maps=maps), attrs)
    validate_measurement(m, maps_optional=coil_maps is None)
    return m


def _grid(scan, geometry, slice_index: int, nx: int, ny: int):
    from ..physics.grid import ImageGrid

    slice_hdr = _yaps(scan, "sSliceArray", "asSlice", slice_index, default={}) or {}
    fov_read = float(slice_hdr.get("dReadoutFOV", 0) or 0)
    fov_phase = float(slice_hdr.get("dPhaseFOV", 0) or 0)
    thickness = float(slice_hdr.get("dThickness", 0) or 0)
    if min(fov_read, fov_phase, thickness) <= 0:
        raise InputError("twix sSliceArray", f"the field of view or slice thickness is missing (slice {slice_index}).",
                         "The header is damaged or of an unsupported software version.")
    spacing = (fov_read / nx, fov_phase / ny, thickness)
    if geometry is not None:
        prs = np.asarray(geometry.prs_to_pcs(), float)  # columns: phase, readout, slice (PCS = LPS)
        directions = np.stack([prs[:, 1], prs[:, 0], prs[:, 2]], axis=1)
        centre = np.asarray(geometry.offset, float)
    else:  # no quaternion: a transversal slice, axes as the patient's
        directions, centre = np.eye(3), np.zeros(3)
    origin = centre - directions @ (np.asarray(spacing) * np.array([nx // 2, ny // 2, 0]))
    return ImageGrid((nx, ny, 1), spacing, tuple(origin), tuple(directions.ravel()))


def twix_header(path) -> dict:
    """modality, grid and geometry type without estimating coil maps (the Slicer module's
    preset choice); reads the file's data once (twixtools has no header-only read of the mdbs)."""
    m = read_twix(path, coil_maps=None)
    return {"modality": m.modality, "grid": m.grid, "geometry": m.geometry.type, "attrs": m.attrs}
