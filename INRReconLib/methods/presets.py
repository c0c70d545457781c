"""Reconstruction configs as data: named presets (INRReconLib/presets/*.json) plus user overrides.

A config is a flat dict of fitting settings with one nested "field" (tiny-cuda-nn style
encoding/network description) and one nested "admm". It is saved next to every result, so a run
can be reproduced and two runs diffed. Keys:

  preset            name of the preset the config started from
  field             {"encoding": {...}, "network": {...}, "backend": "auto"}
  projector         CT forward model: "auto" (astra on CUDA when it has CUDA, else torch) |
                    "torch" | "astra"; a CT result's config names the one that ran
  nufft             non-Cartesian MR: "auto" (physics/mr_nufft.py AUTO_NUFFT, measured) |
                    "torchkbnufft" | "finufft"; a non-Cartesian result's config names the one
                    that ran (the key of the other modality, and Cartesian MR, keep what was given)
  prior_registration  NeRP: "none" | "rigid" | "deformable" | "auto": align the prior with a TV
                    image of the data before embedding it; auto keeps the rigid or the deformable
                    alignment, whichever the data fit better (methods/registration.py)
  registration_reference_iterations  TV iterations for that reference image
  prior_slice_search_mm  NeRP, 2D data, a prior volume, registration on: pick the prior's slice
                    within this distance of the plane that best matches the reference (0 = off)
  prior_min_correlation  NeRP, registration on: the rigidly aligned prior must correlate at least
                    this much with the TV reference (methods/registration.py `match_correlation`:
                    own earlier scan 0.93-0.98, another patient 0.47); -1 = no check
  prior_mismatch    below it: "error" (stop, naming the mismatch) or "warn" (go on, warning in
                    the result)
  embed_iterations  prior-embedding Adam steps (NeRP only);  embed_lr: their learning rate
  iterations        data-fitting steps (for ADMM: INR Adam steps in total); lr: their learning rate
  schedule          "cosine" | "step" | "constant" (both stages); step_size, gamma: for "step"
  loss              "l2" | "l1" | "fls" (CT) | "rel_l2" (MR k-space); rel_l2_eps, fls_window
  fls_handover      FLS: blend linearly from FLS to plain L2 over this fraction of the fitting
                    steps (0 = FLS throughout); FLS gets the coarse image fast, L2 the detail
  optimizer         "adam" | "admm";  admm: {"adam_steps", "cgls_steps", "rho"}
  coarse_to_fine    HashGrid: bring resolution levels in coarse to fine over this fraction of the
                    fitting steps (INR: fine levels masked; NeRP: see coarse_to_fine_prior);
                    0 = all levels from the start
  coarse_to_fine_prior  NeRP: "freeze" the embedded prior's fine levels until their turn,
                    "mask" them out and fade the prior's detail back in with the level, or
                    "off": every level trains from the start (for a registered prior)
  tv_weight         weight of a total-variation term on the normalised image (0 = off), quoted
                    for a grid 128 voxels wide and one coil; scaled by n/128 (same balance at
                    any size) and divided by √coils for multi-coil MR
  subsets           CT ordered subsets of views: one subset per step (1 = all views)
  points_per_chunk  evaluate the field in chunks of this many points with gradient checkpointing
                    (0 = all at once); lowers GPU memory for 3D
  seed              torch seed for anything random outside the field (subset order)
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from ..errors import InputError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
DEFAULT_PRESET = {"CT": "hash-ct", "MR": "hash-mr"}
# 3D cone beam wants less TV than a 2D slice and the prior's fine levels frozen (measured: hash-cone.json).
DEFAULT_PRESET_CONE = "hash-cone"
ADMM_KEYS = {"adam_steps", "cgls_steps", "rho"}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError("config", f"cannot read {path}: {exc.strerror}.", "Give an existing JSON or YAML file.")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise InputError("config", f"{path} is not valid {path.suffix[1:].upper() or 'JSON'}: {exc}.")
    if not isinstance(data, dict):
        raise InputError("config", f"{path} must hold a mapping of settings, got {type(data).__name__}.")
    return data


def _preset(name: str) -> dict:
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise InputError("preset", f"unknown preset {name!r}.", f"Use one of: {', '.join(preset_names())}.")
    cfg = _read_file(path)
    cfg["preset"] = name
    return cfg


def _merge(base: dict, override: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        name = f"{where}{key}"
        if key not in out:
            raise InputError(name, "unknown config key.", f"Known keys here: {', '.join(sorted(out))}.")
        if key == "field":
            out[key] = _merge_field(out[key], value)
        elif key == "admm":
            if not isinstance(value, dict):
                raise InputError(name, "must be a mapping.")
            for k in value:
                if k not in ADMM_KEYS:
                    raise InputError(f"{name}.{k}", "unknown config key.", f"Known: {', '.join(sorted(ADMM_KEYS))}.")
            out[key].update(copy.deepcopy(value))
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_field(base: dict, override: dict) -> dict:
    """Encoding/network sections merge key by key, unless the override changes the otype: then its
    section replaces the preset's (a HashGrid has no sigma). Keys are checked when the field is built."""
    if not isinstance(override, dict):
        raise InputError("field", "must be a mapping with 'encoding' and 'network'.")
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key in ("encoding", "network"):
            if not isinstance(value, dict):
                raise InputError(f"field.{key}", "must be a mapping.")
            if value.get("otype", out[key].get("otype")) != out[key].get("otype"):
                out[key] = copy.deepcopy(value)
            else:
                out[key].update(copy.deepcopy(value))
        elif key == "backend":
            out[key] = value
        else:
            raise InputError(f"field.{key}", "unknown config key.", "Known keys here: backend, encoding, network.")
    return out


def default_preset(modality: str = "CT", cone_3d: bool = False) -> str:
    """The preset a config starts from when it names none: hash-ct, hash-cone for 3D cone beam,
    hash-mr."""
    if modality not in DEFAULT_PRESET:
        raise InputError("modality", f"must be CT or MR, got {modality!r}.")
    return DEFAULT_PRESET_CONE if modality == "CT" and cone_3d else DEFAULT_PRESET[modality]


def measurement_context(modality: str, geometry_type: str, grid) -> dict:
    """load_config's keyword arguments that pick the default preset for a measurement of this
    modality, geometry type ("parallel", "cone", ...) and ImageGrid."""
    return {"modality": modality, "cone_3d": modality == "CT" and geometry_type == "cone" and not grid.is_2d}


def load_config(spec=None, overrides: dict | None = None, modality: str = "CT", cone_3d: bool = False) -> dict:
    """The full config for a run.

    spec: a preset name ("nerp-ct"), a path to a JSON/YAML file, a dict, or None. A dict or file may
    name its base in "preset" (default: default_preset(modality, cone_3d); measurement_context
    gives both for a measurement) and overrides any of its keys. `overrides` (dict) is applied
    last. Unknown keys raise InputError naming the key."""
    if spec is None:
        spec = {}
    if isinstance(spec, (str, os.PathLike)):
        s = str(spec)
        if s in preset_names():
            spec = {"preset": s}
        elif os.path.splitext(s)[1].lower() in (".json", ".yaml", ".yml") or os.path.exists(s):
            spec = _read_file(Path(s))
        else:
            raise InputError("config", f"{s!r} is neither a preset nor a file.",
                             f"Use a preset ({', '.join(preset_names())}) or a .json/.yaml path.")
    if not isinstance(spec, dict):
        raise InputError("config", f"must be a preset name, a file or a mapping, got {type(spec).__name__}.")
    spec = dict(spec)
    name = spec.pop("preset", None) or default_preset(modality, cone_3d)
    if not isinstance(name, str):
        raise InputError("preset", f"must be a preset name, got {name!r}.")
    config = _merge(_preset(name), spec, "")
    if overrides:
        config = _merge(config, dict(overrides), "")
    return config


def backend_config(cfg: dict, modality: str, op=None) -> dict:
    """The config key that picks the operator's backend for this modality ({"projector": ...} or
    {"nufft": ...}), as `cfg` asks for it, or as `op` resolved it (empty for Cartesian MR)."""
    if modality == "CT":
        return {"projector": op.backend if op is not None else cfg["projector"]}
    if op is not None:
        return {} if op.nufft is None else {"nufft": op.nufft}
    return {"nufft": cfg["nufft"]}


def save_config(config: dict, path) -> None:
    """Write `config` as indented JSON, atomically (temp file in the same folder, then rename)."""
    from ..io.atomic import atomic_write_json

    atomic_write_json(path, config, sort_keys=True)
