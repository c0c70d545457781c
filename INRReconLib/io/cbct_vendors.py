"""The vendors' cone-beam scans, read through RTK's own readers into cbct.py's import: Elekta XVI
(5+: _Frames.xml; older: IMAGE.DBF/FRAME.DBF) with .his projections, Varian TrueBeam/ProBeam
(.xim) and OBI (.hnd) with Scan.xml.

RTK's vendor readers take std::stod of whatever text they meet and index fields by name without
checking them, so a missing element, a damaged database or a word where a number belongs ends the
process (or reads a wrong field) instead of raising. Every vendor file is therefore parsed and
checked here first; only then does RTK read it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .cbct import cbct_measurement, file_head, geometry_file, natural, rtk, run_rtk, scan_files
from .measurement import Measurement


def read_elekta_xvi5(inputs, **options) -> Measurement:
    """`inrrecon import elekta SCAN_FOLDER` (or its _Frames.xml, or that and the .his files): an
    Elekta XVI 5+ scan. RTK's ElektaXVI5GeometryXMLFileReader reads the frames' gantry angles
    and panel centres (UCentre/VCentre, the half-fan offset) with XVI's fixed distances (source
    to isocentre 1000 mm, to detector 1536 mm); rtk.ProjectionsReader reads the .his files, crops
    4 border pixels and converts raw values to line integrals with Elekta's lookup table and
    I0 = 65536, as RTK's applications do (XVI's raw values are flood-field corrected, so one I0
    serves every pixel)."""
    frames, projections = scan_files(inputs, "elekta", "*Frames.xml", (".his",),
                                      "inrrecon import elekta SCAN_FOLDER --out MEAS.h5 (the folder holding "
                                      "_Frames.xml and the .his projections)")
    _check_xml_numbers(frames, "Elekta _Frames.xml", ("GantryAngle",), ("UCentre", "VCentre"), repeated="Frame")
    reader = rtk().ElektaXVI5GeometryXMLFileReader.New()
    reader.SetFilename(str(frames))
    run_rtk(reader.GenerateOutputInformation, "Elekta _Frames.xml", f"{frames.name} cannot be read",
            "Give the _Frames.xml XVI 5 or later wrote; for an older XVI scan give its img_<UID> folder (its "
            "geometry is in the patient's IMAGE.DBF/FRAME.DBF).")
    geometry = reader.GetOutputObject()
    if len(geometry.GetGantryAngles()) == 0:
        raise InputError("Elekta _Frames.xml", f"{frames.name} lists no <Frame> with a <GantryAngle>.",
                         "Give the _Frames.xml of the scan (XVI 5 or later).")
    return cbct_measurement(geometry, projections, source_fields={"importer": "elekta-xvi5", "scanner": "Elekta XVI"},
                            inputs=[frames, *projections], **options)


def read_elekta(inputs, **options) -> Measurement:
    """`inrrecon import elekta SCAN_FOLDER`: an XVI 5+ scan when a _Frames.xml is there, else an
    older XVI scan whose geometry is in the patient's IMAGE.DBF/FRAME.DBF (read_elekta_dbf)."""
    first = Path(inputs[0])
    if first.suffix.lower() == ".xml" or (first.is_dir() and any(first.glob("*Frames.xml"))):
        return read_elekta_xvi5(inputs, **options)
    return read_elekta_dbf(inputs, **options)


def _dbf_records(path: Path) -> list:
    """The records of a dBase III table as {field: text} (deleted records left out): the 32-byte
    header (records at byte 4, header and record sizes at 8 and 10), one 32-byte descriptor per
    field (name, type, length at byte 16), then fixed-width records after a deletion flag."""
    import struct

    data = path.read_bytes()
    if len(data) < 33:
        raise InputError("Elekta database", f"{path.name} is too short for a dBase table.",
                         "Copy the patient's DATABASE folder from XVI again.")
    n_records, header_size, record_size = struct.unpack_from("<IHH", data, 4)
    fields, offset = [], 1
    for k in range((header_size - 33) // 32):
        d = data[32 * (k + 1):32 * (k + 2)]
        fields.append((d[:11].split(b"\0")[0].decode("ascii", "replace").strip(), offset, d[16]))
        offset += d[16]
    if offset != record_size or header_size + n_records * record_size > len(data):
        raise InputError("Elekta database", f"{path.name} is damaged or truncated ({n_records} records of "
                         f"{record_size} bytes announced, {len(data)} bytes in the file).",
                         "Copy the patient's DATABASE folder from XVI again.")
    records = []
    for r in range(n_records):
        rec = data[header_size + r * record_size:header_size + (r + 1) * record_size]
        if rec[:1] != b"*":
            records.append({name: rec[o:o + n].decode("latin-1").strip() for name, o, n in fields})
    return records


def _find_dbf(folder: Path, name: str):
    """IMAGE.DBF / FRAME.DBF for a scan folder: XVI keeps them in the patient's DATABASE folder
    (<patient>/IMAGES/img_<uid>/ holds the .his files), or beside the scan."""
    for level in (folder, folder.parent, folder.parent.parent):
        for place in (level, level / "DATABASE"):
            for candidate in place.glob("*") if place.is_dir() else ():
                if candidate.name.upper() == name:
                    return candidate
    return None


def read_elekta_dbf(inputs, **options) -> Measurement:
    """An older XVI scan (before XVI 5): .his projections in <patient>/IMAGES/img_<DICOM UID>/,
    its geometry in the patient's IMAGE.DBF (the scan's DBID by its DICOM_UID, taken from the
    folder name) and FRAME.DBF (PROJ_ANG, U_CENTRE, V_CENTRE of each frame of that DBID), read by
    RTK's ElektaSynergyGeometryReader with XVI's 1000 / 1536 mm distances; projections as for
    XVI 5 (read_elekta_xvi5)."""
    usage = ("inrrecon import elekta PATIENT/IMAGES/img_<UID> --out MEAS.h5 (the scan's folder; IMAGE.DBF and "
             "FRAME.DBF in the patient's DATABASE folder)")
    folder = Path(inputs[0])
    if not folder.is_dir():
        raise InputError("import elekta", f"{folder.name} is not a scan folder and no _Frames.xml was given.", usage)
    projections = [Path(p) for p in inputs[1:]] or sorted(folder.glob("*.his"), key=natural)
    if not projections:
        raise InputError("import elekta", f"no .his projections in {folder.name}.", usage)
    image_dbf, frame_dbf = _find_dbf(folder, "IMAGE.DBF"), _find_dbf(folder, "FRAME.DBF")
    if image_dbf is None or frame_dbf is None:
        raise InputError("import elekta", f"neither a _Frames.xml nor IMAGE.DBF and FRAME.DBF were found for "
                         f"{folder.name}.", usage)
    images = _dbf_records(image_dbf)
    if images and not {"DICOM_UID", "DBID"} <= set(images[0]):
        raise InputError("Elekta IMAGE.DBF", "has no DICOM_UID or DBID field.", "Give the IMAGE.DBF XVI wrote.")
    uid = folder.name[4:] if folder.name.lower().startswith("img_") else None
    if uid is None and len(images) == 1:
        uid = images[0]["DICOM_UID"]
    match = [r for r in images if r.get("DICOM_UID") == uid]
    if not match:
        known = ", ".join(r.get("DICOM_UID", "?") for r in images[:5])
        raise InputError("Elekta IMAGE.DBF", f"has no scan with DICOM_UID {uid!r} (the folder's name img_<UID> says "
                         f"which; the table lists {known}).", "Give the scan's img_<UID> folder of this patient.")
    frames = [r for r in _dbf_records(frame_dbf) if r.get("IMA_DBID") == match[0]["DBID"]]
    for r in frames:
        for name in ("PROJ_ANG", "U_CENTRE", "V_CENTRE"):
            try:
                float(r[name])
            except (KeyError, ValueError):
                raise InputError("Elekta FRAME.DBF", f"a frame of scan {uid} has {name} = {r.get(name)!r}.",
                                 "Give the FRAME.DBF XVI wrote.") from None
    if not frames:
        raise InputError("Elekta FRAME.DBF", f"lists no frame of scan {uid} (DBID {match[0]['DBID']}).",
                         "Give the patient's FRAME.DBF from the same XVI database.")
    reader = rtk().ElektaSynergyGeometryReader.New()
    reader.SetDicomUID(uid)
    reader.SetImageDbfFileName(str(image_dbf))
    reader.SetFrameDbfFileName(str(frame_dbf))
    run_rtk(reader.UpdateOutputData, "Elekta database", "RTK cannot read the scan's geometry",
            "Give the IMAGE.DBF and FRAME.DBF XVI wrote.")
    return cbct_measurement(reader.GetGeometry(), projections, source_fields={
        "importer": "elekta-dbf", "scanner": "Elekta XVI (before 5)", "dicom_uid": uid},
        inputs=[image_dbf, frame_dbf, *projections], **options)


def _local(tag: str) -> str:
    return tag.split("}")[-1]


def _check_xml_numbers(path: Path, field: str, required, optional=(), repeated: str = None) -> dict:
    """Parse a vendor XML file and check that the elements RTK's readers will read hold numbers,
    before RTK sees it: RTK's readers take std::stod of whatever text they meet, and a missing
    element or a word where a number belongs ends the process (a crash, not an exception) instead
    of giving an error. repeated: an element (e.g. Elekta's Frame) whose children are checked, once
    per occurrence. Returns {element: text} of the first occurrence of every element."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(str(path)).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(field, f"{path.name} is not readable XML ({exc}).",
                         "Copy the file from the scanner again.") from None
    groups = [e for e in root.iter() if _local(e.tag) == repeated] if repeated else [root]
    if not groups:
        raise InputError(field, f"{path.name} has no <{repeated}> element.", "Give the file the scanner wrote.")
    where = f" in a <{repeated}>" if repeated else ""
    for group in groups:
        texts = {}
        for e in group.iter():
            texts.setdefault(_local(e.tag), (e.text or "").strip())
        for name in (*required, *optional):
            if name not in texts:
                if name in required:
                    raise InputError(field, f"{path.name} has no <{name}>{where}.",
                                     "Give the file the scanner wrote; RTK needs this element.")
                continue
            try:
                float(texts[name])
            except ValueError:
                raise InputError(field, f"<{name}> in {path.name} is {texts[name]!r}, not a number.",
                                 "Give the file the scanner wrote.") from None
    first = {}
    for e in root.iter():
        first.setdefault(_local(e.tag), (e.text or "").strip())
    return first


def _varian_projections(folder: Path) -> list:
    """A Varian scan folder's projections: Acquisitions/<id>/Proj_*.xim|hnd (the Calibrations
    folder beside it holds air and dark images, not projections), else the .xim/.hnd files
    beside Scan.xml."""
    found = [p for p in folder.glob("Acquisitions/*/Proj_*") if p.suffix.lower() in (".xim", ".hnd")]
    found = found or [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".xim", ".hnd")]
    return sorted(found, key=lambda p: [natural(p.parent), natural(p)])


def read_varian(inputs, **options) -> Measurement:
    """`inrrecon import varian SCAN_FOLDER` (or its Scan.xml, optionally followed by the
    projection files): a Varian kV CBCT through RTK's readers, by the projections' format.

    TrueBeam/ProBeam (.xim): VarianProBeamGeometryReader takes SAD (source to isocentre) and SID
    (source to imager) from Scan.xml and each projection's source angle and imager shift from its
    header (KVSourceRtn, KVDetectorLat/Lng; RTK's gantry angle = 180° − KVSourceRtn).
    OBI (.hnd): VarianObiGeometryReader takes CalibratedSAD/SID, the detector offsets
    (CalibratedDetectorOffsetX/Y, plus DetectorPosLat for FanType HalfFan) from Scan.xml and
    each angle from the header (dCTProjectionAngle).
    rtk.ProjectionsReader converts raw values of both with p = ln(I0 / raw), I0 = 139000 (RTK's
    constant for Varian, measured from RTK in test_cbct.py; no per-scan flood field is read)."""
    inputs = [Path(p) for p in inputs]
    usage = "inrrecon import varian SCAN_FOLDER --out MEAS.h5 (the folder holding Scan.xml and Acquisitions/)"
    scan_xml = inputs[0] / "Scan.xml" if inputs[0].is_dir() else inputs[0]
    if not scan_xml.is_file():
        raise InputError("import varian", f"no Scan.xml in {inputs[0].name}.", usage)
    projections = inputs[1:] or _varian_projections(scan_xml.parent)
    kinds = {p.suffix.lower() for p in projections}
    if not projections or not kinds <= {".xim", ".hnd"} or len(kinds) > 1:
        found = ", ".join(sorted(kinds)) or "none"
        raise InputError("import varian", f"needs the .xim (TrueBeam/ProBeam) or .hnd (OBI) projections of one scan "
                         f"beside {scan_xml.name} (found: {found}).", usage)
    probeam = kinds == {".xim"}
    if probeam:
        _check_xml_numbers(scan_xml, "Varian Scan.xml", ("SAD", "SID"), ("ImagerSizeX", "ImagerSizeY", "ImagerResX",
                                                                          "ImagerResY", "ImagerLat", "Velocity"))
    else:
        fields = _check_xml_numbers(scan_xml, "Varian Scan.xml", ("CalibratedSAD", "CalibratedSID",
                                                                  "CalibratedDetectorOffsetX",
                                                                  "CalibratedDetectorOffsetY"), ("DetectorPosLat",))
        if "FanType" not in fields:
            raise InputError("Varian Scan.xml", f"{scan_xml.name} has no <FanType> (HalfFan or FullFan).",
                             "Give the Scan.xml the OBI wrote.")
        if fields["FanType"].lower() == "halffan" and "DetectorPosLat" not in fields:
            raise InputError("Varian Scan.xml", f"{scan_xml.name} is a HalfFan scan without <DetectorPosLat>.",
                             "Give the Scan.xml the OBI wrote.")
    reader = (rtk().VarianProBeamGeometryReader if probeam else rtk().VarianObiGeometryReader).New()
    reader.SetXMLFileName(str(scan_xml))
    reader.SetProjectionsFileNames([str(p) for p in projections])
    needs = "SAD and SID" if probeam else "CalibratedSAD, CalibratedSID, FanType and the detector offsets"
    run_rtk(reader.UpdateOutputData, "Varian Scan.xml", "the scan's geometry cannot be read",
            f"Give the Scan.xml and projections the scanner wrote ({needs} in Scan.xml).")
    geometry = reader.GetGeometry()
    n_views = len(geometry.GetGantryAngles())
    if n_views != len(projections):  # RTK skips projections without an angle (6000: not exposed)
        raise InputError("Varian projections", f"{len(projections) - n_views} of {len(projections)} files "
                         "have no source angle.", "Leave out the unexposed frames, or give the Acquisitions folder "
                         "of one scan.")
    scanner = "Varian TrueBeam/ProBeam" if probeam else "Varian OBI"
    return cbct_measurement(geometry, projections, source_fields={"importer": "varian-" + ("probeam" if probeam else
                                                                                           "obi"), "scanner": scanner},
                            inputs=[scan_xml, *projections], **options)


def is_varian_scan(path) -> bool:
    """A Varian Scan.xml (or its folder) with the distances RTK reads (ProBeam SAD/SID, OBI
    CalibratedSAD/SID)."""
    path = Path(path)
    xml = path / "Scan.xml" if path.is_dir() else path
    head = file_head(xml) if xml.name.lower() == "scan.xml" and xml.is_file() else ""
    return "SAD>" in head and "SID>" in head


def is_elekta_scan(path) -> bool:
    """An XVI _Frames.xml (or its folder): frames with gantry angles; or an older XVI scan's
    img_<UID> folder of .his files."""
    path = Path(path)
    if path.is_dir() and path.name.lower().startswith("img_") and any(path.glob("*.his")):
        return True
    xml = geometry_file(path, "*Frames.xml")
    head = file_head(xml) if xml is not None else ""
    return "<Frame" in head and ("GantryAngle" in head or "UCentre" in head)
