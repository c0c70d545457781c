"""Projection filters and weights for filtered backprojection (FBP, FDK) and filtered losses.

All functions are differentiable torch code; sinograms are [n_views, n_rows, n_cols] (an extra
leading batch dimension is fine for `ramp_filter`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from .backends import RAMP_WINDOWS
from .ct_geometry import CTGeometry

WINDOWS = RAMP_WINDOWS


def ramp_kernel_spectrum(n_cols: int, col_spacing_mm: float, window: str = "ramp", dtype=torch.float32,
                         device="cpu"):
    """Frequency response (rfft of length `n_fft`) of the spatially sampled ramp filter.

    The ramp is sampled in space (Kak & Slaney eq. 3.61: h(0) = 1/(4τ²), h(odd n) = -1/(nπτ)²,
    h(even n) = 0), which avoids the DC offset of a frequency-sampled |ν|. The result includes the
    τ of the convolution sum, so `irfft(rfft(p) * H)` approximates ∫ h(s - s') p(s') ds'.
    Returns (H [n_fft // 2 + 1], n_fft) with n_fft ≥ 2·n_cols (zero padding: no wrap-around).
    """
    if window not in WINDOWS:
        raise InputError("filter", f"unknown filter {window!r}.", f"Use one of: {', '.join(WINDOWS)}.")
    if not col_spacing_mm > 0:
        raise InputError("col_spacing_mm", f"must be positive, got {col_spacing_mm}.")
    tau = float(col_spacing_mm)
    n_fft = 1 << int(math.ceil(math.log2(max(64, 2 * n_cols))))
    k = np.arange(n_fft)
    k = np.where(k <= n_fft // 2, k, k - n_fft)  # signed offsets, circularly arranged
    h = np.zeros(n_fft)
    h[k == 0] = 1.0 / (4 * tau * tau)
    odd = (k % 2) != 0
    h[odd] = -1.0 / (np.pi * k[odd] * tau) ** 2
    spectrum = np.real(np.fft.rfft(h)) * tau
    if window == "hann":
        f = np.arange(spectrum.size) / (n_fft // 2)  # 0 .. 1 (Nyquist)
        spectrum = spectrum * 0.5 * (1 + np.cos(np.pi * f))
    return torch.as_tensor(spectrum, dtype=dtype, device=device), n_fft


def ramp_filter(sino: torch.Tensor, col_spacing_mm: float, window: str = "ramp") -> torch.Tensor:
    """Ramp-filter each detector row along the columns (last axis); differentiable.

    sino: [..., n_cols] line integrals; col_spacing_mm: detector column pitch τ (mm), for fan and
    cone beam the pitch scaled to the isocentre. Output has the same shape; units 1/mm² · mm =
    1/mm per unit line integral, i.e. the ramp-filtered projections of FBP.
    """
    if not isinstance(sino, torch.Tensor):
        sino = torch.as_tensor(np.asarray(sino, dtype=np.float32))
    n_cols = sino.shape[-1]
    real_dtype = sino.dtype if sino.is_floating_point() else torch.float32
    H, n_fft = ramp_kernel_spectrum(n_cols, col_spacing_mm, window, dtype=real_dtype, device=sino.device)
    spec = torch.fft.rfft(sino.to(real_dtype), n=n_fft, dim=-1)
    return torch.fft.irfft(spec * H, n=n_fft, dim=-1)[..., :n_cols]


# ----------------------------------------------------------------------------- fan/cone weights
def view_angles(geometry: CTGeometry) -> np.ndarray:
    """Gantry angle of each view (rad, unwrapped in acquisition order) about the grid z axis,
    from the source position (cone) or the ray direction (parallel)."""
    vec = geometry.vectors
    if geometry.type == "cone":
        a = np.arctan2(-vec[:, 0], vec[:, 1])  # source at (-sin a, cos a) * SID in ct_geometry
    else:
        a = np.arctan2(vec[:, 0], -vec[:, 1])  # ray direction (sin a, -cos a)
    return np.unwrap(a)


def angular_weights(angles: np.ndarray) -> tuple[np.ndarray, float]:
    """Quadrature weight Δβ_i of each view (rad) and the total arc covered (rad).

    Each view gets half the gap to each neighbour (sorted by angle); the end views get their one
    gap, so a uniform scan of N views with step δ gets δ everywhere and arc N·δ."""
    n = len(angles)
    if n == 1:
        return np.array([math.pi]), math.pi
    order = np.argsort(angles)
    a = angles[order]
    gaps = np.diff(a)
    w_sorted = np.empty(n)
    w_sorted[1:-1] = (gaps[:-1] + gaps[1:]) / 2
    w_sorted[0], w_sorted[-1] = gaps[0], gaps[-1]
    w = np.empty(n)
    w[order] = w_sorted
    return w, float(w.sum())


def cone_frame(geometry: CTGeometry):
    """Per view: source-to-isocentre SID_i and source-to-detector SDD_i (mm, along the detector
    normal), and the detector coordinates (mm) of the principal point (foot of the normal from
    the source) along u and v measured from the detector centre."""
    vec = geometry.vectors
    s, c, u, v = vec[:, 0:3], vec[:, 3:6], vec[:, 6:9], vec[:, 9:12]
    n = np.cross(u, v)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    n *= np.sign(((c - s) * n).sum(1, keepdims=True))  # normal pointing from source to detector
    sdd = ((c - s) * n).sum(1)
    sid = (-s * n).sum(1)
    foot = s + sdd[:, None] * n
    du, dv = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
    pu = ((foot - c) * u).sum(1) / du
    pv = ((foot - c) * v).sum(1) / dv
    return sid, sdd, pu, pv


def detector_coordinates(geometry: CTGeometry):
    """Column and row positions (mm) of pixel centres relative to the detector centre along u, v:
    arrays [n_cols], [n_rows] (same for all views)."""
    du = float(np.linalg.norm(geometry.vectors[0, 6:9]))
    dv = float(np.linalg.norm(geometry.vectors[0, 9:12]))
    cols = (np.arange(geometry.n_cols) - geometry.n_cols / 2 + 0.5) * du
    rows = (np.arange(geometry.n_rows) - geometry.n_rows / 2 + 0.5) * dv
    return cols, rows


def fdk_cosine_weights(geometry: CTGeometry) -> np.ndarray:
    """FDK pre-weights SDD / |pixel - source| per pixel, [n_views, n_rows, n_cols] (fan beam: n_rows = 1)."""
    sid, sdd, pu, pv = cone_frame(geometry)
    cols, rows = detector_coordinates(geometry)
    a = cols[None, None, :] - pu[:, None, None]
    b = rows[None, :, None] - pv[:, None, None]
    if geometry.n_rows == 1:
        b = np.zeros_like(b)  # fan beam: the detector row is in the source plane
    return (sdd[:, None, None] / np.sqrt(sdd[:, None, None] ** 2 + a ** 2 + b ** 2)).astype(np.float32)


def parker_weights(geometry: CTGeometry, angles: np.ndarray) -> np.ndarray:
    """Parker short-scan weights [n_views, 1, n_cols] for a fan/cone scan over less than 360°.

    Views cover β from 0 to π + 2δ (first to last view); each ray with fan angle γ is weighted so that the
    redundant pair (β, γ) ~ (β + π + 2γ, -γ) sums to 1 (Parker 1982). δ is taken from that range, so
    an overscan beyond π + fan angle is smoothed over the wider margin.
    """
    sid, sdd, pu, _ = cone_frame(geometry)
    cols, _ = detector_coordinates(geometry)
    # Sign: γ grows with the column where u points against the direction the source moves as the
    # angle about +z grows (ẑ × source), as in ct_geometry.cone_geometry (checked on a short-scan
    # phantom in the tests); RTK's detector columns run the other way (checked against RTK's
    # ParkerShortScanImageFilter in test_cbct.py), so the sign is read from the vectors.
    vec = geometry.vectors
    turning = np.cross(np.array([0.0, 0.0, 1.0]), vec[:, 0:3])
    sign = -1.0 if float(np.sum(turning * vec[:, 6:9])) > 0 else 1.0
    gamma = sign * np.arctan((cols[None, :] - pu[:, None]) / sdd[:, None])  # [n_views, n_cols]
    beta = (angles - angles.min())[:, None]  # 0 .. scan range
    scan_range = float(beta.max())
    delta = max((scan_range - math.pi) / 2, 1e-6)
    w = np.ones_like(gamma)
    g = np.clip(gamma, -delta + 1e-9, delta - 1e-9)
    first = beta < 2 * (delta - g)
    last = beta > math.pi - 2 * g
    with np.errstate(divide="ignore", invalid="ignore"):
        w_first = np.sin(math.pi / 4 * beta / (delta - g)) ** 2
        w_last = np.sin(math.pi / 4 * (math.pi + 2 * delta - beta) / (delta + g)) ** 2
    w = np.where(first, w_first, w)
    w = np.where(last, w_last, w)
    w = np.where(beta > math.pi + 2 * delta, 0.0, w)
    return np.clip(w, 0.0, 1.0)[:, None, :].astype(np.float32)


# A detector whose edges differ in distance from the central ray by less than this fraction of its
# width counts as centred (RTK's DisplacedDetectorImageFilter uses the same 10 %): the rays one
# edge misses then lie outside the object in practice, and redundancy weights over nearly the
# whole detector would cost more than they fix.
_CENTRED_DETECTOR_FRACTION = 0.1


def _detector_extent(geometry: CTGeometry):
    """Per view: the detector's edges (mm) along u relative to the principal point, and the pitch."""
    _, _, pu, _ = cone_frame(geometry)
    cols, _ = detector_coordinates(geometry)
    du = float(np.linalg.norm(geometry.vectors[0, 6:9]))
    return cols[0] - du / 2 - pu, cols[-1] + du / 2 - pu, du


def displaced_detector_padding(geometry: CTGeometry):
    """For an offset (half-fan) detector: (columns to add before, after, the padded geometry)
    that make the detector symmetric about the principal point; None for a centred detector.

    The ramp-filtered projection of the weighted data (displaced_detector_weights) is not zero
    beyond the real detector's short edge, and voxels that project there need those values:
    filtering and backprojecting on the symmetric, zero-padded detector keeps them (RTK's
    DisplacedDetectorImageFilter pads in the same way)."""
    lo, hi, du = _detector_extent(geometry)
    if np.all(np.abs(lo + hi) < _CENTRED_DETECTOR_FRACTION * (hi - lo)):
        return None
    if np.any(lo >= 0) or np.any(hi <= 0):
        raise InputError("/geometry/vectors", "the central ray misses the detector in some views (the detector is "
                         "offset by more than half its width), so no ray is measured from both sides.",
                         "Check the detector offset (projection offsets) of the geometry.")
    long_side = np.sign(hi + lo)
    if np.any(long_side != long_side[0]):
        raise InputError("/geometry/vectors", "the detector is offset to different sides in different views.",
                         "Check the projection offsets of the geometry; FDK needs one half-fan side.")
    n_pad = int(np.ceil(np.max(np.abs(hi + lo)) / du - 1e-6))
    before, after = (n_pad, 0) if long_side[0] > 0 else (0, n_pad)
    vec = geometry.vectors.copy()
    vec[:, 3:6] += vec[:, 6:9] * (after - before) / 2.0
    padded = CTGeometry(geometry.type, vec, geometry.n_rows, geometry.n_cols + n_pad, dict(geometry.circular))
    return before, after, padded


def displaced_detector_weights(geometry: CTGeometry) -> np.ndarray:
    """Redundancy weights [n_views, 1, n_cols + padding] of a full scan with an offset (half-fan)
    detector, on the symmetric detector of displaced_detector_padding.

    Over 360° a column at signed distance t from the principal point (t > 0 towards the real
    detector's long side) and the column at -t see the same rays from opposite sides, but only
    where the real detector reaches both: |t| ≤ Δ (Δ = the short side's extent). There the pair
    must sum to 2 (the full scan's factor ½ makes it 1), smoothly, so that filtering sees no
    step: w(t) = 1 + sin(π/2 · γ(t)/γ(Δ)), γ the fan angle atan(t / SDD) (Wang 2002); w = 2
    beyond Δ, where the column is the ray's only measurement, and 0 on the padding. RTK's
    DisplacedDetectorImageFilter takes the same form; FDK with these weights matches RTK's FDK
    on the same projections (Testing/Python/test_cbct.py).
    """
    padding = displaced_detector_padding(geometry)
    if padding is None:
        raise InputError("/geometry/vectors", "displaced-detector weights need an offset detector.",
                         "Call displaced_detector_padding first; None means a centred detector.")
    before, _, padded = padding
    lo, hi, _ = _detector_extent(geometry)
    delta = np.minimum(-lo, hi)  # [n_views]
    _, sdd, pu, _ = cone_frame(padded)
    cols, _ = detector_coordinates(padded)
    side = 1.0 if before > 0 else -1.0  # the long side is where no columns were added
    t = side * (cols[None, :] - pu[:, None])
    gamma, gamma_delta = np.arctan(t / sdd[:, None]), np.arctan(delta / sdd)[:, None]
    w = 1.0 + np.sin(0.5 * math.pi * np.clip(gamma / gamma_delta, -1.0, 1.0))
    return w[:, None, :].astype(np.float32)
