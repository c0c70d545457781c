"""The module's .ui loads in Qt (PySide6, offscreen) and holds every widget the module code uses,
and every parameter of the ParameterNode is bound to a widget through SlicerParameterName."""

import ast
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UI_FILE = ROOT / "INRRecon" / "Resources" / "UI" / "INRRecon.ui"
MODULE_FILE = ROOT / "INRRecon" / "INRRecon.py"


def ui_names_used_by_module() -> set:
    return set(re.findall(r"self\.ui\.([A-Za-z_][A-Za-z0-9_]*)", MODULE_FILE.read_text(encoding="utf-8")))


def parameter_names() -> set:
    """Annotated attributes of the @parameterNodeWrapper class, read from the source."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "INRReconParameterNode")
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_ui_xml_names_and_bindings():
    root = ET.parse(UI_FILE).getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    missing = ui_names_used_by_module() - set(widgets)
    assert not missing, f"widgets used in INRRecon.py but absent from the .ui: {sorted(missing)}"
    bound = {}
    for name, w in widgets.items():
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                bound[p.find("string").text] = name
    params = parameter_names()
    assert params - set(bound) == set(), f"parameters without a widget: {sorted(params - set(bound))}"
    assert set(bound) - params == set(), f"widgets bound to unknown parameters: {sorted(set(bound) - params)}"
    # The connectors need these exact widget types (parameterNodeWrapper's guiConnectors).
    assert widgets[bound["learningRate"]].get("class") == "QDoubleSpinBox"
    assert widgets[bound["measurementPath"]].get("class") == "ctkPathLineEdit"
    assert widgets[bound["method"]].get("class") == "QComboBox"
    assert widgets[bound["seriesPaths"]].get("class") == "QTextEdit"


def test_ui_loads_in_qt_offscreen():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    pytest.importorskip("PySide6", reason="PySide6 (pip install PySide6-Essentials) is not installed")
    from PySide6.QtCore import QFile, QIODevice
    from PySide6.QtWidgets import QApplication, QWidget
    from PySide6.QtUiTools import QUiLoader

    app = QApplication.instance() or QApplication([])
    loader = QUiLoader()
    f = QFile(str(UI_FILE))
    assert f.open(QIODevice.ReadOnly)
    widget = loader.load(f)
    f.close()
    assert widget is not None, loader.errorString()
    # Slicer's classes (qMRMLNodeComboBox, ctk*) are not in PySide6: QUiLoader builds them as their
    # declared base (QWidget) with the same object names, which is what this checks.
    found = {w.objectName() for w in widget.findChildren(QWidget)}
    missing = ui_names_used_by_module() - found
    assert not missing, f"not created by Qt: {sorted(missing)}"
    assert widget.findChild(QWidget, "applyButton").text() == "Apply"
    widget.deleteLater()
    app.processEvents()


_CHOICES_SCRIPT = """
import json, sys, typing
sys.path.insert(0, sys.argv[1])
import boot
slicer, INRRecon = boot.boot(shims=True)
hints = typing.get_type_hints(INRRecon.INRReconParameterNode, include_extras=True)
choices = {}
for name, hint in hints.items():
    for meta in getattr(hint, "__metadata__", ()):
        if type(meta).__name__ == "Choice":
            choices[name] = list(meta.args[0])
print(json.dumps({"choices": choices, "field_methods": list(INRRecon.FIELD_METHODS),
                  "setting_keys": INRRecon.SETTING_KEYS}))
"""


def test_module_choices_equal_the_library():
    """The module's method, preset, loss and alignment lists are the registry's and the options',
    equal (not a subset), as the parameter node declares them; its settings name real config keys."""
    import subprocess
    import sys

    pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is not installed")
    from INRReconLib.methods import options
    from INRReconLib.methods.presets import preset_names
    from INRReconLib.methods.registry import METHODS

    harness = str(MODULE_FILE.parents[1] / "Testing" / "SlicerAPI")
    done = subprocess.run([sys.executable, "-c", _CHOICES_SCRIPT, harness], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    choices = answer["choices"]
    assert choices["method"] == list(METHODS)
    assert answer["field_methods"] == [n for n, spec in METHODS.items() if spec.field]
    assert choices["preset"] == preset_names()
    assert choices["loss"] == ["preset", *options.LOSSES]
    assert choices["priorRegistration"] == ["preset", *options.PRIOR_REGISTRATIONS]
    assert choices["priorMismatch"] == ["preset", *next(o.choices for o in options.INR if o.key == "prior_mismatch")]
    inr_keys = {o.key for o in options.INR}
    assert set(answer["setting_keys"].values()) <= inr_keys


def test_build_config_sentinels():
    from INRReconLib.methods.presets import load_config
    from INRReconLib.scene.settings import build_config

    preset = load_config("hash-ct")
    kept = load_config(build_config("hash-ct"))
    assert kept["tv_weight"] == preset["tv_weight"] and kept["coarse_to_fine"] == preset["coarse_to_fine"]
    off = load_config(build_config("hash-ct", tv_weight=0.0, coarse_to_fine=0.0, lr=0.01, use_admm=True, admm_rho=0.5))
    assert off["tv_weight"] == 0.0 and off["coarse_to_fine"] == 0.0 and off["lr"] == 0.01
    assert off["optimizer"] == "admm" and off["admm"]["rho"] == 0.5
    assert kept["prior_registration"] == preset["prior_registration"] == "auto"
    assert load_config(build_config("hash-ct", prior_registration="deformable"))["prior_registration"] == "deformable"
    assert kept["prior_mismatch"] == "error" and load_config(build_config("hash-ct", prior_mismatch="warn"))["prior_mismatch"] == "warn"
    assert kept["prior_slice_search_mm"] == preset["prior_slice_search_mm"] == 10
    for mm in (0.0, 4.5):
        assert load_config(build_config("hash-ct", prior_slice_search_mm=mm))["prior_slice_search_mm"] == mm


def test_preset_follows_the_chosen_measurement(tmp_path):
    """Choosing a measurement file switches between the fast presets to the one for its kind of
    data; a paper preset or an unreadable file leaves the choice alone."""
    from inr_cases import sparse_cone_case, sparse_ct_case

    from INRReconLib.io.measurement import write_measurement
    from INRReconLib.scene.settings import FAST_PRESETS, preset_for_measurement

    from INRReconLib.methods.presets import preset_names

    assert set(FAST_PRESETS) <= set(preset_names())
    cone = write_measurement(sparse_cone_case()[0], tmp_path / "cone.h5")
    slice_2d = write_measurement(sparse_ct_case()[0], tmp_path / "slice.h5")
    assert preset_for_measurement(cone, "hash-ct") == "hash-cone"
    assert preset_for_measurement(slice_2d, "hash-cone") == "hash-ct"
    assert preset_for_measurement(cone, "nerp-ct") == "nerp-ct"
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    assert preset_for_measurement(tmp_path / "broken.h5", "hash-cone") == "hash-cone"


def test_the_panel_picture_is_drawn_and_current(tmp_path):
    """README shows docs/screenshots/module_panel.png: drawn from the current .ui and module file
    (re-run `python Testing/render_panel.py` after changing either)."""
    pytest.importorskip("PySide6", reason="PySide6 (pip install PySide6-Essentials) is not installed")
    import sys

    sys.path.insert(0, str(ROOT / "Testing"))
    import render_panel

    out = render_panel.render(tmp_path / "panel.png")
    assert out.stat().st_size > 10000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    committed = (ROOT / "docs" / "screenshots" / "module_panel.sha").read_text().strip()
    assert committed == render_panel.source_digest(), "the panel picture is stale: python Testing/render_panel.py"
