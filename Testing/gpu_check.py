"""The GPU check, for a machine with CUDA: every CUDA test, then NeRP timings on a 256³ cone-beam
scan (20 views) with and without astra (projector) and tiny-cuda-nn (hash encoding), one table.

    python Testing/gpu_check.py [--size 256] [--steps 10] [--out gpu-check.json]
    python Testing/gpu_check.py --smoke      # CPU, 24³, torch backends only: checks the script

Timing: `--steps` embedding and as many fitting steps per combination (prior registration off,
so the steps are what is timed), seconds per step, and the hash-cone preset's 300 + 400 steps
extrapolated from them; peak GPU memory. Sized to finish in under 8 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CUDA_TESTS = ["Testing/Python/test_ct_projector.py::test_astra_backend_matches_torch",
              "Testing/Python/test_fields.py", "Testing/Python/test_worker.py"]


def run_cuda_tests() -> list:
    """(test id, outcome) for the tests that need CUDA, from pytest's own report."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", *CUDA_TESTS,
                           "-k", "astra or tcnn or tiny or cuda or gpu"], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=300)
    rows = []
    for line in done.stdout.splitlines():
        for outcome in ("PASSED", "FAILED", "SKIPPED", "ERROR"):
            if line.startswith(outcome + " "):
                rows.append((line[len(outcome) + 1:].split(" - ")[0].strip(), outcome))
    if not rows:
        rows.append(("pytest", f"exit {done.returncode}: {done.stdout.strip().splitlines()[-1:]}"))
    return rows


def _cone_case(size: int, views: int, device):
    from INRReconLib.io.phantoms import smooth_phantom_3d
    from INRReconLib.physics.grid import ImageGrid
    from INRReconLib.simulate import simulate_ct

    truth = smooth_phantom_3d((size, size, size)).astype("float32") * 0.02
    grid = ImageGrid.centred((size, size, size), (1.0, 1.0, 1.0))
    measurement = simulate_ct(truth, grid, geometry="cone", n_views=views, upsample=1, device=device)
    prior = (0.95 * truth).astype("float32")
    return measurement, prior


def time_nerp(measurement, prior, device, steps: int, projector: str, encoding: str) -> dict:
    import torch

    from INRReconLib.methods.presets import load_config
    from INRReconLib.methods.registry import reconstruct

    config = load_config({"preset": "hash-cone", "prior_registration": "none", "embed_iterations": steps,
                          "iterations": steps, "projector": projector, "field": {"backend": encoding}},
                         modality="CT", cone_3d=True)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = reconstruct(measurement, "nerp", prior=prior, config=config, device=device)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert result.config["projector"] == projector  # the backend that ran
    per_step = seconds / (2 * steps)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else float("nan")
    preset = load_config("hash-cone")
    return {"projector": projector, "encoding": encoding, "seconds": round(seconds, 2),
            "s_per_step": round(per_step, 4), "preset_estimate_s": round(per_step * (preset["embed_iterations"] +
                                                                                     preset["iterations"]), 1),
            "peak_gb": round(peak, 2), "iterations": result.iterations}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="CPU, 24³, torch backends: check the script")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args(argv)

    import torch

    from INRReconLib.fields import tcnn_available
    from INRReconLib.physics.ct_astra import astra_cuda_available

    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print("no CUDA device: nothing to check (use --smoke to try the script on the CPU)")
        return 0
    device = "cuda" if cuda else "cpu"
    size, steps = (24, 2) if args.smoke else (args.size, args.steps)
    report = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
              "astra_cuda": bool(cuda and astra_cuda_available()), "tcnn": bool(cuda and tcnn_available())}
    print(f"# GPU check: {report['device']}, torch {report['torch']}, astra CUDA {report['astra_cuda']}, "
          f"tiny-cuda-nn {report['tcnn']}")
    if cuda:
        report["tests"] = run_cuda_tests()
        print("\n| CUDA test | outcome |\n|---|---|")
        for test, outcome in report["tests"]:
            print(f"| {test} | {outcome} |")

    measurement, prior = _cone_case(size, args.views, device)
    combos = [("torch", "torch")]
    if report["astra_cuda"]:
        combos.append(("astra", "torch"))
    if report["tcnn"]:
        combos.append(("torch", "tcnn"))
    if report["astra_cuda"] and report["tcnn"]:
        combos.append(("astra", "tcnn"))
    report["timings"] = [time_nerp(measurement, prior, device, steps, p, e) for p, e in combos]
    print(f"\n| NeRP {size}³ cone, {args.views} views | projector | encoding | s/step | hash-cone (300+400) est. s "
          "| peak GPU GB |\n|---|---|---|---|---|---|")
    for row in report["timings"]:
        print(f"| {device} | {row['projector']} | {row['encoding']} | {row['s_per_step']} | "
              f"{row['preset_estimate_s']} | {row['peak_gb']} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
