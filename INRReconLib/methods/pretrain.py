"""DisINR pre-training: the shared encoder, the decoder and one encoder per subject, fitted jointly
to the raw measurements of a cohort through each scan's forward model. No images are used.

    field, meta = pretrain(["a.h5", "b.h5", ...], config="disinr-ct-fast")
    io.model_dir.save_model(out, field.shared_state(), meta)

Each step fits `subjects_per_step` subjects (cycling through the cohort in a shuffled order), so
the work per step does not grow with the cohort; at most `max_open` subjects keep their data and
operator in memory (the others are read again when their turn comes). Under torchrun every
process takes every world-th subject, and the gradients of the shared pair are averaged over the
processes after each step, so the shared weights stay identical everywhere (rank 0 saves them);
the subject encoders stay with their process. A stop request (Ctrl-C in the CLI) ends the loop
after the current step and the model so far is returned.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import DeviceError, InputError
from ..io.provenance import file_sha256
from .engine.fitting import regulariser
from .engine.model import FieldImage
from .engine.problem import Problem, robust_max
from .engine.render import raster_fn
from .engine.run import inr_config
from .losses import make_scheduler
from .monitor import Monitor
from .presets import load_config, measurement_context
from .population import frame_record, population_field, resolution_shape, scan_frame

STAGE = "pretraining"


def _world():
    """(rank, world size) of the torch.distributed group, (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Cohort:
    """The subjects: measurement files (or Measurement objects, for scripts), read lazily and kept
    for at most `max_open` subjects at once (least recently used out)."""

    def __init__(self, sources, max_open: int = 16):
        from ..io.readers import read_measurement_header

        self.sources = list(sources)
        if not self.sources:
            raise InputError("cohort", "is empty: pre-training needs measurements.",
                             "Give at least one measurement file (inrrecon pretrain A.h5 B.h5 ...).")
        self.max_open = max(1, int(max_open))
        self._open = collections.OrderedDict()
        self.names, self.grids, self.modalities, self.geometries = [], [], [], []
        for k, src in enumerate(self.sources):
            if isinstance(src, (str, Path)):
                header = read_measurement_header(src)
                self.names.append(str(src))
                self.grids.append(header["grid"])
                self.modalities.append(header["modality"])
                self.geometries.append(header.get("geometry"))
            else:
                self.names.append(src.attrs.get("description") or f"in-memory measurement {k}")
                self.grids.append(src.grid)
                self.modalities.append(src.modality)
                self.geometries.append(src.geometry.type)
        kinds = sorted(set(self.modalities))
        if len(kinds) > 1:
            first = {m: self.names[self.modalities.index(m)] for m in kinds}
            raise InputError("cohort", "mixes modalities: " + ", ".join(f"{m} ({Path(n).name})" for m, n in first.items())
                             + ".", "Pre-train CT and MR models separately, one modality per cohort.")
        self.modality = kinds[0]

    def __len__(self):
        return len(self.sources)

    def measurement(self, k: int):
        src = self.sources[k]
        if not isinstance(src, (str, Path)):
            return src
        from ..io.readers import read_measurement

        return read_measurement(src)

    def problem(self, k: int, cfg, device) -> Problem:
        """Subject k's Problem (data, operator), opened on first use."""
        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        name = Path(self.names[k]).name
        try:
            measurement = self.measurement(k)
            if measurement.modality == "MR" and np.shape(measurement.data)[0] != 1:
                raise InputError("/data", f"has {np.shape(measurement.data)[0]} frames; DisINR pre-trains on static "
                                 "scans.", "Give one frame per file.")
            problem = Problem(measurement, cfg, device)
        except InputError as exc:  # which of the cohort's files it is
            raise InputError(f"{name} {exc.field}", exc.problem, exc.fix) from None
        self._open[k] = problem
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return problem

    def record(self) -> list:
        """model.json's "cohort": each subject's file name, SHA-256 and grid."""
        out = []
        for name, src, grid in zip(self.names, self.sources, self.grids):
            sha = file_sha256(src) if isinstance(src, (str, Path)) and Path(src).is_file() else None
            out.append({"name": Path(name).name, "sha256": sha, "grid": grid.to_dict()})
        return out


def pretrain(sources, *, config=None, iterations=None, device="cpu", monitor=None, max_open: int = 16):
    """Pre-train on `sources` (measurement file paths, or Measurement objects). Returns
    (field, meta): the DisentangledField (this process's subjects) and model.json's content."""
    monitor = monitor or Monitor()
    device = torch.device(device)
    start = time.perf_counter()
    cohort = Cohort(sources, max_open)
    rank, world = _world()
    first = cohort.measurement(0)
    if isinstance(config, (str, Path)):  # a preset name or a JSON/YAML file
        config = load_config(config, method="disinr", **measurement_context(first.modality, first.geometry.type,
                                                                              first.grid))
    if len(cohort) < world:  # every rank says so, before any of them waits for the others
        raise InputError("cohort", f"has {len(cohort)} subjects for {world} processes.",
                         "Run at most as many processes as there are subjects.")
    frame = frame_record(cohort.grids)
    # The hash grid is sized for the model's frame (its finest level: the cohort's finest voxels
    # over the frame), not for whichever scan came first.
    cfg = inr_config("disinr", first, config, None, field_shape=resolution_shape(frame))
    if iterations is not None:
        cfg["pretrain_iterations"] = int(iterations)
    cfg["model"] = ""  # a pre-training starts from nothing
    _check_supported(cfg)
    mine = list(range(rank, len(cohort), world))

    # The unit of the field: CT shares one (attenuation is absolute), MR scans each have their own.
    scales = {k: _unit(cohort.problem(k, cfg, device)) for k in mine}
    ct_scale = _shared_ct_scale(scales, len(cohort)) if cohort.modality == "CT" else None
    torch.manual_seed(int(cfg["seed"]))
    field = population_field(cfg["field"], frame, cohort.modality, device, subject_ids=mine)
    if world > 1:
        for p in field.shared_parameters():
            torch.distributed.broadcast(p.data, 0)

    # The same number on every process (the mean over the global batch needs it), at most the
    # smallest share of the cohort.
    per_step = min(int(cfg["subjects_per_step"]), len(cohort) // world)
    with _out_of_memory_as_device_error():
        history, step, first_loss, last_loss = _fit(field, cohort, mine, cfg, frame, scales, ct_scale, device,
                                                    monitor, per_step, world, rank)
    field.active = 0
    total = int(cfg["pretrain_iterations"])
    stopped = step < total
    meta = {"modality": cohort.modality, "field": cfg["field"], "frame": frame, "intensity_scale": ct_scale,
            "training": {"steps": step, "planned_steps": total, "stopped_early": stopped, "processes": world,
                         "subjects_per_step": per_step,
                         "seconds": round(time.perf_counter() - start, 3),
                         "device": str(device), "loss_first": history[0] if history else None,
                         "loss_last": history[-1] if history else None, "loss_history": history,
                         "subject_loss_first": first_loss, "subject_loss_last": last_loss,
                         "geometries": sorted(set(g for g in cohort.geometries if g))},
            "config": cfg, "cohort": cohort.record(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    meta["cohort_sha256"] = hashlib.sha256(str([s["sha256"] for s in meta["cohort"]]).encode()).hexdigest()
    return field, meta


# What the pre-training loop implements of the fitting options: Adam on every view, no FLS
# handover. Other values are refused here; the worker sets these for its pre-training stage.
PRETRAIN_FITTING = {"subsets": 1, "optimizer": "adam", "fls_handover": 0}


def _check_supported(cfg) -> None:
    """The fitting options the pre-training loop does not implement are refused, not ignored."""
    used = {"subsets": int(cfg.get("subsets") or 1), "optimizer": cfg.get("optimizer", "adam"),
            # the handover only acts with the FLS loss
            "fls_handover": float(cfg.get("fls_handover") or 0) if cfg.get("loss") == "fls" else 0}
    wrong = [k for k, v in PRETRAIN_FITTING.items() if used[k] != v]
    if wrong:
        key = wrong[0]
        raise InputError(f"config {key}", f"is {cfg[key]!r}; DisINR pre-training does not implement it.",
                         f"Set {key} to {PRETRAIN_FITTING[key]!r} for pre-training (the adaptation may use it).")


@contextlib.contextmanager
def _out_of_memory_as_device_error():
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise DeviceError("out-of-memory", f"The GPU ran out of memory during pre-training "
                          f"({str(exc).splitlines()[0]}). Lower subjects_per_step, set points_per_chunk (e.g. 65536), lower "
                          "the hash table size (log2_hashmap_size) or the network width, or pre-train on the CPU.") \
            from None


def _fit(field, cohort, mine, cfg, frame, scales, ct_scale, device, monitor, per_step: int, world: int, rank: int):
    """The pre-training loop; returns (loss per step, steps done, first and last loss per subject)."""
    shared = field.shared_parameters()
    total = int(cfg["pretrain_iterations"])
    opt = torch.optim.Adam(field.parameters(), lr=float(cfg["pretrain_lr"]))
    sched = make_scheduler(opt, cfg["schedule"], total, cfg["step_size"], cfg["gamma"])
    order = _batches(len(mine), per_step, int(cfg["seed"]) + rank)
    global_batch = per_step * world
    history, step = [], 0
    first_loss, last_loss = {}, {}  # per subject: its loss the first and the last time it was fitted
    for step in range(1, total + 1):
        opt.zero_grad(set_to_none=True)
        batch_loss = 0.0
        for local in next(order):
            k = mine[local]
            problem = cohort.problem(k, cfg, device)
            problem.set_scale(ct_scale if ct_scale is not None else scales[k])
            field.active = local
            model = FieldImage(field, scan_frame(frame, problem.grid), intensity_scale=problem.scale,
                               complex_output=problem.mr)
            axes = model.frame.spatial_axes(problem.grid, 1, device)
            image = raster_fn(model, axes, problem.image_shape, int(cfg["points_per_chunk"]))()
            loss = problem.loss(image, cfg)
            reg = regulariser(cfg, problem)
            if reg is not None:
                loss = loss + reg(image)
            # Each subject's share of the mean over the global batch: summing over processes averages.
            (loss / global_batch).backward()
            batch_loss += float(loss.detach())
            first_loss.setdefault(k, float(loss.detach()))
            last_loss[k] = float(loss.detach())
        batch_loss = _sum_over_world(batch_loss, world) / global_batch
        if world > 1:
            _sum_grads(shared)
        opt.step()
        sched.step()
        history.append(batch_loss)
        monitor.report(STAGE, step, total, loss=batch_loss)
        # Every process stops after the same step (one stopping alone would leave the others waiting).
        if _sum_over_world(float(monitor.stop_requested()), world) > 0:
            break
    return history, step, first_loss, last_loss


def _unit(problem) -> float:
    scale = robust_max(problem.quick_estimate())
    return scale if scale > 0 else 1.0


def _shared_ct_scale(scales: dict, n_subjects: int) -> float:
    """The cohort's median unit (all processes agree on it: every rank contributes its subjects')."""
    values = torch.zeros(n_subjects, dtype=torch.float64)
    for k, s in scales.items():
        values[k] = s
    if _world()[1] > 1:
        torch.distributed.all_reduce(values)
    return float(values.median())


def _batches(n: int, per_step: int, seed: int):
    """Endless mini-batches of local subject indices: a shuffled pass, then the next."""
    gen = torch.Generator().manual_seed(seed)
    queue = []
    per_step = min(per_step, n)
    while True:
        batch = []
        while len(batch) < per_step:
            if not queue:
                queue = torch.randperm(n, generator=gen).tolist()
            k = queue.pop()
            if k not in batch:  # a pass's tail and the next pass's head may overlap
                batch.append(k)
        yield batch


def _sum_grads(params) -> None:
    """The shared pair's gradients summed over the processes (each holds its share of the mean)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)


def _sum_over_world(value: float, world: int) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t)
