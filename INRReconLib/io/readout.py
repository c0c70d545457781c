"""Readout oversampling of raw Cartesian MR data (Siemens twix, ISMRMRD): removing it, and the
noise variance measured in its band outside the prescribed field of view."""

from __future__ import annotations

import numpy as np


def oversampling_noise(kspace: np.ndarray, counts: np.ndarray, nx: int):
    """E|n|² per k-space sample after averaging, from the readout-oversampling band: along the
    readout in image space, the columns outside the central nx (outside the prescribed FOV) hold
    noise only where the object fits in the FOV; the median absolute deviation of their real and
    imaginary parts ignores the columns it does not fit. The orthonormal FFTs keep white noise's
    variance per sample through the crop. None when too few lines were acquired."""
    from ..physics.mr_coil_maps import centred_ifft
    from ..physics.noise import mad_sigma

    n_col = kspace.shape[-1]
    start = n_col // 2 - nx // 2
    outside = np.r_[0:max(start - nx // 8, 0), min(start + nx + nx // 8, n_col):n_col]  # a margin off the FOV
    acquired = counts > 0  # [frames, ny]
    if outside.size < 8 or not acquired.any():
        return None
    band = centred_ifft(kspace, axes=(-1,))[..., outside]  # [f, c, y, cols]
    # lines averaged n times carry 1/n of the noise variance: scale to one average, then back
    scaled = band * np.sqrt(np.maximum(counts, 1))[:, None, :, None]
    values = np.moveaxis(scaled, 2, 1)[acquired]  # [lines, c, cols]
    if values.size < 64:
        return None
    sigma = mad_sigma(np.concatenate([values.real.ravel(), values.imag.ravel()]))
    return float(2.0 * sigma ** 2 * np.mean(1.0 / counts[acquired]))


def crop_readout(kspace: np.ndarray, nx: int) -> np.ndarray:
    """Remove readout oversampling: to image space along the readout, keep the central nx."""
    from ..physics.mr_coil_maps import centred_fft, centred_ifft

    image = centred_ifft(kspace, axes=(-1,))
    start = kspace.shape[-1] // 2 - nx // 2
    return centred_fft(image[..., start:start + nx], axes=(-1,))
