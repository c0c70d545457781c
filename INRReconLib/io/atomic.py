"""Atomic file writes: write under a temporary name in the same folder, then rename.

A reader (the Slicer module polling previews, a user opening a report) never sees half a file,
and a crash leaves the previous version intact. Every text, JSON, NumPy and figure file the
library writes goes through `atomic_target`; HDF5 and SimpleITK writers do the same in their modules.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_target(path):
    """Yields a temporary path next to `path` (same suffix, so writers that pick the format from
    the extension still work); on success it replaces `path`, on error it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        _replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path, text: str) -> Path:
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path, obj, **dump_kw) -> Path:
    return atomic_write_text(path, json.dumps(obj, **{"indent": 2, **dump_kw}) + "\n")


def atomic_save_npy(path, array: np.ndarray) -> Path:
    """np.save without pickles, atomically."""
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
    return Path(path)


def _replace(src: Path, dst: Path, attempts: int = 20) -> None:
    # On Windows os.replace fails while another process has `dst` open (a reader loading the
    # previous preview); that lasts milliseconds, so retry briefly instead of failing the run.
    for n in range(attempts):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if n == attempts - 1:
                raise
            time.sleep(0.01)
