"""The module's settings -> the job's `config` (a preset name plus the overrides the user set).

A value of 0 (or "") means "keep the preset's value", which is how the GUI's spin boxes show
"preset" at their minimum; so a run with untouched settings is exactly the preset, and the saved
config says what the user changed.
"""

from __future__ import annotations

from ..methods.presets import load_config


def build_config(preset: str, modality: str = "CT", *, embed_iterations: int = -1, embed_lr: float = 0.0,
                 lr: float = 0.0, loss: str = "", tv_weight: float = -1.0, coarse_to_fine: float = -1.0,
                 use_admm: bool = False, admm_adam_steps: int = 0, admm_cgls_steps: int = 0,
                 admm_rho: float = 0.0, network_width: int = 0, network_depth: int = 0,
                 fourier_features: int = 0, fourier_sigma: float = 0.0, hash_levels: int = 0,
                 hash_log2_table: int = 0) -> dict:
    """A config dict for `write_job(config=...)`, checked by `load_config` (InputError when wrong).

    embed_iterations, tv_weight, coarse_to_fine: -1 keeps the preset's value (0 is a real setting:
    off). Other numbers: 0 keeps the preset's value. Learning rates are Adam's. Encoding keys apply
    to the preset's encoding kind only (Fourier: features, sigma; HashGrid: levels, table).
    """
    base = load_config(preset, modality=modality)
    cfg: dict = {"preset": preset}
    if embed_iterations >= 0:
        cfg["embed_iterations"] = int(embed_iterations)
    if embed_lr > 0:
        cfg["embed_lr"] = float(embed_lr)
    if lr > 0:
        cfg["lr"] = float(lr)
    if loss:
        cfg["loss"] = loss
    if tv_weight >= 0:
        cfg["tv_weight"] = float(tv_weight)
    if coarse_to_fine >= 0:
        cfg["coarse_to_fine"] = float(coarse_to_fine)
    if use_admm:
        cfg["optimizer"] = "admm"
        admm = {}
        if admm_adam_steps > 0:
            admm["adam_steps"] = int(admm_adam_steps)
        if admm_cgls_steps > 0:
            admm["cgls_steps"] = int(admm_cgls_steps)
        if admm_rho > 0:
            admm["rho"] = float(admm_rho)
        if admm:
            cfg["admm"] = admm
    network = {}
    if network_width > 0:
        network["n_neurons"] = int(network_width)
    if network_depth > 0:
        network["n_hidden_layers"] = int(network_depth)
    encoding = {}
    otype = base["field"]["encoding"].get("otype")
    if otype == "Fourier":
        if fourier_features > 0:
            encoding["n_features"] = int(fourier_features)
        if fourier_sigma > 0:
            encoding["sigma"] = float(fourier_sigma)
    elif otype == "HashGrid":
        if hash_levels > 0:
            encoding["n_levels"] = int(hash_levels)
        if hash_log2_table > 0:
            encoding["log2_hashmap_size"] = int(hash_log2_table)
    field = {k: v for k, v in (("encoding", encoding), ("network", network)) if v}
    if field:
        cfg["field"] = field
    load_config(cfg, modality=modality)  # fail here, in the GUI, rather than in the worker
    return cfg
