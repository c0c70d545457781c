"""Spatiotemporal INR for dynamic MRI (Feng et al.): one field of (x, y, t) fitted to the k-space
of every frame at once, through coil maps × NUFFT per frame. It needs no training data and no
prior, and renders at any time point (temporal super-resolution)."""

from __future__ import annotations

import numpy as np

from ..physics.mr_frames import check_frame_times, frame_times
from .engine.run import InrRun


def output_times(cfg, fitted_times) -> list:
    """Where the result is rendered: times_out_s, else frames_out times evenly over the fitted
    span, else the fitted frame times."""
    if cfg["times_out_s"]:
        return [float(t) for t in cfg["times_out_s"]]
    if int(cfg["frames_out"]) > 0:
        return np.linspace(fitted_times[0], fitted_times[-1], int(cfg["frames_out"])).tolist()
    return [float(t) for t in fitted_times]


def stinr(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None):
    """Fit a field of space and time to all frames (`prior` is ignored). Its unit comes from a few
    CGLS iterations on all frames; its time axis from the frame times (physics/mr_frames.py).
    The registry refuses MR data of one frame (and other modalities) before it gets here."""
    times = check_frame_times(frame_times(measurement.geometry))
    run = InrRun("stinr", measurement, config, iterations, device, monitor, frames=True)
    with run.guard():
        problem = run.open_problem()
        model = run.new_model(problem.quick_estimate(), times_s=times)
        return run.fit(model, times_out=output_times(run.cfg, times))
