"""The job folder's `job.json`: what one reconstruction should do.

Written by the Slicer logic (or any tool) with `write_job`, read by the worker with `load_job`.
Relative paths in the file are relative to the job folder, so a folder can be moved whole.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from ..errors import InputError
from ..io.atomic import atomic_write_text

JOB_FILE = "job.json"
DEVICES = ("auto", "cpu", "cuda")
PREVIEW_MODES = ("slices", "volume")
OUTPUT_UNITS = ("hu", "mu")
DEFAULT_PREVIEW_EVERY = 10

# key -> default; None where the key may be omitted. "measurement" and "method" are required.
JOB_KEYS = {
    "measurement": None,    # HDF5 measurement file (docs/measurement-format.md)
    "prior": None,          # earlier image of the patient (NRRD, NIfTI..., or a DICOM series' folder), or null
    "prior_series": None,   # Series Instance UID: which series of a DICOM folder prior (when it holds several)
    "model": None,          # disinr: the pre-trained model folder (inrrecon pretrain --out), or null
    "pretrain_on": None,    # disinr: measurement files to pre-train a model on first (e.g. the patient's
                            # earlier fractions), written next to the output as <stem>.model/; or null
    "method": None,         # a name of methods/registry.py METHODS
    "config": None,         # preset name, config file path, inline object, or null (method defaults)
    "config_overrides": None,  # object of config keys applied on top of "config" (the CLI's --spokes-per-frame ...)
    "iterations": None,     # int or null (method default)
    "device": "auto",       # "auto" | "cpu" | "cuda" | "cuda:N"
    "output": "result.nrrd",  # image file written at the end (any format SimpleITK writes); dynamic MR:
                            # the mean over time there and the series as <stem>.seq.nrrd (or only that,
                            # for an output ending in .seq.nrrd)
    "frame_files": False,   # dynamic MR: also one image file per frame (<stem>_frame000.nrrd, ...)
    "upsample": 1,          # INR methods: write the output on a grid this many times finer per axis
                            # (in-plane for 2D), the fitted field evaluated there; 1: the measurement grid
    "preview_every": DEFAULT_PREVIEW_EVERY,  # iterations between previews; 0 = none
    "preview": "slices",    # 3D previews: "slices" (three central slices) or "volume" (whole image)
    "reference": None,      # optional ground-truth image for metrics (same kind of file as prior)
    "roi": None,            # optional label image on the measurement grid: metrics inside it too
    "output_units": "hu",   # CT output: "hu" (with mu_water_per_mm: job, measurement or default) or "mu" (1/mm)
    "mu_water_per_mm": None,  # CT: overrides the measurement's mu_water_per_mm for HU conversion
    "meta": None,           # free object for the caller (series, fraction...), passed through
}

log = logging.getLogger("INRReconLib.worker")


def load_job(job_dir) -> dict:
    """Read and check JOB_DIR/job.json; returns the checked job (see `check_job`)."""
    job_dir = Path(job_dir)
    path = job_dir / JOB_FILE
    if not job_dir.is_dir():
        raise InputError("job folder", f"{job_dir} does not exist or is not a folder.",
                         "Pass the folder that holds job.json.")
    if not path.is_file():
        raise InputError("job.json", f"{path} does not exist.", "Write the job with write_job() first.")
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError("job.json", f"is not valid JSON ({exc}).", "Write it with write_job().") from None
    return check_job(job, job_dir)


def write_job(job_dir, **keys) -> Path:
    """Create JOB_DIR (if needed) and write job.json atomically; returns its path.

    Keys are those of JOB_KEYS; they are checked (types, allowed values) but input files need not
    exist yet. Paths are written as given (absolute paths are the safe choice)."""
    job_dir = Path(job_dir)
    check_job(keys, job_dir, check_files=False)
    job_dir.mkdir(parents=True, exist_ok=True)
    job = {k: _plain(v) for k, v in keys.items()}
    return atomic_write_text(job_dir / JOB_FILE, json.dumps(job, indent=2, ensure_ascii=False) + "\n")


def _plain(value):
    """Paths (also in a list, as pretrain_on's) as strings, for JSON."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if hasattr(value, "__fspath__") else value


def check_job(job: dict, job_dir, check_files: bool = True) -> dict:
    """The job with defaults filled in and paths made absolute (str); raises InputError naming the
    key and the fix. Unknown keys are kept but logged (they are probably typos)."""
    from ..methods.registry import METHODS

    job_dir = Path(job_dir)
    if not isinstance(job, dict):
        raise InputError("job.json", f"must hold a JSON object, got {type(job).__name__}.")
    unknown = sorted(set(job) - set(JOB_KEYS) - {"ignored_keys"})  # ignored_keys: added by an earlier check
    if unknown:
        log.warning("job.json: ignoring unknown keys %s (known: %s)", unknown, ", ".join(JOB_KEYS))
    out = {k: job.get(k, default) for k, default in JOB_KEYS.items()}
    out["ignored_keys"] = unknown

    for key in ("measurement", "method"):
        if out[key] in (None, ""):
            raise InputError(key, "is missing from the job.", f"Set '{key}' in job.json.")
    for key in ("measurement", "prior", "model", "output", "reference", "roi"):
        if out[key] is not None:
            if hasattr(out[key], "__fspath__"):
                out[key] = str(out[key])
            if not isinstance(out[key], str) or not out[key]:
                raise InputError(key, f"must be a file path (string), got {out[key]!r}.")
            out[key] = str(_resolve(out[key], job_dir))
    if check_files:
        for key in ("measurement", "prior", "reference", "roi"):
            # The prior may also be a folder (a DICOM series: io/dicom_series.py), and so may the
            # measurement (a cone-beam scan's folder: io/cbct.py).
            if out[key] is None:
                continue
            folder_ok = key in ("prior", "measurement") and Path(out[key]).is_dir()
            if not (Path(out[key]).is_file() or folder_ok):
                raise InputError(key, f"file not found: {out[key]}.", "Check the path (relative paths are "
                                 "relative to the job folder).")
    _check_prior_series(out, check_files)
    _check_pretrain_on(out, job_dir, check_files)
    if check_files and out["model"] is not None and not Path(out["model"]).is_dir():
        raise InputError("model", f"{out['model']} is not a folder.", "Give the folder inrrecon pretrain wrote.")

    if out["output"] is not None and out["output"] in (out["measurement"], out["prior"], out["reference"], out["roi"]):
        raise InputError("output", f"{out['output']} is also an input of the job; it would be overwritten.",
                         "Choose a new file name for the result.")
    if out["method"] not in METHODS:
        raise InputError("method", f"unknown method {out['method']!r}.", f"Choose one of: {', '.join(METHODS)}.")

    for key in ("model", "pretrain_on"):
        if out[key] is not None and "model" not in METHODS[out["method"]].reads:
            users = ", ".join(n for n, spec in METHODS.items() if "model" in spec.reads)
            raise InputError(key, f"method {out['method']!r} takes no pre-trained model.", f"Drop '{key}', or use {users}.")

    config = out["config"]
    if config is not None and not isinstance(config, (str, dict)):
        raise InputError("config", f"must be a preset name, a file path, an object or null, got {config!r}.")
    if isinstance(config, str) and config and not Path(config).is_absolute() and (job_dir / config).is_file():
        out["config"] = str((job_dir / config).resolve())

    if not isinstance(out["frame_files"], bool):
        raise InputError("frame_files", f"must be true or false, got {out['frame_files']!r}.")
    if out["config_overrides"] is not None and not isinstance(out["config_overrides"], dict):
        raise InputError("config_overrides", f"must be an object or null, got {out['config_overrides']!r}.")
    out["iterations"] = _positive_int(out["iterations"], "iterations", allow_none=True)
    out["upsample"] = _positive_int(out["upsample"], "upsample")
    if out["upsample"] > 1 and not METHODS[out["method"]].field:
        fields = ", ".join(n for n, spec in METHODS.items() if spec.field)
        raise InputError("upsample", f"method {out['method']!r} reconstructs the measurement grid's voxels only; "
                         f"a finer output grid needs a field method ({fields}).",
                         "Set upsample to 1, or choose an INR method.")
    out["preview_every"] = _positive_int(out["preview_every"], "preview_every", allow_zero=True)

    device = out["device"]
    if not isinstance(device, str) or not (device in DEVICES or _is_cuda_index(device)):
        raise InputError("device", f"must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}.")
    if out["preview"] not in PREVIEW_MODES:
        raise InputError("preview", f"must be one of {PREVIEW_MODES}, got {out['preview']!r}.")
    if out["output_units"] not in OUTPUT_UNITS:
        raise InputError("output_units", f"must be one of {OUTPUT_UNITS}, got {out['output_units']!r}.")
    mu = out["mu_water_per_mm"]
    if mu is not None:
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu <= 0:
            raise InputError("mu_water_per_mm", f"must be a positive number (1/mm), got {mu!r}.",
                             "About 0.0195 /mm for water at 70 keV.")
        out["mu_water_per_mm"] = float(mu)
    if out["meta"] is not None and not isinstance(out["meta"], dict):
        raise InputError("meta", f"must be an object or null, got {out['meta']!r}.")
    return out


def _check_prior_series(out: dict, check_files: bool) -> None:
    """prior_series: a UID string, and only with a prior (a folder, once the files exist)."""
    uid = out["prior_series"]
    if uid is None:
        return
    if not isinstance(uid, str) or not uid.strip():
        raise InputError("prior_series", f"must be a Series Instance UID (string) or null, got {uid!r}.")
    out["prior_series"] = uid.strip()
    if out["prior"] is None:
        raise InputError("prior_series", "is set but there is no prior.", "Set 'prior' to the DICOM folder.")
    if check_files and not Path(out["prior"]).is_dir():
        raise InputError("prior_series", f"names a DICOM series, but the prior {out['prior']} is a file, not a "
                         "folder.", "Give the DICOM folder as the prior, or drop prior_series.")


def _check_pretrain_on(out: dict, job_dir: Path, check_files: bool) -> None:
    """pretrain_on: a list of measurement files (relative paths: to the job folder), not with a
    model (one or the other is the model), not holding the measurement itself."""
    files = out["pretrain_on"]
    if files is None:
        return
    if isinstance(files, (str, Path)):
        files = [files]
    if not isinstance(files, (list, tuple)) or not files or not all(
            isinstance(f, (str, Path)) and str(f) for f in files):
        raise InputError("pretrain_on", f"must be a non-empty list of measurement file paths or null, got {files!r}.")
    files = [str(_resolve(str(f), job_dir)) for f in files]
    if out["model"] is not None:
        raise InputError("pretrain_on", "is set together with 'model'; the model would be both loaded and pre-trained.",
                         "Keep one: 'model' (a folder inrrecon pretrain wrote) or 'pretrain_on' (files to pre-train on).")
    if out["measurement"] in files:  # both resolved against the job folder
        raise InputError("pretrain_on", "lists the measurement being reconstructed.",
                         "List only the other scans (e.g. the earlier fractions); the adaptation fits this one.")
    if check_files:
        for f in files:
            if not (Path(f).is_file() or Path(f).is_dir()):
                raise InputError("pretrain_on", f"file not found: {f}.", "Check the path (relative paths are "
                                 "relative to the job folder).")
    out["pretrain_on"] = files


def _resolve(path: str, job_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (job_dir / p).resolve()


def _is_cuda_index(device: str) -> bool:
    head, _, index = device.partition(":")
    return head == "cuda" and index.isdigit()


def _positive_int(value, key: str, allow_none: bool = False, allow_zero: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    lowest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        what = "a non-negative integer" if allow_zero else "a positive integer"
        raise InputError(key, f"must be {what}{' or null' if allow_none else ''}, got {value!r}.")
    return value
