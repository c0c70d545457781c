"""MR acquisition geometry (docs/measurement-format.md, MR part): Cartesian mask or non-Cartesian trajectory,
coil maps, density compensation, frame times."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import InputError

MR_TYPES = ("cartesian", "noncartesian")


@dataclass
class MRGeometry:
    """type: "cartesian" or "noncartesian".

    mask:       bool [n_frames, (nz,) ny, nx]          (cartesian)
    trajectory: float32 [n_frames, ndim, n_samples]    (noncartesian; rad/voxel in [-pi, pi),
                                                        axis order = image array axes ([z,] y, x))
    coil_maps:  complex64 [n_coils, (nz,) ny, nx] or None (one coil, unit sensitivity)
    dcf:        float32 [n_frames, n_samples] or None
    frame_times_s: [n_frames] or None
    spoke_times_s: float64 [n_frames, n_spokes] or None (non-Cartesian: each frame's samples are
                   its spokes in order; the time of each, for binning: mr_frames.py)
    """

    type: str
    mask: Optional[np.ndarray] = None
    trajectory: Optional[np.ndarray] = None
    coil_maps: Optional[np.ndarray] = None
    dcf: Optional[np.ndarray] = None
    frame_times_s: Optional[np.ndarray] = None
    spoke_times_s: Optional[np.ndarray] = None

    def __post_init__(self):
        if self.type not in MR_TYPES:
            raise InputError("/geometry type", f"must be one of {MR_TYPES}, got {self.type!r}.")
        if self.type == "cartesian":
            if self.mask is None:
                raise InputError("/geometry/mask", "is missing for a Cartesian acquisition.",
                                 "Store the sampling mask as bool [n_frames, (nz,) ny, nx].")
            self.mask = np.asarray(self.mask, dtype=bool)
        else:
            if self.trajectory is None:
                raise InputError("/geometry/trajectory", "is missing for a non-Cartesian acquisition.",
                                 "Store k-space positions as float32 [n_frames, ndim, n_samples] in rad/voxel.")
            self.trajectory = np.asarray(self.trajectory, dtype=np.float32)
        if self.coil_maps is not None:
            self.coil_maps = np.asarray(self.coil_maps, dtype=np.complex64)
        if self.dcf is not None:
            self.dcf = np.asarray(self.dcf, dtype=np.float32)

    @property
    def n_frames(self) -> int:
        return (self.mask if self.type == "cartesian" else self.trajectory).shape[0]

    @property
    def n_coils(self) -> int:
        return 1 if self.coil_maps is None else self.coil_maps.shape[0]

    @property
    def n_samples(self) -> int:
        if self.type == "cartesian":
            counts = self.mask.reshape(self.mask.shape[0], -1).sum(axis=1)
            return int(counts.max())
        return self.trajectory.shape[2]
