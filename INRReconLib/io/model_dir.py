"""A pre-trained DisINR model on disk: a folder with the weights and what they mean.

    MODEL_DIR/model.json          format, version, modality, the field config, the coordinate
                                  frame (mm), the intensity scale, training settings, the cohort's
                                  files (names, SHA-256) and the weights file's SHA-256
    MODEL_DIR/shared.safetensors  the shared encoder and decoder (the population prior)

Weights are safetensors (no pickle is ever loaded); the JSON is written last, so a folder with a
model.json is complete. Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from .atomic import atomic_target, atomic_write_json
from .provenance import file_sha256

FORMAT = "inrrecon-disinr-model"
VERSION = 1
META_FILE = "model.json"
WEIGHTS_FILE = "shared.safetensors"
FIX = "Give the folder `inrrecon pretrain --out` wrote."


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:
        raise InputError("safetensors", "is not installed; DisINR models are stored with it.",
                         "pip install safetensors (it is a dependency of INRRecon: reinstall with pip install -e .)") \
            from None
    return st


def prepare_folder(folder) -> Path:
    """`folder` ready for a model: new, empty, or an earlier model (overwritten). Anything else is
    refused before pre-training starts, so no one's files are overwritten after an hour's work."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError("--out", f"{folder} is a file.", "Give a folder name for the model.")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / META_FILE).is_file():
        raise InputError("--out", f"{folder} holds other files, not a model.", "Give a new or empty folder.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_model(folder, shared_state: dict, meta: dict) -> Path:
    """Write the shared weights, then model.json (with their SHA-256). Returns the folder."""
    st = _safetensors()
    folder = prepare_folder(folder)
    weights = folder / WEIGHTS_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in shared_state.items()}
    with atomic_target(weights) as tmp:
        st.save_file(tensors, str(tmp), metadata={"format": FORMAT})
    meta = {"format": FORMAT, "version": VERSION, **meta, "weights": WEIGHTS_FILE,
            "weights_sha256": file_sha256(weights)}
    atomic_write_json(folder / META_FILE, meta)
    return folder


def load_model(folder, modality: str | None = None):
    """(meta, shared state dict on the CPU) of the model in `folder`. Checks the format and version,
    the modality (when given), and that the weights are the ones model.json was written with."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not folder.is_dir():
        raise InputError("model", f"{folder} is not a folder.", FIX)
    if not meta_path.is_file():
        raise InputError("model", f"{folder} has no {META_FILE}: it is not a DisINR model.", FIX)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError("model", f"{meta_path} is not valid JSON ({exc}).", "Pre-train the model again.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError("model", f"{meta_path} is not a DisINR model description (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r}).", FIX)
    if meta.get("version") != VERSION:
        raise InputError("model", f"{folder} is model format version {meta.get('version')!r}; this INRRecon reads "
                         f"version {VERSION}.", "Pre-train the model again with this version of INRRecon.")
    for key in ("modality", "field", "frame", "intensity_scale"):
        if key not in meta:
            raise InputError("model", f"{meta_path} has no {key!r}.", "Pre-train the model again.")
    if modality is not None and meta["modality"] != modality:
        raise InputError("model", f"{folder} was pre-trained on {meta['modality']} data; this measurement is "
                         f"{modality}.", f"Use a model pre-trained on {modality} scans (inrrecon pretrain).")
    weights = folder / str(meta.get("weights", WEIGHTS_FILE))
    if weights.parent != folder or not weights.is_file():
        raise InputError("model", f"the weights file {weights.name} is missing from {folder}.", FIX)
    if file_sha256(weights) != meta.get("weights_sha256"):
        raise InputError("model", f"{weights} is not the file model.json was written with (SHA-256 differs): it "
                         "is corrupt or was replaced.", "Pre-train the model again, or restore the folder.")
    st = _safetensors()
    try:
        state = st.load_file(str(weights))
    except Exception as exc:  # safetensors raises its own SafetensorError on a malformed file
        raise InputError("model", f"{weights} cannot be read as safetensors ({exc}).", FIX) from None
    return meta, state
