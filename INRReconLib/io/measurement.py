"""The measurement file (FORMAT.md, version 1): one acquisition in one HDF5 file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

from ..physics.ct_geometry import CTGeometry
from ..physics.grid import ImageGrid
from ..physics.mr_geometry import MRGeometry

FORMAT_NAME = "inrrecon-measurement"
FORMAT_VERSION = 1


@dataclass
class Measurement:
    """modality: "CT" or "MR".
    data: CT float32 [n_views, n_rows, n_cols] line integrals; MR complex64 [n_frames, n_coils, n_samples].
    attrs: optional root attributes (description, patient_id, acquired, fraction, mu_water_per_mm).
    """

    modality: str
    data: np.ndarray
    grid: ImageGrid
    geometry: Union[CTGeometry, MRGeometry]
    attrs: dict = field(default_factory=dict)

    @property
    def mu_water_per_mm(self):
        v = self.attrs.get("mu_water_per_mm")
        return None if v is None else float(v)
