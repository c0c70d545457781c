"""Classical CT reconstructions: FBP/FDK, SIRT, CGLS and TV (Chambolle–Pock PDHG).

Every function has the registry's method signature
    fn(measurement, *, prior, config, iterations, device, monitor) -> ReconResult
and returns μ (1/mm) on `measurement.grid`. `prior` is not used by these baselines. Iterative
methods report every iteration through `monitor` and stop early (cancelled=True, current image)
when `monitor.stop_requested()`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from ..numerics import finite_diff, krylov
from ..physics.ct_filters import (WINDOWS, angular_weights, cone_frame, displaced_detector_padding,
                                  displaced_detector_weights, fdk_cosine_weights, parker_weights, ramp_filter, view_angles)
from ..physics.ct_projector import CTProjector
from . import auto_params, options
from .result import ReconResult

# Config keys and defaults of each method: options.py (FBP, SIRT, CGLS, TV_CT).

# iterations: auto runs at most this many (SIRT on an underdetermined scan runs all of them)
MAX_AUTO_ITERATIONS = {"sirt": 1000, "cgls": 200}
# β of tv's preconditioning, relative to the mean column sum of Â (tv's docstring)
PRECONDITION_BALANCE = 0.01

# Full-scan detection for fan/cone: an arc within this many view steps of 360° counts as full.
_FULL_SCAN_TOLERANCE = 1.5


_OPTIONS = {"fbp": options.FBP, "sirt": options.SIRT, "cgls": options.CGLS, "tv": options.TV_CT}


def _setup(measurement, config, method, device):
    if measurement.modality != "CT":
        raise InputError("modality", f"classical CT methods need CT data, got {measurement.modality}.")
    cfg = options.check_config(dict(config or {}), _OPTIONS[method], method)
    op = CTProjector(measurement.geometry, measurement.grid, device=device, backend=cfg["projector"])
    cfg["projector"] = op.backend  # the one used, as the result's config records it
    y = torch.as_tensor(np.asarray(measurement.data, dtype=np.float32), device=op.device)
    if tuple(y.shape) != op.data_shape:
        raise InputError("/data", f"has shape {list(y.shape)}, the geometry expects {list(op.data_shape)}.",
                         "Write the sinogram as [n_views, n_rows, n_cols] to match /geometry.")
    return cfg, op, y


def _n_iterations(iterations, cfg):
    n = int(iterations if iterations is not None else cfg["iterations"])
    if n < 1:
        raise InputError("iterations", f"must be a positive integer, got {n}.")
    return n


def _result(x, name, cfg, it, cancelled, monitor, **extra):
    return ReconResult(image=x.detach().float().cpu().numpy(), method=name, config=cfg, iterations=it,
                       cancelled=cancelled, history=list(monitor.history), extra=extra)


# ----------------------------------------------------------------------------------- FBP / FDK
def fbp_image(op: CTProjector, sino: torch.Tensor, window: str = "ramp") -> tuple[torch.Tensor, dict]:
    """Filtered backprojection of `sino` for `op`'s geometry: FBP for parallel beam, flat-detector
    fan-beam FBP (2D) or FDK (3D) for cone beam. Returns (image μ 1/mm, notes).

    Angles are read from the vectors (rotation about the grid z axis); each view is weighted by
    its share of the arc. Parallel: the result is divided by arc/π (so 180° and 360° scans agree).
    Fan/cone over a full circle: factor ½ (each ray measured twice); over less than 360°: Parker
    short-scan weights. An offset (half-fan) detector gets displaced-detector weights
    (ct_filters.displaced_detector_weights), before Parker's on a short scan, in RTK's order.
    """
    if window not in WINDOWS:
        raise InputError("filter", f"unknown filter {window!r}.", f"Use one of: {', '.join(WINDOWS)}.")
    g = op.geometry
    angles = view_angles(g)
    weights, arc = angular_weights(angles)
    du = float(np.linalg.norm(g.vectors[0, 6:9]))
    notes = {"arc_deg": math.degrees(arc)}
    if g.type == "parallel":
        q = ramp_filter(sino, du, window)
        w = weights * (math.pi / arc)
        return op.backproject_voxel_driven(q, view_weights=w), notes
    measured = g
    padding = displaced_detector_padding(g)
    if padding is not None:  # filter and backproject on the symmetric detector (ct_filters)
        before, after, g = padding
        sino = torch.nn.functional.pad(sino, (before, after))
        op = CTProjector(g, op.grid, device=sino.device, backend="torch")
        notes["detector"] = f"offset (displaced-detector weights, {before + after} columns padded)"
    sid, sdd, _, _ = cone_frame(g)
    pre = torch.as_tensor(fdk_cosine_weights(g), device=sino.device, dtype=sino.dtype)
    if padding is not None:
        pre = pre * torch.as_tensor(displaced_detector_weights(measured), device=sino.device, dtype=sino.dtype)
    mean_step = arc / len(angles)
    if arc >= 2 * math.pi - _FULL_SCAN_TOLERANCE * mean_step:
        w = weights * 0.5 * (2 * math.pi / arc)
        notes["scan"] = "full"
    else:
        pre = pre * torch.as_tensor(parker_weights(g, angles), device=sino.device, dtype=sino.dtype)
        w = weights
        notes["scan"] = "short (Parker weights)"
        if padding is not None:  # as RTK does; neither weighting is exact for this scan
            notes.setdefault("warnings", []).append(
                "an offset detector on a short scan: FDK's weights assume a full scan for the offset and a centred "
                "detector for Parker; use an iterative method (sirt, tv)")
    tau = du * float(np.mean(sid / sdd))  # column pitch at the isocentre
    q = ramp_filter(sino * pre, tau, window)
    return op.backproject_voxel_driven(q, view_weights=w, fdk_weighting=True), notes


def fbp(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None):
    """FBP (parallel, fan) or FDK (cone). config: "filter" = "ramp" (default) or "hann"."""
    from .monitor import Monitor

    monitor = monitor or Monitor()
    cfg, op, y = _setup(measurement, config, "fbp", device)
    with torch.no_grad():
        x, notes = fbp_image(op, y, cfg["filter"])
    monitor.report("fbp", 1, 1, current=lambda: x.cpu().numpy())
    return _result(x, "fbp", cfg, 1, False, monitor, **notes)


# ------------------------------------------------------------------------- noise and auto rules
def _noise_target(measurement, cfg, key, method, iterations=None, column_sums=None):
    """For cfg[key] = auto (and no count passed): (the discrepancy target τ‖noise‖², the noise
    estimate) or, without a noise estimate, (None, the fallback's record), the fallback value
    written into cfg. Otherwise (None, None). column_sums: Aᵀ1 of an iteration-count method; the
    target is then what a least-squares fit leaves of the noise (auto_params), with the voxels
    some ray crosses (Aᵀ1 > 0) as the unknowns."""
    if iterations is not None or not auto_params.is_auto(cfg[key]):
        return None, None
    est, record = auto_params.noise_or_fallback(measurement, method, key)
    if record is not None:
        cfg[key] = record[key]
        return None, record
    total = est.total
    if column_sums is not None:
        total = auto_params.least_squares_residual(total, est.variance.size, int((column_sums > 0).sum()))
    return auto_params.TAU["CT"] * total, est


def _auto_record(cfg, key, record):
    """The chosen value into the result's config (what a rerun would use); the record (a
    summary, or the fallback's: `_noise_target`'s second value) for `extra`."""
    if not isinstance(record, dict):
        return {}
    cfg[key] = record[key]
    return {f"auto_{key}": record}


# ----------------------------------------------------------------------------------------- SIRT
def sirt(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None):
    """SIRT: x ← max(0, x + C Aᵀ R (y − A x)), R = 1/(A 1), C = 1/(Aᵀ 1), from x = 0.

    config: "iterations" ("auto": stop where ‖A x − y‖² reaches what a least-squares fit leaves
    of the sinogram's noise, auto_params.least_squares_residual: nothing when the crossed voxels
    outnumber the rays, as in every sparse-view scan, which then runs MAX_AUTO_ITERATIONS; or a
    count), "nonneg" (True: clip at 0 every iteration)."""
    from .monitor import Monitor

    monitor = monitor or Monitor()
    cfg, op, y = _setup(measurement, config, "sirt", device)
    with torch.no_grad():
        row = op.forward(torch.ones(op.image_shape, device=op.device))
        col = op.adjoint(torch.ones(op.data_shape, device=op.device))
        R = torch.where(row > 1e-6 * row.max(), 1.0 / row.clamp(min=1e-12), torch.zeros_like(row))
        C = torch.where(col > 1e-6 * col.max(), 1.0 / col.clamp(min=1e-12), torch.zeros_like(col))
    target, est = _noise_target(measurement, cfg, "iterations", "sirt", iterations, column_sums=col)
    n = MAX_AUTO_ITERATIONS["sirt"] if target is not None else _n_iterations(iterations, cfg)
    stop = auto_params.IterationStop(target, auto_params.TAU["CT"]) if target is not None else None
    with torch.no_grad():
        x = torch.zeros(op.image_shape, device=op.device)
        it, cancelled = 0, False
        for it in range(1, n + 1):
            r = y - op.forward(x)
            r2 = float((r * r).sum())
            if stop is not None and stop.reached(it - 1, r2):
                it -= 1  # x after it − 1 updates already fits the data to the noise
                break
            x = x + C * op.adjoint(R * r)
            if cfg["nonneg"]:
                x.clamp_(min=0)
            monitor.report("sirt", it, n, loss=0.5 * r2, current=lambda: x.cpu().numpy(), eta_known=stop is None)
            if monitor.stop_requested():
                cancelled = True
                break
    extra = _auto_record(cfg, "iterations", stop.summary(est, it) if stop is not None else est)
    return _result(x, "sirt", cfg, it, cancelled, monitor, **extra)


# ----------------------------------------------------------------------------------------- CGLS
def cgls(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None):
    """CGLS on min ‖A x − y‖² from x = 0 (early stopping is the regulariser). config:
    "iterations" ("auto": stop where ‖A x − y‖² reaches what a least-squares fit leaves of the
    noise, or where it levels off, auto_params.IterationStop; or a count)."""
    from .monitor import Monitor

    monitor = monitor or Monitor()
    cfg, op, y = _setup(measurement, config, "cgls", device)
    auto = iterations is None and auto_params.is_auto(cfg["iterations"])
    with torch.no_grad():
        col = op.adjoint(torch.ones(op.data_shape, device=op.device)) if auto else None
    target, est = _noise_target(measurement, cfg, "iterations", "cgls", iterations, column_sums=col)
    n = MAX_AUTO_ITERATIONS["cgls"] if target is not None else _n_iterations(iterations, cfg)
    stop = (auto_params.IterationStop(target, auto_params.TAU["CT"], auto_params.LEVELLED_ITERATIONS)
            if target is not None else None)
    state = {"done": 0, "cancelled": False}

    def report(it, x, r):
        state["done"] = it
        r2 = float((r * r).sum())
        monitor.report("cgls", it, n, loss=0.5 * r2, current=lambda: x.cpu().numpy(), eta_known=stop is None)
        state["cancelled"] = monitor.stop_requested()
        return state["cancelled"] or (stop is not None and stop.reached(it, r2))

    x = krylov.cgls(op.forward, op.adjoint, y, torch.zeros(op.image_shape, device=op.device), n, callback=report)
    extra = _auto_record(cfg, "iterations", stop.summary(est, state["done"]) if stop is not None else est)
    return _result(x, "cgls", cfg, state["done"], state["cancelled"], monitor, **extra)


# ------------------------------------------------------------------------------------------- TV
def _grad_weights(grid, dims):
    """Per-axis factors h_min / h_axis (z, y, x order), so differences approximate h_min · ∂/∂axis."""
    sp = [grid.spacing[2], grid.spacing[1], grid.spacing[0]][3 - dims:]
    h = min(sp)
    return [h / s for s in sp]


def tv(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None):
    """Isotropic-TV regularised least squares,

        min_x≥0  ½‖A x − y‖² + λ_abs · Σ_voxels |∇x|,   λ_abs = lambda · ‖A‖² · s

    ∇ = forward differences per voxel (scaled by h_min/h_axis for anisotropic voxels), ‖A‖ the
    operator norm (power iteration) and s = Σy / Σ(A 1) the mean attenuation along the rays. In
    those units one `lambda` (dimensionless) fits scans of any view count, voxel size and
    attenuation level: the solver works on x̂ = x/s with A/‖A‖, where the problem is
    ½‖Â x̂ − ŷ‖² + lambda·TV(x̂). `lambda: auto` (default) picks it by the discrepancy principle
    on the sinogram's Poisson noise, not below auto_params.LAMBDA_FLOOR_CT (auto_params.py); the
    value chosen is in the result's config.

    Solver: Chambolle–Pock PDHG with the diagonal preconditioning of Pock & Chambolle (2011) on
    K = [Â; β∇]: the sinogram dual step 1/(Â 1) per ray, the primal step 1/(Âᵀ1 + 2β Σw) per
    voxel (SIRT's weights), warm-started from FBP. β = PRECONDITION_BALANCE × mean(Âᵀ1) balances
    the two blocks (0.003–0.03 converged alike on the thorax slices). Against the scalar-step PDHG
    it replaced (1000 iterations): the same objective in 300–400 iterations (256², 20 parallel /
    60 fan views). Stops when the objective changes by less than `tolerance` (relative) over one
    continuation stage, or after `iterations`.
    config: "lambda" ("auto" or a number ≥ 0), "iterations" (500, at most), "tolerance" (5e-4),
    "nonneg" (True), "projector".
    """
    from .monitor import Monitor

    monitor = monitor or Monitor()
    cfg, op, y = _setup(measurement, config, "tv", device)
    n = _n_iterations(iterations, cfg)
    target, est = _noise_target(measurement, cfg, "lambda", "tv")
    continuation = None
    dims = 2 if measurement.grid.is_2d else 3
    weights = _grad_weights(measurement.grid, dims)
    axes = list(range(-dims, 0))
    tol = float(cfg["tolerance"])
    with torch.no_grad():
        a = op.norm_estimate()
        ones_proj = op.forward(torch.ones(op.image_shape, device=op.device))
        s = float(y.sum() / ones_proj.sum().clamp(min=1e-12))
        if not s > 0:
            s = float(y.abs().max()) / max(float(ones_proj.max()), 1e-12) or 1.0
        y_hat = y / (a * s)
        unit2 = (a * s) ** 2  # ‖Â x̂ − ŷ‖² × unit2 = ‖A x − y‖²
        if target is not None:
            continuation = auto_params.LambdaContinuation(target / unit2, auto_params.TAU["CT"],
                                                          floor=auto_params.LAMBDA_FLOOR_CT)
            lam = continuation.lam
        else:
            lam = float(cfg["lambda"])

        def img(v):  # 2D grids: drop the z axis for the gradient
            return v[0] if dims == 2 else v

        def grad_tv(v):
            g = finite_diff.gradient(img(v), axes, weights)
            return g.unsqueeze(1) if dims == 2 else g

        def grad_tv_adjoint(q):
            return finite_diff.gradient_adjoint(q[:, 0] if dims == 2 else q, axes, weights).reshape(op.image_shape)

        row = ones_proj / a
        col = op.adjoint(torch.ones(op.data_shape, device=op.device)) / a
        beta = PRECONDITION_BALANCE * float(col[col > 0].mean())
        sigma_p = torch.where(row > 1e-6 * row.max(), 1.0 / row.clamp(min=1e-12), torch.zeros_like(row))
        sigma_q = 1.0 / (2.0 * beta * max(weights))
        tau = 1.0 / (col + 2.0 * beta * sum(weights))

        x = fbp_image(op, y)[0].clamp(min=0) / s
        x_bar = x.clone()
        p = torch.zeros(op.data_shape, device=op.device)
        q = torch.zeros((dims,) + tuple(op.image_shape), device=op.device)
        last_obj, it, cancelled, converged = None, 0, False, False
        for it in range(1, n + 1):
            ax = op.forward(x_bar) / a
            p = (p + sigma_p * (ax - y_hat)) / (1 + sigma_p)
            q = q + sigma_q * beta * grad_tv(x_bar)
            radius = lam / beta
            norm = q.pow(2).sum(0, keepdim=True).sqrt().clamp(min=radius if radius > 0 else 1e-30)
            q = q * (radius / norm) if radius > 0 else torch.zeros_like(q)
            x_new = x - tau * (op.adjoint(p) / a + beta * grad_tv_adjoint(q))
            if cfg["nonneg"]:
                x_new.clamp_(min=0)
            x_bar = 2 * x_new - x
            x = x_new
            resid = ax - y_hat
            r2 = float((resid * resid).sum())
            monitor.report("tv", it, n, loss=0.5 * r2 * unit2, current=lambda: (x * s).cpu().numpy(),
                           eta_known=False)
            if monitor.stop_requested():
                cancelled = True
                break
            if continuation is not None and not continuation.settled:
                lam = continuation.update(it, r2)
            elif it % auto_params.STAGE == 0:
                obj = 0.5 * r2 + lam * float(grad_tv(x).pow(2).sum(0).sqrt().sum())
                if last_obj is not None and abs(last_obj - obj) <= tol * abs(obj):
                    converged = True
                    break
                last_obj = obj
        record = continuation.summary(est, unit2) if continuation is not None else est
        extra = {"lambda_abs": lam * a * a * s, "converged": converged, **_auto_record(cfg, "lambda", record)}
    return _result(x * s, "tv", cfg, it, cancelled, monitor, **extra)
