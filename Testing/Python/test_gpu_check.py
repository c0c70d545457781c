"""The prepared GPU check (Testing/gpu_check.py) runs end to end: --smoke does it on the CPU at
24³ with the torch backends, so the script cannot rot between the sessions that get a GPU."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_check  # noqa: E402


def test_gpu_check_smoke_prints_the_timing_table(tmp_path, capsys):
    import json

    assert gpu_check.main(["--smoke", "--out", str(tmp_path / "check.json")]) == 0
    out = capsys.readouterr().out
    assert "| cpu | torch | torch |" in out
    report = json.loads((tmp_path / "check.json").read_text())
    row = report["timings"][0]
    assert row["iterations"] == 2 and row["s_per_step"] > 0 and row["preset_estimate_s"] > row["s_per_step"]
    import INRReconLib.physics.ct_projector as cp

    assert cp.CTProjector.__init__.__name__ == "__init__"  # the projector patch was undone
