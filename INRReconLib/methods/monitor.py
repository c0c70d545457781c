"""How a running method reports progress and learns that it should stop.

Methods call `monitor.report(...)` once per iteration and check `monitor.stop_requested()`;
when asked to stop they return what they have, flagged as cancelled. The worker, the CLI
progress bar and tests each pass their own Monitor, so every method has one code path.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np


class Monitor:
    """Default: records the loss history, never stops. Subclass to stream or cancel."""

    def __init__(self):
        self.history: list[dict] = []

    def report(self, stage: str, iteration: int, total: int, loss: Optional[float] = None,
               current: Optional[Callable[[], np.ndarray]] = None, *, eta_known: bool = True, **extra) -> None:
        """stage: e.g. "prior-embedding", "fitting", "inference", "sirt".
        iteration: 1-based, total: planned iterations of this stage.
        current: a callable returning the current image (physics units, grid shape), called
        only when the monitor wants a preview; keep it lazy because it can be expensive.
        eta_known: False when the remaining steps times the rate so far is no estimate of the
        time left: steps of different cost, or a total that is only a budget (prior
        registration: TV iterations, then optimizer iterations that usually stop early).
        extra: further numbers to log (psnr, primal_residual, ...)."""
        entry = {"stage": stage, "iteration": int(iteration), "total": int(total)}
        if loss is not None:
            entry["loss"] = float(loss)
        entry.update({k: v for k, v in extra.items() if v is not None})
        self.history.append(entry)

    def stop_requested(self) -> bool:
        return False
