"""What makes a row finished: its fingerprint, and the record written beside its output.

A row's fingerprint is a hash of everything that decides its result: the method, the config's
content (a preset's or a file's text, not its name), the iteration count and the hashes of its
input files; a chained row (`after`) takes its upstream row's fingerprint in place of the prior's
file hash, so a change upstream reruns the whole rest of the series. After a row succeeds,
`<output stem>.batch.json` records the fingerprint, the output's hash and the row's result
summary (written atomically, and only after the output itself). On a re-run the row is skipped
when that record matches the fingerprint and the output file still has the recorded hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..io.atomic import atomic_write_json
from ..io.provenance import file_sha256

RECORD_VERSION = 1


def _config_content(config):
    """The config as what it holds: a preset's or a file's text, or the inline mapping, with the
    text of the preset it starts from (named in it, else every shipped preset: a method's default
    depends on the measurement) so an edited preset reruns the rows built on it."""
    from ..methods.presets import PRESET_DIR, preset_names

    def preset_hash(name):
        return {"preset": name, "sha256": file_sha256(PRESET_DIR / f"{name}.json")} if name in preset_names() else name

    if isinstance(config, str) and not Path(config).is_absolute():
        return preset_hash(config)
    if isinstance(config, str):
        return {"file": Path(config).name, "sha256": file_sha256(config)}
    base = (config or {}).get("preset")
    return {"inline": config, "base": preset_hash(base) if base else [preset_hash(n) for n in preset_names()]}


def fingerprints(study) -> dict:
    """row id -> fingerprint (hex), upstream rows first (Study.rows' order)."""
    out, hashed = {}, {}

    def sha(path):
        if path is None:
            return None
        if path not in hashed:
            hashed[path] = file_sha256(path)
        return hashed[path]

    for row in study.rows:
        content = {"method": row.method, "config": _config_content(row.config), "iterations": row.iterations,
                   "measurement": sha(row.measurement), "model": _tree_sha(row.model) if row.model else None,
                   "prior": out[row.after] if row.after else _input_sha(row.prior, sha),
                   "reference": sha(row.reference), "roi": sha(row.roi)}
        if row.prior_series is not None:  # only when given: rows without it keep their fingerprints
            content["prior_series"] = row.prior_series
        if row.pretrain_on:
            content["pretrain_on"] = [_input_sha(p, sha) for p in row.pretrain_on]
        text = json.dumps(content, sort_keys=True, default=str)
        out[row.id] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return out


def _input_sha(path, sha):
    """A prior may be a DICOM series' folder: then the hash of its files, as for a model."""
    return _tree_sha(path) if path is not None and Path(path).is_dir() else sha(path)


def _tree_sha(path: Path) -> str:
    """A model is a folder (weights + JSON): the hash of its files' names and hashes."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    parts = [f"{p.relative_to(path)}:{file_sha256(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def record_path(output: Path) -> Path:
    from ..worker.run import output_stem

    stem = output_stem(Path(output))
    return stem.with_name(stem.name + ".batch.json")


def write_record(output: Path, fingerprint: str, summary: dict) -> Path:
    """After the row's output is in place: the record that marks the row finished."""
    return atomic_write_json(record_path(output), {"version": RECORD_VERSION, "fingerprint": fingerprint,
                                                   "output_sha256": file_sha256(output), "summary": summary})


def finished_summary(output: Path, fingerprint: str):
    """The stored summary (with the output's checked SHA-256) when the row is finished with this
    fingerprint, else None."""
    path = record_path(output)
    if not (path.is_file() and Path(output).is_file()):
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        return None
    if record.get("fingerprint") != fingerprint or record.get("output_sha256") != file_sha256(output):
        return None
    return {**record.get("summary", {}), "output_sha256": record["output_sha256"]}
