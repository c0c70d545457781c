"""`inrrecon bench --cases nufft`: forward, adjoint and normal of every installed NUFFT backend on
the same operators, timed in one run, with the ratio to torchkbnufft.

Cases (golden-angle radial, birdcage coil maps, 2× oversampled readout): a static 256² slice,
8 coils, 40 spokes; a dynamic 128² series of 20 frames, 8 coils, 13 spokes per frame. Each
timing is the median of repeated calls after one warm-up call (plan set-up and Toeplitz kernel
are built before the clock starts). `auto` (physics/mr_nufft.py AUTO_NUFFT) follows this table.
"""

from __future__ import annotations

import statistics
import sys
import time

NUFFT_CASES = (("static 256², 8 coils, 40 spokes", 256, 8, 40, 1),
               ("dynamic 128², 20 frames, 8 coils, 13 spokes/frame", 128, 8, 13, 20))
MIN_SECONDS = 1.0  # per timing: repeat until this much time has passed (at least 3 calls)


def _median_seconds(fn, arg) -> float:
    fn(arg)  # warm-up (caches, kernels)
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < MIN_SECONDS:
        t = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def nufft_timings(device) -> list[dict]:
    import torch

    from .physics.grid import ImageGrid
    from .physics.mr_geometry import MRGeometry
    from .physics.mr_nufft import NUFFTS, finufft_available
    from .physics.mr_operator import MROperator
    from .physics.mr_sampling import birdcage_coil_maps, golden_angle_radial

    backends = [b for b in NUFFTS if b != "auto" and (b != "finufft" or finufft_available(device))]
    rows = []
    for label, n, coils, spokes, frames in NUFFT_CASES:
        grid = ImageGrid.centred((1, n, n), (1.0, 1.0, 1.0))
        geo = MRGeometry("noncartesian", trajectory=golden_angle_radial(spokes, 2 * n, frames),
                         coil_maps=birdcage_coil_maps(coils, (n, n)))
        gen = torch.Generator().manual_seed(0)
        base = None
        for backend in backends:
            op = MROperator(geo, grid, device, nufft=backend)
            x = torch.randn(op.image_shape, generator=gen, dtype=torch.complex64).to(op.device)
            y = torch.randn(op.data_shape, generator=gen, dtype=torch.complex64).to(op.device)
            with torch.no_grad():
                row = {"case": label, "backend": backend, "forward": _median_seconds(op.forward, x),
                       "adjoint": _median_seconds(op.adjoint, y), "normal": _median_seconds(op.normal, x)}
            base = base or row
            for key in ("forward", "adjoint", "normal"):
                row[f"{key}_ratio"] = row[key] / base[key]
            rows.append(row)
            print_nufft_table([row], sys.stderr)
    return rows


def print_nufft_table(rows, stream=sys.stdout):
    print(f"{'case':<50} {'backend':<13} {'forward ms':>11} {'adjoint ms':>11} {'normal ms':>10}  "
          "ratio to torchkbnufft (fwd / adj / normal)", file=stream)
    for r in rows:
        print(f"{r['case']:<50} {r['backend']:<13} {r['forward'] * 1e3:11.1f} {r['adjoint'] * 1e3:11.1f} "
              f"{r['normal'] * 1e3:10.1f}  {r['forward_ratio']:.2f} / {r['adjoint_ratio']:.2f} / {r['normal_ratio']:.2f}",
              file=stream)
