"""Reconstruction configs of the INR methods as data: named presets (INRReconLib/presets/*.json)
plus user overrides.

A config is a flat dict of fitting settings with one nested "field" (tiny-cuda-nn style
encoding/network description) and one nested "admm". It is saved next to every result, so a run
can be reproduced and two runs diffed. Every key, its meaning and its check are in options.py
(`options.INR`, `options.ADMM`); every preset holds exactly those keys.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from ..errors import InputError
from . import options

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
DEFAULT_PRESET = {"CT": "hash-ct", "MR": "hash-mr"}
# 3D cone beam wants less TV than a 2D slice and the prior's fine levels frozen (measured: hash-cone.json).
DEFAULT_PRESET_CONE = "hash-cone"


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


def _merge(base: dict, override: dict, method: str) -> dict:
    """`base` updated with `override`, whose keys and values are checked (options.py)."""
    override = options.check_config(override, options.INR, method, defaults=False)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "field":
            out[key] = _merge_field(out[key], value)
        elif key == "admm":
            out[key].update(options.check_config(value, options.ADMM, "admm", defaults=False, prefix="admm."))
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


def load_config(spec=None, overrides: dict | None = None, modality: str = "CT", cone_3d: bool = False,
                method: str = "an INR method", default: str | None = None) -> dict:
    """The full config for a run.

    spec: a preset name ("nerp-ct"), a path to a JSON/YAML file, a dict, or None. A dict or file may
    name its base in "preset" (default: `default`, the method's preset rule in the registry, else
    default_preset(modality, cone_3d); measurement_context gives both for a measurement) and
    overrides any of its keys. `overrides` (dict) is applied
    last. Unknown keys and bad values raise InputError naming the key (and `method`)."""
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
    name = spec.pop("preset", None) or default or default_preset(modality, cone_3d)
    if not isinstance(name, str):
        raise InputError("preset", f"must be a preset name, got {name!r}.")
    config = _merge(_preset(name), spec, method)
    if overrides:
        config = _merge(config, dict(overrides), method)
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
