"""What every reconstruction method returns."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field  # `field` is also an attribute below
from typing import Any, Optional

import numpy as np


@dataclass
class ReconResult:
    """image: CT μ (1/mm) float32 of grid.shape (nz, ny, nx);
    MR complex64 [n_frames, nz, ny, nx].
    iterations: iterations actually run (last stage); cancelled: stopped early on request.
    history: the Monitor's per-iteration records; extra: method-specific numbers.
    aligned_prior: NeRP's prior as registered to the data and embedded (grid shape), else None.
    field: the fitted INR (an engine.model.FieldImage; engine.render.render evaluates it on any
    grid of the same orientation), for the methods whose MethodSpec returns a "field"; None for
    a cancelled run that never built it."""

    image: np.ndarray
    method: str = ""
    config: dict = dataclass_field(default_factory=dict)
    iterations: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    history: list = dataclass_field(default_factory=list)
    extra: dict = dataclass_field(default_factory=dict)
    aligned_prior: Optional[np.ndarray] = None
    field: Optional[Any] = None
