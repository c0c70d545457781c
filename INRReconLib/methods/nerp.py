"""NeRP (Shen, Pauly, Xing 2022): embed an earlier scan of the patient in the INR, then fit the
new measurements, on the INR engine (engine/).

  (0) prior alignment (`prior_registration`): register the prior to a TV reconstruction of the
      data (registration.py), so the embedding starts from the current anatomy; for 2D data and a
      prior volume, first pick the prior's slice that matches the data; a prior that does not
      look like the data is refused (`prior_mismatch`); with `prior_change_relax`, the prior is
      replaced where an INR fit without it shows that the patient changed;
  (a) prior embedding: fit the model to the aligned prior on the reconstruction grid;
  (b) reconstruction: from those weights, fit the measurements (engine/fitting.py).
The result's `aligned_prior` is the prior as embedded; its `field` renders on any grid.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import InputError
from ..io.prior import PriorSlices, prior_image
from .engine.run import InrRun
from .presets import backend_config
from .registration import align_to_measurement

log = logging.getLogger("INRReconLib.methods.nerp")

# prior_change_relax needs an INR without prior that resolves the change: measured on the 256²
# thorax slice, 60 parallel views it lifts NeRP's lesion ROI 27.21 -> 29.26 dB (whole image
# 37.70 -> 37.86); at 20 views the INR's lesion is below NeRP's and relaxing cost 1.2 dB there
# (26.77 -> 25.60) and 2.2 dB on the whole image. So CT with fewer views keeps the prior as is.
RELAX_MIN_VIEWS = 40


def _check_prior(prior, problem) -> torch.Tensor:
    """The prior as a tensor of the operator's image shape (physics units)."""
    grid = problem.grid
    p = np.asarray(prior)
    if problem.mr:
        if p.shape == grid.shape:
            p = p[None]
        if p.shape != (1,) + grid.shape:
            raise InputError("prior", f"has shape {list(p.shape)}, the MR grid needs {list(grid.shape)} "
                             f"(nz, ny, nx) or [1, nz, ny, nx].", "Resample the prior onto the measurement grid.")
        dtype = torch.complex64
    else:
        if np.iscomplexobj(p):
            raise InputError("prior", "is complex, but the measurement is CT (μ, real).",
                             "Use a CT scan as the prior for CT data (an MR prior does not fit CT).")
        if p.shape != grid.shape:
            raise InputError("prior", f"has shape {list(p.shape)}, the CT grid needs {list(grid.shape)} (nz, ny, nx).",
                             "Resample the prior onto the measurement grid.")
        if p.size and np.nanmax(p) > 10.0:
            raise InputError("prior", f"looks like HU (max {np.nanmax(p):.0f}), the method needs μ in 1/mm.",
                             "Convert with μ = μ_water (1 + HU/1000), or let the CLI/worker do it.")
        dtype = torch.float32
    if not np.all(np.isfinite(p)):
        raise InputError("prior", "contains NaN or Inf.", "Fill the invalid voxels (e.g. with 0).")
    return torch.as_tensor(p, dtype=dtype, device=problem.device)


def _check_prior_matches(correlation: float, cfg: dict, extra: dict) -> None:
    """Stop (prior_mismatch "error") or warn ("warn") when the aligned prior does not look like
    what the data show: another patient, another modality, another part of the body."""
    threshold = float(cfg["prior_min_correlation"])
    if correlation >= threshold:
        return
    message = (f"does not match the new data: rigidly aligned, its correlation with a TV image of the "
               f"measurement is {correlation:.2f}, where the patient's own earlier scan gives 0.93-0.98 "
               f"(prior_min_correlation {threshold:g}). It may be another patient, another modality or "
               "another part of the body.")
    if cfg["prior_mismatch"] == "error":
        raise InputError("prior", message, "Choose this patient's earlier scan of the same region and modality, "
                                           "or set prior_mismatch to 'warn' to use it anyway.")
    extra.setdefault("warnings", []).append(f"prior: {message} Used anyway (prior_mismatch 'warn').")


def _align(run: InrRun, prior, prior_t: torch.Tensor):
    """(0) (the prior registered to the data, as a tensor, None); or (None, the reference TV
    image) when a stop was requested while registering."""
    cfg = run.cfg
    if cfg["prior_registration"] == "none":
        log.info("prior_registration none: the prior is embedded as given, unaligned and unchecked "
                 "against the data (prior_min_correlation applies to a registered prior)")
        return prior_t, None
    slices = None
    if isinstance(prior, PriorSlices) and float(cfg["prior_slice_search_mm"]) > 0:
        slices = prior.within(cfg["prior_slice_search_mm"])
    m = run.measurement
    aligned, info, reference = align_to_measurement(
        prior_t.cpu().numpy(), m, cfg["prior_registration"], cfg["registration_reference_iterations"], run.device,
        run.monitor, slices=slices, backends=backend_config(cfg, m.modality), op=run.problem.op)
    run.extra["prior_registration"] = info
    if aligned is None:
        return None, reference
    _check_prior_matches(info["match_correlation"], cfg, run.extra)
    run.aligned_prior = aligned
    run.extra["registration_seconds"] = run.elapsed()
    return torch.as_tensor(aligned, dtype=prior_t.dtype, device=run.device), None


PHASE_SMOOTH_PX = 4.0  # the low-resolution phase: Gaussian sigma of the back-projected data, voxels


def _with_data_phase(problem, prior_t: torch.Tensor) -> torch.Tensor:
    """A magnitude prior (MR images are stored as magnitudes) given the phase of the new data:
    the angle of the back-projected k-space, smoothed in-plane. Measured MR images are complex
    (B0, receive phases; with estimated coil maps, the reference coil's phase), and a real prior
    against a complex image fits a scale of the wrong sign or none (radial brain, ESPIRiT maps:
    'best-fit scale is not positive'). A prior that already holds a phase is kept as it is."""
    if bool(torch.any(prior_t.imag != 0)):
        return prior_t
    from scipy.ndimage import gaussian_filter

    with torch.no_grad():
        back = problem.AT(problem.y).cpu().numpy()
    sigma = (0.0,) * (back.ndim - 2) + (PHASE_SMOOTH_PX, PHASE_SMOOTH_PX)
    smooth = gaussian_filter(back.real, sigma) + 1j * gaussian_filter(back.imag, sigma)
    phase = smooth / np.maximum(np.abs(smooth), 1e-12 * max(float(np.abs(smooth).max()), 1e-30))
    return prior_t.abs() * torch.as_tensor(phase.reshape(prior_t.shape), dtype=prior_t.dtype, device=prior_t.device)


def _relax_changed(run: InrRun, prior_t: torch.Tensor):
    """(the prior to embed, None), or (None, the best image so far) when a stop was requested.

    With `prior_change_relax` t > 0: fit the same field without a prior (the `inr` method, stage
    "prior-change"), map where that image and the aligned prior disagree (change.py; in units of
    the background's spread) and, from t up to 2t, replace the prior by that image before
    embedding it. The prior then only carries what did not change: where the patient changed
    (a grown tumour) NeRP starts from what the data show instead of the old anatomy, which the
    fit did not undo (measured: the 60-view 2D CT cases, README). A TV image in place of the INR
    gained less (its lesion is itself worse than the INR's). CT with fewer than RELAX_MIN_VIEWS
    views keeps the prior (there the INR is the worse image)."""
    threshold = float(run.cfg["prior_change_relax"])
    if not threshold > 0:
        return prior_t, None
    problem = run.problem
    if not problem.mr and problem.n_views < RELAX_MIN_VIEWS:
        run.extra["prior_change_relax"] = {"threshold": threshold, "applied": False,
                                           "why": f"{problem.n_views} views: off below {RELAX_MIN_VIEWS}"}
        return prior_t, None
    from .change import change_map
    from .registration import StageMonitor
    from .registry import reconstruct

    steps = int(run.cfg["iterations"])
    reference = reconstruct(run.measurement, "inr", config=dict(run.cfg), iterations=steps, device=run.device,
                            monitor=StageMonitor(run.monitor, "prior-change", steps))
    if reference.cancelled:
        return None, reference.image
    image = np.asarray(reference.image)
    grid_shape = problem.grid.shape
    weight = np.clip(change_map(image, prior_t.cpu().numpy(), grid_shape) / threshold - 1.0, 0.0, 1.0)
    weight = torch.as_tensor(weight, dtype=torch.float32, device=prior_t.device)
    # MR images carry a leading frame axis; the map is on the grid, the same for every frame.
    weight = weight.reshape((1,) * (prior_t.ndim - len(grid_shape)) + tuple(grid_shape))
    image_t = torch.as_tensor(image.reshape(prior_t.shape), dtype=prior_t.dtype, device=prior_t.device)
    run.extra["prior_change_relax"] = {"threshold": threshold, "applied": True,
                                       "reference": f"inr, {reference.iterations} steps",
                                       "relaxed_fraction": float((weight > 0).float().mean()),
                                       "seconds": float(reference.seconds)}
    return prior_t + weight * (image_t - prior_t), None


def nerp(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None):
    """NeRP: embed `prior` (NumPy, measurement grid, physics units) in the field, then fit the data.
    For 2D data `prior` may be an io.prior.PriorSlices (a prior volume's slices near the plane):
    the prior registration then starts from the slice that best matches the data, searched within
    `prior_slice_search_mm` of the plane."""
    if prior is None:
        raise InputError("prior", "NeRP needs a prior image.", "Give an earlier scan of the patient, or use method 'inr'.")
    run = InrRun("nerp", measurement, config, iterations, device, monitor)
    with run.guard():
        problem = run.open_problem()
        prior_t = _check_prior(prior_image(prior), problem)
        prior_t, reference = _align(run, prior, prior_t)
        if prior_t is None:
            # Cancelled while reconstructing the reference or registering: that TV image is the best result so far.
            return run.stopped_early(reference)
        if problem.mr:
            prior_t = _with_data_phase(problem, prior_t)
            c = problem.fit_prior_scale(prior_t)
            if not c > 0:
                raise InputError("prior", "does not resemble the measured image (its best-fit scale is not positive).",
                                 "Check that the prior is the same patient and orientation as the data.")
            prior_t = prior_t * c
            run.extra["prior_scale"] = c
        prior_t, partial = _relax_changed(run, prior_t)
        if prior_t is None:
            return run.stopped_early(partial)
        model = run.new_model(prior_t)
        embedded = int(run.cfg["embed_iterations"]) > 0
        if embedded and run.embed(model, prior_t):
            return run.result(model, 0, True)
        return run.fit(model, embedded=embedded)
