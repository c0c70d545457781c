"""The measurement, its operator and the normalised units an INR fit runs in."""

from __future__ import annotations

import math

import numpy as np
import torch

from ...errors import InputError
from ...numerics.krylov import cgls
from ..losses import data_loss
from ..presets import backend_config


class Problem:
    """Measurement, operator and normalisation. Image u (normalised) ↔ physics image = scale · u;
    data y_n = y / scale, so A u is compared with y_n and u is O(1) whatever the units.
    frames: the method reads multi-frame (dynamic) MR data; otherwise one frame is required."""

    def __init__(self, measurement, config, device, frames: bool = False):
        from ...physics import operator_for

        self.m = measurement
        self.grid = measurement.grid
        self.device = device
        self.mr = measurement.modality == "MR"
        data = np.asarray(measurement.data)
        if data.size == 0:
            raise InputError("/data", "is empty.", "Give a measurement with at least one view or k-space sample.")
        if not np.all(np.isfinite(data)):
            raise InputError("/data", "contains NaN or Inf.", "Remove or repair the invalid samples.")
        if not np.any(data):
            raise InputError("/data", "is all zeros: nothing to reconstruct.", "Check the file holds the measured data.")
        if self.mr and data.shape[0] != 1 and not frames:
            raise InputError("/data", f"has {data.shape[0]} frames; this method reconstructs one static image.",
                             "Use the dynamic MRI method for time series, or pick one frame.")
        self.op = operator_for(measurement, device, **backend_config(config, measurement.modality))
        # The result's config names the backend that ran, not "auto".
        config.update(backend_config(config, measurement.modality, self.op))
        self.n_coils = self.op.n_coils if self.mr else 1
        self.n_frames = self.op.n_frames if self.mr else 1
        self.n_views = 0 if self.mr else int(np.shape(data)[0])
        dtype = torch.complex64 if self.mr else torch.float32
        self.y = torch.as_tensor(data, dtype=dtype, device=device)
        if tuple(self.y.shape) != tuple(self.op.data_shape):
            raise InputError("/data", f"has shape {list(self.y.shape)}, the geometry needs {list(self.op.data_shape)}.",
                             "Write the data in the layout of docs/measurement-format.md for this geometry.")
        # What the fitting loops raster: CT [nz, ny, nx]; MR [n_frames, nz, ny, nx].
        self.image_shape = tuple(self.op.image_shape)
        self.scale = 1.0
        self.col_spacing = 1.0 if self.mr else isocentre_col_spacing(measurement.geometry)
        self.subsets = [None]
        n_sub = int(config["subsets"])
        if n_sub > 1 and not self.mr:
            n_views = self.y.shape[0]
            n_sub = min(n_sub, n_views)
            # Interleaved subsets: each one spans the full angular range.
            self.subsets = [np.arange(k, n_views, n_sub) for k in range(n_sub)]
            self.sub_ops = [self.op.subset(idx) for idx in self.subsets]

    def A(self, x):
        return self.op.forward(x)

    def AT(self, y):
        return self.op.adjoint(y)

    def set_scale(self, scale: float):
        self.scale = float(scale)
        self.y_n = self.y / self.scale
        # rel_l2's ε is relative to the largest k-space sample.
        self.y_max = float(self.y_n.abs().max())

    @torch.no_grad()
    def quick_estimate(self, n_iter: int = 10) -> torch.Tensor:
        """A few CGLS iterations from zero: a rough image in physics units, for the scale."""
        zero = torch.zeros(self.image_shape, dtype=self.y.dtype, device=self.device)
        return cgls(self.A, self.AT, self.y, zero, n_iter)

    def fit_prior_scale(self, prior: torch.Tensor) -> float:
        """MR intensities have no absolute unit: the scalar c minimising ‖A(c p) − y‖."""
        with torch.no_grad():
            ap = self.A(prior)
            num = torch.real(torch.vdot(ap.reshape(-1), self.y.reshape(-1)))
            den = torch.real(torch.vdot(ap.reshape(-1), ap.reshape(-1))).clamp_min(1e-30)
        return float(num / den)

    def loss(self, image_n, cfg, subset: int = 0, l2_share: float = 0.0):
        """The config's data loss; l2_share s in (0, 1] blends it with plain L2: (1 − s) loss + s L2."""
        if self.subsets[0] is None or len(self.subsets) == 1:
            pred, data = self.A(image_n), self.y_n
        else:
            idx = self.subsets[subset % len(self.subsets)]
            pred, data = self.sub_ops[subset % len(self.subsets)].forward(image_n), self.y_n[torch.as_tensor(idx, device=self.device)]
        if cfg["loss"] == "rel_l2":
            return data_loss("rel_l2", pred / self.y_max, data / self.y_max, eps=float(cfg["rel_l2_eps"]))
        value = data_loss(cfg["loss"], pred, data, col_spacing_mm=self.col_spacing, window=cfg["fls_window"])
        if l2_share > 0:
            value = (1.0 - l2_share) * value + l2_share * data_loss("l2", pred, data)
        return value


def isocentre_col_spacing(geometry) -> float:
    """Detector column pitch scaled to the isocentre (the ramp filter's τ for fan/cone beams)."""
    v = geometry.vectors[0]
    pitch = float(np.linalg.norm(v[6:9]))
    if geometry.type == "cone":
        sid = float(np.linalg.norm(v[0:3]))
        sdd = float(np.linalg.norm(v[3:6] - v[0:3]))
        if sdd > 0 and sid > 0:
            pitch *= sid / sdd
    return pitch


def robust_max(a: torch.Tensor) -> float:
    v = a.detach().abs().reshape(-1).float()
    k = max(1, int(math.ceil(0.999 * v.numel())))
    return float(v.kthvalue(k).values)
