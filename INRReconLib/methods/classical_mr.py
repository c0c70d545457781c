"""Classical MR reconstructions, the baselines every INR result is compared with.

- `adjoint`: density-compensated adjoint NUFFT (non-Cartesian) or zero-filled inverse FFT
  (Cartesian), coil-combined, scaled to the data by least squares.
- `cgsense`: conjugate gradients on (AᴴA + λI) x = Aᴴy (CG-SENSE).
- `tv`: ½‖Ax − y‖² + λ TV(x) by Chambolle–Pock PDHG with a diagonal k-space preconditioner;
  `grasp`: the same with temporal TV alone (dynamic data).
- `lps`: low rank + sparse (L+S) for dynamic data.

All share the registry signature `fn(measurement, *, prior, config, iterations, device, monitor)`
and return complex64 [n_frames, nz, ny, nx] on the measurement grid. Regularisation weights are
*relative*: the data and the operator are normalised first (see `_Problem`), so one default works
across image sizes, spoke counts, coil counts and signal scales.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..numerics import finite_diff
from ..numerics.krylov import cg, power_method
from ..physics.mr_geometry import MRGeometry
from ..physics.mr_operator import MROperator
from ..physics.mr_sampling import density_compensation
from . import auto_params, options
from .monitor import Monitor
from .result import ReconResult

# Config keys and defaults of each method: options.py (ADJOINT, CGSENSE, TV_MR).
MAX_AUTO_ITERATIONS = 100  # cgsense with iterations: auto (the discrepancy rule stops it earlier)
TV_ITERATIONS = 200
LPS_ITERATIONS = 50


# ---- shared set-up -----------------------------------------------------------------------------
def _data(measurement, op: MROperator, device) -> torch.Tensor:
    y = np.asarray(measurement.data)
    if tuple(y.shape) != tuple(op.data_shape):
        raise InputError("/data", f"has shape {list(y.shape)}, the geometry and grid need {list(op.data_shape)} "
                         "[n_frames, n_coils, n_samples].",
                         "Check that the coil maps, the mask/trajectory and the data belong together.")
    return torch.as_tensor(np.ascontiguousarray(y, dtype=np.complex64), device=device)


def _check_mr(measurement):
    if measurement.modality != "MR" or not isinstance(measurement.geometry, MRGeometry):
        raise InputError("modality", f"this method reconstructs MR data, got {measurement.modality}.",
                         "Use a CT method (fbp, sirt, cgls, tv) for CT data.")
    y = np.asarray(measurement.data)
    if y.ndim != 3:
        raise InputError("/data", f"has shape {list(y.shape)}, MR data must be [n_frames, n_coils, n_samples].")
    geo = measurement.geometry
    if geo.coil_maps is None and y.shape[1] != 1:
        return y.shape[1]  # several coils without maps
    return 0


def _dcf(measurement, op: MROperator, device) -> torch.Tensor | None:
    """The stored density compensation, else Pipe–Menon (None for Cartesian data)."""
    if op.type == "cartesian":
        return None
    geo = measurement.geometry
    if geo.dcf is not None:
        dcf = np.asarray(geo.dcf, dtype=np.float32)
        if dcf.shape != (op.n_frames, op.n_samples):
            raise InputError("/geometry/dcf", f"has shape {list(dcf.shape)}, expected {[op.n_frames, op.n_samples]} "
                             "[n_frames, n_samples].", "Remove it to have it computed, or store one weight per sample.")
        return torch.as_tensor(dcf, device=device)
    return density_compensation(op.omega, op.im_size)


def _single_coil_geometry(geo: MRGeometry, maps=None) -> MRGeometry:
    return MRGeometry(geo.type, mask=geo.mask, trajectory=geo.trajectory, coil_maps=maps, dcf=geo.dcf,
                      frame_times_s=geo.frame_times_s, spoke_times_s=geo.spoke_times_s)


def _operator(measurement, device, cfg, geometry=None, **options) -> MROperator:
    """The MR operator with the config's NUFFT backend; the config then names the one used."""
    op = MROperator(geometry or measurement.geometry, measurement.grid, device, nufft=cfg["nufft"], **options)
    if op.nufft is not None:
        cfg["nufft"] = op.nufft
    return op


def _coil_images(measurement, device, cfg, dcf_on: bool = True):
    """Per-coil density-compensated adjoint images [n_coils, n_frames, nz, ny, nx] for data
    without coil maps, and the single-coil operator used."""
    op = _operator(measurement, device, cfg, _single_coil_geometry(measurement.geometry))
    y_all = torch.as_tensor(np.ascontiguousarray(measurement.data, dtype=np.complex64), device=device)
    expect = (op.n_frames, y_all.shape[1], op.n_samples)
    if tuple(y_all.shape) != expect:
        raise InputError("/data", f"has shape {list(y_all.shape)}, the geometry and grid need {list(expect)}.")
    dcf = _dcf(measurement, op, device) if dcf_on else None
    imgs = []
    for c in range(y_all.shape[1]):
        yc = y_all[:, c:c + 1]
        imgs.append(op.adjoint(yc if dcf is None else yc * dcf[:, None, :]))
    return torch.stack(imgs), op, y_all


def _with_maps(measurement):
    """The measurement itself, or a copy whose geometry holds coil maps estimated from its data:
    physics.mr_coil_maps, as the file readers do for multi-coil files without maps."""
    if _check_mr(measurement):
        from ..physics.mr_coil_maps import with_estimated_maps

        return with_estimated_maps(measurement)[0], True
    return measurement, False


def _prepared(measurement, cfg, device, monitor, **op_options):
    """What the iterative methods start from: (the measurement with coil maps, estimated when
    missing; whether they were; its operator with the config's NUFFT; the data as a tensor; the
    device; the monitor)."""
    measurement, estimated = _with_maps(measurement)
    device = torch.device(device)
    op = _operator(measurement, device, cfg, **op_options)
    return measurement, estimated, op, _data(measurement, op, device), device, monitor or Monitor()


def _sense_combine(x: torch.Tensor, op: MROperator) -> torch.Tensor:
    """Σ conj(S) x has already been formed by the adjoint; divide by Σ|S|² where coils see."""
    if op.smaps is None:
        return x
    power = (op.smaps.abs() ** 2).sum(dim=0)
    inside = power > 1e-6 * power.max()
    return torch.where(inside, x / torch.where(inside, power, torch.ones_like(power)), torch.zeros_like(x))


def _ls_scale(ax: torch.Tensor, y: torch.Tensor) -> float:
    """Real α minimising ‖α Ax − y‖²: puts a reconstruction on the scale of the data."""
    den = float((ax.abs() ** 2).sum())
    return float(torch.vdot(ax.flatten(), y.flatten()).real) / den if den > 0 else 1.0


def _power_norm(normal, shape, device, n_iter: int = 20, seed: int = 0) -> float:
    """Largest eigenvalue of the self-adjoint non-negative map `normal` (numerics.krylov.power_method)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return power_method(normal, torch.randn(shape, generator=g, dtype=torch.complex64).to(device), n_iter) ** 2 or 1.0


def _gridding(measurement, op, y, dcf):
    """Density-compensated (or zero-filled) adjoint, SENSE-combined, least-squares scaled."""
    x = _sense_combine(op.adjoint(y if dcf is None else y * dcf[:, None, :]), op)
    return x * _ls_scale(op(x), y)


def _result(x, iterations, cancelled, monitor, config, **extra) -> ReconResult:
    return ReconResult(image=x.detach().to(torch.complex64).cpu().numpy(), config=dict(config),
                       iterations=int(iterations), cancelled=bool(cancelled), history=list(monitor.history),
                       extra=extra)


# ---- adjoint -------------------------------------------------------------------------------
def adjoint(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None) -> ReconResult:
    """Density-compensated adjoint NUFFT / zero-filled inverse FFT, coil-combined.

    With coil maps: SENSE-style Σ conj(S_c) x_c / Σ|S_c|²; several coils without maps: root sum
    of squares of the coil images (real, non-negative). `scale = "least-squares"` multiplies by
    the real α minimising ‖α A x − y‖² (the DCF's own scale is then irrelevant); "none" keeps
    the raw adjoint. config: density_compensation (bool, non-Cartesian only), scale."""
    cfg = options.check_config(dict(config or {}), options.ADJOINT, "adjoint")
    monitor = monitor or Monitor()
    device = torch.device(device)
    n_uncombined = _check_mr(measurement)
    with torch.no_grad():
        if n_uncombined:
            imgs, op, y_all = _coil_images(measurement, device, cfg, cfg["density_compensation"])
            if cfg["scale"] == "least-squares":
                num = sum(float(torch.vdot(op(im).flatten(), y_all[:, c:c + 1].flatten()).real)
                          for c, im in enumerate(imgs))
                den = sum(float((op(im).abs() ** 2).sum()) for im in imgs)
                imgs = imgs * (num / den if den > 0 else 1.0)
            x = torch.sqrt((imgs.abs() ** 2).sum(dim=0)).to(torch.complex64)
            residual = float("nan")
        else:
            op = _operator(measurement, device, cfg)
            y = _data(measurement, op, device)
            dcf = _dcf(measurement, op, device) if cfg["density_compensation"] else None
            x = _sense_combine(op.adjoint(y if dcf is None else y * dcf[:, None, :]), op)
            if cfg["scale"] == "least-squares":
                x = x * _ls_scale(op(x), y)
            residual = float((op(x) - y).norm() / y.norm().clamp_min(1e-30))
    monitor.report("adjoint", 1, 1, loss=residual, current=lambda: x.cpu().numpy())
    return _result(x, 1, False, monitor, cfg, relative_residual=residual)


# ---- CG-SENSE ------------------------------------------------------------------------------
def cgsense(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None) -> ReconResult:
    """CG-SENSE: conjugate gradients on (Aᴴ W A + λ_eff I) x = Aᴴ W y from x = 0.

    W = I (plain least squares, default) or, with `dcf_weighting` (non-Cartesian), the density
    compensation: faster convergence in few iterations, at the price of a noise-suboptimal
    weighted problem. `lambda` is relative: λ_eff = lambda * ‖AᴴWA‖ (power iteration), so 1e-3
    means "Tikhonov at 0.1% of the largest eigenvalue". Without regularisation the iteration
    count itself regularises (semi-convergence): `iterations: auto` (default) stops where
    ‖W^½(A x − y)‖² reaches the k-space noise (auto_params.py; at most MAX_AUTO_ITERATIONS),
    a number runs that many. Stops early when the normal-equation residual falls below
    `tolerance` relative to ‖AᴴWy‖. Multi-coil data without coil maps: maps are estimated
    (physics.mr_coil_maps)."""
    cfg = options.check_config(dict(config or {}), options.CGSENSE, "cgsense")
    measurement, estimated, op, y, device, monitor = _prepared(measurement, cfg, device, monitor,
                                                               toeplitz=bool(cfg["toeplitz"]))
    stop, est, extra = None, None, {}
    if iterations is None and auto_params.is_auto(cfg["iterations"]):
        est, record = auto_params.noise_or_fallback(measurement, "cgsense", "iterations")
        if record is not None:
            cfg["iterations"], extra = record["iterations"], {"auto_iterations": record}
    n_iter = MAX_AUTO_ITERATIONS if est is not None else int(iterations or cfg["iterations"])
    with torch.no_grad():
        w = _dcf(measurement, op, device) if (cfg["dcf_weighting"] and op.type != "cartesian") else None
        if est is not None:
            # the plain noise level, not what a least-squares fit leaves of it (as CT's SIRT and
            # CGLS): measured on the 256² brain, 8 coils, CG-SENSE then levelled off at iteration
            # 18 (30.09 dB) instead of stopping at 24 (31.17; best 30 iterations, 31.58)
            weight_sum = float(w.sum()) * op.n_coils if w is not None else y.numel()
            tau = auto_params.TAU["MR"]
            stop = auto_params.IterationStop(tau * est.variance * weight_sum, tau, auto_params.LEVELLED_ITERATIONS)
        root_w = None if w is None else w.sqrt()[:, None, :]

        def normal(v):
            return op.normal(v, dcf=w)

        lam = 0.0
        if float(cfg["lambda"]) > 0:
            lam = float(cfg["lambda"]) * _power_norm(normal, op.image_shape, device)
        b = op.adjoint(y if w is None else y * w[:, None, :])
        state = {"done": 0, "cancelled": False}

        def report(it, x, rel):
            state["done"] = it
            monitor.report("cgsense", it, n_iter, loss=rel, current=lambda: x.cpu().numpy(), eta_known=stop is None)
            state["cancelled"] = monitor.stop_requested()
            if stop is not None and not state["cancelled"]:
                r = op(x) - y
                return stop.reached(it, float((r.abs() ** 2 if root_w is None else (r * root_w).abs() ** 2).sum()))
            return state["cancelled"]

        x = cg(lambda v: normal(v) + lam * v, b, torch.zeros_like(b), n_iter, tolerance=float(cfg["tolerance"]),
               callback=report)
    done, cancelled = state["done"], state["cancelled"]
    if stop is not None:
        extra["auto_iterations"] = stop.summary(est, done)
        cfg["iterations"] = done
    else:
        cfg["iterations"] = n_iter
    return _result(x, done, cancelled, monitor, cfg, lambda_effective=lam, estimated_coil_maps=estimated, **extra)


# ---- TV (PDHG) -----------------------------------------------------------------------------
# lambda: auto starts the continuation at 25× the weight that was the fixed default (tuned on the
# brain slice and the dynamic phantom) and lowers it every TV_STAGE iterations
LAMBDA_START = {"tv": 5e-3, "grasp": 1.25e-2}
TV_STAGE = 10

def _tv_value(du: torch.Tensor, dt: torch.Tensor | None, wt: float, ws: float) -> float:
    val = ws * float(torch.sqrt((du.abs() ** 2).sum(dim=0)).sum())
    if dt is not None:
        val += wt * float(dt.abs().sum())
    return val


def tv(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None) -> ReconResult:
    """Total-variation reconstruction: min_x ½‖Ax − y‖² + λ_eff [TV_s(x) + w_t TV_t(x)].

    TV_s: isotropic spatial TV of the complex image, per frame (Σ_voxels sqrt(Σ_axes |∇x|²)),
    weight `spatial_weight` (default 1); TV_t: anisotropic temporal TV Σ |x_{f+1} − x_f|
    (dynamic data, weight `temporal_weight`; default 0 for one frame, 1 for several).

    Relative λ: the problem is solved for u = x / s with A_n = A / sqrt(L), L = ‖AᴴA‖ (power
    iteration) and s = the 99th percentile of |gridding reconstruction|; then
    ½‖A_n u − y_n‖² + lambda·TV(u) is the same problem as above with λ_eff = lambda·L·s. The
    default `lambda: auto` picks it by the discrepancy principle on the k-space noise
    (auto_params.py; the value chosen is in the result's config); 2e-4, the fixed default before,
    was tuned on a 256² brain slice with 40 golden-angle spokes (1 and 8 coils).

    Algorithm: Chambolle–Pock PDHG with K = [A_n; ∇_s; ∇_t], G = 0. With `precondition`
    (non-Cartesian), the k-space dual step is diagonal, proportional to the density
    compensation (Pock & Chambolle 2011 diagonal preconditioning; Ong et al. 2019 for MRI): it
    solves the *unweighted* problem above, only faster. Starts from the gridding image
    (`init = "adjoint"`) or zero (`"zero"`). Default 200 iterations; with `lambda: auto` they
    are counted from where the weight search settled (auto_params.py), which comes on top. `step` is the primal
    step τ (the dual steps follow from τ(σ_p + σ_q‖∇‖²) = 1); τ = 10 converged best in 200
    iterations on the 256² brain (34.4 dB vs 32.5 dB with τ = 1, 30.8 dB with τ = 0.3)."""
    cfg = options.check_config(dict(config or {}), options.TV_MR, "tv")
    return _tv(measurement, cfg, iterations, device, monitor, "tv")


def grasp(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None) -> ReconResult:
    """GRASP-like reconstruction of dynamic data (Feng et al. 2014): tv's PDHG with temporal TV
    alone, min_x ½‖Ax − y‖² + λ_eff TV_t(x)."""
    cfg = options.check_config(dict(config or {}), options.GRASP, "grasp")
    result = _tv(measurement, {**cfg, "temporal_weight": 1.0, "spatial_weight": 0.0}, iterations, device, monitor,
                 "grasp")
    result.config = {k: v for k, v in result.config.items() if k in cfg}  # with the NUFFT that ran
    return result


def _tv(measurement, cfg, iterations, device, monitor, method) -> ReconResult:
    n_iter = int(iterations or TV_ITERATIONS)
    measurement, estimated, op, y, device, monitor = _prepared(measurement, cfg, device, monitor)
    with torch.no_grad():
        dcf = _dcf(measurement, op, device)
        wt = cfg["temporal_weight"]
        wt = (1.0 if op.n_frames > 1 else 0.0) if wt is None else float(wt)
        use_t = op.n_frames > 1 and wt > 0
        ws = float(cfg["spatial_weight"])

        x0 = _gridding(measurement, op, y, dcf)
        s = float(torch.quantile(x0.abs().flatten()[:: max(1, x0.numel() // 1_000_000)], 0.99))
        s = s if s > 0 else 1.0
        big_l = _power_norm(op.normal, op.image_shape, device)
        scale_a = big_l ** -0.5
        y_n = y * (scale_a / s)
        continuation, est, extra = None, None, {}
        unit2 = (s / scale_a) ** 2  # ‖A_n u − y_n‖² × unit2 = ‖A x − y‖²
        if auto_params.is_auto(cfg["lambda"]):
            est, record = auto_params.noise_or_fallback(measurement, method, "lambda")
            if record is not None:
                cfg["lambda"], extra = record["lambda"], {"auto_lambda": record}
        if est is not None:
            tau = auto_params.TAU["MR"]
            continuation = auto_params.LambdaContinuation(tau * est.total / unit2, tau, lam=LAMBDA_START[method],
                                                          stage=TV_STAGE)
        lam = continuation.lam if continuation is not None else float(cfg["lambda"])

        # k-space dual step: proportional to the DCF, normalised so that ‖W^½ A_n‖ = 1
        if cfg["precondition"] and dcf is not None:
            l_w = _power_norm(lambda v: op.normal(v, dcf=dcf), op.image_shape, device) * scale_a ** 2
            w = (dcf / l_w)[:, None, :]
        else:
            w = torch.ones((1, 1, 1), device=device)
        axes = [a for a in (1, 2, 3) if op.image_shape[a] > 1]
        d_norm2 = 4.0 * len(axes) + (4.0 if use_t else 0.0)
        # step sizes: τ (σ_p + σ_q ‖D‖²) ≤ 1 with the weighted ‖W^½ A_n‖ = 1, split evenly
        # between the data and TV duals; τ itself is the tuned `step`
        tau = float(cfg["step"])
        sigma_p = 0.5 / tau
        sigma_q = 0.5 / (tau * d_norm2)
        sp = sigma_p * w

        u = x0 / s if cfg["init"] == "adjoint" else torch.zeros_like(x0)
        u_bar = u.clone()
        p = torch.zeros_like(y)
        q = torch.zeros((len(axes),) + tuple(u.shape), dtype=u.dtype, device=device)
        r = torch.zeros_like(u[1:]) if use_t else None
        done, cancelled, limit, it = 0, False, n_iter, 0
        while it < limit or (continuation is not None and not continuation.settled):
            it += 1
            au = op(u_bar) * scale_a
            p = (p + sp * (au - y_n)) / (1.0 + sp)
            du = finite_diff.gradient(u_bar, axes)
            q = q + sigma_q * du
            q = q / torch.clamp(torch.sqrt((q.abs() ** 2).sum(dim=0, keepdim=True)) / max(lam * ws, 1e-30), min=1.0)
            dt = None
            if use_t:
                dt = u_bar[1:] - u_bar[:-1]
                r = r + sigma_q * dt
                r = r / torch.clamp(r.abs() / max(lam * wt, 1e-30), min=1.0)
            step = op.adjoint(p) * scale_a + finite_diff.gradient_adjoint(q, axes)
            if use_t:
                step[:-1] -= r
                step[1:] += r
            u_new = u - tau * step
            u_bar = 2.0 * u_new - u
            u = u_new
            done = it
            r2 = float((au - y_n).norm() ** 2)
            loss = 0.5 * r2 + lam * _tv_value(du, dt, wt, ws)
            monitor.report("tv", it, limit, loss=loss, current=lambda: (u * s).cpu().numpy(),
                           eta_known=continuation is None or continuation.settled)
            if monitor.stop_requested():
                cancelled = True
                break
            if continuation is not None and not continuation.settled:
                lam = continuation.update(it, r2)
                if continuation.settled:
                    limit = it + n_iter  # `iterations` at the chosen weight, after the search
        x = u * s
        if continuation is not None:
            extra["auto_lambda"] = continuation.summary(est, unit2)  # residuals as ‖A x − y‖²
            cfg["lambda"] = lam
    return _result(x, done, cancelled, monitor, cfg, lambda_effective=lam * big_l * s, operator_norm=big_l,
                   image_scale=s, temporal_weight=wt, estimated_coil_maps=estimated, **extra)


# ---- L+S -----------------------------------------------------------------------------------
def _svt(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Singular-value soft thresholding of the Casorati matrix (frames × voxels) of x."""
    u, sv, vh = torch.linalg.svd(x.reshape(x.shape[0], -1), full_matrices=False)
    return ((u * torch.clamp(sv - threshold, min=0.0).to(u.dtype)) @ vh).reshape(x.shape)


def _soft(x: torch.Tensor, threshold: float) -> torch.Tensor:
    mag = x.abs()
    return x * torch.clamp(1.0 - threshold / mag.clamp_min(1e-30), min=0.0)


def lps(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None) -> ReconResult:
    """Low-rank plus sparse reconstruction of dynamic data (Otazo et al. 2015): x = L + S with L
    low rank (the background that changes little) and S sparse in the temporal Fourier domain
    (the motion or contrast change), by their iterative soft thresholding:

        L ← SVT(M − S, λ_L σ₁),  S ← Fᴴ soft(F (M − L), λ_S m),  M ← L + S − A_nᴴ(A_n (L + S) − y_n)

    with A_n = W^½ A / √‖AᴴWA‖ (W the density compensation of radial data, I for Cartesian; a unit
    step is then a valid gradient step), y_n likewise, F the orthonormal FFT along time, σ₁ the
    largest singular value and m the largest temporal-Fourier entry of M₀ = A_nᴴ y_n. Stops after `iterations` (default 50) or when
    ‖ΔM‖ < tolerance ‖M‖. Multi-coil data without coil maps: maps are estimated."""
    cfg = options.check_config(dict(config or {}), options.LPS, "lps")
    n_iter = int(iterations or LPS_ITERATIONS)
    measurement, estimated, op, y, device, monitor = _prepared(measurement, cfg, device, monitor)
    with torch.no_grad():
        # Radial data: the density-weighted problem ½‖W^½(Ax − y)‖², as Otazo et al. (their E holds
        # √dcf): its gradient steps converge in tens of iterations, the unweighted ones do not.
        dcf = _dcf(measurement, op, device)
        root_w = torch.ones((1, 1, 1), device=device) if dcf is None else dcf.sqrt()[:, None, :]
        scale_a = _power_norm(lambda v: op.normal(v, dcf=dcf), op.image_shape, device) ** -0.5

        def a(x):
            return op(x) * root_w * scale_a

        def a_h(r):
            return op.adjoint(r * root_w) * scale_a

        y_n = y * root_w * scale_a
        m = a_h(y_n)
        thr_l = float(cfg["lambda_l"]) * float(torch.linalg.svdvals(m.reshape(m.shape[0], -1))[0])
        thr_s = float(cfg["lambda_s"]) * float(torch.fft.fft(m, dim=0, norm="ortho").abs().max())
        low, sparse = m, torch.zeros_like(m)
        done, cancelled = 0, False
        for it in range(1, n_iter + 1):
            low = _svt(m - sparse, thr_l)
            sparse = torch.fft.ifft(_soft(torch.fft.fft(m - low, dim=0, norm="ortho"), thr_s), dim=0, norm="ortho")
            x = low + sparse
            residual = a(x) - y_n
            m_new = x - a_h(residual)
            change = float((m_new - m).norm() / m.norm().clamp_min(1e-30))
            m = m_new
            done = it
            monitor.report("lps", it, n_iter, loss=0.5 * float(residual.norm() ** 2), current=lambda: x.cpu().numpy())
            if monitor.stop_requested():
                cancelled = True
                break
            if change < float(cfg["tolerance"]):
                break
    return _result(low + sparse, done, cancelled, monitor, cfg, estimated_coil_maps=estimated)
