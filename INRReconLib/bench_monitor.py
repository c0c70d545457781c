"""What the benchmarks watch while a method runs: its PSNR against the truth, step by step."""

from __future__ import annotations

import numpy as np

from .methods.metrics import psnr, scale_to_reference
from .methods.monitor import Monitor

# Stages before the data fit (NeRP's): their images are not the reconstruction's progress.
SETUP_STAGES = ("prior-registration", "prior-change", "prior-embedding")


class CurveMonitor(Monitor):
    """Samples the PSNR of the current image against `truth` every `every` iterations of the
    fitting stage (and at its last): `curve` = [(iteration, PSNR dB), ...]. A complex (MR) image
    is scored as the final one is: its magnitude after the least-squares scale to the truth."""

    def __init__(self, truth, every: int):
        super().__init__()
        self.truth, self.every = truth, int(every)
        self.curve = []

    def report(self, stage, iteration, total, loss=None, current=None, **extra):
        super().report(stage, iteration, total, loss=loss, **extra)
        if current is not None and stage not in SETUP_STAGES and (iteration % self.every == 0 or iteration == total):
            img = np.asarray(current())
            img = scale_to_reference(magnitude(img), self.truth) if np.iscomplexobj(img) else img
            self.curve.append((int(iteration), float(psnr(img, self.truth))))


def magnitude(img):
    """A complex MR image as its magnitude ([1, nz, ny, nx] -> [nz, ny, nx]); CT as it is."""
    img = np.asarray(img)
    if np.iscomplexobj(img):
        img = np.abs(img)
        if img.ndim == 4 and img.shape[0] == 1:  # [1, nz, ny, nx] -> static image
            img = img[0]
    return img
