"""NeRP (Shen, Pauly, Xing 2022) and INR without prior: fit a coordinate field to sparse data.

Pipeline (all in normalised units, see `_Problem`):
  (0) prior alignment (NeRP, `prior_registration`): register the prior to a TV reconstruction of
      the data (registration.py), so the embedding starts from the current anatomy; for 2D data
      and a prior volume, first pick the prior's slice that matches the data;
  (a) prior embedding (NeRP only): fit the field to the prior image on the reconstruction grid;
  (b) reconstruction: starting from those weights (or a random init for `inr`), rasterise the
      field on the grid, apply the physics operator and fit the measurements (Adam with a data
      loss, optional TV and ordered subsets, or ADMM);
  (c) inference: `render(field, grid, upsample=...)` on the grid or any finer one.
Both methods return a ReconResult whose `config` is the full config used, with the fitted field
as `result.field` for rendering at other resolutions and the aligned prior (or None) as
`result.aligned_prior`.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from ..errors import DeviceError, InputError
from ..fields import build_field, resolve_field_config
from ..fields.lattice import lattice_points
from ..io.prior import PriorSlices, prior_image
from .admm import admm_fit, cgls
from .losses import LOSSES, data_loss, make_scheduler, tv_loss
from .monitor import Monitor
from .presets import backend_config, load_config, measurement_context

log = logging.getLogger("INRReconLib.methods.nerp")
from .registration import align_to_measurement
from .registration import check_mode as check_registration_mode
from .result import ReconResult

OOM_FIX = ("Reduce the work per step: set points_per_chunk (e.g. 65536) to evaluate the field in chunks, "
           "raise subsets (fewer views per step), lower the hash table size (log2_hashmap_size) or the "
           "network width, or run on the CPU.")


# ----------------------------------------------------------------------------------------------
# coordinates and rendering
# ----------------------------------------------------------------------------------------------

def grid_axes(grid, upsample: int = 1, device="cpu") -> list:
    """Normalised grid-frame coordinates of the voxel centres along each axis: [x, y] for a 2D
    grid, [x, y, z] otherwise (1D tensors; the voxels are their product, fields.lattice_points).

    Millimetres are divided by the largest half extent of the grid, so the frame stays isotropic
    (a circle stays a circle for the Fourier features) and every coordinate lies in (-1, 1).
    `upsample` u samples u times finer in every axis of the grid (in-plane only for 2D), covering
    the same extent."""
    u = int(upsample)
    if u < 1:
        raise InputError("upsample", f"must be a positive integer, got {upsample}.")
    half = max(n * s for n, s in zip(grid.size, grid.spacing)) / 2.0
    axes = []
    for axis, (n, s) in enumerate(zip(grid.size, grid.spacing)):
        if axis == 2 and grid.is_2d:
            break
        m = n * u
        step = n * s / m
        axes.append(((torch.arange(m, dtype=torch.float64) - (m - 1) / 2.0) * step / half).float().to(device))
    return axes


def _evaluate(field, axes, chunk: int, grad: bool):
    """The field on the product grid of `axes`, [N, n_out]; in chunks of `chunk` points if the
    grid has more (chunk <= 0: all at once, through the field's fast whole-grid path)."""
    n_points = math.prod(a.numel() for a in axes)
    if chunk <= 0 or n_points <= chunk:
        return field.forward_grid(axes)
    parts = []
    for c in lattice_points(axes).split(chunk):
        if grad:
            # Recompute activations in backward: memory of one chunk instead of the whole grid.
            parts.append(torch.utils.checkpoint.checkpoint(field, c, use_reentrant=False))
        else:
            parts.append(field(c))
    return torch.cat(parts, 0)


def _to_image(values: torch.Tensor, shape_zyx, complex_out: bool) -> torch.Tensor:
    if complex_out:
        return torch.complex(values[:, 0], values[:, 1]).reshape(1, *shape_zyx)
    return values[:, 0].reshape(*shape_zyx)


@torch.no_grad()
def render(field, grid, upsample: int = 1, chunk: int = 262144) -> np.ndarray:
    """The field on `grid` (upsample u: u× finer, same extent), in physics units.

    CT: float32 [nz', ny', nx'] μ (1/mm); MR: complex64 [1, nz', ny', nx']. Uses the
    `intensity_scale` and `complex_output` the reconstruction attached to the field."""
    device = next(field.parameters()).device
    axes = grid_axes(grid, upsample, device)
    u = int(upsample)
    nz, ny, nx = grid.shape
    shape = (nz if grid.is_2d else nz * u, ny * u, nx * u)
    values = _evaluate(field, axes, chunk, grad=False)
    image = _to_image(values, shape, getattr(field, "complex_output", False)) * getattr(field, "intensity_scale", 1.0)
    image = image.cpu().numpy()
    return image.astype(np.complex64 if np.iscomplexobj(image) else np.float32)


# ----------------------------------------------------------------------------------------------
# the problem in normalised units
# ----------------------------------------------------------------------------------------------

class _Problem:
    """Measurement, operator and normalisation. Image u (normalised) ↔ physics image = scale · u;
    data y_n = y / scale, so A u is compared with y_n and u is O(1) whatever the units."""

    def __init__(self, measurement, config, device):
        from ..physics import operator_for

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
        if self.mr and data.shape[0] != 1:
            raise InputError("/data", f"has {data.shape[0]} frames; NeRP/INR reconstruct one static image.",
                             "Use the dynamic MRI method for time series, or pick one frame.")
        self.op = operator_for(measurement, device, **backend_config(config, measurement.modality))
        # The result's config names the backend that ran, not "auto".
        config.update(backend_config(config, measurement.modality, self.op))
        self.n_coils = self.op.n_coils if self.mr else 1
        dtype = torch.complex64 if self.mr else torch.float32
        self.y = torch.as_tensor(data, dtype=dtype, device=device)
        if tuple(self.y.shape) != tuple(self.op.data_shape):
            raise InputError("/data", f"has shape {list(self.y.shape)}, the geometry needs {list(self.op.data_shape)}.",
                             "Write the data in the layout of docs/measurement-format.md for this geometry.")
        self.image_shape = tuple(self.op.image_shape)
        self.scale = 1.0
        self.col_spacing = 1.0 if self.mr else _isocentre_col_spacing(measurement.geometry)
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


def _isocentre_col_spacing(geometry) -> float:
    """Detector column pitch scaled to the isocentre (the ramp filter's τ for fan/cone beams)."""
    v = geometry.vectors[0]
    pitch = float(np.linalg.norm(v[6:9]))
    if geometry.type == "cone":
        sid = float(np.linalg.norm(v[0:3]))
        sdd = float(np.linalg.norm(v[3:6] - v[0:3]))
        if sdd > 0 and sid > 0:
            pitch *= sid / sdd
    return pitch


def _robust_max(a: torch.Tensor) -> float:
    v = a.detach().abs().reshape(-1).float()
    k = max(1, int(math.ceil(0.999 * v.numel())))
    return float(v.kthvalue(k).values)


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


# ----------------------------------------------------------------------------------------------
# the two stages
# ----------------------------------------------------------------------------------------------

def _raster_fn(field, axes, problem, chunk):
    return lambda: _to_image(_evaluate(field, axes, chunk, grad=True), problem.grid.shape, problem.mr)


def embed_prior(field, axes, problem, prior_n, cfg, monitor, stage="prior-embedding"):
    """(a) Fit the field to the normalised prior (MSE on the grid). Returns (steps, cancelled)."""
    total = int(cfg["embed_iterations"])
    raster = _raster_fn(field, axes, problem, int(cfg["points_per_chunk"]))
    opt = torch.optim.Adam(field.parameters(), lr=float(cfg["embed_lr"]))
    sched = make_scheduler(opt, cfg["schedule"], total, cfg["step_size"], cfg["gamma"])
    for it in range(1, total + 1):
        opt.zero_grad(set_to_none=True)
        diff = raster() - prior_n
        loss = (diff.real ** 2 + diff.imag ** 2).mean() if diff.is_complex() else (diff ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()
        monitor.report(stage, it, total, loss=float(loss.detach()), current=lambda: render(field, problem.grid))
        if monitor.stop_requested():
            return it, True
    return total, False


def _level_schedule(field, cfg, total: int, embedded: bool):
    """step -> None: bring hash-grid levels in coarse to fine over the first `coarse_to_fine`
    fraction of the steps, starting from a quarter of the levels. From a random start (INR) the
    fine levels are masked out of the field. After a prior embedding (NeRP) `coarse_to_fine_prior`
    says what happens to the fine levels, which hold the prior's detail: "freeze" keeps them in
    the field but untrained until their turn; "mask" takes them out, so the data first fit the
    prior's coarse content alone, and fades the prior's detail back in with the level (measured,
    NeRP: 2D CT +0.3 dB with "mask", 3D cone crop 0.2 dB worse; MR 128² 0.8-1.0 dB worse); "off"
    trains every level from the first step, for a prior registered to the data, whose detail is
    already in place (deformably registered prior, 256², 400 steps: CT 31.40 dB against 31.28 with
    "mask", brain 36.82 against 32.79 with "freeze"; 3D cone 64×128×128: 34.12 against 33.29)."""
    frac = float(cfg["coarse_to_fine"])
    if frac <= 0 or (embedded and cfg["coarse_to_fine_prior"] == "off"):
        return lambda step: None
    n = field.n_levels
    freeze = embedded and cfg["coarse_to_fine_prior"] == "freeze"
    apply = field.set_trainable_levels if freeze else field.set_active_levels
    if n == 0:
        apply(0.0)  # raises the InputError that names the fix
    start = max(1.0, n / 4)
    ramp = max(1.0, frac * total)

    def schedule(step):
        # (step + 1): the last step of the ramp already has every level fully on.
        apply(None if step is None else start + (n - start) * min(1.0, (step + 1) / ramp))
    return schedule


def tv_weight(cfg, problem) -> float:
    """The TV weight applied on this problem's grid.

    TV per voxel of the same anatomy falls as 1/n on a grid n voxels wide, so the config's weight
    is quoted for n = 128 and scaled by n/128: one tv_weight keeps the data/TV balance at any size
    (measured on the thorax slice: best 0.01 at 128², 0.02 unscaled at 256²). More coils pin the
    image down better and need less TV, so the weight is quoted for one coil and divided by
    √coils (brain slice, NeRP, best: 0.002 for 1 coil and 0.0007 for 8 at 256²)."""
    return float(cfg["tv_weight"]) * max(problem.grid.shape) / 128.0 / math.sqrt(problem.n_coils)


def fit_measurements(field, axes, problem, cfg, monitor, stage="fitting", embedded=False):
    """(b) Fit the field to the data through the operator. Returns (steps, cancelled, extra)."""
    total = int(cfg["iterations"])
    levels = _level_schedule(field, cfg, total, embedded)
    chunk = int(cfg["points_per_chunk"])
    raster = _raster_fn(field, axes, problem, chunk)
    tv_w = tv_weight(cfg, problem)
    regulariser = (lambda img: tv_w * tv_loss(img)) if tv_w > 0 else None
    opt = torch.optim.Adam(field.parameters(), lr=float(cfg["lr"]))
    sched = make_scheduler(opt, cfg["schedule"], total, cfg["step_size"], cfg["gamma"])

    def preview():
        return render(field, problem.grid)

    if cfg["optimizer"] == "admm":
        a = cfg["admm"]

        def report(step, loss, **extra):
            monitor.report(stage, step, total, loss=loss, current=preview, **extra)

        steps, cancelled, residuals = admm_fit(
            raster, opt, sched, problem.A, problem.AT, problem.y_n, total_steps=total,
            adam_steps=int(a["adam_steps"]), cgls_steps=int(a["cgls_steps"]), rho=float(a["rho"]),
            regulariser=regulariser, report=report, should_stop=monitor.stop_requested, on_step=levels)
        if not cancelled:
            levels(None)
        return steps, cancelled, residuals

    # FLS converges fast on the coarse, well-measured content but its minimiser weights the
    # high-frequency residual more than L2 does, so with sparse views it ends up fitting streaks;
    # handing over to L2 keeps the fast start and converges to the L2 solution.
    handover = float(cfg["fls_handover"]) * total if cfg["loss"] == "fls" else 0.0
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    order = []
    loss_value = float("nan")
    for it in range(1, total + 1):
        if not order:
            order = torch.randperm(len(problem.subsets), generator=gen).tolist()
        levels(it - 1)
        opt.zero_grad(set_to_none=True)
        image = raster()
        loss = problem.loss(image, cfg, order.pop(), l2_share=min(1.0, it / handover) if handover > 0 else 0.0)
        if regulariser is not None:
            loss = loss + regulariser(image)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        monitor.report(stage, it, total, loss=loss_value, current=preview)
        if monitor.stop_requested():
            # Levels stay as they were: the kept result is the field as fitted so far.
            return it, True, {"final_loss": loss_value}
    levels(None)
    return total, False, {"final_loss": loss_value}


# ----------------------------------------------------------------------------------------------
# method entry points (methods/registry.py)
# ----------------------------------------------------------------------------------------------

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


def _validate(cfg):
    if cfg["loss"] not in LOSSES:
        raise InputError("loss", f"unknown loss {cfg['loss']!r}.", f"Use one of {', '.join(LOSSES)}.")
    if cfg["optimizer"] not in ("adam", "admm"):
        raise InputError("optimizer", f"unknown optimizer {cfg['optimizer']!r}.", "Use 'adam' or 'admm'.")
    for key in ("iterations", "embed_iterations", "subsets", "registration_reference_iterations"):
        if int(cfg[key]) < (0 if key == "embed_iterations" else 1):
            raise InputError(key, f"must be a positive integer, got {cfg[key]}.")
    for key in ("lr", "embed_lr"):
        if not float(cfg[key]) > 0:
            raise InputError(key, f"must be > 0, got {cfg[key]}.")
    check_registration_mode(cfg["prior_registration"])
    if cfg["prior_mismatch"] not in ("error", "warn"):
        raise InputError("prior_mismatch", f"must be 'error' or 'warn', got {cfg['prior_mismatch']!r}.")
    if not -1.0 <= float(cfg["prior_min_correlation"]) <= 1.0:
        raise InputError("prior_min_correlation", f"must be a correlation in [-1, 1], got {cfg['prior_min_correlation']}.",
                         "0.85 is the default; -1 turns the check off.")
    if not float(cfg["prior_slice_search_mm"]) >= 0:
        raise InputError("prior_slice_search_mm", f"must be >= 0 (0 = off), got {cfg['prior_slice_search_mm']}.")
    if cfg["coarse_to_fine_prior"] not in ("freeze", "mask", "off"):
        raise InputError("coarse_to_fine_prior", f"unknown mode {cfg['coarse_to_fine_prior']!r}.",
                         "Use 'freeze', 'mask' or 'off'.")
    for key in ("coarse_to_fine", "fls_handover"):
        if not 0.0 <= float(cfg[key]) <= 1.0:
            raise InputError(key, f"must be a fraction of the iterations in [0, 1], got {cfg[key]}.")


def _run(measurement, prior, config, iterations, device, monitor, use_prior: bool) -> ReconResult:
    monitor = monitor or Monitor()
    device = torch.device(device)
    modality = measurement.modality
    user = dict(config or {})
    cfg = load_config(user, **measurement_context(measurement.modality, measurement.geometry.type, measurement.grid))
    if iterations is not None:
        cfg["iterations"] = int(iterations)
    if modality == "CT" and cfg["loss"] == "rel_l2":
        raise InputError("loss", "'rel_l2' is meant for MR k-space.", "Use 'l2', 'l1' or 'fls' for CT.")
    if modality == "MR" and cfg["loss"] == "fls":
        raise InputError("loss", "'fls' is a CT loss (ramp filter on sinograms).", "Use 'rel_l2' or 'l2' for MR.")
    _validate(cfg)
    cfg["field"] = resolve_field_config(cfg["field"], measurement.grid.shape)
    start = time.perf_counter()
    try:
        problem = _Problem(measurement, cfg, device)
        prior_t = _check_prior(prior_image(prior), problem) if use_prior else None
        extra = {}
        aligned_prior = None
        if prior_t is not None and cfg["prior_registration"] == "none":
            log.info("prior_registration none: the prior is embedded as given, unaligned and unchecked "
                     "against the data (prior_min_correlation applies to a registered prior)")
        if prior_t is not None and cfg["prior_registration"] != "none":
            slices = None
            if isinstance(prior, PriorSlices) and float(cfg["prior_slice_search_mm"]) > 0:
                slices = prior.within(cfg["prior_slice_search_mm"])
            aligned, info, reference = align_to_measurement(
                prior_t.cpu().numpy(), measurement, cfg["prior_registration"],
                cfg["registration_reference_iterations"], device, monitor, slices=slices,
                backends=backend_config(cfg, modality), op=problem.op)
            extra["prior_registration"] = info
            if aligned is None:
                # Cancelled while reconstructing the reference or registering: that TV image is the best result so far.
                return ReconResult(image=reference, config=cfg, iterations=0, seconds=time.perf_counter() - start,
                                   cancelled=True, history=list(monitor.history), extra=extra)
            _check_prior_matches(info["match_correlation"], cfg, extra)
            prior_t = torch.as_tensor(aligned, dtype=prior_t.dtype, device=device)
            aligned_prior = aligned
            extra["registration_seconds"] = time.perf_counter() - start
        if prior_t is not None and problem.mr:
            c = problem.fit_prior_scale(prior_t)
            if not c > 0:
                raise InputError("prior", "does not resemble the measured image (its best-fit scale is not positive).",
                                 "Check that the prior is the same patient and orientation as the data.")
            prior_t = prior_t * c
            extra["prior_scale"] = c
        ref = prior_t if prior_t is not None else problem.quick_estimate()
        scale = _robust_max(ref)
        if not scale > 0:
            scale = float(ref.abs().max()) or 1.0
        problem.set_scale(scale)
        extra["intensity_scale"] = scale

        torch.manual_seed(int(cfg["seed"]))
        field = build_field(cfg["field"], 2 if measurement.grid.is_2d else 3, 2 if problem.mr else 1, device)
        field.intensity_scale = scale
        field.complex_output = problem.mr
        axes = grid_axes(measurement.grid, 1, device)

        def finish(steps, cancelled):
            image = render(field, measurement.grid)
            return ReconResult(image=image, config=cfg, iterations=steps, seconds=time.perf_counter() - start,
                               cancelled=cancelled, history=list(monitor.history), extra=extra,
                               aligned_prior=aligned_prior, field=field)

        if use_prior and int(cfg["embed_iterations"]) > 0:
            steps, cancelled = embed_prior(field, axes, problem, prior_t / scale, cfg, monitor)
            extra["embed_seconds"] = time.perf_counter() - start
            if cancelled:
                return finish(0, True)
        steps, cancelled, fit_extra = fit_measurements(field, axes, problem, cfg, monitor,
                                                       embedded=use_prior and int(cfg["embed_iterations"]) > 0)
        extra.update(fit_extra)
        return finish(steps, cancelled)
    except torch.cuda.OutOfMemoryError as exc:
        raise DeviceError("out-of-memory", f"The GPU ran out of memory ({str(exc).splitlines()[0]}). {OOM_FIX}") from None


def inr(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None) -> ReconResult:
    """INR without prior: the NeRP pipeline from a random initialisation (prior ignored)."""
    return _run(measurement, None, config, iterations, device, monitor, use_prior=False)


def nerp(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None) -> ReconResult:
    """NeRP: embed `prior` (NumPy, measurement grid, physics units) in the field, then fit the data.
    For 2D data `prior` may be an io.prior.PriorSlices (a prior volume's slices near the plane):
    the prior registration then starts from the slice that best matches the data, searched within
    `prior_slice_search_mm` of the plane."""
    if prior is None:
        raise InputError("prior", "NeRP needs a prior image.", "Give an earlier scan of the patient, or use method 'inr'.")
    return _run(measurement, prior, config, iterations, device, monitor, use_prior=True)
