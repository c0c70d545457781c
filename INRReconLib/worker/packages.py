"""Which Python packages the worker needs, and whether an interpreter has them.

Slicer's Python already has numpy, scipy and SimpleITK, and torch comes from the PyTorch
extension; the worker needs a few more. astra-toolbox is only worth its download (about 200 MB
of NVIDIA libraries) where a CUDA GPU can use it, and has no macOS wheel; everything else works
without it (the torch projector).

A custom interpreter (a conda environment with CUDA torch, say) is asked by running it: its
packages are not the ones Slicer's Python can see.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

REQUIRED = ("h5py", "torchkbnufft", "PyYAML", "safetensors")  # safetensors: DisINR models
CUDA_ONLY = ("astra-toolbox",)
# What a custom interpreter needs besides REQUIRED: Slicer's own Python has these already.
FOREIGN_PYTHON_PACKAGES = ("torch", "numpy", "scipy", "SimpleITK")
# With a custom worker interpreter, Slicer's Python still reads measurement headers (the file
# reader, the preset choice, the session).
SLICER_SIDE_PACKAGES = ("h5py",)
IMPORT_NAMES = {"PyYAML": "yaml", "astra-toolbox": "astra"}


def import_name(package: str) -> str:
    return IMPORT_NAMES.get(package, package)


def cuda_driver_present() -> bool:
    """An NVIDIA driver is installed (without importing torch): nvidia-smi or the Linux driver file."""
    return shutil.which("nvidia-smi") is not None or os.path.exists("/proc/driver/nvidia/version")


def worker_packages(platform: str | None = None, cuda: bool | None = None) -> tuple:
    """The pip names the worker needs besides torch: astra-toolbox only with CUDA and not on macOS."""
    platform = sys.platform if platform is None else platform
    cuda = cuda_driver_present() if cuda is None else cuda
    extra = CUDA_ONLY if cuda and platform != "darwin" else ()
    return REQUIRED + extra


def missing_here(packages) -> list:
    """The packages this interpreter cannot import (found by name, nothing is imported)."""
    return [p for p in packages if importlib.util.find_spec(import_name(p)) is None]


_PROBE = ("import importlib.util, json, sys\n"
          "print(json.dumps([n for n in sys.argv[1:] if importlib.util.find_spec(n) is None]))\n")


def missing_in(python: str, packages, env: dict | None = None, timeout_s: float = 120.0) -> list:
    """The packages (pip names) that `python` cannot import, asked by running it with `env`.

    Raises RuntimeError naming the interpreter when it does not run at all."""
    names = {import_name(p): p for p in packages}
    command = [str(python), "-c", _PROBE, *names]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"The Python for the worker ({python}) does not run: {exc}. Choose an existing "
                           "python executable, or clear the setting to use Slicer's own.") from exc
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise RuntimeError(f"The Python for the worker ({python}) failed to start: {tail[0]}. Choose a working "
                           "python executable, or clear the setting to use Slicer's own.")
    try:
        return [names[n] for n in json.loads(done.stdout.strip().splitlines()[-1])]
    except (ValueError, IndexError, KeyError) as exc:
        raise RuntimeError(f"The Python for the worker ({python}) answered {done.stdout[-200:]!r}, "
                           "not a package list.") from exc
