"""Draw the module panel for the README: the .ui rendered offscreen with PySide6 (Qt), Slicer's
own widget classes drawn as labelled placeholders (PySide6 has no qMRML or CTK widgets), combo
boxes filled with the choices the module offers.

    python Testing/render_panel.py [--out docs/screenshots/module_panel.png]

Needs PySide6 (pip install PySide6-Essentials; in the [test] extra). Run it after changing the
.ui or the module's choices; Testing/Python/test_ui.py checks that the picture is current.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI_FILE = ROOT / "INRRecon" / "Resources" / "UI" / "INRRecon.ui"
MODULE_FILE = ROOT / "INRRecon" / "INRRecon.py"
DEFAULT_OUT = ROOT / "docs" / "screenshots" / "module_panel.png"
# The combo boxes the module fills from its tuples (through the parameter node's Choice).
CHOICES = {"methodComboBox": "METHODS", "presetComboBox": "PRESETS", "lossComboBox": "LOSSES",
           "priorRegistrationComboBox": "PRIOR_ALIGNMENTS", "priorMismatchComboBox": "PRIOR_MISMATCH",
           "deviceComboBox": "DEVICES"}
# Slicer classes -> (Qt stand-in, placeholder text)
PLACEHOLDERS = {"qMRMLNodeComboBox": "node selector", "ctkPathLineEdit": "file path"}


def source_digest() -> str:
    """What the picture shows: the .ui, the module's choices and this script. Their digest is
    written next to the picture, so a test can tell when it is stale."""
    h = hashlib.sha256()
    for path in (UI_FILE, Path(__file__)):
        h.update(path.read_bytes().replace(b"\r\n", b"\n"))  # the same digest on a CRLF checkout
    tuples = _module_tuples()
    h.update(repr([tuples[name] for name in sorted(set(CHOICES.values()))]).encode())
    return h.hexdigest()[:16]


_TUPLES_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import boot
_, module = boot.boot(shims=True)
print(json.dumps({name: list(getattr(module, name)) for name in sys.argv[2:]}))
"""


def _module_tuples() -> dict:
    """The module's choice tuples as the module computes them (from the library's registry):
    the module imported over the import-only Slicer shims, in a subprocess (needs slicer-core)."""
    names = sorted(set(CHOICES.values()))
    done = subprocess.run([sys.executable, "-c", _TUPLES_SCRIPT, str(ROOT / "Testing" / "SlicerAPI"), *names],
                          capture_output=True, text=True, timeout=300, check=True)
    return {k: tuple(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def render(out: Path = DEFAULT_OUT, width: int = 460) -> Path:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QFile, QIODevice
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QComboBox, QGroupBox, QLineEdit, QVBoxLayout, QWidget

    class Loader(QUiLoader):
        def createWidget(self, class_name, parent=None, name=""):
            if class_name == "ctkCollapsibleButton":
                widget = QGroupBox(parent)
            elif class_name == "qMRMLNodeComboBox":
                widget = QComboBox(parent)
            elif class_name == "ctkPathLineEdit":
                widget = QLineEdit(parent)
            elif class_name == "qMRMLWidget":
                widget = QWidget(parent)
            else:
                return super().createWidget(class_name, parent, name)
            widget.setObjectName(name)
            widget.setProperty("slicerClass", class_name)
            return widget

    tuples = _module_tuples()
    app = QApplication.instance() or QApplication([])
    f = QFile(str(UI_FILE))
    if not f.open(QIODevice.ReadOnly):
        raise OSError(f"cannot read {UI_FILE}")
    panel = Loader().load(f)
    f.close()
    for box in panel.findChildren(QGroupBox):
        box.setTitle(box.property("text") or box.objectName())  # ctkCollapsibleButton's text
    for combo in panel.findChildren(QComboBox):
        if combo.objectName() in CHOICES:
            combo.addItems(list(tuples[CHOICES[combo.objectName()]]))
        elif combo.property("slicerClass") == "qMRMLNodeComboBox":
            types = combo.property("nodeTypes") or []
            combo.addItem(f"[{PLACEHOLDERS['qMRMLNodeComboBox']}: {', '.join(types) or 'node'}]")
    for edit in panel.findChildren(QLineEdit):
        if edit.property("slicerClass") == "ctkPathLineEdit":
            edit.setPlaceholderText(f"[{PLACEHOLDERS['ctkPathLineEdit']}]")
    host = QWidget()
    QVBoxLayout(host).addWidget(panel)
    host.resize(width, host.sizeHint().height())
    host.show()
    app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".tmp-" + out.name)
    if not host.grab().save(str(tmp), "PNG"):
        raise OSError(f"could not write {tmp}")
    os.replace(tmp, out)
    out.with_suffix(".sha").write_text(source_digest() + "\n", encoding="utf-8")
    host.deleteLater()
    app.processEvents()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    print(render(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
