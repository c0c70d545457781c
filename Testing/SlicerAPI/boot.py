"""Load the INRRecon module file the way Slicer does, on top of Slicer's own pure-Python code.

Slicer's GUI layer is not on PyPI, so nothing of it is in this repository: point
`INRRECON_SLICER_SOURCE` at a Slicer source tree (a checkout of github.com/Slicer/Slicer at the
tag to check, e.g. v5.8.1 or v5.10.0, or just its `Base/Python/slicer` folder). Its
`parameterNodeWrapper`, `ScriptedLoadableModule` and `i18n` then run unchanged against
`INRRecon/INRRecon.py`, over slicer-core's MRML and `slicer.util` and the Qt/CTK stand-ins of
`stubs/` (what PythonQt would provide).

    boot() -> (slicer, INRRecon)   in a fresh process; it replaces `qt`, `ctk` and `slicer` state
"""

import importlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SOURCE_VARIABLE = "INRRECON_SLICER_SOURCE"


def slicer_python_dir(source=None):
    """Slicer's `Base/Python/slicer` folder inside `source` (or $INRRECON_SLICER_SOURCE), or None."""
    source = source or os.environ.get(SOURCE_VARIABLE)
    if not source:
        return None
    root = Path(source)
    for candidate in (root / "Base" / "Python" / "slicer", root):
        if (candidate / "parameterNodeWrapper" / "wrapper.py").is_file():
            return candidate
    raise FileNotFoundError(f"{SOURCE_VARIABLE}={source} holds no Base/Python/slicer/parameterNodeWrapper: "
                            "give the root of a Slicer source checkout.")


SHIMS = HERE / "shims" / "slicer"


def boot(source=None, shims=False):
    """Import Slicer's real Python layer and the module; returns (slicer, INRRecon module).

    shims=True imports the module over import-only stand-ins instead (no Slicer source needed):
    enough to read its declarations, such as the parameter node's annotations, and nothing more."""
    slicer_dir = SHIMS if shims else slicer_python_dir(source)
    if slicer_dir is None:
        raise RuntimeError(f"set {SOURCE_VARIABLE} to a Slicer source checkout")
    sys.path[:0] = [str(HERE / "stubs")]
    import ctk  # noqa: F401 (the stand-ins must be the ones imported by Slicer's code)
    import qt  # noqa: F401
    import slicer

    # slicer-core's `slicer` is a namespace-style package: Slicer's own modules join it as a
    # second folder, so `slicer.parameterNodeWrapper` is Slicer's, unchanged.
    slicer.__path__.append(str(slicer_dir))
    import slicer_gui

    slicer_gui.install(slicer, slicer.vtkMRMLScene())
    _register_node_classes(slicer.mrmlScene, slicer)
    for name in ("i18n", "parameterNodeWrapper", "ScriptedLoadableModule"):
        importlib.import_module(f"slicer.{name}")
    sys.path.insert(0, str(REPO / "INRRecon"))
    sys.path.insert(0, str(REPO))
    import INRRecon

    # what Slicer's module manager records for a scripted module (resourcePath() reads it)
    slicer.modules.inrrecon = type("module", (), {"path": INRRecon.__file__})()
    # Slicer registers a module file's <Module>FileReader class as a scripted reader
    slicer.app.coreIOManager().registerReader(INRRecon.INRReconFileReader(None).fileType(), INRRecon.INRReconFileReader)
    return slicer, INRRecon


def _register_node_classes(scene, slicer):
    # In Slicer the Sequences module registers these; a bare MRML scene needs them by hand.
    for name in ("vtkMRMLSequenceNode", "vtkMRMLSequenceBrowserNode"):
        cls = getattr(slicer, name, None)
        if cls is not None:
            scene.RegisterNodeClass(cls())


def slicer_version(source=None):
    """The version string of the Slicer tree (from its CMakeLists), for the report."""
    slicer_dir = slicer_python_dir(source)
    cmake = slicer_dir.parents[2] / "CMakeLists.txt" if slicer_dir is not None else None
    if cmake is None or not cmake.is_file():
        return "unknown"
    parts = {}
    for line in cmake.read_text(errors="replace").splitlines():
        for key in ("Slicer_VERSION_MAJOR", "Slicer_VERSION_MINOR", "Slicer_VERSION_PATCH"):
            if line.strip().startswith(f"set({key} "):
                parts[key] = line.split()[1].rstrip(")").strip('"')
    return ".".join(parts.get(k, "?") for k in ("Slicer_VERSION_MAJOR", "Slicer_VERSION_MINOR",
                                                "Slicer_VERSION_PATCH"))
