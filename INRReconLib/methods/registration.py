"""Aligning the prior with the new measurements before NeRP embeds it.

The earlier scan comes from another session: the patient lies a little differently and soft
tissue has moved. NeRP starts from the prior, so every millimetre of misalignment is an error the
sparse data must undo. A clinical workflow registers the earlier scan to the new one first; here
the new one exists only as sparse data, so the prior is registered to a quick TV reconstruction
of it: rigid (Euler, normalised correlation, three resolution levels), then, for "deformable", a
coarse B-spline on top. Correlation rather than mean squares because MR intensities have no
common scale and a TV image of 20 views has a different contrast from a real scan.

For 2D data (one table position) and a prior volume, the table offset matters too: the prior's
slice at the plane's nominal position may be millimetres off (`pick_slice` chooses among the
prior's slices near the plane first).

Only the measurements drive the alignment. The B-spline is coarse (a control point every
CONTROL_POINT_SPACING_VOXELS voxels) so that it follows breathing and setup deformation, not
the small lesion whose change NeRP must reconstruct from the data.

"auto" registers deformably and then asks the measurements which alignment to keep: the rigid or
the deformable one, whichever the projector maps closer to the data (relative residual; for MR
after a least-squares scale, since MR intensities have no unit). The correlation with the TV image cannot decide it, since the B-spline
raises it also where it follows the TV image's streaks. Measured on the thorax slices (20 views,
prior as a volume, aligned prior PSNR rigid / deformable; residual rigid / deformable):
128² parallel 29.24 / 33.35 dB (0.0238 / 0.0121), 256² parallel clean 30.98 / 32.72 (0.0154 /
0.0107), noisy 30.98 / 32.63 (0.0171 / 0.0130), fan clean 30.90 / 29.91 (0.0168 / 0.0174), fan
noisy 30.95 / 29.38 (0.0185 / 0.0200): the residual picks the better alignment in all five.
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import InputError, last_line
from . import auto_params
from .monitor import Monitor
from .options import PRIOR_REGISTRATIONS

MODES = PRIOR_REGISTRATIONS
# About 50 mm on the 256² thorax slice and 20 mm on the brain; measured there (prior PSNR after
# aligning to the TV image, mesh 6 / 10 nodes across 256 voxels): CT 27.97 / 28.79 dB, MR 31.73 /
# 35.80 dB, from 24.42 / 21.06 dB unaligned.
CONTROL_POINT_SPACING_VOXELS = 25
MAX_METRIC_SAMPLES = 100_000
# Optimizer iterations per resolution level: the budgets that progress is reported against
# (the optimizers usually converge before them, and the bar then jumps to the end).
RIGID_ITERATIONS = 200
BSPLINE_ITERATIONS = 100
BSPLINE_LEVELS = ([2, 1], [1, 0])


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InputError("prior_registration", f"unknown mode {mode!r}.", f"Use one of: {', '.join(MODES)}.")


def _sitk_image(array: np.ndarray, spacing_xyz):
    import SimpleITK as sitk

    squeeze = array.shape[0] == 1
    image = sitk.GetImageFromArray(np.ascontiguousarray((array[0] if squeeze else array).astype(np.float32)))
    image.SetSpacing([float(s) for s in (spacing_xyz[:2] if squeeze else spacing_xyz)])
    return image


class _Cancelled(Exception):
    """Raised from a registration's iteration callback to end Execute() when a stop is requested."""


def _registration(metric_levels, n_voxels, on_iteration):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    if on_iteration is not None:
        # A stop is signalled by raising from this callback: StopRegistration() is ignored by the
        # L-BFGS-B optimizer, and the 3D B-spline stage runs for about a minute; the exception
        # ends Execute() with a RuntimeError at the next iteration whatever the optimizer.
        reg.AddCommand(sitk.sitkIterationEvent, lambda: on_iteration(reg))
    reg.SetMetricAsCorrelation()
    reg.SetInterpolator(sitk.sitkLinear)
    shrink, smooth = metric_levels
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(smooth)
    reg.SetSmoothingSigmasAreSpecifiedInPhysicalUnits(False)
    if n_voxels > MAX_METRIC_SAMPLES:
        # A fixed-seed random subset of a 3D grid's voxels: the B-spline metric and its gradient
        # then cost a fraction of a full pass, and the result stays reproducible. Not for 2D: 20 %
        # of a 256² slice cost the brain 2 dB of prior PSNR (33.71 against 35.85 dB).
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(MAX_METRIC_SAMPLES / n_voxels, 1)
    return reg


def _execute(reg, fixed, moving, stop, stage, hint):
    """reg.Execute(): the transform it returns, or None if `stop` ended it."""
    # SimpleITK hands an exception raised in a callback to sys.excepthook before it fails
    # Execute(); a cancel is no error, so its traceback is kept off stderr.
    previous = sys.excepthook

    def hook(kind, value, tb):
        if not issubclass(kind, _Cancelled):
            previous(kind, value, tb)

    sys.excepthook = hook
    try:
        return reg.Execute(fixed, moving)
    except RuntimeError as exc:
        if stop is not None and stop():
            return None
        raise InputError("prior_registration", f"the {stage} registration failed ({last_line(exc)}).",
                         hint) from None
    finally:
        sys.excepthook = previous


def _metric_levels(shape):
    """(shrink factors, smoothing sigmas) of the rigid stage. Shrinking below ~16 voxels along an
    axis leaves nothing to register (3D grids are often thin in z)."""
    return ([4, 2, 1], [2, 1, 0]) if min((n for n in shape if n > 1), default=1) >= 64 else ([2, 1], [1, 0])


def planned_iterations(mode: str, shape) -> int:
    """The optimizer iterations `align_prior` may take at most on a grid of `shape`."""
    check_mode(mode)
    if mode == "none":
        return 0
    rigid = RIGID_ITERATIONS * len(_metric_levels(shape)[0])
    return rigid + (BSPLINE_ITERATIONS * len(BSPLINE_LEVELS[0]) if mode in ("deformable", "auto") else 0)


def align_prior(prior: np.ndarray, reference: np.ndarray, grid, mode: str, stop=None, progress=None):
    """Register `prior` to `reference` (both real or complex arrays of grid.shape) and return
    (aligned prior, info), or (None, info) when `stop` (a callable, checked at every optimizer
    iteration) asked to end the run. `progress(iteration, total, correlation)`, if given, is
    called at every optimizer iteration, counted over both stages against
    planned_iterations(mode, grid.shape). The transform is found on magnitudes and applied to the
    real and imaginary parts alike; info holds the mode, the rigid parameters (rotation in rad,
    translation in mm), the B-spline mesh and the final correlation of each stage. For
    "deformable" and "auto" the aligned prior is a dict {"rigid": ..., "deformable": ...} of both
    candidates (the rigid one after the first stage alone): align_to_measurement chooses and
    checks the match on the rigid one."""
    import SimpleITK as sitk

    check_mode(mode)
    if mode == "none":
        return prior, {"mode": "none"}
    if prior.shape != reference.shape or prior.shape != grid.shape:
        raise InputError("prior", f"has shape {list(prior.shape)}, the reference needs {list(grid.shape)}.",
                         "Resample the prior onto the measurement grid.")
    fixed = _sitk_image(np.abs(reference), grid.spacing)
    moving = _sitk_image(np.abs(prior), grid.spacing)
    dim = fixed.GetDimension()
    levels = _metric_levels(grid.shape)
    total = planned_iterations(mode, grid.shape)
    done = [0]

    def on_iteration(reg):
        done[0] += 1
        if progress is not None:
            # An iteration past the budget can only come from a level the budget did not foresee.
            progress(min(done[0], total), total, -reg.GetMetricValue())
        if stop is not None and stop():
            raise _Cancelled("prior registration cancelled")

    rigid = _registration(levels, prior.size, on_iteration)
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler2DTransform() if dim == 2 else sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    rigid.SetInitialTransform(initial, inPlace=False)
    rigid.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=RIGID_ITERATIONS)
    rigid.SetOptimizerScalesFromPhysicalShift()
    transform = _execute(rigid, fixed, moving, stop, "rigid",
                         "Check that the prior shows the same anatomy, or set prior_registration to 'none'.")
    if transform is None:
        return None, {"mode": mode, "cancelled": True}
    euler = transform.GetNthTransform(0) if hasattr(transform, "GetNthTransform") else transform
    info = {"mode": mode, "rigid_parameters": [float(v) for v in euler.GetParameters()],
            "rigid_correlation": float(-rigid.GetMetricValue())}
    if mode == "rigid":
        return _warp(prior, fixed, transform, grid), info

    composite = sitk.CompositeTransform(dim)
    composite.AddTransform(transform)
    rigid_moved = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0)
    mesh = [max(1, round(n / CONTROL_POINT_SPACING_VOXELS)) for n in fixed.GetSize()]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh)
    deform = _registration(BSPLINE_LEVELS, prior.size, on_iteration)
    deform.SetInitialTransform(bspline, inPlace=True)
    deform.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=BSPLINE_ITERATIONS)
    try:
        finished = _execute(deform, fixed, rigid_moved, stop, "deformable", "Use prior_registration 'rigid', or 'none'.")
    except InputError as exc:
        if mode != "auto":
            raise
        # auto: the rigid alignment is a candidate on its own; keep it and say why.
        info["deformable_failed"] = str(exc)
        return {"rigid": _warp(prior, fixed, transform, grid)}, info
    if finished is None:
        return None, {"mode": mode, "cancelled": True}
    # Resample transforms points of the fixed image: the B-spline acts first, then the rigid map.
    composite.AddTransform(bspline)
    info["bspline_mesh"] = mesh
    info["deformable_correlation"] = float(-deform.GetMetricValue())
    return {"rigid": _warp(prior, fixed, transform, grid), "deformable": _warp(prior, fixed, composite, grid)}, info


def _warp(prior: np.ndarray, fixed, transform, grid) -> np.ndarray:
    """`prior` resampled by `transform` onto `fixed`'s grid (real and imaginary parts alike)."""
    import SimpleITK as sitk

    def warp(part: np.ndarray) -> np.ndarray:
        out = sitk.Resample(_sitk_image(part, grid.spacing), fixed, transform, sitk.sitkBSpline, 0.0)
        return sitk.GetArrayFromImage(out).reshape(grid.shape)

    if np.iscomplexobj(prior):
        return (warp(prior.real) + 1j * warp(prior.imag)).astype(prior.dtype)
    # Cubic B-spline resampling overshoots at the skin: up to -1072 HU in the air of the thorax
    # slice (5 % of its pixels below -1000). Interpolation adds no information, so the aligned
    # image keeps the prior's value range.
    return np.clip(warp(prior), prior.min(), prior.max()).astype(prior.dtype)


def data_residual(image: np.ndarray, measurement, device, backends=None, op=None) -> float:
    """‖c A x − y‖ / ‖y‖ for the image x (grid shape, MR with or without its frame axis): how far
    the measurement finds x from what it saw. CT images are in μ, an absolute unit, so c = 1; MR
    intensities have none, so c is the least-squares scale (complex). backends: the method's
    presets.backend_config (default: auto), or `op`, the measurement's operator, already built."""
    import torch

    from ..physics import operator_for

    op = op or operator_for(measurement, device, **(backends or {}))
    mr = measurement.modality == "MR"
    dtype = torch.complex64 if mr else torch.float32
    y = torch.as_tensor(np.asarray(measurement.data), dtype=dtype, device=device)
    with torch.no_grad():
        ax = op.forward(torch.as_tensor(np.asarray(image), dtype=dtype, device=device).reshape(op.image_shape))
        if mr:
            # A scale would hide an intensity error in CT: on the 20-view fan case it made the
            # B-spline candidate look better (0.0161 against 0.0167) where it is not (29.91
            # against 30.90 dB; unscaled residuals 0.0174 against 0.0168).
            ax = ax * (torch.vdot(ax.reshape(-1), y.reshape(-1)) / torch.vdot(ax.reshape(-1), ax.reshape(-1)).real.clamp_min(1e-30))
        return float(torch.linalg.vector_norm(ax - y) / torch.linalg.vector_norm(y).clamp_min(1e-30))


def pick_slice(images: np.ndarray, offsets_mm, reference: np.ndarray, grid, stop=None, progress=None):
    """For 2D data: which of a prior volume's slices `images` ([k, ny, nx], at `offsets_mm` from
    the plane) shows the anatomy of `reference` (a TV image on the 2D grid). Each is registered
    rigidly in-plane to the reference and the best final correlation wins; a setup shift in-plane
    would otherwise hide the right slice. Returns (index, info), or (None, info) when `stop`
    ended it; `progress(i, k, correlation)` after each slice."""
    correlations = []
    for i, image in enumerate(images):
        aligned, info = align_prior(image.reshape(grid.shape), reference, grid, "rigid", stop=stop)
        if aligned is None:
            return None, {"cancelled": True}
        correlations.append(info["rigid_correlation"])
        if progress is not None:
            progress(i + 1, len(images), correlations[-1])
    best = int(np.argmax(correlations))
    return best, {"offset_mm": float(offsets_mm[best]), "offsets_mm": [float(o) for o in offsets_mm],
                  "correlations": correlations}


class StageMonitor(Monitor):
    """Forwards a helper reconstruction's progress to the run's monitor under one stage name and
    against the whole stage's total (here: reference and registration iterations; NeRP's
    "prior-change" INR too), so the progress bar and Slicer show one stage rather than a
    separate TV or INR run. It reports
    no time left: the stage's steps differ in cost and its total is a budget, so the TV rate
    times the remaining steps overstated the wait 3-10x (measured: 256² slice, 23-35 s shown
    for 2-11 s left; 64x128x128 cone beam, 616-893 s for 75-177 s)."""

    def __init__(self, parent, stage, total):
        super().__init__()
        self.parent, self.stage, self.total = parent, stage, total

    def report(self, stage, iteration, total, loss=None, current=None, *, eta_known=False, **extra):
        # The stage as a whole has no ETA, whatever its parts report.
        self.parent.report(self.stage, iteration, self.total, loss=loss, current=current, eta_known=False, **extra)

    def stop_requested(self) -> bool:
        return self.parent.stop_requested()


def align_to_measurement(prior: np.ndarray, measurement, mode: str, reference_iterations: int, device, monitor,
                         slices=None, backends=None, op=None):
    """Align `prior` (grid shape) with a TV reconstruction of `measurement` (see the module
    docstring; `prior` may carry MR's leading frame axis; the config was checked by nerp).
    slices: for 2D data, (images [k, ny, nx], offsets_mm) of a prior volume (io.prior.PriorSlices):
    the one `pick_slice` finds closest to the data replaces `prior` before the registration.
    Progress goes to `monitor` as one stage, "prior-registration": the reference's iterations,
    one step per candidate slice, then the registration's optimizer iterations, each with its
    correlation. The total is the budget; the optimizers usually converge before it and the
    next stage starts from there. Returns (aligned prior of the same shape, or None if the run
    was cancelled during the reference, the slice search or the registration; info; the
    reference image as TV returned it). backends: the method's presets.backend_config, for the TV
    reference and the data residuals; op: the measurement's operator if the caller has built it
    (NeRP has), for the residuals."""
    from .registry import reconstruct

    grid = measurement.grid
    n_ref = int(reference_iterations)
    n_slices = len(slices[1]) if slices is not None else 0
    total = n_ref + n_slices + planned_iterations(mode, grid.shape)
    stage = StageMonitor(monitor, "prior-registration", total)
    # a fixed weight, the one the registration was tuned with: `auto` needs a converged
    # continuation, more than the reference's few iterations
    fixed = {"lambda": auto_params.FALLBACK[("tv", measurement.modality)]}
    ref = reconstruct(measurement, "tv", config={**dict(backends or {}), **fixed}, iterations=n_ref, device=device,
                      monitor=stage)
    if ref.cancelled:
        return None, {"mode": mode, "cancelled": True}, ref.image
    reference = np.asarray(ref.image).reshape(grid.shape)
    search = None
    if n_slices:
        def slice_progress(i, _k, correlation):
            stage.report(stage.stage, n_ref + i, total, correlation=correlation)

        best, search = pick_slice(slices[0], slices[1], reference, grid, stop=monitor.stop_requested,
                                  progress=slice_progress)
        if best is None:
            return None, {"mode": mode, "cancelled": True}, ref.image
        prior = slices[0][best].reshape(prior.shape).astype(prior.dtype)

    def progress(iteration, _planned, correlation):
        stage.report(stage.stage, n_ref + n_slices + iteration, total, correlation=correlation)

    # MR images carry a leading frame axis; the registration works on the grid's (nz, ny, nx).
    aligned, info = align_prior(prior.reshape(grid.shape), reference, grid, mode,
                                stop=monitor.stop_requested, progress=progress)
    if aligned is None:
        return None, info, ref.image
    candidates = aligned if isinstance(aligned, dict) else {"rigid": aligned}
    if mode == "auto":
        from ..physics import operator_for

        op = op or operator_for(measurement, device, **(backends or {}))
        residuals = {name: data_residual(c, measurement, device, op=op) for name, c in candidates.items()}
        chosen = min(residuals, key=residuals.get)
        info.update(chosen=chosen, data_residual=residuals)
    else:
        chosen = "deformable" if mode == "deformable" else "rigid"
    aligned = candidates[chosen]
    info["reference"] = f"tv, {ref.iterations} iterations"
    # Whether the prior belongs to these data is judged on the rigid alignment: a B-spline warps
    # even another patient's chest CT to a correlation of 0.93-0.95 with the TV image (0.47 rigid).
    info["match_correlation"] = match_correlation(candidates["rigid"], reference)
    if chosen != "rigid":
        info["aligned_correlation"] = match_correlation(aligned, reference)
    if search is not None:
        info["slice_search"] = search
    return aligned.reshape(prior.shape), info, ref.image


def match_correlation(aligned: np.ndarray, reference: np.ndarray) -> float:
    """Normalised correlation of the aligned prior's and the reference's magnitudes over the
    whole grid: how much the prior looks like what the data show. Measured after the rigid
    alignment on the thorax and brain cases (20-view CT, 40-spoke MR, TV reference of 200
    iterations): the patient's own earlier scan 0.93 (3D cone beam, 64x128x128), 0.95 (MR) and
    0.96-0.98 (2D CT); the same patient's scan 30 mm along the table 0.93, 60 mm 0.83; another
    patient's chest CT 0.47; a chest CT as the prior of a brain MR below 0."""
    a = np.abs(np.asarray(aligned)).astype(np.float64).ravel()
    b = np.abs(np.asarray(reference)).astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b / denominator) if denominator > 0 else 0.0
