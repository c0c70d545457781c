"""The Slicer module as Slicer and the Extensions Index see it, checked here without Slicer:

- the parameter node's declared types are ones Slicer's parameterNodeWrapper can store (node and
  node-union parameters must allow None, the default it writes);
- Slicer's own Python layer runs against the module (Testing/SlicerAPI) when INRRECON_SLICER_SOURCE
  names a Slicer source checkout (e.g. v5.8.1, v5.10.0);
- the extension description files pass the Extensions Index's checks that can run offline;
- CMake installs every file of INRReconLib with the module;
- the worker's packages: astra only with CUDA and not on macOS, and nothing that nothing imports.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLICER_API = ROOT / "Testing" / "SlicerAPI"


# --- parameter node types ------------------------------------------------------------------------

def parameter_type_problems(hints: dict, node_base) -> list:
    """What Slicer's parameterNodeWrapper cannot store: a node or a union of nodes without None
    (its default is None, which such a serializer refuses), or a type it has no serializer for."""
    problems = []
    simple = (bool, int, float, str, pathlib.Path)

    def is_node(t):
        return isinstance(t, type) and issubclass(t, node_base)

    for name, hint in hints.items():
        t = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        if is_node(t):
            problems.append(f"{name}: a node type must allow None: Optional[{t.__name__}]")
        elif typing.get_origin(t) is typing.Union:
            args = typing.get_args(t)
            if type(None) not in args:
                problems.append(f"{name}: a Union must include None (Optional[Union[...]])")
            if not all(a is type(None) or is_node(a) or a in simple for a in args):
                problems.append(f"{name}: {t} mixes types the wrapper cannot tell apart")
        elif t not in simple:
            problems.append(f"{name}: {t} has no serializer in Slicer's parameterNodeWrapper")
    return problems


_HINTS_SCRIPT = """
import json, sys, typing
sys.path.insert(0, sys.argv[1])
import boot
slicer, INRRecon = boot.boot(shims=True)
sys.path.insert(0, sys.argv[2])
from test_slicer_module import parameter_type_problems
hints = typing.get_type_hints(INRRecon.INRReconParameterNode, include_extras=True)
print(json.dumps({"names": sorted(hints), "problems": parameter_type_problems(hints, slicer.vtkMRMLNode)}))
"""


def test_parameter_node_types_are_storable_by_slicer():
    pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is not installed")
    done = subprocess.run([sys.executable, "-c", _HINTS_SCRIPT, str(SLICER_API), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["problems"] == []
    assert {"priorVolume", "tumourSegmentation", "measurementPath"} <= set(answer["names"])
    assert "pythonExecutable" not in answer["names"]  # a scene must not choose the executable


def test_the_type_check_finds_what_slicer_refuses():
    slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is not installed")
    Seg, Lab, Vol = slicer.vtkMRMLSegmentationNode, slicer.vtkMRMLLabelMapVolumeNode, slicer.vtkMRMLScalarVolumeNode
    bad = {"tumour": typing.Union[Seg, Lab], "prior": Vol, "weights": list}
    problems = parameter_type_problems(bad, slicer.vtkMRMLNode)
    assert [p.split(":")[0] for p in problems] == ["tumour", "prior", "weights"]
    good = {"tumour": typing.Optional[typing.Union[Seg, Lab]], "prior": typing.Optional[Vol],
            "n": typing.Annotated[int, "range"], "path": str}
    assert parameter_type_problems(good, slicer.vtkMRMLNode) == []


def test_slicer_own_python_layer_runs_the_module():
    """Slicer's parameterNodeWrapper, ScriptedLoadableModule and i18n, unchanged, against the module
    and its .ui (Testing/SlicerAPI). Slicer's code is not on PyPI and is not copied here: point
    INRRECON_SLICER_SOURCE at a checkout (github.com/Slicer/Slicer, tag v5.8.1 or v5.10.0)."""
    source = os.environ.get("INRRECON_SLICER_SOURCE")
    if not source:
        pytest.skip("INRRECON_SLICER_SOURCE is not set (a Slicer source checkout, e.g. tag v5.8.1)")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SLICER_API)],
                          capture_output=True, text=True, timeout=600, cwd=str(ROOT))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


# --- extension description files ---------------------------------------------------------------

def _cmake(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _cmake_set(text: str, key: str) -> str:
    match = re.search(rf'set\s*\(\s*{key}\s+"?([^")]*)"?\s*\)', text)
    assert match, f"{key} is not set in CMakeLists.txt"
    return match.group(1).strip()


# Facts of the Extensions Index (Slicer's slicer-extension-catalog-entry-schema v1.0.1 and
# scripts/check_description_files.py): required and allowed keys, their types, the categories.
_SCHEMA_KEYS = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}
_REQUIRED = ("$schema", "category", "scm_url")


def test_the_extension_description_passes_the_index_checks():
    path = ROOT / "INRRecon.json"
    raw = path.read_bytes()
    assert b"\r" not in raw, "the index wants LF-only line endings"
    meta = json.loads(raw)
    assert set(meta) <= set(_SCHEMA_KEYS), f"keys the schema does not allow: {set(meta) - set(_SCHEMA_KEYS)}"
    for key in _REQUIRED:
        assert meta.get(key), f"{key} is required"
    for key, value in meta.items():
        assert isinstance(value, _SCHEMA_KEYS[key]), f"{key} must be {_SCHEMA_KEYS[key].__name__}"
    assert meta["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/")
    assert 1 <= meta.get("tier", 1) <= 5 and meta.get("scm_type", "git") in ("git", "local")
    assert meta["category"] == "Tomographic Reconstruction"  # one of the index's accepted categories

    cmake = _cmake(ROOT / "CMakeLists.txt")
    project = re.search(r"project\s*\(\s*([^\s)]+)", cmake, re.IGNORECASE).group(1)
    assert project == path.stem, "the CMake project name must be the description file's name"
    assert meta["category"] == _cmake_set(cmake, "EXTENSION_CATEGORY")
    depends = _cmake_set(cmake, "EXTENSION_DEPENDS").split()
    assert sorted(meta.get("build_dependencies", [])) == sorted(d for d in depends if d != "NA")

    url = meta["scm_url"]
    assert url.startswith("https://") and "OWNER" not in url and "://" in url
    repo_name = Path(url.rstrip("/")).stem
    assert repo_name.startswith("Slicer"), "the index wants the repository name to start with 'Slicer'"
    homepage = _cmake_set(cmake, "EXTENSION_HOMEPAGE")
    assert url.removesuffix(".git") == homepage.rstrip("/")

    # icon and screenshots: raw URLs of files that exist in this repository, on the branch named
    raw_prefix = homepage.replace("https://github.com/", "https://raw.githubusercontent.com/") + \
        f"/{meta.get('scm_revision', 'main')}/"
    urls = [_cmake_set(cmake, "EXTENSION_ICONURL")] + _cmake_set(cmake, "EXTENSION_SCREENSHOTURLS").split()
    for image_url in urls:
        assert image_url.startswith(raw_prefix), image_url
        assert (ROOT / image_url[len(raw_prefix):]).is_file(), f"{image_url}: no such file in the repository"
    assert any((ROOT / name).is_file() for name in ("LICENSE", "LICENSE.txt", "COPYING")), "no licence file"


def test_cmake_installs_every_library_file():
    """What INRRecon/CMakeLists.txt globs from INRReconLib is what the package holds (a preset or
    data file the globs miss would be absent from the installed extension)."""
    cmake = _cmake(ROOT / "INRRecon" / "CMakeLists.txt")
    patterns = re.findall(r"\$\{_lib_source_dir\}/INRReconLib/\*(\.[A-Za-z0-9]+)", cmake)
    assert ".py" in patterns and ".json" in patterns
    files = [p for p in (ROOT / "INRReconLib").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")]
    missed = [str(p.relative_to(ROOT)) for p in files if p.suffix not in patterns]
    assert missed == [], f"INRReconLib files CMake would not install: {missed}"
    # and pip: pyproject's package-data covers every file that is not Python
    import fnmatch

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    globs = re.findall(r'"([^"]+)"', re.search(r"INRReconLib = \[([^\]]*)\]", pyproject).group(1))
    data = [p.relative_to(ROOT / "INRReconLib").as_posix() for p in files if p.suffix != ".py"]
    assert [d for d in data if not any(fnmatch.fnmatch(d, g) for g in globs)] == []


# --- the worker's packages ----------------------------------------------------------------------

def test_astra_only_with_cuda_and_never_on_macos():
    from INRReconLib.worker.packages import REQUIRED, worker_packages

    assert "astra-toolbox" in worker_packages("linux", cuda=True)
    assert "astra-toolbox" in worker_packages("win32", cuda=True)
    assert "astra-toolbox" not in worker_packages("linux", cuda=False)
    assert "astra-toolbox" not in worker_packages("darwin", cuda=True)
    assert not {"scipy", "numpy", "SimpleITK", "torch"} & set(REQUIRED)  # Slicer (and SlicerPyTorch) have them
    assert "safetensors" in REQUIRED  # Slicer 5.8 / 5.10 do not ship it (DisINR models)


def test_every_worker_package_is_imported_by_the_library():
    from INRReconLib.worker.packages import CUDA_ONLY, REQUIRED, import_name

    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "INRReconLib").rglob("*.py"))
    for package in REQUIRED + CUDA_ONLY:
        name = import_name(package)
        assert re.search(rf"^\s*(import|from)\s+{name}\b", source, re.MULTILINE), f"nothing imports {package}"


def test_packages_of_another_interpreter_are_asked_by_running_it(tmp_path):
    from INRReconLib.worker.packages import missing_in

    assert missing_in(sys.executable, ["json", "no_such_package_xyz", "PyYAML"]) == ["no_such_package_xyz"]
    with pytest.raises(RuntimeError, match="does not run"):
        missing_in(str(tmp_path / "no-python"), ["json"])
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    broken.chmod(0o755)
    if os.name != "nt":
        with pytest.raises(RuntimeError, match="cannot start"):
            missing_in(str(broken), ["json"])
