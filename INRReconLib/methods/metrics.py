"""Image quality against a reference: PSNR, SSIM, NRMSE, with optional region of interest.

Conventions (the benchmark tables in shared/data/README.md use them):
- data range defaults to ref.max() - ref.min() over the whole reference (also for ROI numbers,
  so an ROI PSNR is comparable with the image PSNR);
- SSIM is Wang et al. 2004: Gaussian window σ = 1.5 (truncated at 3.5 σ, 11 x 11), K1 = 0.01,
  K2 = 0.03, population covariances, computed in 2D over the last two axes (3D volumes and
  dynamic stacks: per slice/frame) and averaged away from the 5-pixel border, like
  `skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=...)`;
- complex inputs are compared by magnitude (MR).
"""

from __future__ import annotations

import numpy as np

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(x, ref):
    x = np.asarray(x)
    ref = np.asarray(ref)
    if np.iscomplexobj(x):
        x = np.abs(x)
    if np.iscomplexobj(ref):
        ref = np.abs(ref)
    x = x.astype(np.float64)
    ref = ref.astype(np.float64)
    if x.shape != ref.shape:
        raise ValueError(f"image shape {x.shape} differs from reference shape {ref.shape}")
    return x, ref


def _mask(mask, shape):
    if mask is None:
        return None
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape:
        m = np.broadcast_to(m, shape)
    if not m.any():
        raise ValueError("the mask / ROI is empty")
    return m


def _data_range(ref, data_range):
    if data_range is None:
        data_range = float(ref.max() - ref.min())
    if not data_range > 0:
        raise ValueError("data range is zero (constant reference); pass data_range explicitly")
    return float(data_range)


def psnr(x, ref, data_range=None, mask=None) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range² / MSE).

    data_range: default ref.max() - ref.min() over the whole reference.
    mask: bool array (broadcastable to the image); the MSE is taken over its true voxels.
    Returns inf for identical images.
    """
    x, ref = _pair(x, ref)
    dr = _data_range(ref, data_range)
    m = _mask(mask, ref.shape)
    diff = (x - ref) if m is None else (x - ref)[m]
    mse = float(np.mean(diff ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(dr ** 2 / mse))


def nrmse(x, ref, mask=None) -> float:
    """Normalised RMS error ‖x − ref‖₂ / ‖ref‖₂ (Euclidean normalisation), over the mask if given."""
    x, ref = _pair(x, ref)
    m = _mask(mask, ref.shape)
    if m is not None:
        x, ref = x[m], ref[m]
    denom = float(np.sqrt(np.sum(ref ** 2)))
    if denom == 0:
        raise ValueError("reference is zero; NRMSE is undefined")
    return float(np.sqrt(np.sum((x - ref) ** 2)) / denom)


def ssim_map(x, ref, data_range=None) -> np.ndarray:
    """Per-pixel SSIM (same shape as the inputs, ndim >= 2), computed in 2D over the last two axes."""
    from scipy.ndimage import gaussian_filter

    x, ref = _pair(x, ref)
    if x.ndim < 2:
        raise ValueError("SSIM needs at least a 2D image")
    dr = _data_range(ref, data_range)
    sigma = [0.0] * (x.ndim - 2) + [SSIM_SIGMA, SSIM_SIGMA]

    def blur(a):
        return gaussian_filter(a, sigma=sigma, truncate=SSIM_TRUNCATE, mode="reflect")

    mu_x, mu_y = blur(x), blur(ref)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(ref * ref) - mu_y ** 2
    cov = blur(x * ref) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * dr) ** 2, (SSIM_K2 * dr) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return num / den


def _interior(shape) -> np.ndarray:
    """Pixels at least one window radius from the in-plane border (where the window is complete)."""
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    inside = np.zeros(shape, dtype=bool)
    ny, nx = shape[-2:]
    if ny > 2 * pad and nx > 2 * pad:
        inside[..., pad:ny - pad, pad:nx - pad] = True
    else:
        inside[...] = True  # too small to crop; use everything
    return inside


def ssim(x, ref, data_range=None, mask=None) -> float:
    """Mean structural similarity (see the module docstring for the exact definition).

    3D volumes [z, y, x] and stacks [..., y, x] are handled slice by slice and averaged.
    mask: mean of the SSIM map over the mask's voxels that are away from the border (over the
    whole mask if that leaves nothing).
    """
    x, ref = _pair(x, ref)
    smap = ssim_map(x, ref, data_range)
    region = _interior(smap.shape)
    m = _mask(mask, smap.shape)
    if m is not None:
        region = region & m if np.any(region & m) else m
    return float(np.mean(smap[region]))


def scale_to_reference(x, ref) -> np.ndarray:
    """|x| times the least-squares scale onto |ref|: how MR magnitudes are compared everywhere
    (the worker's `reference` metrics and `inrrecon bench`), since MR intensity has no absolute
    scale. x may hold several frames of ref's shape."""
    m = np.abs(np.asarray(x))
    r = np.abs(np.asarray(ref))
    s = float((m * r).sum() / max(float((m * m).sum()), 1e-30))
    return m * s


def image_metrics(x, ref, roi=None, data_range=None) -> dict:
    """psnr (dB), ssim, nrmse of `x` against `ref`; with an ROI mask also roi_psnr, roi_ssim
    (and roi_nrmse), using the whole reference's data range."""
    _, r = _pair(x, ref)
    dr = _data_range(r, data_range)
    out = {"psnr": psnr(x, ref, dr), "ssim": ssim(x, ref, dr), "nrmse": nrmse(x, ref)}
    if roi is not None:
        out["roi_psnr"] = psnr(x, ref, dr, mask=roi)
        out["roi_ssim"] = ssim(x, ref, dr, mask=roi)
        out["roi_nrmse"] = nrmse(x, ref, mask=roi)
    return out


def dice(found, mask) -> float:
    """Dice overlap 2|F ∩ M| / (|F| + |M|) of two boolean masks (NaN when both are empty)."""
    f, m = np.asarray(found, dtype=bool), np.asarray(mask, dtype=bool)
    total = int(f.sum()) + int(m.sum())
    return float(2.0 * np.logical_and(f, m).sum() / total) if total else float("nan")


def roc_auc(score, mask) -> float:
    """Area under the ROC curve of `score` as a detector of `mask` (Mann–Whitney: the chance that
    a voxel inside the mask scores higher than one outside; ties count half). NaN when the mask
    is empty or covers everything."""
    s = np.asarray(score, dtype=np.float64).ravel()
    m = np.asarray(mask, dtype=bool).ravel()
    n_in, n_out = int(m.sum()), int((~m).sum())
    if n_in == 0 or n_out == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(s)  # ties get their average rank
    return float((ranks[m].sum() - n_in * (n_in + 1) / 2.0) / (n_in * n_out))

