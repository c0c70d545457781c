"""NeRP (Shen, Pauly, Xing 2022): embed an earlier scan of the patient in the INR, then fit the
new measurements, on the INR engine (engine/).

  (0) prior alignment (`prior_registration`): register the prior to a TV reconstruction of the
      data (registration.py), so the embedding starts from the current anatomy; for 2D data and a
      prior volume, first pick the prior's slice that matches the data; a prior that does not
      look like the data is refused (`prior_mismatch`);
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
            c = problem.fit_prior_scale(prior_t)
            if not c > 0:
                raise InputError("prior", "does not resemble the measured image (its best-fit scale is not positive).",
                                 "Check that the prior is the same patient and orientation as the data.")
            prior_t = prior_t * c
            run.extra["prior_scale"] = c
        model = run.new_model(prior_t)
        embedded = int(run.cfg["embed_iterations"]) > 0
        if embedded and run.embed(model, prior_t):
            return run.result(model, 0, True)
        return run.fit(model, embedded=embedded)
