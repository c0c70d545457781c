"""Where the new measurement changed the prior: the change map written next to a NeRP result.

NeRP starts from the aligned prior and moves away from it only where the new data disagree with
it, so the difference of the result and the aligned prior is the change the data support, plus
small residues of misalignment and undersampling everywhere. The map is that difference (its
magnitude), smoothed over a few voxels and divided by its robust spread over the whole grid: a
value of 3 means three times the typical background disagreement. The module shows it over the
reconstruction from CHANGE_THRESHOLD up.
"""

from __future__ import annotations

import numpy as np

CHANGE_THRESHOLD = 3.0  # in units of the background's robust spread
SMOOTH_PX = 1.5  # in-plane Gaussian sigma, voxels: the scale of a lesion edge, not of a streak


def change_map(image, aligned_prior, grid_shape) -> np.ndarray:
    """float32 map on `grid_shape` (nz, ny, nx): |image − aligned_prior|, smoothed in-plane, in units
    of 1.4826 × its median absolute deviation (the spread of a Gaussian background). MR images
    (complex, or with a frame axis) are compared as magnitudes of their first frame, the prior
    after its least-squares scale onto the image (MR intensity has no absolute scale; for CT the
    scale is about 1)."""
    from scipy.ndimage import gaussian_filter

    from .metrics import scale_to_reference

    def plane(x):
        x = np.asarray(x)
        x = np.abs(x) if np.iscomplexobj(x) else x
        return x.reshape((-1,) + tuple(grid_shape))[0].astype(np.float64)

    result = plane(image)
    diff = np.abs(result - scale_to_reference(plane(aligned_prior), result))
    sigma = (0.0, SMOOTH_PX, SMOOTH_PX) if grid_shape[0] == 1 else (SMOOTH_PX,) * 3
    smooth = gaussian_filter(diff, sigma, mode="nearest")
    spread = 1.4826 * float(np.median(np.abs(smooth - np.median(smooth))))
    if not spread > 0:
        spread = float(smooth.std()) or 1.0
    return ((smooth - np.median(smooth)) / spread).astype(np.float32)
