"""INR without prior: the INR engine from a random initialisation, fitted to the measurements."""

from __future__ import annotations

from .engine.run import InrRun


def inr(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None):
    """Fit a freshly initialised field to the data (`prior` is ignored). Its unit comes from a
    few CGLS iterations on the data (engine/problem.py `quick_estimate`)."""
    run = InrRun("inr", measurement, config, iterations, device, monitor)
    with run.guard():
        problem = run.open_problem()
        return run.fit(run.new_model(problem.quick_estimate()))
