"""The fitting loops of the INR engine, in the problem's normalised units."""

from __future__ import annotations

import math

import torch

from ..admm import admm_fit
from ..losses import low_rank_loss, make_scheduler, temporal_tv_loss, tv_loss
from .render import raster_fn, render


def embed_image(model, axes, problem, target_n, cfg, monitor, stage="prior-embedding"):
    """Fit the model to a normalised image on the grid (MSE; NeRP's prior embedding), with
    `embed_iterations` Adam steps at `embed_lr`. Returns (steps, cancelled)."""
    total = int(cfg["embed_iterations"])
    raster = raster_fn(model, axes, problem.image_shape, int(cfg["points_per_chunk"]))
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["embed_lr"]))
    sched = make_scheduler(opt, cfg["schedule"], total, cfg["step_size"], cfg["gamma"])
    for it in range(1, total + 1):
        opt.zero_grad(set_to_none=True)
        diff = raster() - target_n
        loss = (diff.real ** 2 + diff.imag ** 2).mean() if diff.is_complex() else (diff ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()
        monitor.report(stage, it, total, loss=float(loss.detach()), current=lambda: render(model, problem.grid))
        if monitor.stop_requested():
            return it, True
    return total, False


def level_schedule(field, cfg, total: int, embedded: bool):
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
    √coils (brain slice, NeRP, best: 0.002 for 1 coil and 0.0007 for 8 at 256²). For the same
    reason CT with more than 20 views (the count the CT presets were tuned on) gets 20/views of
    it (thorax slice, 60 views, NeRP, tv_weight 0.01 / 0.003 / 0.001 / 0: parallel 35.61 /
    37.73 / 37.75 / 37.60 dB, lesion 26.94 / 27.19 / 27.03 / 26.92; fan, 0.01 / 0.0033: 34.53 /
    37.67, lesion 26.92 / 27.66). Fewer views keep the weight (not measured below 20)."""
    views = 1.0 if problem.mr else min(1.0, 20.0 / problem.n_views)
    return float(cfg["tv_weight"]) * max(problem.grid.shape) / 128.0 / math.sqrt(problem.n_coils) * views


def regulariser(cfg, problem):
    """image -> the config's regularisers on the normalised image (None when all are off):
    spatial TV (its weight scaled as `tv_weight` says) and, for several frames, temporal TV and
    the low-rank term, whose weights are used as given (the frames are of unit scale)."""
    terms = []
    w = tv_weight(cfg, problem)
    if w > 0:
        terms.append(lambda img: w * tv_loss(img))
    if problem.n_frames > 1:
        wt, wl = float(cfg["temporal_tv_weight"]), float(cfg["low_rank_weight"])
        if wt > 0:
            terms.append(lambda img: wt * temporal_tv_loss(img))
        if wl > 0:
            terms.append(lambda img: wl * low_rank_loss(img))
    if not terms:
        return None
    return lambda img: sum(term(img) for term in terms)


def fit_measurements(model, axes, problem, cfg, monitor, stage="fitting", embedded=False, times_s=None):
    """Fit the model to the measurements through the operator: `iterations` steps of Adam (data
    loss, regularisers, ordered subsets, the coarse-to-fine level schedule) or of ADMM. `embedded`:
    the model already holds an image (NeRP), which `coarse_to_fine_prior` treats apart. times_s:
    the frame times of a spatiotemporal model (previews show every frame).
    Returns (steps, cancelled, extra)."""
    total = int(cfg["iterations"])
    levels = level_schedule(model.field, cfg, total, embedded)
    chunk = int(cfg["points_per_chunk"])
    raster = raster_fn(model, axes, problem.image_shape, chunk)
    regularise = regulariser(cfg, problem)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
    sched = make_scheduler(opt, cfg["schedule"], total, cfg["step_size"], cfg["gamma"])

    def preview():
        return render(model, problem.grid, times_s=times_s)

    if cfg["optimizer"] == "admm":
        a = cfg["admm"]

        def report(step, loss, **extra):
            monitor.report(stage, step, total, loss=loss, current=preview, **extra)

        steps, cancelled, residuals = admm_fit(
            raster, opt, sched, problem.A, problem.AT, problem.y_n, total_steps=total,
            adam_steps=int(a["adam_steps"]), cgls_steps=int(a["cgls_steps"]), rho=float(a["rho"]),
            regulariser=regularise, report=report, should_stop=monitor.stop_requested, on_step=levels)
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
        if regularise is not None:
            loss = loss + regularise(image)
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
