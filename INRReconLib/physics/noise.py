"""Noise level of a measurement, from the measurement alone: what the `auto` parameter rules of
the classical methods (methods/auto_params.py) compare the data residual with.

CT: line integrals y = −ln(N / I0) of Poisson counts N have variance ≈ e^{y} / I0 per ray. I0
(photons per detector pixel of the unattenuated beam) is the file's `photons_per_pixel` attribute
when the scanner's air scan stated it; otherwise it is estimated from the sinogram: eighth
differences along the detector row cancel the (locally smooth) projections, and after dividing
by e^{y/2} every ray's noise has the same spread 1/√I0, whose median absolute deviation gives I0.

MR: complex white noise of variance σ² per sample (E|n|², the same for every coil after
prewhitening). The file's `noise_variance` attribute when a noise scan gave it; otherwise the
median absolute deviation of eighth differences along the readout in outer k-space (|k| above
OUTER_K of the sampled maximum), where the signal is small and smooth along the readout (radial
readouts are 2× oversampled; Cartesian data whose object fills the FOV read some of the object's
outer k-space too: an upper bound; the Siemens reader measures the oversampling band instead).

Either estimate is an upper bound where the data have no noise (simulated, noise-free files): the
differences then hold only what the model cannot follow, which is what a data term cannot fit
either. `NoiseEstimate.rule` says which source was used, for the result's record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

# MAD of a zero-mean Gaussian = 0.6745 σ
_MAD_TO_SIGMA = 1.0 / 0.6744897501960817
# Eighth differences (binomial weights, alternating signs) cancel polynomial trends up to degree 7
# and pass white noise with variance Σw² σ² = 12870 σ². Fewer leave more of the object in: on a 64²
# Shepp–Logan radial scan σ read 43 % / 7 % / 0 % high with fourth / sixth / eighth differences (the
# 256² brain: 1 % for all); on the 256² thorax sinograms second differences read I0 = 5.6e4 where
# 1e5 photons were simulated, fourth to eighth 5.8e4 (the scan's own fine detail and noise).
_KERNEL = np.array([(-1.0) ** j * math.comb(8, j) for j in range(9)])
_GAIN = float(np.sqrt((_KERNEL ** 2).sum()))
OUTER_K = 0.7  # MR: readout windows centred at |k| above this fraction of the largest sampled |k|
MIN_SAMPLES = 64  # fewer usable differences than this: no estimate


class NoiseUnavailable(InputError):
    """The measurement shows no usable noise: the auto rules fall back (methods/auto_params.py)."""


@dataclass
class NoiseEstimate:
    """variance: CT, per ray [n_views, n_rows, n_cols]; MR, E|n|² per complex sample (scalar).
    total: the expected ‖noise‖² over all samples (the discrepancy principle's target).
    rule: where it came from ("stated ...", "estimated ..."). detail: the numbers behind it."""

    variance: object
    total: float
    rule: str
    detail: dict = field(default_factory=dict)


def mad_sigma(d: np.ndarray) -> float:
    """σ of zero-mean Gaussian samples from their median absolute value (robust to outliers)."""
    return float(np.median(np.abs(d))) * _MAD_TO_SIGMA


def _stated(measurement, key: str, fix: str):
    """The file's positive root attribute `key` as a float, None when absent."""
    stated = measurement.attrs.get(key)
    if stated is None:
        return None
    value = float(stated)
    if not (np.isfinite(value) and value > 0):
        raise InputError(f"/ {key}", f"must be a positive number, got {stated!r}.", fix)
    return value


def _differences(u: np.ndarray) -> np.ndarray:
    """Eighth differences along the last axis, scaled to unit gain on white noise."""
    n = u.shape[-1] - len(_KERNEL) + 1
    return sum(w * u[..., j:j + n] for j, w in enumerate(_KERNEL)) / _GAIN


def ct_noise(measurement) -> NoiseEstimate:
    """Per-ray variance e^{y}/I0 of a CT sinogram (module doc)."""
    y = np.asarray(measurement.data, dtype=np.float64)
    i0 = _stated(measurement, "photons_per_pixel",
                 "Store the unattenuated counts per detector pixel (from the air scan), or remove it.")
    if i0 is not None:
        rule = "stated I0 (photons_per_pixel)"
        detail = {"photons_per_pixel": i0}
    else:
        if y.shape[-1] < len(_KERNEL):
            raise NoiseUnavailable("/data", f"has fewer than {len(_KERNEL)} detector columns: no noise estimate.",
                                   "Give lambda/iterations as numbers, or store photons_per_pixel in the file.")
        h = len(_KERNEL) // 2
        z = _differences(y) * np.exp(-0.5 * np.clip(y[..., h:y.shape[-1] - h], -5.0, 30.0))
        i0 = 1.0 / max(mad_sigma(z), 1e-12) ** 2
        rule = "estimated I0 (eighth differences along the detector rows)"
        detail = {"photons_per_pixel": i0, "differences": int(z.size)}
    variance = np.exp(np.clip(y, -5.0, 30.0)) / i0
    return NoiseEstimate(variance, float(variance.sum()), rule, detail)


def _readout_windows(geometry) -> list:
    """Per frame, the data indices [n_windows, len(_KERNEL)] of consecutive samples along a
    readout whose middle sample lies in outer k-space."""
    width, h = len(_KERNEL), len(_KERNEL) // 2
    out = []
    for f in range(geometry.n_frames):
        if geometry.type == "cartesian":
            mask = np.asarray(geometry.mask[f])
            pos = np.full(mask.size, -1, dtype=np.int64)
            pos[np.flatnonzero(mask.ravel())] = np.arange(int(mask.sum()))  # C order, as the data
            pos = pos.reshape(mask.shape)
            # the readout is the last axis, sampled fully on every acquired line
            rel = np.meshgrid(*[(np.arange(n) - n // 2) / max(n // 2, 1) for n in mask.shape], indexing="ij")
            radius = np.sqrt(sum(r ** 2 for r in rel))
            n = mask.shape[-1] - width + 1
            win = np.stack([pos[..., j:j + n] for j in range(width)], axis=-1)
            ok = (win >= 0).all(axis=-1) & (radius[..., h:h + n] > OUTER_K)
            out.append(win[ok])
            continue
        k = np.asarray(geometry.trajectory[f], dtype=np.float64)  # [ndim, S]
        step = np.diff(k, axis=1)
        size = np.linalg.norm(step, axis=0)
        # equal consecutive steps: samples along one readout, not a jump to the next spoke
        same = np.linalg.norm(step[:, 1:] - step[:, :-1], axis=0) < 1e-3 * np.maximum(size[:-1], 1e-12)
        n = k.shape[1] - width + 1
        ok = np.ones(n, dtype=bool)
        for j in range(width - 2):
            ok &= same[j:j + n]
        radius = np.linalg.norm(k, axis=0)
        ok &= radius[h:h + n] > OUTER_K * radius.max()
        first = np.flatnonzero(ok)
        out.append(first[:, None] + np.arange(width)[None, :])
    return out


def mr_noise(measurement) -> NoiseEstimate:
    """E|n|² per complex k-space sample (module doc)."""
    y = np.asarray(measurement.data)
    var = _stated(measurement, "noise_variance", "Store E|n|² per k-space sample from the noise scan, or remove it.")
    if var is not None:
        return NoiseEstimate(var, var * y.size, "stated (noise_variance)", {"noise_variance": var})
    diffs = []
    for f, win in enumerate(_readout_windows(measurement.geometry)):
        if len(win):
            d = _differences(y[f][:, win])  # [n_coils, n_windows, 1]
            diffs.append(np.concatenate([d.real.ravel(), d.imag.ravel()]))
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    if d.size < MIN_SAMPLES:
        raise NoiseUnavailable("/data", f"only {d.size} outer k-space samples lie along a readout: no noise estimate.",
                               "Give lambda/iterations as numbers, or store noise_variance in the file.")
    sigma_part = mad_sigma(d)  # per real and imaginary part
    var = 2.0 * sigma_part ** 2
    return NoiseEstimate(var, var * y.size, "estimated (eighth differences along the readout, outer k-space)",
                         {"noise_variance": var, "differences": int(d.size)})
