"""DisINR (disentangled INR): a new scan reconstructed with a population prior pre-trained from
raw measurements (methods/pretrain.py). The shared encoder and decoder are loaded and frozen; only
a fresh subject encoder is fitted to the new measurements (finetune_shared: everything trains,
the ablation the paper compares with). No prior image is needed."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..io.model_dir import load_model
from .engine.run import InrRun
from .population import outside_frame, population_field, scan_frame

NO_MODEL_FIX = "Pass --model MODEL_DIR (the folder inrrecon pretrain wrote), or set the config key model."


def disinr(measurement, *, prior=None, config=None, iterations=None, device="cpu", monitor=None):
    """Adapt a pre-trained model (config key `model`) to `measurement` (`prior` is ignored)."""
    run = InrRun("disinr", measurement, config, iterations, device, monitor)
    folder = run.cfg["model"]
    if not folder:
        raise InputError("model", "disinr needs a pre-trained model and none was given.", NO_MODEL_FIX)
    meta, state = load_model(folder, measurement.modality)
    run.cfg["field"] = meta["field"]  # the model's network, whatever the preset says
    frame = meta["frame"]
    with run.guard():
        problem = run.open_problem()
        field = population_field(meta["field"], frame, measurement.modality, run.device)
        _load_shared(field, state, folder)
        field.freeze_shared(not run.cfg["finetune_shared"])
        # CT attenuation has the cohort's unit; an MR scan has its own (k-space has no absolute scale).
        scale = meta["intensity_scale"]
        if scale is None:
            from .engine.problem import robust_max

            scale = robust_max(problem.quick_estimate()) or 1.0
        model = run.adopt(field, scan_frame(frame, measurement.grid), float(scale))
        run.extra["model"] = {"folder": str(folder), "weights_sha256": meta["weights_sha256"],
                              "cohort_subjects": len(meta.get("cohort", [])),
                              "cohort": [c.get("name") for c in meta.get("cohort", [])],
                              "pretrain_steps": meta.get("training", {}).get("steps"),
                              "shared_frozen": not run.cfg["finetune_shared"]}
        if outside_frame(frame, measurement.grid):
            run.extra.setdefault("warnings", []).append(
                f"the scan's field of view is larger than the model's frame ({2 * frame['half_extent_mm']:.0f} mm): "
                "the shared encoder sees its edges clamped. Pre-train on scans that cover this field of view.")
        return run.fit(model)


def _load_shared(field, state: dict, folder) -> None:
    """The model's shared weights into `field`; a file of another network is refused."""
    expected = field.shared_state()
    wrong = sorted(set(state) ^ set(expected))
    shapes = [k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong or shapes:
        raise InputError("model", f"the weights in {folder} do not fit the network its model.json describes "
                         f"({len(wrong)} names and {len(shapes)} shapes differ, e.g. {(wrong or shapes)[0]!r}).",
                         "The folder was edited or mixed with another model's files; pre-train it again.")
    for k, v in state.items():
        if not np.all(np.isfinite(v.numpy())):
            raise InputError("model", f"the weight {k!r} in {folder} holds NaN or Inf.", "Pre-train the model again.")
    field.load_state_dict(state, strict=False)
