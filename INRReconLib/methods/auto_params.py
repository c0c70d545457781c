"""`"lambda": "auto"` and `"iterations": "auto"` of the classical methods: Morozov's discrepancy
principle on the noise the measurement itself shows (physics/noise.py).

A reconstruction that fits the data better than their noise fits the noise. The rule: the
regularisation weight (TV) or the iteration count (SIRT, CGLS, CG-SENSE, whose early stopping is
the regulariser) is chosen so that the data residual ‖A x − y‖² comes down to τ × the expected
‖noise‖² (TAU, per modality) — for CT's SIRT and CGLS, to what a least-squares fit leaves of it
(least_squares_residual) — and no further.

For TV, `LambdaContinuation` finds the weight inside the one solver run: it starts at a weight
that flattens the image and lowers it by STEP every STAGE iterations (warm-started, so the solver
keeps converging) until the residual reaches the target, or stops falling (LEVELLED: the model
cannot fit the data to the estimated noise); the weight is then held, one half-step back up (the
residual of an unconverged stage lags behind the converged one). `IterationStop` does the same for
the iteration count, with LEVELLED_ITERATIONS for conjugate gradients.

A measurement whose noise cannot be estimated (physics.noise.NoiseUnavailable: too few detector
columns, no outer k-space along a readout) falls back to the method's FALLBACK value, the fixed
default it had before `auto`, and the result's `auto_<key>` entry says so; a target the solver
cannot reach keeps the weight or count where the residual levelled off, and the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

AUTO = "auto"
# Residual target τ × E‖noise‖², per modality, calibrated on the benchmark (README, "Classical
# baselines"). CT 1: the sinogram estimate already counts the scan's fine detail as noise (it reads
# 1.7× the simulated variance on the thorax). MR 0.9: the k-space estimate is within 2 %, and the best
# TV weight / CG-SENSE iteration on the 256² brain left residuals of 0.87–0.98 × the noise (8 coils)
# and 0.42–0.98 (1 coil); Morozov's τ ≥ 1 over-regularised the 8-coil scan by 1–1.5 dB.
TAU = {"CT": 1.0, "MR": 0.9}
STEP = 0.7  # continuation factor per stage
STAGE = 15  # iterations per continuation stage
LAMBDA_START = 0.05  # relative TV weight to start from (25× the old fixed default: a flat image)
LAMBDA_FLOOR = 1e-6  # continuation stops here however large the residual
# CT's floor. On a noise-free sinogram the estimate is the anatomy's fine detail the grid cannot
# hold, the residual keeps falling by ~25 % per stage as the weight drops, and the discrepancy
# principle took the weight to 1e-4 … 1e-6 (up to 1.1 dB below the best swept weight). The
# best swept weight was 5e-4 … 4e-3 on all eight 256² thorax cases (20 and 60 views, with and
# without noise), and every noisy case's own choice was above 8e-4: below the floor a sparse-view
# reconstruction only approaches the TV-smallest image that fits the rays exactly, which the
# sweeps scored lower, and which PDHG reaches slowly.
LAMBDA_FLOOR_CT = 5e-4
# the residual levelled off: it fell by less than this fraction over a stage in which the weight
# was lowered (the model cannot fit the data to the estimated noise: discretisation, a noise-free
# file whose estimate is the anatomy's own fine detail); lower weights would only fit that
LEVELLED = 0.01


# what `auto` falls back to without a noise estimate: the fixed defaults tuned on the benchmark
FALLBACK = {("tv", "CT"): 0.002, ("tv", "MR"): 2e-4, ("grasp", "MR"): 5e-4,
            ("sirt", "CT"): 200, ("cgls", "CT"): 50, ("cgsense", "MR"): 30}


def is_auto(value) -> bool:
    return isinstance(value, str) and value == AUTO


def noise_or_fallback(measurement, method: str, key: str):
    """For `key: auto`: (the measurement's noise estimate, None), or when it shows none
    (physics.noise.NoiseUnavailable) (None, the record of the fallback) with record[key] the
    FALLBACK value to use."""
    from ..physics.noise import NoiseUnavailable, ct_noise, mr_noise

    try:
        return (ct_noise if measurement.modality == "CT" else mr_noise)(measurement), None
    except NoiseUnavailable as why:
        value = FALLBACK[(method, measurement.modality)]
        return None, {"rule": f"fallback: the fixed default {key} {value:g} (no noise estimate)", key: value,
                      "reached": False, "warning": f"no noise estimate: {why}"}


@dataclass
class LambdaContinuation:
    """λ by the discrepancy principle, updated as the solver runs (module doc).

    target: the residual ‖A x − y‖² to come down to (τ × the noise), in the caller's units.
    `update(it, r2)` gets the residual after iteration `it` and returns the weight for the next one."""

    target: float
    tau: float
    lam: float = LAMBDA_START
    stage: int = STAGE
    step: float = STEP
    floor: float = LAMBDA_FLOOR
    settled: bool = False
    levelled: bool = False
    floored: bool = False  # stopped at the floor with the residual above the target
    falling: bool = False  # the residual has fallen over a stage (after the warm start settled in)
    trace: list = field(default_factory=list)

    def update(self, it: int, residual2: float) -> float:
        if self.settled or it % self.stage:
            return self.lam
        previous = self.trace[-1][2] if self.trace else None
        self.trace.append((it, self.lam, residual2))
        if residual2 <= self.target:
            self.lam = self.lam / math.sqrt(self.step)  # half a step back: the stage had not converged
            self.settled = True
        elif self.falling and residual2 > (1.0 - LEVELLED) * previous:
            self.lam = self.lam / math.sqrt(self.step)
            self.settled = self.levelled = True
        elif self.lam * self.step < self.floor:
            self.settled = self.floored = True
        else:
            self.falling = self.falling or (previous is not None and residual2 < (1.0 - LEVELLED) * previous)
            self.lam *= self.step
        return self.lam

    def summary(self, noise, residual_unit: float = 1.0) -> dict:
        """The result's `auto_lambda` record: the rule, the weight (relative, as the config's
        `lambda`), the noise estimate, every stage; residuals times `residual_unit` (the solver's
        normalised ‖·‖² → ‖A x − y‖²)."""
        reached = bool(self.trace) and self.trace[-1][2] <= self.target
        out = {"rule": f"discrepancy principle (tau {self.tau:g}), TV weight",
               "target_residual": self.target * residual_unit, "lambda": self.lam, "reached": reached,
               "noise": {"rule": noise.rule, **noise.detail},
               "stages": [{"iteration": i, "lambda": lam, "residual": r * residual_unit} for i, lam, r in self.trace]}
        if self.levelled:
            out["rule"] += "; the residual levelled off above the noise estimate, the weight where it did"
        elif self.floored and self.floor > LAMBDA_FLOOR:
            out["rule"] += (f"; the residual was still above the noise estimate at the floor {self.floor:g} (a "
                            "noise-free or nearly noise-free scan), the weight held there")
        elif not reached:
            out["warning"] = ("the data residual stayed above the noise level (noise underestimated, or data the "
                              "model cannot fit); the smallest weight tried was kept")
        return out


# Conjugate gradients (CGLS, CG-SENSE): the residual levelled off when, at the rate of the last
# iteration, the target is more than this many iterations away. On the real twix scan at R = 2
# with maps estimated from the undersampled data (the model fits only about half the data energy,
# the residual stays far above the noise) CG stops at iteration 11 (19.3 dB against the full scan;
# 30 iterations: 14.4, 2 iterations: 26.3); on the simulated brain it reaches the target first.
LEVELLED_ITERATIONS = 20


def least_squares_residual(noise_total: float, n_data: int, n_unknowns: int) -> float:
    """E‖y − A x‖² a least-squares fit leaves of white noise: ‖noise‖² (m − n)/m, 0 when the
    unknowns outnumber the data. The target of the iteration-count rules, whose iterates are
    least-squares fits of growing detail: on 20-view CT SIRT kept improving long after the
    residual fell below the noise (256² thorax: the residual reached ‖noise‖² at iteration 70,
    26.7 dB; 800 iterations, 0.02 ‖noise‖², 27.8 dB), since an underdetermined system fits
    noise into its null space at no cost to the image."""
    return float(noise_total) * max(n_data - n_unknowns, 0) / max(n_data, 1)


class IterationStop:
    """`iterations: auto` for methods whose iteration count regularises: stop at the first
    iteration whose residual ‖A x − y‖² is at or below the target, or (with `levelled`, for
    conjugate gradients) after which the target is more than `levelled` iterations away at the
    rate of that iteration: the model cannot fit the data to the noise, and further iterations
    fit the misfit."""

    def __init__(self, target: float, tau: float, levelled: int | None = None):
        self.target = float(target)
        self.tau = float(tau)
        self.levelled = levelled
        self.stopped_at = None
        self.levelled_at = None
        self._previous = None

    def reached(self, it: int, residual2: float) -> bool:
        if self.stopped_at is None:
            if residual2 <= self.target:
                self.stopped_at = it
            elif (self.levelled is not None and self._previous is not None
                  and (self._previous - residual2) * self.levelled < residual2 - self.target):
                self.stopped_at = self.levelled_at = it
            self._previous = residual2
        return self.stopped_at is not None

    def summary(self, noise, done: int) -> dict:
        """The result's `auto_iterations` record; `done`: the iterations that ran."""
        out = {"rule": f"discrepancy principle (tau {self.tau:g}), iteration count", "target_residual": self.target,
               "iterations": done, "reached": self.stopped_at is not None,
               "noise": {"rule": noise.rule, **noise.detail}}
        if self.target <= 0:
            # more unknowns than data: a least-squares fit leaves no noise, so no residual level
            # says stop; CGLS stops where the residual levels off, SIRT at its cap
            out["rule"] += ("; more unknowns than data (the target is 0): "
                            + ("stopped where the residual levelled off" if self.levelled_at else "ran to the cap"))
        elif self.levelled_at is not None:
            out["rule"] += "; the residual levelled off above the noise estimate, stopped where it did"
            out["reached"] = False
            out["warning"] = ("the data residual levelled off far above the noise level (coil maps or a model that "
                              "cannot fit the data?); stopped where it did")
        elif self.stopped_at is None:
            out["warning"] = f"the residual stayed above the noise level for all {done} iterations; stopped there"
        return out


def choices(extra: dict) -> dict:
    """{key: {"value", "rule"[, "warning"]}} of the `auto_<key>` records in a result's extra: what
    the worker's result event carries and the Slicer module shows."""
    out = {}
    for name, record in (extra or {}).items():
        if name.startswith("auto_") and isinstance(record, dict):
            key = name[len("auto_"):]
            out[key] = {"value": record.get(key), "rule": record.get("rule", "")}
            if record.get("warning"):
                out[key]["warning"] = record["warning"]
    return out


def describe(chosen: dict) -> str:
    """One sentence for a status line: "Chosen from the data: lambda 0.0049 (discrepancy ...)."."""
    parts = []
    for key, c in chosen.items():
        value = c.get("value")
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key} {text} ({c.get('rule', '')})")
    return ("Chosen from the data: " + "; ".join(parts) + ".") if parts else ""
