"""The module's settings -> the job's `config` (a preset name plus the overrides the user set).

A value of 0 (or "") means "keep the preset's value", which is how the GUI's spin boxes show
"preset" at their minimum; so a run with untouched settings is exactly the preset, and the saved
config says what the user changed.
"""

from __future__ import annotations

from ..methods.presets import default_preset, load_config, measurement_context

# The fast presets, one per kind of measurement: the module switches between them when the
# measurement changes (a paper preset or a file the user chose stays).
FAST_PRESETS = ("hash-ct", "hash-cone", "hash-mr", "stinr-fast", "disinr-ct-fast", "disinr-mr-fast")


def _put(section: dict, key: str, value, cast, zero_is_setting: bool = False) -> None:
    """section[key] = cast(value) for a positive value (or zero, where 0 is a real setting such as
    "TV off"); anything lower means "keep the preset's value"."""
    if value > 0 or (zero_is_setting and value == 0):
        section[key] = cast(value)


def build_config(preset: str, modality: str = "CT", *, embed_iterations: int = -1, embed_lr: float = 0.0,
                 lr: float = 0.0, loss: str = "", tv_weight: float = -1.0, coarse_to_fine: float = -1.0,
                 prior_registration: str = "", prior_slice_search_mm: float = -1.0, prior_mismatch: str = "",
                 use_admm: bool = False,
                 admm_adam_steps: int = 0,
                 admm_cgls_steps: int = 0, admm_rho: float = 0.0, network_width: int = 0, network_depth: int = 0,
                 fourier_features: int = 0, fourier_sigma: float = 0.0, hash_levels: int = 0,
                 hash_log2_table: int = 0, model_folder: str = "") -> dict:
    """A config dict for `write_job(config=...)`, checked by `load_config` (InputError when wrong).

    embed_iterations, tv_weight, coarse_to_fine, prior_slice_search_mm: -1 keeps the preset's value
    (0 is a real setting: off). Other numbers: 0 keeps the preset's value, and so does an empty loss,
    prior_registration ("none" | "rigid" | "deformable" | "auto") or prior_mismatch ("error" | "warn").
    Learning rates are Adam's. Encoding keys apply to the preset's encoding kind only (Fourier:
    features, sigma; HashGrid: levels, table). model_folder: DisINR's pre-trained model ("" = none),
    kept in the config, so the result's saved config names the model it used.
    """
    base = load_config(preset, modality=modality)
    cfg: dict = {"preset": preset}
    if model_folder:
        cfg["model"] = str(model_folder)
    _put(cfg, "embed_iterations", embed_iterations, int, zero_is_setting=True)
    _put(cfg, "embed_lr", embed_lr, float)
    _put(cfg, "lr", lr, float)
    if loss:
        cfg["loss"] = loss
    if prior_registration:
        cfg["prior_registration"] = prior_registration
    if prior_mismatch:
        cfg["prior_mismatch"] = prior_mismatch
    _put(cfg, "prior_slice_search_mm", prior_slice_search_mm, float, zero_is_setting=True)
    _put(cfg, "tv_weight", tv_weight, float, zero_is_setting=True)
    _put(cfg, "coarse_to_fine", coarse_to_fine, float, zero_is_setting=True)
    if use_admm:
        cfg["optimizer"] = "admm"
        admm = {}
        _put(admm, "adam_steps", admm_adam_steps, int)
        _put(admm, "cgls_steps", admm_cgls_steps, int)
        _put(admm, "rho", admm_rho, float)
        if admm:
            cfg["admm"] = admm
    network = {}
    _put(network, "n_neurons", network_width, int)
    _put(network, "n_hidden_layers", network_depth, int)
    encoding = {}
    otype = base["field"]["encoding"].get("otype")
    if otype == "Fourier":
        _put(encoding, "n_features", fourier_features, int)
        _put(encoding, "sigma", fourier_sigma, float)
    elif otype == "HashGrid":
        _put(encoding, "n_levels", hash_levels, int)
        _put(encoding, "log2_hashmap_size", hash_log2_table, int)
    field = {k: v for k, v in (("encoding", encoding), ("network", network)) if v}
    if field:
        cfg["field"] = field
    load_config(cfg, modality=modality)  # fail here, in the GUI, rather than in the worker
    return cfg


def preset_for_measurement(path, current: str, method: str = "nerp") -> str:
    """The preset to show once `path` and `method` are chosen: the method's default for this kind
    of measurement (hash-cone for 3D cone beam, hash-ct, hash-mr; stinr-fast for stinr) when
    `current` is one of the fast presets, otherwise `current`. An unreadable file keeps `current`
    (Apply reports the problem). A method without presets shows the default (inr, nerp) one."""
    from ..errors import InputError
    from ..io.readers import read_measurement_header
    from ..methods.registry import METHODS

    spec = METHODS.get(method)
    if current not in FAST_PRESETS:
        return current
    rule = spec.preset_rule if spec is not None and spec.preset_rule is not None else default_preset
    try:
        header = read_measurement_header(path)
    except InputError:
        return current
    context = measurement_context(header["modality"], header["geometry"], header["grid"])
    return rule(context["modality"], context["cone_3d"])
