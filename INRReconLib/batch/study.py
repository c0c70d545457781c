"""A study file: one reconstruction per row, read from YAML or CSV and checked as a whole.

YAML: a list of rows, or {"defaults": {key: value}, "rows": [...]} where every row starts from
the defaults. CSV: a header of keys, one row per line, empty cells unset. Keys (ROW_KEYS): `id`,
`measurement`, `method` (required), `prior`, `prior_series`, `model`, `pretrain_on`, `config`,
`output`, `reference`, `roi`, `after`, `iterations`, `device`. `pretrain_on` (disinr): the
measurement files to pre-train the model on first, e.g. the patient's earlier fractions (a YAML
list; in CSV separated by ';'). `after` names another row whose output is
this row's prior: a chained series of fractions. `prior` may be a DICOM folder, `prior_series`
the UID of its series when it holds several. Relative paths are relative to the study file.

`load_study` reports every bad row at once, before anything runs: a 300-row study should not
fail on row 212 after an hour.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path
from typing import Optional, Union

from ..errors import InputError

ROW_KEYS = ("id", "measurement", "method", "prior", "model", "config", "output", "reference", "roi", "after",
            "iterations", "device", "prior_series", "pretrain_on")
_PATH_KEYS = ("measurement", "prior", "model", "reference", "roi")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # also the default output's file name (no dots: no .seq)


@dataclasses.dataclass(frozen=True)
class Row:
    """One reconstruction; paths absolute. output: the image file (default <out>/<id>.nrrd)."""

    id: str
    measurement: Path
    method: str
    output: Path
    prior: Optional[Path] = None
    model: Optional[Path] = None
    config: Union[None, str, dict] = None  # preset name, absolute file path, or inline object
    reference: Optional[Path] = None
    roi: Optional[Path] = None
    after: Optional[str] = None
    iterations: Optional[int] = None
    device: str = "auto"
    prior_series: Optional[str] = None  # Series Instance UID of a DICOM folder prior
    pretrain_on: Optional[tuple] = None  # disinr: measurement files (Paths) to pre-train the model on


@dataclasses.dataclass(frozen=True)
class Study:
    path: Path
    rows: tuple  # of Row, upstream rows (after) before the rows that need them

    def row(self, row_id: str) -> Row:
        return next(r for r in self.rows if r.id == row_id)

    def chains(self) -> list:
        """The longitudinal series: lists of rows linked by `after`, first fraction first (a row
        nothing follows and that follows nothing is a chain of one)."""
        followers = {r.after for r in self.rows if r.after}
        out = []
        for last in (r for r in self.rows if r.id not in followers):
            chain = [last]
            while chain[0].after:
                chain.insert(0, self.row(chain[0].after))
            out.append(chain)
        return out


def load_study(path, out_dir=None) -> Study:
    """Read and check the study at `path`; raises one InputError listing every bad row.
    out_dir: where rows without an `output` write (default: <study stem>_results beside it)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputError("study", f"{path} does not exist.", "Give a .yaml/.yml or .csv study file.")
    raw = _read_rows(path)
    out_dir = Path(out_dir).expanduser().resolve() if out_dir else path.with_name(path.stem + "_results")
    problems, rows = [], []
    for number, entry in enumerate(raw, start=1):
        row, errors = _check_row(entry, number, path.parent, out_dir)
        problems += errors
        if row is not None:
            rows.append(row)
    ids = [str(e["id"]) for e in raw if isinstance(e, dict) and e.get("id") not in (None, "")]
    problems += [f"id {dup!r} is used by {ids.count(dup)} rows" for dup in sorted({i for i in ids if ids.count(i) > 1})]
    problems += _check_links(rows, set(ids))
    if not raw:
        problems.append("the study has no rows")
    if problems:
        listing = "\n  - ".join(problems)
        raise InputError("study", f"{path.name} has {len(problems)} problem(s), nothing was run:\n  - {listing}",
                         "Fix the rows above and run again.")
    return Study(path, tuple(_upstream_first(rows)))


def _read_rows(path: Path) -> list:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel's CSV starts with a byte-order mark
    except UnicodeDecodeError as exc:
        raise InputError("study", f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start}).",
                         "Save it as UTF-8 (CSV UTF-8 in Excel).") from None
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None:
            return []
        return [{(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in line.items()}
                for line in reader if any((v or "").strip() for v in line.values() if isinstance(v, str))]
    if suffix not in (".yaml", ".yml", ".json"):
        raise InputError("study", f"{path.name}: unknown study format {suffix!r}.", "Use .yaml, .yml or .csv.")
    import yaml

    try:
        data = yaml.safe_load(text)  # safe loader: a study file cannot build Python objects
    except yaml.YAMLError as exc:
        raise InputError("study", f"{path.name} is not valid YAML ({exc}).") from None
    defaults = {}
    if isinstance(data, dict):
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise InputError("study", "'defaults' must be a mapping of row keys.")
        data = data.get("rows")
    if not isinstance(data, list):
        raise InputError("study", f"{path.name} must hold a list of rows, or 'rows:' with such a list.")
    return [({**defaults, **entry} if isinstance(entry, dict) else entry) for entry in data]


def _check_row(entry, number: int, base: Path, out_dir: Path):
    """(Row or None, [problems]) for one raw row."""
    from ..methods.registry import METHODS

    if not isinstance(entry, dict):
        return None, [f"row {number}: must be a mapping of keys, got {type(entry).__name__}"]
    where = f"row {number}" + (f" ({entry['id']})" if entry.get("id") else "")
    problems = [f"{where}: unknown key {k!r} (known: {', '.join(ROW_KEYS)})" for k in entry if k not in ROW_KEYS]
    values = {k: (None if entry.get(k) in ("", None) else entry[k]) for k in ROW_KEYS}
    for key in ("id", "measurement", "method"):
        if values[key] is None:
            problems.append(f"{where}: '{key}' is missing")
    row_id = str(values["id"]) if values["id"] is not None else None
    if row_id is not None and not _ID.match(row_id):
        problems.append(f"{where}: id {row_id!r} may hold letters, digits, '_' and '-' only")
    paths = {}
    for key in _PATH_KEYS + ("output",):
        if values[key] is not None:
            paths[key] = _path(values[key], base)
    for key in _PATH_KEYS:
        if key in paths and not paths[key].exists():
            problems.append(f"{where}: {key} {paths[key]} does not exist")
    pretrain_on = _pretrain_files(where, values["pretrain_on"], base, problems, paths.get("measurement"))
    method = values["method"]
    spec = METHODS.get(method) if method is not None else None
    if method is not None and spec is None:
        problems.append(f"{where}: unknown method {method!r} (choose one of: {', '.join(METHODS)})")
    if spec is not None:
        problems += _check_method_inputs(where, spec, values, paths)
    iterations = values["iterations"]
    if iterations is not None:
        try:
            iterations = int(iterations)
            if iterations < 1:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"{where}: iterations must be a positive integer, got {values['iterations']!r}")
    config = _check_config(where, values["config"], base, problems)
    device = str(values["device"] or "auto")
    if not (device in ("auto", "cpu", "cuda") or re.match(r"^cuda:\d+$", device)):
        problems.append(f"{where}: device {device!r} must be auto, cpu, cuda or cuda:N")
    if problems or row_id is None:
        return None, problems
    output = paths.get("output") or out_dir / f"{row_id}.nrrd"
    row = Row(id=row_id, measurement=paths["measurement"], method=method, output=output, prior=paths.get("prior"),
              model=paths.get("model"), config=config, reference=paths.get("reference"), roi=paths.get("roi"),
              after=str(values["after"]) if values["after"] is not None else None, iterations=iterations,
              device=device, prior_series=str(values["prior_series"]).strip() if values["prior_series"] is not None
              else None, pretrain_on=pretrain_on)
    return row, []


def _path(value, base: Path) -> Path:
    """A row's path: absolute, relative ones to the study file's folder."""
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _pretrain_files(where: str, value, base: Path, problems: list, measurement=None):
    """pretrain_on: a list (YAML) or a ';'-separated string (CSV) of existing files, not the row's
    measurement, of its modality and dimension -> tuple of Paths."""
    if value is None:
        return None
    items = value.split(";") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in items):
        problems.append(f"{where}: pretrain_on must be a list of measurement files (CSV: separated by ';'), "
                        f"got {value!r}")
        return None
    out = []
    for item in items:
        p = _path(item.strip(), base)
        if not p.exists():
            problems.append(f"{where}: pretrain_on {p} does not exist")
        elif measurement is not None and p == measurement:
            problems.append(f"{where}: pretrain_on lists the row's own measurement (list the earlier fractions only)")
        out.append(p)
    problems += _pretrain_kinds(where, [p for p in out if p.exists()], measurement)
    return tuple(out)


def _pretrain_kinds(where: str, files: list, measurement) -> list:
    """Each pretrain_on file has the measurement's modality and dimension (read from the headers)."""
    if measurement is None or not measurement.is_file():
        return []
    from ..io.readers import header_kind

    try:
        want, kinds = header_kind(measurement), {f: header_kind(f) for f in files}
    except (InputError, OSError) as exc:
        return [f"{where}: pretrain_on: {exc}"]
    return [f"{where}: pretrain_on {f.name} is {k}, the measurement {want}" for f, k in kinds.items() if k != want]


def _check_method_inputs(where: str, spec, values: dict, paths: dict) -> list:
    problems = []
    if "measurement" in paths and paths["measurement"].is_file():
        from ..io.readers import read_measurement_header

        try:
            modality = read_measurement_header(paths["measurement"])["modality"]
        except (InputError, OSError) as exc:
            problems.append(f"{where}: measurement {paths['measurement'].name}: {exc}")
        else:
            if modality not in spec.modalities:
                problems.append(f"{where}: method {spec.name} does not reconstruct {modality} "
                                f"(it does {', '.join(spec.modalities)})")
    has_prior = values["prior"] is not None or values["after"] is not None
    if spec.uses_prior and not has_prior:
        problems.append(f"{where}: method {spec.name} needs a prior: set 'prior' (an image) or 'after' (a row id)")
    if values["prior"] is not None and values["after"] is not None:
        problems.append(f"{where}: set 'prior' or 'after', not both")
    problems += _check_prior_series(where, values["prior_series"], paths.get("prior"))
    for key in ("model", "pretrain_on"):
        if values[key] is not None and "model" not in spec.reads:
            problems.append(f"{where}: method {spec.name} takes no '{key}'")
    if values["model"] is None and values["pretrain_on"] is None and "model" in spec.reads:
        problems.append(f"{where}: method {spec.name} needs 'model' (the folder inrrecon pretrain wrote) or "
                        "'pretrain_on' (measurement files to pre-train on)")
    if values["model"] is not None and values["pretrain_on"] is not None:
        problems.append(f"{where}: set 'model' or 'pretrain_on', not both")
    return problems


def _check_prior_series(where: str, uid, prior) -> list:
    """A DICOM folder prior: its series choice is checked now (one series, or prior_series names
    one of those there), not after the rows before it have run. The slices themselves are
    checked when the row loads them."""
    if uid is not None and prior is None:
        return [f"{where}: prior_series is set but 'prior' (a DICOM folder) is not"]
    if prior is None or not prior.is_dir():
        if uid is not None and prior.exists():
            return [f"{where}: prior_series names a DICOM series, but prior {prior} is a file, not a folder"]
        return []  # no prior, or one that does not exist (reported above)
    from ..io.dicom_series import choose_series

    try:
        choose_series(prior, uid)
    except InputError as exc:
        return [f"{where}: {exc}"]
    return []


def _check_config(where: str, config, base: Path, problems: list):
    """A preset name, a file (made absolute) or an inline mapping (YAML only)."""
    if config is None or isinstance(config, dict):
        return config
    if not isinstance(config, str):
        problems.append(f"{where}: config must be a preset name, a file or a mapping, got {config!r}")
        return None
    from ..methods.presets import preset_names

    if config in preset_names():
        return config
    p = Path(config).expanduser()
    p = p if p.is_absolute() else (base / p).resolve()
    if not p.is_file():
        problems.append(f"{where}: config {config!r} is neither a preset ({', '.join(preset_names())}) nor a file")
        return None
    return str(p)


def _check_links(rows: list, all_ids: set) -> list:
    from ..worker.run import output_stem

    problems, stems = [], {}
    for r in rows:
        # a.nrrd and a.nii.gz share a.metrics.json, a.batch.json, ...: one stem, one row
        stem = output_stem(r.output)
        if stem in stems:
            problems.append(f"rows {stems[stem]} and {r.id} write the same output {stem}.* ({r.output.name})")
        stems.setdefault(stem, r.id)
    inputs = {p: r.id for r in rows for p in (r.measurement, r.prior, r.reference, r.roi) if p is not None}
    for r in rows:
        if r.output in inputs:
            problems.append(f"row {r.id}: output {r.output} is an input of row {inputs[r.output]}")
    by_id = {r.id: r for r in rows}
    for r in rows:
        if r.after is None:
            continue
        if r.after not in by_id:
            if r.after not in all_ids:  # else that row failed its own checks, reported there
                problems.append(f"row {r.id}: after {r.after!r} is not a row id")
            continue
        seen, cur = {r.id}, by_id[r.after]
        while cur is not None:
            if cur.id in seen:
                problems.append(f"row {r.id}: its 'after' chain loops back to {cur.id}")
                break
            seen.add(cur.id)
            cur = by_id.get(cur.after) if cur.after else None
    return problems


def _upstream_first(rows: list) -> list:
    """Rows ordered so that every row comes after the row it follows (stable otherwise)."""
    by_id, done, out = {r.id: r for r in rows}, set(), []

    def visit(r):
        if r.id in done:
            return
        if r.after:
            visit(by_id[r.after])
        done.add(r.id)
        out.append(r)

    for r in rows:
        visit(r)
    return out
