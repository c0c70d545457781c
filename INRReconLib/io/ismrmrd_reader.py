"""ISMRMRD raw data (HDF5, the v1 layout: a group, usually /dataset, holding the XML header `xml`
and the acquisitions `data`) → an MR Measurement, Cartesian or non-Cartesian.

Read with h5py (the layout is ISMRMRD's standard compound type: `head`, `traj`, `data` per
acquisition); the header's fields are read with xml.etree, namespace-agnostic, so headers that
miss schema-required elements we do not need (`experimentalConditions`, `encodingLimits`, ...)
still import. When the `ismrmrd` package is installed (pip install ismrmrd, or the `raw` extra),
its schema parser checks the header too; whether it accepted it goes into the provenance.

What is read (encoding 0 of the header; acquisitions with another encoding_space_ref are left out):
- Cartesian (header trajectory "cartesian"): 2D (one slice, `slice_index`) or 3D (encodedSpace
  z > 1, kspace_encode_step_2 → z). Readout = image x, kspace_encode_step_1 = y (row
  step - encodingLimits.kspace_encoding_step_1.center + ny // 2; centre enc y // 2 when the limits
  are absent), step 2 = z likewise. Readout oversampling (encoded x > recon x at the same spacing
  encodedFOV/encoded = reconFOV/recon) is removed as in twix.py (to image space along x, keep the
  central recon x). The phase/slice encoded FOV must equal the recon FOV (no phase oversampling).
  Symmetric readouts only (center_sample = samples / 2 after discard_pre/post, or 0 = unset).
  Averages are averaged; reflected readouts (ACQ_IS_REVERSE, EPI) are refused.
- Non-Cartesian (radial, golden angle, spiral, other): the acquisitions' `traj` arrays, all
  samples of a frame one acquisition after the other (averages too: more samples). Trajectory
  units: |k| <= 0.5 is taken as cycles per voxel of the encoded matrix (Gadgetron and the
  ISMRMRD converters); |k| >= 1.5 as cycles per encoded FOV (BART's 1/FOV units, up to N/2),
  i.e. divided by the encoded matrix; in between is an error. Both become radians per
  reconstructed voxel, 2π k (recon spacing / encoded spacing), rows ([kz,] ky, kx) from the
  columns (kx, ky[, kz]). Samples beyond ±π on any axis (outside the recon grid's band) are
  dropped; those within 0.1% of +π are wrapped to -π (the NUFFT model is 2π-periodic). With a 2D
  encoded space a third trajectory column (kz = 0, or Gadgetron's spiral density weights) is
  ignored. 3D needs three columns; a stack of stars (two columns and step-2 partitions) is
  refused. No density compensation is stored: the methods compute it (Pipe–Menon) as for any
  non-Cartesian file.
- Frames: one per (repetition, phase), in that order; every frame must have the same number of
  samples. Contrasts: `echo` picks one. Several sets: refused.
- Skipped: navigator, phase correction, phase stabilisation (and its reference), RT/HP feedback,
  dummy scans, surface-coil correction scans. ACS lines flagged
  ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING are imaging data. Pure calibration lines
  (ACQ_IS_PARALLEL_CALIBRATION alone) are data too, unless the header's
  parallelImaging.calibrationMode is "separate" or "external" (a reference scan of its own
  contrast): then they only calibrate the coil maps (Cartesian; non-Cartesian: left out).
- Noise: acquisitions flagged ACQ_IS_NOISE_MEASUREMENT give the coil noise covariance C; every
  acquisition is prewhitened with L⁻¹ (C = L Lᴴ, Cholesky). Noise variance per sample scales as
  1/dwell time (the receiver bandwidth), so after whitening the image data's E|n|² per sample is
  dwell_noise / dwell_image (sample_time_us; 1 when either is 0), divided by the number of
  averages (Cartesian): the root attribute `noise_variance`. Without noise scans, Cartesian data
  with 2× readout oversampling get it from the band outside the FOV (twix.py); else none.
- Coil maps are estimated (physics/mr_coil_maps.py): Cartesian from the fully sampled centre of
  the frames' mean k-space (or of the separate calibration lines), non-Cartesian from the gridded
  centre of the first frame.

Geometry (assumed, as ISMRMRD specifies and the converters write): `position` (mm) is the centre
of the encoded slice or slab and `read_dir`, `phase_dir`, `slice_dir` are unit vectors, all in
the patient frame LPS, as in DICOM. Image x runs along read_dir, y along phase_dir, z along
slice_dir (the grid's direction columns); `position` is at voxel (nx // 2, ny // 2, nz // 2),
the FFT centre; spacing = reconSpace FOV / matrix (2D: z = the recon FOV z, the slice
thickness). patient_table_position is not used. Without directions (all zero): identity, noted.
Not checked against a DICOM image of the same scan (none is available offline).

Provenance goes into the root attribute `source` (JSON): the file's name and SHA-256, the header
fields used, the trajectory units, what was skipped, the prewhitening and the coil maps.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import InputError
from .measurement import FORMAT_NAME, Measurement, validate_measurement
from .provenance import source_attribute

INSTALL = "pip install ismrmrd (or pip install -e \".[raw]\")"
SUFFIXES = (".h5", ".hdf5", ".mrd", ".ismrmrd")

# ISMRMRD's acquisition flags (ismrmrd/constants.py): flag n is bit n - 1 of `flags`.
NOISE, CALIBRATION, CALIBRATION_AND_IMAGING, REVERSE = 19, 20, 21, 22
SKIPPED_FLAGS = {"navigation": 23, "phase correction": 24, "HP feedback": 26, "dummy scan": 27, "RT feedback": 28,
                 "surface-coil correction": 29, "phase stabilisation reference": 30, "phase stabilisation": 31}
SEPARATE_CALIBRATION = ("separate", "external")
CYCLES_PER_VOXEL_MAX = 0.5 * 1.01  # |k| up to this: cycles per voxel
CYCLES_PER_FOV_MIN = 1.5           # |k| from this: cycles per FOV (1/FOV units)
WRAP_TOLERANCE = 1e-3              # as validate_measurement's range check


def _flag(flags: np.ndarray, n: int) -> np.ndarray:
    return (np.asarray(flags, np.uint64) >> np.uint64(n - 1)) & np.uint64(1) == 1


def _groups_with_xml(f) -> list:
    import h5py

    return [k for k, v in f.items() if isinstance(v, h5py.Group) and isinstance(v.get("xml"), h5py.Dataset)]


def is_ismrmrd_file(path) -> bool:
    """HDF5 with a top-level group holding an `xml` dataset (ISMRMRD's header; its `data` holds
    the acquisitions) and not INRRecon's own format."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        import h5py

        with h5py.File(str(path), "r") as f:
            if f.attrs.get("format") in (FORMAT_NAME, FORMAT_NAME.encode()):
                return False
            return bool(_groups_with_xml(f))
    except (OSError, ImportError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# reading the file


def _load(path: Path, dataset):
    """(group name, xml text, heads (structured array), data [list of complex [C, S]], traj
    [list of float32 [S, D]])."""
    import h5py

    name = path.name
    try:
        f = h5py.File(str(path), "r")
    except OSError as exc:
        raise InputError("ismrmrd", f"{name} cannot be read as HDF5 ({exc}; truncated?).",
                         "Copy the complete ISMRMRD file again.") from None
    with f:
        groups = _groups_with_xml(f)
        if dataset is None:
            if not groups:
                raise InputError("ismrmrd", f"{name} holds no ISMRMRD dataset (an HDF5 group with an xml header).",
                                 "Give an ISMRMRD file (e.g. from siemens_to_ismrmrd), or an INRRecon measurement.")
            if "dataset" in groups or len(groups) == 1:
                dataset = "dataset" if "dataset" in groups else groups[0]
            else:
                raise InputError("ismrmrd dataset", f"{name} holds {len(groups)} ISMRMRD datasets {groups}.",
                                 f"Choose one: inrrecon import ismrmrd {name} --dataset NAME --out MEAS.h5.")
        elif dataset not in groups:
            raise InputError("ismrmrd dataset", f"{dataset!r} is not an ISMRMRD dataset of {name} (it has {groups}).",
                             "Choose one of those with --dataset.")
        group = f[dataset]
        try:
            xml = group["xml"][()]
            xml = xml.ravel()[0] if isinstance(xml, np.ndarray) else xml
            dset = group.get("data")
            if dset is None or dset.shape == (0,) or dset.size == 0:
                other = [k for k in group if k != "xml"]
                raise InputError("ismrmrd acquisitions", f"{name} ({dataset}) holds no acquisitions"
                                 + (f" (only {other})" if other else "") + ".",
                                 "Export the raw k-space (acquisitions), not reconstructed images.")
            if dset.dtype.names is None or not {"head", "data", "traj"} <= set(dset.dtype.names):
                raise InputError("ismrmrd acquisitions", f"/{dataset}/data of {name} is not ISMRMRD's acquisition "
                                 f"type (fields {dset.dtype.names}).", "Write the file with the ISMRMRD library.")
            heads = dset["head"]
            raw = dset["data"]
            traj = dset["traj"]
        except InputError:
            raise
        except (OSError, KeyError, ValueError, IndexError, TypeError) as exc:
            raise InputError("ismrmrd", f"{name} cannot be read ({type(exc).__name__}: {exc}; truncated?).",
                             "Copy the complete ISMRMRD file again.") from None
    data, trajs = [], []
    for i, h in enumerate(heads):
        nc, ns, nd = int(h["active_channels"]), int(h["number_of_samples"]), int(h["trajectory_dimensions"])
        values, positions = np.asarray(raw[i], np.float32), np.asarray(traj[i], np.float32)
        if values.size != 2 * nc * ns or positions.size != ns * nd:
            raise InputError("ismrmrd acquisitions", f"acquisition {i} of {name} holds {values.size // 2} samples and "
                             f"{positions.size} trajectory values; its header says {nc} channels x {ns} samples, "
                             f"{nd} trajectory dimensions (truncated or damaged?).", "Copy the complete file again.")
        data.append(values.view(np.complex64).reshape(nc, ns))
        trajs.append(positions.reshape(ns, nd))
    text = xml.decode("utf-8", "replace") if isinstance(xml, bytes) else str(xml)
    return dataset, text, heads, data, trajs


def _ismrmrd_schema_check(text: str) -> str:
    try:
        from ismrmrd.xsd import CreateFromDocument
    except ImportError:
        return f"not checked (the ismrmrd package is not installed: {INSTALL})"
    try:
        CreateFromDocument(text)
    except Exception as exc:  # xsdata raises assorted errors (TypeError for missing required elements)
        return f"rejected by the ismrmrd package's parser ({type(exc).__name__}: {exc}); fields read with xml.etree"
    return "accepted by the ismrmrd package's parser"


def _number(node, path: str):
    found = None if node is None else node.find(path)
    if found is None or found.text is None:
        return None
    try:
        return float(found.text.strip())
    except ValueError:
        return None


def _text(node, path: str):
    found = None if node is None else node.find(path)
    return None if found is None or found.text is None else found.text.strip()


def _space(enc, tag: str, name: str):
    node = enc.find(tag)
    field = f"ismrmrd header encoding.{tag}"
    if node is None:
        return None
    matrix = [_number(node, f"matrixSize/{a}") for a in "xyz"]
    matrix[2] = 1 if matrix[2] is None else matrix[2]
    fov = [_number(node, f"fieldOfView_mm/{a}") for a in "xyz"]
    if any(v is None or v < 1 for v in matrix) or any(v != int(v) for v in matrix):
        raise InputError(f"{field}.matrixSize", f"is missing or invalid in {name} ({matrix}).",
                         "The header must give the matrix size x, y (, z) as positive integers.")
    if any(v is None or not np.isfinite(v) or v <= 0 for v in fov):
        raise InputError(f"{field}.fieldOfView_mm", f"is missing or not positive in {name} ({fov}).",
                         "The header must give the field of view x, y, z in mm (z: the slice thickness in 2D).")
    return {"matrix": [int(v) for v in matrix], "fov_mm": [float(v) for v in fov]}


def _parse_header(text: str, name: str) -> dict:
    """The header fields the reader needs, from the XML (namespace-agnostic)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InputError("ismrmrd header", f"of {name} is not valid XML ({exc}).",
                         "The file's /dataset/xml must hold the ISMRMRD XML header.") from None
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    encodings = root.findall("encoding")
    if not encodings:
        raise InputError("ismrmrd header encoding", f"is missing in {name}: the encoded space, field of view and "
                         "trajectory are unknown.", "Write the XML header with an <encoding> element (ISMRMRD schema), "
                         "as the ISMRMRD converters do.")
    enc = encodings[0]
    encoded = _space(enc, "encodedSpace", name)
    if encoded is None:
        raise InputError("ismrmrd header encoding.encodedSpace", f"is missing in {name}.",
                         "The header must give the encoded matrix size and field of view.")
    recon = _space(enc, "reconSpace", name)
    limits = {}
    for key in ("kspace_encoding_step_1", "kspace_encoding_step_2", "slice"):
        centre = _number(enc, f"encodingLimits/{key}/center")
        limits[key] = None if centre is None else int(centre)
    return {"encodings": len(encodings), "encodedSpace": encoded, "reconSpace": recon or encoded,
            "reconSpace_missing": recon is None,
            "trajectory": (_text(enc, "trajectory") or "").lower() or None,
            "trajectory_identifier": _text(enc, "trajectoryDescription/identifier"),
            "calibrationMode": _text(enc, "parallelImaging/calibrationMode"), "limit_centres": limits,
            "patientPosition": _text(root, "measurementInformation/patientPosition"),
            "systemVendor": _text(root, "acquisitionSystemInformation/systemVendor"),
            "H1resonanceFrequency_Hz": _number(root, "experimentalConditions/H1resonanceFrequency_Hz"),
            "schema": _ismrmrd_schema_check(text)}


# --------------------------------------------------------------------------------------------
# the measurement


def read_ismrmrd(path, *, slice_index=None, echo: int = 0, dataset=None, coil_maps="espirit") -> Measurement:
    """The Measurement of an ISMRMRD file (see the module docstring). dataset: the HDF5 group
    (default "dataset", or the only one); coil_maps: how to estimate them
    (physics/mr_coil_maps.py), or None for none (a header read)."""
    from ..physics.mr_geometry import MRGeometry

    path = Path(path)
    name = path.name
    dataset, text, heads, data, trajs = _load(path, dataset)
    hdr = _parse_header(text, name)
    idx = heads["idx"]
    flags = heads["flags"]
    noise = _flag(flags, NOISE)
    skipped = {kind: _flag(flags, bit) & ~noise for kind, bit in SKIPPED_FLAGS.items()}
    left_out = np.zeros(len(heads), bool)
    for mask in skipped.values():
        left_out |= mask
    other_encoding = (heads["encoding_space_ref"] != 0) & ~noise & ~left_out
    pure_calibration = _flag(flags, CALIBRATION) & ~_flag(flags, CALIBRATION_AND_IMAGING)
    separate = (hdr["calibrationMode"] or "").lower() in SEPARATE_CALIBRATION
    usable = ~noise & ~left_out & ~other_encoding
    imaging = usable & ~(pure_calibration & separate)
    calibration = usable & pure_calibration & separate
    counts = {"acquisitions": int(len(heads)), "noise": int(noise.sum()), "other_encoding": int(other_encoding.sum()),
              **{k: int(v.sum()) for k, v in skipped.items() if v.any()},
              "calibration_only": int((usable & pure_calibration).sum())}
    if not imaging.any():
        found = ", ".join(f"{v} {k}" for k, v in counts.items() if k != "acquisitions" and v) or "none usable"
        raise InputError("ismrmrd acquisitions", f"{name} holds no imaging acquisitions ({counts['acquisitions']} "
                         f"acquisitions: {found}).", "Give the file of the imaging scan (noise and reference scans "
                         "alone cannot be reconstructed).")
    if (imaging & _flag(flags, REVERSE)).any():
        raise InputError("ismrmrd acquisitions", f"{name} has reversed readouts (ACQ_IS_REVERSE, EPI); only "
                         "conventional readouts are read.",
                         "Reconstruct EPI with its phase correction elsewhere first.")

    # contrast (echo), set, slice
    contrasts = sorted({int(c) for c in idx["contrast"][imaging]})
    if echo not in contrasts:
        raise InputError("ismrmrd contrast", f"echo {echo} has no data in {name} (its contrasts: {contrasts}).",
                         "Choose one with --echo K.")
    imaging &= idx["contrast"] == echo
    calibration &= idx["contrast"] == echo
    if len({int(s) for s in idx["set"][imaging]}) > 1:
        raise InputError("ismrmrd sets", f"{name} has several sets (flow encodings, diffusion directions?); they "
                         "would be mixed together.", "Only single-set acquisitions are read today.")
    slices = sorted({int(s) for s in idx["slice"][imaging]})
    if slice_index is None:
        if len(slices) > 1:
            raise InputError("ismrmrd slice", f"{name} has {len(slices)} slices {slices}; a measurement holds one 2D "
                             "slice.", f"Import one: inrrecon import ismrmrd {name} --slice K (one of {slices}) "
                             "--out MEAS.h5.")
        slice_index = slices[0]
    if slice_index not in slices:
        raise InputError("ismrmrd slice", f"slice {slice_index} is not in {name} (it has {slices}).",
                         "Choose one of those with --slice.")
    imaging &= idx["slice"] == slice_index
    calibration &= idx["slice"] == slice_index
    rows = np.flatnonzero(imaging)
    n_coils = {int(heads["active_channels"][i]) for i in rows}
    if len(n_coils) > 1:
        raise InputError("ismrmrd active_channels", f"the imaging acquisitions of {name} have different coil counts "
                         f"{sorted(n_coils)}.", "Export the scan with one set of receive channels.")
    n_coils = n_coils.pop()

    whitening, ratio = _whitening(heads, data, np.flatnonzero(noise), rows, n_coils, name)
    if whitening is not None:
        data = [whitening["matrix"] @ d if d.shape[0] == n_coils else d for d in data]
    frame_of, frame_keys = _frames(idx, rows)
    trajectory = hdr["trajectory"]
    if trajectory == "epi":
        raise InputError("ismrmrd header encoding.trajectory", f"is epi in {name}; EPI needs a phase correction "
                         "that is not done here.", "Reconstruct EPI elsewhere, or give a conventional scan.")
    cartesian = trajectory == "cartesian" or (trajectory is None and int(heads["trajectory_dimensions"][rows[0]]) == 0)
    encoded, recon = hdr["encodedSpace"], hdr["reconSpace"]
    three_d = encoded["matrix"][2] > 1
    spacing = [f / n for f, n in zip(recon["fov_mm"], recon["matrix"])]
    nx, ny = recon["matrix"][0], recon["matrix"][1]
    nz = recon["matrix"][2] if three_d else 1
    if not three_d:
        spacing[2] = recon["fov_mm"][2]
    spatial = (nz, ny, nx) if three_d else (ny, nx)
    info = {}
    if cartesian:
        data_out, mask, maps, map_info, noise_variance = _cartesian(
            heads, data, rows, np.flatnonzero(calibration), frame_of, len(frame_keys), hdr, spatial, n_coils,
            ratio if whitening is not None else None, coil_maps, name, info)
        geometry = MRGeometry("cartesian", mask=mask, coil_maps=maps)
    else:
        data_out, traj = _noncartesian(heads, data, trajs, rows, frame_of, len(frame_keys), hdr, spacing, three_d,
                                       name, info)
        geometry = MRGeometry("noncartesian", trajectory=traj)
        noise_variance = ratio if whitening is not None else None
        maps = map_info = None
    grid, geo_info = _grid(heads[rows[0]], spacing, (nx, ny, nz), name)

    attrs = {"description": f"ISMRMRD raw data {name}, slice {slice_index}, {n_coils} coils, "
                            f"{'Cartesian' if cartesian else trajectory or 'non-Cartesian'}"}
    m = Measurement("MR", data_out, grid, geometry, attrs)
    if not cartesian and n_coils > 1 and coil_maps is not None:
        from ..physics.mr_coil_maps import with_estimated_maps

        validate_measurement(m, maps_optional=True)
        m, map_info = with_estimated_maps(m, coil_maps)
    header = {k: hdr[k] for k in ("encodings", "encodedSpace", "reconSpace", "reconSpace_missing", "trajectory",
                                  "trajectory_identifier", "calibrationMode", "limit_centres", "patientPosition",
                                  "systemVendor", "H1resonanceFrequency_Hz")}
    m.attrs["source"] = source_attribute(
        "ismrmrd", [path], dataset=dataset, slice=int(slice_index), echo=int(echo),
        frames=[{"repetition": int(r), "phase": int(p)} for r, p in frame_keys], header=header,
        header_schema=hdr["schema"], acquisitions=counts,
        calibration_lines="coil maps only (calibrationMode separate/external)" if separate else "data",
        geometry=geo_info, noise_prewhitening=None if whitening is None else
        {k: v for k, v in whitening.items() if k != "matrix"}, coil_maps=map_info, **info)
    if noise_variance is not None:
        m.attrs["noise_variance"] = float(noise_variance)
    validate_measurement(m, maps_optional=coil_maps is None)
    return m


def _frames(idx, rows):
    keys = sorted({(int(idx["repetition"][i]), int(idx["phase"][i])) for i in rows})
    number = {key: f for f, key in enumerate(keys)}
    return {int(i): number[(int(idx["repetition"][i]), int(idx["phase"][i]))] for i in rows}, keys


def _whitening(heads, data, noise_rows, rows, n_coils: int, name: str):
    """({"matrix": L⁻¹, provenance...}, dwell ratio) from the noise scans, or (None, None)."""
    if not len(noise_rows):
        return None, None
    wrong = [int(heads["active_channels"][i]) for i in noise_rows if data[i].shape[0] != n_coils]
    if wrong:
        raise InputError("ismrmrd noise scan", f"the noise acquisitions of {name} have {sorted(set(wrong))} channels, "
                         f"the image {n_coils}.", "Export the noise scan with the image scan's coils.")
    samples = np.concatenate([data[i] for i in noise_rows], axis=1).astype(np.complex128)
    try:
        if samples.shape[1] < 2 * n_coils:
            raise ValueError(f"{samples.shape[1]} samples for {n_coils} coils")
        cov = samples @ samples.conj().T / samples.shape[1]
        chol = np.linalg.cholesky(cov)
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise InputError("ismrmrd noise scan", f"the noise acquisitions of {name} cannot be used ({exc}).",
                         "Check that the file is complete and the noise scan holds noise of every coil.") from None
    t_noise = float(np.median(heads["sample_time_us"][noise_rows]))
    t_image = float(np.median(heads["sample_time_us"][rows]))
    ratio = t_noise / t_image if t_noise > 0 and t_image > 0 else 1.0
    std = np.sqrt(np.real(np.diag(cov)))
    corr = np.abs(cov) / np.outer(std, std)
    np.fill_diagonal(corr, 0.0)
    return {"matrix": np.linalg.inv(chol), "noise_acquisitions": int(len(noise_rows)),
            "noise_samples": int(samples.shape[1]), "noise_dwell_us": t_noise, "image_dwell_us": t_image,
            "noise_variance_rule": "dwell_noise / dwell_image per sample after whitening (1 if a dwell is 0), "
                                   "over the number of averages",
            "max_coil_correlation": float(corr.max()) if n_coils > 1 else 0.0}, ratio


def _readout(head, line: np.ndarray, name: str, i: int):
    """The samples between discard_pre and discard_post, and the echo position in them."""
    pre, post = int(head["discard_pre"]), int(head["discard_post"])
    n = line.shape[-1]
    if pre + post >= n:
        raise InputError("ismrmrd discard_pre/discard_post", f"discard all {n} samples of acquisition {i} in {name}.")
    centre = int(head["center_sample"])
    return line[..., pre:n - post], (centre - pre if centre > 0 else None)


def _cartesian(heads, data, rows, cal_rows, frame_of, n_frames, hdr, spatial, n_coils, ratio, coil_maps, name, info):
    from ..physics.mr_coil_maps import cartesian_calibration, estimate_coil_maps
    from .readout import crop_readout, oversampling_noise

    encoded, recon = hdr["encodedSpace"], hdr["reconSpace"]
    three_d = len(spatial) == 3
    nx = spatial[-1]
    n_col = encoded["matrix"][0]
    enc_dx, rec_dx = encoded["fov_mm"][0] / n_col, recon["fov_mm"][0] / nx
    if n_col < nx or abs(enc_dx - rec_dx) > 0.01 * rec_dx:
        raise InputError("ismrmrd header encoding.encodedSpace", f"the readout ({n_col} samples over "
                         f"{encoded['fov_mm'][0]:g} mm) and the recon space ({nx} over {recon['fov_mm'][0]:g} mm) of "
                         f"{name} differ by more than readout oversampling.",
                         "Only readout oversampling (same spacing, larger encoded FOV) is removed on import.")
    for axis, key in ((1, "y"), (2, "z")) if three_d else ((1, "y"),):
        if abs(encoded["fov_mm"][axis] - recon["fov_mm"][axis]) > 0.01 * recon["fov_mm"][axis]:
            raise InputError("ismrmrd header encoding.encodedSpace", f"the encoded FOV {key} "
                             f"({encoded['fov_mm'][axis]:g} mm) differs from the recon FOV "
                             f"({recon['fov_mm'][axis]:g} mm) in {name} (phase oversampling).",
                             "Phase oversampling is not removed on import; export without it.")
    centres = hdr["limit_centres"]
    c1 = centres["kspace_encoding_step_1"]
    c1 = encoded["matrix"][1] // 2 if c1 is None else c1
    c2 = centres["kspace_encoding_step_2"]
    c2 = encoded["matrix"][2] // 2 if c2 is None else c2
    pe = spatial[:-1]
    idx = heads["idx"]
    if not three_d and np.any(idx["kspace_encode_step_2"][rows] != 0):
        raise InputError("ismrmrd kspace_encode_step_2", f"is not 0 in {name}, but the encoded space is 2D "
                         "(matrixSize z = 1).", "Fix the header's encodedSpace matrixSize z.")

    def position(i):
        p = (int(idx["kspace_encode_step_1"][i]) - c1 + pe[-1] // 2,)
        if three_d:
            p = (int(idx["kspace_encode_step_2"][i]) - c2 + pe[0] // 2,) + p
        if any(not 0 <= v < n for v, n in zip(p, pe)):
            raise InputError("ismrmrd kspace_encode_step", f"acquisition {i} of {name} (step 1 "
                             f"{int(idx['kspace_encode_step_1'][i])}, step 2 {int(idx['kspace_encode_step_2'][i])}) "
                             f"falls outside the recon matrix {list(pe)} (centres {c1}, {c2}).",
                             "Check the header's encodingLimits centres and matrix sizes.")
        return p

    def accumulate(which, frames):
        kspace = np.zeros((frames, n_coils) + tuple(pe) + (n_col,), np.complex128)
        count = np.zeros((frames,) + tuple(pe), np.int64)
        for i in which:
            line, centre = _readout(heads[i], data[i], name, int(i))
            if line.shape != (n_coils, n_col):
                raise InputError("ismrmrd number_of_samples", f"acquisition {i} of {name} has {line.shape[-1]} "
                                 f"samples (after discards) and {line.shape[0]} coils; the encoded readout is {n_col} "
                                 f"samples, {n_coils} coils.", "Only full readouts of the encoded matrix are read.")
            if centre is not None and centre != n_col // 2:
                raise InputError("ismrmrd center_sample", f"the echo is at sample {centre} of {n_col} (asymmetric "
                                 f"echo) in {name}.", "Only symmetric readouts are read today.")
            f = frame_of.get(int(i), 0)
            p = position(i)
            kspace[(f, slice(None)) + p] += line
            count[(f,) + p] += 1
        kspace /= np.maximum(count, 1)[:, None, ..., None]
        return kspace, count

    kspace, counts = accumulate(rows, n_frames)
    acquired = counts > 0
    if ratio is not None:
        noise_variance = ratio * float(np.mean(1.0 / counts[acquired]))
    elif n_col >= 2 * nx:
        lines = (n_frames, -1)
        noise_variance = oversampling_noise(kspace.reshape(n_frames, n_coils, -1, n_col), counts.reshape(lines), nx)
    else:
        noise_variance = None
    if n_col != nx:
        kspace = crop_readout(kspace, nx)
    info["readout_oversampling_removed"] = n_col != nx
    mask = np.broadcast_to(acquired[..., None], (n_frames,) + tuple(spatial)).copy()
    per_frame = {int(mask[f].sum()) for f in range(n_frames)}
    if len(per_frame) > 1:
        raise InputError("ismrmrd frames", f"the {n_frames} repetitions/phases of {name} sample different numbers of "
                         f"lines ({sorted(per_frame)} samples); a measurement needs the same number in every frame.",
                         "Import a file whose frames share one sampling density, or split it by repetition.")
    data_out = np.stack([kspace[f][:, mask[f]] for f in range(n_frames)]).astype(np.complex64)
    maps = map_info = None
    if n_coils > 1 and coil_maps is not None:
        if len(cal_rows):
            cal, cal_count = accumulate(cal_rows, 1)
            cal = crop_readout(cal, nx) if n_col != nx else cal
            cal, cal_mask = cal[0], np.broadcast_to(cal_count[0][..., None] > 0, tuple(spatial))
            source = "separate calibration lines"
        else:  # the frames' mean k-space where any frame sampled it
            weight = mask.sum(axis=0)
            cal = (kspace * mask[:, None]).sum(axis=0) / np.maximum(weight, 1)
            cal_mask = weight > 0
            source = "the frames' mean k-space"
        maps, map_info = estimate_coil_maps(cartesian_calibration(cal, cal_mask), spatial, coil_maps)
        map_info = {**map_info, "from": source}
    return data_out, mask, maps, map_info, noise_variance


def _noncartesian(heads, data, trajs, rows, frame_of, n_frames, hdr, spacing, three_d, name, info):
    encoded = hdr["encodedSpace"]
    dims = {int(heads["trajectory_dimensions"][i]) for i in rows}
    ndim = 3 if three_d else 2
    if len(dims) > 1 or not dims <= ({3} if three_d else {2, 3}):
        found = sorted(dims)
        hint = ("the acquisitions carry no trajectory: export it into every acquisition's traj"
                if found == [0] else "a 2D encoded space needs (kx, ky) [, third column ignored], a 3D one "
                "(kx, ky, kz); stacks of stars (2 columns with kspace_encode_step_2 partitions) are not read")
        raise InputError("ismrmrd trajectory_dimensions", f"is {found} in {name} for a "
                         f"{'3D' if three_d else '2D'} {hdr['trajectory'] or 'non-Cartesian'} encoding.",
                         hint[0].upper() + hint[1:] + ".")
    if (not three_d) and dims == {3}:
        info["trajectory_third_column"] = "ignored (2D encoded space: kz = 0 or density weights)"
    readouts = [_readout(heads[i], data[i], name, int(i))[0] for i in rows]
    positions = []
    for i, line in zip(rows, readouts):
        pre = int(heads["discard_pre"][i])
        positions.append(trajs[i][pre:pre + line.shape[-1], :ndim].astype(np.float64))
    k_all = np.concatenate(positions, axis=0)
    if not np.all(np.isfinite(k_all)):
        raise InputError("ismrmrd traj", f"holds NaN or Inf values in {name}.", "Export a complete trajectory.")
    kmax = float(np.abs(k_all).max()) if k_all.size else 0.0
    enc_spacing = np.array([f / n for f, n in zip(encoded["fov_mm"], encoded["matrix"])])[:ndim]
    if kmax <= CYCLES_PER_VOXEL_MAX:
        units = "cycles per voxel of the encoded matrix"
        scale = 2 * np.pi * np.asarray(spacing[:ndim]) / enc_spacing
    elif kmax >= CYCLES_PER_FOV_MIN:
        units = "cycles per encoded FOV (1/FOV), divided by the encoded matrix"
        scale = 2 * np.pi * np.asarray(spacing[:ndim]) / np.asarray(encoded["fov_mm"][:ndim])
    else:
        raise InputError("ismrmrd traj", f"reaches |k| = {kmax:.3g} in {name}: neither cycles per voxel (|k| <= 0.5) "
                         "nor cycles per FOV (up to N/2).", "Scale the trajectory to [-0.5, 0.5] cycles per voxel of "
                         "the encoded matrix.")
    info["trajectory_units"] = {"assumed": units, "max_abs_k": kmax,
                                "rad_per_voxel_per_unit": [float(s) for s in scale]}
    frame_data = [[] for _ in range(n_frames)]
    frame_traj = [[] for _ in range(n_frames)]
    limit = np.pi * (1 + WRAP_TOLERANCE)
    dropped = 0
    for i, line, k in zip(rows, readouts, positions):
        k = (k * scale).T[::-1]  # [(kz,) ky, kx]
        inside = np.all(np.abs(k) <= limit, axis=0)
        dropped += int((~inside).sum())
        k = np.where(k >= np.pi, k - 2 * np.pi, k)[:, inside]
        f = frame_of[int(i)]
        frame_data[f].append(line[:, inside])
        frame_traj[f].append(k)
    per_frame = sorted({sum(t.shape[1] for t in ts) for ts in frame_traj})
    if len(per_frame) > 1:
        raise InputError("ismrmrd frames", f"the {n_frames} repetitions/phases of {name} have different numbers of "
                         f"samples ({per_frame}" + (f", after dropping {dropped} beyond ±π" if dropped else "")
                         + "); a measurement needs the same number in every frame.",
                         "Import a file whose frames have the same spokes/interleaves per frame.")
    if per_frame[0] == 0:
        raise InputError("ismrmrd traj", f"no sample of {name} lies inside the recon grid's band [-π, π).",
                         "Check the trajectory units and the header's fields of view.")
    info["samples_dropped_beyond_pi"] = dropped
    data_out = np.stack([np.concatenate(d, axis=1) for d in frame_data]).astype(np.complex64)
    traj = np.stack([np.concatenate(t, axis=1) for t in frame_traj]).astype(np.float32)
    return data_out, traj


def _grid(head, spacing, size, name: str):
    """The ImageGrid: x along read_dir, y phase_dir, z slice_dir (LPS), position at voxel n // 2."""
    from ..physics.grid import ImageGrid

    dirs = np.stack([np.asarray(head[k], np.float64) for k in ("read_dir", "phase_dir", "slice_dir")], axis=1)
    centre = np.asarray(head["position"], np.float64)
    info = {"position_mm": centre.tolist(), "read_dir": dirs[:, 0].tolist(), "phase_dir": dirs[:, 1].tolist(),
            "slice_dir": dirs[:, 2].tolist(), "frame": "LPS (patient), as ISMRMRD specifies"}
    if not np.any(dirs):
        dirs = np.eye(3)
        info["directions"] = "all zero in the file: identity (image axes = patient axes)"
    elif not np.any(dirs[:, 2]):
        dirs[:, 2] = np.cross(dirs[:, 0], dirs[:, 1])
        info["directions"] = "slice_dir zero in the file: read_dir x phase_dir"
    elif not np.allclose(dirs.T @ dirs, np.eye(3), atol=1e-3):
        raise InputError("ismrmrd read_dir/phase_dir/slice_dir", f"are not orthonormal unit vectors in {name} "
                         f"({np.round(dirs.T, 4).tolist()}).", "Export the acquisition directions as unit vectors.")
    else:  # float32 in the file: the nearest orthonormal matrix
        u, _, vt = np.linalg.svd(dirs)
        dirs = u @ vt
    if not np.all(np.isfinite(centre)):
        raise InputError("ismrmrd position", f"is not finite in {name}.", "Export the slice position (mm).")
    index = np.array([size[0] // 2, size[1] // 2, size[2] // 2 if size[2] > 1 else 0], float)
    origin = centre - dirs @ (np.asarray(spacing) * index)
    return ImageGrid(size, spacing, tuple(origin), tuple(dirs.ravel())), info


def ismrmrd_header(path) -> dict:
    """modality, grid and geometry type without estimating coil maps (the Slicer module's preset
    choice); reads the acquisitions once (the grid needs their positions)."""
    m = read_ismrmrd(path, coil_maps=None)
    return {"modality": m.modality, "grid": m.grid, "geometry": m.geometry.type, "attrs": m.attrs}

