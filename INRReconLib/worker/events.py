"""The worker protocol's events: building them, writing them as JSON lines, reading them back.

One event is one JSON object on one line of the worker's stdout; its `event` key names the kind
(EVENT_KINDS). Everything here is plain Python + NumPy, so a reader (the Slicer logic, another
tool) needs neither torch nor the worker's heavy imports.
"""

from __future__ import annotations

import json
import math
import traceback
from pathlib import Path
from typing import Optional

import numpy as np

PROTOCOL_VERSION = 1
EVENT_KINDS = ("started", "progress", "preview", "result", "error")
FINAL_KINDS = ("result", "error")
ERROR_KINDS = ("bad-input", "out-of-memory", "no-gpu", "internal", "worker-died")

# Exit status of `python -m INRReconLib.worker` for each way a job ends.
EXIT_CODES = {"result": 0, "internal": 1, "bad-input": 2, "no-gpu": 3, "out-of-memory": 4}

OUT_OF_MEMORY_FIX = ("Reduce what has to fit in memory: a smaller image grid (crop the volume or use a "
                     "coarser spacing), fewer rays/points per batch or a smaller network or hash table in "
                     "the config; or run on the CPU (device 'cpu'), which is slower but has more memory.")


def to_jsonable(value):
    """`value` with NumPy scalars/arrays, paths and tuples turned into JSON types.

    NaN and infinities become None: the protocol is strict JSON, which has no such numbers."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, complex):
        return {"real": to_jsonable(value.real), "imag": to_jsonable(value.imag)}
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str):
        return value
    return str(value)


def encode_event(event: dict) -> str:
    """One protocol line (without the newline). Raises ValueError when `event` has no kind."""
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise ValueError(f"an event must be a dict with a string 'event' key, got {event!r}")
    return json.dumps(to_jsonable(event), allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def parse_event_line(line) -> Optional[dict]:
    """The event on one stdout line, or None when the line is not one (blank, not JSON, not an
    object, no string `event` key). Never raises: a reader must survive any garbage."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    if not isinstance(line, str):
        return None
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    return event


def error_event(kind: str, message: str, detail: str = "", **fields) -> dict:
    """kind: one of ERROR_KINDS; message: for a person; detail: for the log (traceback)."""
    return {"event": "error", "kind": kind, "message": message, "detail": detail, **fields}


def error_from_exception(exc: BaseException) -> dict:
    """Classify an exception into the protocol's error kinds."""
    from ..errors import DeviceError, InputError

    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, InputError):
        return error_event("bad-input", str(exc), detail, field=exc.field)
    if isinstance(exc, DeviceError):
        kind = exc.kind if exc.kind in ERROR_KINDS else "internal"
        message = str(exc)
        if kind == "out-of-memory" and "Reduce" not in message:
            message = f"{message} {OUT_OF_MEMORY_FIX}"
        return error_event(kind, message, detail)
    if _is_out_of_memory(exc):
        where = "GPU" if "cuda" in f"{type(exc).__name__} {exc}".lower() else "computer"
        return error_event("out-of-memory", f"The {where} ran out of memory. {OUT_OF_MEMORY_FIX}", detail)
    return error_event("internal", f"Internal error ({type(exc).__name__}: {exc}). The worker log has the "
                                   "details; please report it with the log attached.", detail)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    # torch.cuda.OutOfMemoryError (torch >= 1.13) without importing torch here; older torch and the
    # CPU allocator raise a RuntimeError whose message says so.
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def exit_code_for(event: dict) -> int:
    if event.get("event") == "result":
        return 0
    return EXIT_CODES.get(event.get("kind"), 1)


# --- preview arrays ------------------------------------------------------------------------

def preview_payload(volume_zyx: np.ndarray, mode: str = "slices") -> tuple[np.ndarray, dict]:
    """The small array a preview event points to, and the event fields that describe it.

    volume_zyx: real image [nz, ny, nx] in display units.
    2D (nz == 1): the image itself [ny, nx], kind "axial".
    3D, mode "slices": the central slice along each index axis, packed into one float32 array
      [3, H, W] (H, W the largest of them, the rest NaN); `slices` in the event gives each one's
      name, axis, index and shape, so `unpack_preview` can cut them out again. The names assume
      the grid axes are the patient axes (identity-like direction); `axis` is exact.
    3D, mode "volume": the whole image [nz, ny, nx], kind "volume".
    """
    vol = np.asarray(volume_zyx, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"preview needs an image [nz, ny, nx], got shape {vol.shape}")
    nz, ny, nx = vol.shape
    if nz == 1:
        return np.ascontiguousarray(vol[0]), {"kind": "axial", "shape": [ny, nx]}
    if mode == "volume":
        return np.ascontiguousarray(vol), {"kind": "volume", "shape": [nz, ny, nx]}
    k, j, i = nz // 2, ny // 2, nx // 2
    planes = [("axial", 0, k, vol[k]), ("coronal", 1, j, vol[:, j, :]), ("sagittal", 2, i, vol[:, :, i])]
    height = max(p[3].shape[0] for p in planes)
    width = max(p[3].shape[1] for p in planes)
    packed = np.full((3, height, width), np.nan, dtype=np.float32)
    info = []
    for n, (name, axis, index, plane) in enumerate(planes):
        packed[n, :plane.shape[0], :plane.shape[1]] = plane
        info.append({"name": name, "axis": axis, "index": int(index), "shape": list(plane.shape)})
    return packed, {"kind": "slices", "shape": list(packed.shape), "slices": info}


def unpack_preview(array: np.ndarray, event: dict) -> dict:
    """name -> 2D array for a preview event ("axial" only for 2D, "volume" -> the 3D array)."""
    kind = event.get("kind")
    if kind == "slices":
        return {s["name"]: array[n, :s["shape"][0], :s["shape"][1]] for n, s in enumerate(event["slices"])}
    return {kind or "image": array}


