"""Config keys of the methods: each one once, with its default, a one-line doc and its check.

`check_config` is the one validator: unknown keys and bad values are refused with one message
format (field "config <key>", what is wrong, and the key's doc as the fix). The registry
(registry.py) names the options of every method; the CLI, the worker, the Slicer module and
`inrrecon methods` read them from there. No torch here: the Slicer module imports this file.

The INR methods (inr, nerp) take their defaults from a preset (INRReconLib/presets/*.json,
presets.py); their options have default None ("the preset's value") and every preset holds
exactly these keys (a test checks it).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import InputError
from ..physics.backends import NUFFTS, PROJECTORS, RAMP_WINDOWS

LOSSES = ("l2", "l1", "fls", "rel_l2")
SCHEDULES = ("cosine", "step", "constant")
PRIOR_REGISTRATIONS = ("none", "rigid", "deformable", "auto")


@dataclass(frozen=True)
class Option:
    """One config key. `kind`: "int", "float", "bool", "str", "mapping", "floats" (a list of
    numbers) or "any"; numbers are
    checked against [minimum, maximum] (`above`: strictly greater than minimum); strings
    against `choices` when given; None passes where `nullable`. `needs`: what the method must
    read for the key to mean something ("prior": only for a method with a prior)."""

    key: str
    doc: str
    default: Any = None
    kind: str = "any"
    choices: tuple = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    above: bool = False
    nullable: bool = False
    needs: str = ""
    auto: bool = False  # the string "auto" is also valid: chosen from the data (methods/auto_params.py)

    def problem(self, value) -> Optional[str]:
        """What is wrong with `value` for this key, or None."""
        if value is None and self.nullable:
            return None
        if self.auto and value == "auto":
            return None
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}."
        if self.kind == "mapping":
            return None if isinstance(value, dict) else f"must be a mapping, got {type(value).__name__}."
        if self.kind == "floats":
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            return None if ok else f"must be a list of numbers, got {value!r}."
        if self.kind == "str" or self.choices:
            if self.choices and value not in self.choices:
                return f"must be one of {', '.join(repr(c) for c in self.choices)}; got {value!r}."
            return None if isinstance(value, str) else f"must be a string, got {value!r}."
        if self.kind in ("int", "float"):
            # numbers.Real: NumPy scalars too, as scripts compute settings with NumPy
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                return f"must be a number, got {value!r}."
            if self.kind == "int" and value != int(value):
                return f"must be an integer, got {value!r}."
            low_ok = self.minimum is None or (value > self.minimum if self.above else value >= self.minimum)
            high_ok = self.maximum is None or value <= self.maximum
            if not (low_ok and high_ok):
                return f"must be {self._range()}, got {value!r}."
        return None

    def requirement(self) -> str:
        """What a valid value is, for the fix of an error message."""
        if self.auto:
            return "'auto' or " + dataclasses.replace(self, auto=False).requirement()
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "mapping":
            return "a mapping"
        if self.kind == "floats":
            return "a list of numbers"
        if self.kind in ("int", "float"):
            what = "an integer" if self.kind == "int" else "a number"
            bounds = self._range()
            return f"{what} {bounds}" if bounds else what
        return "a string" if self.kind == "str" else "a value"

    def _range(self) -> str:
        low = None if self.minimum is None else f"{'>' if self.above else '>='} {self.minimum:g}"
        if self.maximum is None:
            return low or ""
        if low is None:
            return f"<= {self.maximum:g}"
        return f"in [{self.minimum:g}, {self.maximum:g}]" if not self.above else f"{low} and <= {self.maximum:g}"


def check_config(config: dict, options, method: str, *, defaults: bool = True, prefix: str = "") -> dict:
    """`config` checked against `options` (a tuple of Option): a new dict with the defaults filled
    in (defaults=False: the given keys only). Raises InputError naming the first bad key, as
    "config <prefix><key>"; prefix names a nested mapping ("admm.")."""
    known = {o.key: o for o in options}
    for key in config:
        if key not in known:
            raise InputError(f"config {prefix}{key}".rstrip(), f"{method} has no option {key!r}.",
                             f"Use one of its options: {', '.join(known)} "
                             "(inrrecon methods lists them with their docs).")
    out = {o.key: o.default for o in options} if defaults else {}
    out.update(config)
    for key, value in out.items():
        option = known[key]
        wrong = option.problem(value)
        if wrong is not None:
            raise InputError(f"config {prefix}{key}", wrong,
                             f"Set {prefix}{key} to {option.requirement()} ({key}: {option.doc}).")
        if option.kind in ("int", "float") and value is not None and not (option.auto and value == "auto"):
            out[key] = int(value) if option.kind == "int" else float(value)  # NumPy scalars -> JSON-able
        elif option.kind == "floats":
            out[key] = [float(v) for v in value]
    return out


def defaults(options) -> dict:
    return {o.key: o.default for o in options}


# ---- shared by several methods -------------------------------------------------------------
PROJECTOR = Option("projector", "CT forward model: auto (astra on CUDA when it has CUDA, else torch), torch or "
                   "astra; the result's config names the one that ran", "auto", choices=PROJECTORS)
SPOKES_PER_FRAME = Option("spokes_per_frame", "dynamic radial MR with per-spoke times: frames of this many "
                          "consecutive spokes (0: the file's frames)", 0, "int", minimum=0, needs="frames")
NUFFT = Option("nufft", "non-Cartesian MR: auto (the faster backend on this device, as measured), torchkbnufft or "
               "finufft; the result's config names the one that ran", "auto", choices=NUFFTS)

# ---- classical CT --------------------------------------------------------------------------
FBP = (Option("filter", "ramp filter window: ramp (sharpest) or hann (less noise)", "ramp", choices=RAMP_WINDOWS),
       PROJECTOR)
SIRT = (Option("iterations", "SIRT iterations from zero; auto: stop where the data residual reaches what a "
                "least-squares fit leaves of the sinogram's noise (sparse views: none, 1000 iterations)", "auto", "int",
                minimum=1, auto=True),
        Option("nonneg", "clip negative attenuation every iteration", True, "bool"), PROJECTOR)
CGLS = (Option("iterations", "CGLS iterations from zero (early stopping is the regulariser); auto: stop where the data "
               "residual reaches what a least-squares fit leaves of the noise, or levels off", "auto", "int", minimum=1,
               auto=True),
        PROJECTOR)
TV_CT = (Option("iterations", "preconditioned PDHG iterations, at most (it stops earlier at tolerance)", 500, "int",
                minimum=1),
         Option("lambda", "TV weight of the normalised problem (dimensionless); auto: the discrepancy principle on the "
                "sinogram's Poisson noise", "auto", "float", minimum=0, auto=True),
         Option("tolerance", "stop when the objective changes by less than this (relative) over 15 iterations", 5e-4,
                "float", minimum=0),
         Option("nonneg", "clip negative attenuation every iteration", True, "bool"), PROJECTOR)

# ---- classical MR --------------------------------------------------------------------------
ADJOINT = (Option("density_compensation", "non-Cartesian: weight k-space by the density compensation", True, "bool"),
           Option("scale", "least-squares: scale the image to fit the data; none: the raw adjoint", "least-squares",
                  choices=("least-squares", "none")),
           NUFFT, SPOKES_PER_FRAME)
CGSENSE = (Option("iterations", "CG iterations from zero; auto: stop where the data residual reaches the k-space "
                  "noise (discrepancy principle, at most 100)", "auto", "int", minimum=1, auto=True),
           Option("lambda", "Tikhonov weight relative to the largest eigenvalue of AᴴWA (0: none, the iteration "
                  "count regularises)", 0.0, "float", minimum=0),
           Option("dcf_weighting", "non-Cartesian: solve the density-weighted problem (faster, noisier)", False,
                  "bool"),
           Option("tolerance", "stop when the normal-equation residual falls below this, relative", 1e-6, "float",
                  minimum=0),
           Option("toeplitz", "non-Cartesian: apply AᴴA through its Toeplitz embedding (faster)", True, "bool"),
           NUFFT, SPOKES_PER_FRAME)
TV_MR = (Option("lambda", "TV weight relative to ‖AᴴA‖ and the image scale; auto: the discrepancy principle on the "
                "k-space noise (2e-4 was the fixed default, tuned on a 256² brain, 40 spokes)", "auto", "float", minimum=0,
                auto=True),
         Option("temporal_weight", "dynamic data: weight of the temporal TV (null: 0 for one frame, 1 for several)",
                None, "float", minimum=0, nullable=True),
         Option("spatial_weight", "weight of the spatial TV (0 with temporal_weight > 0: temporal TV alone, as "
                "GRASP)", 1.0, "float", minimum=0),
         Option("precondition", "non-Cartesian: diagonal k-space dual step from the density compensation", True,
                "bool"),
         Option("init", "start from the gridding image (adjoint) or from zero", "adjoint", choices=("adjoint", "zero")),
         Option("step", "primal step τ of PDHG (10 converged best in 200 iterations on the brain)", 10.0, "float",
                minimum=0, above=True),
         NUFFT, SPOKES_PER_FRAME)

# GRASP (Feng et al. 2014): the same PDHG with temporal TV alone; lambda measured on the dynamic
# phantom (README: the dynamic MR table).
GRASP = tuple(o for o in TV_MR if o.key not in ("lambda", "temporal_weight", "spatial_weight")) + (
    Option("lambda", "temporal TV weight, relative as tv's; auto: the discrepancy principle on the k-space noise "
           "(dynamic phantom, 128², 13 / 5 spokes per frame: auto 30.07 / 22.66 dB, the fixed 5e-4 it replaced 30.18 / "
           "22.69, 1e-3 30.05 at 13, 2e-3 21.40 at 5)", "auto", "float", minimum=0, auto=True),)
# lambda_l / lambda_s on the dynamic phantom, 64², 13 spokes per frame: 0.01 / 0.01 -> 22.86 dB, 0.003 / 0.003
# -> 22.65, 0.03 / 0.01 -> 23.38, 0.1 / 0.01 -> 23.56, 0.03 / 0.03 -> 21.43 (CG-SENSE 21.82, GRASP 32.29).
LPS = (Option("lambda_l", "singular-value threshold of L, relative to the largest singular value of the gridding "
              "series", 0.1, "float", minimum=0),
       Option("lambda_s", "soft threshold of S in the temporal Fourier domain, relative to its largest entry in the "
              "gridding series", 0.01, "float", minimum=0),
       Option("tolerance", "stop when the update falls below this, relative to the image", 2.5e-3, "float",
              minimum=0),
       NUFFT, SPOKES_PER_FRAME)

# ---- the INR methods (defaults: the preset) -------------------------------------------------
INR = (
    Option("preset", "the preset the config started from (INRReconLib/presets)", kind="str"),
    Option("description", "what the preset is for and how it was tuned (free text)", kind="str"),
    Option("field", "the network: {encoding: {otype, ...}, network: {otype, ...}, backend: auto | torch}, tiny-cuda-nn "
           "style (fields/factory.py)", kind="mapping"),
    PROJECTOR, NUFFT,
    Option("prior_registration", "NeRP: align the prior with a TV image of the data before embedding it; auto keeps "
           "the rigid or the deformable alignment, whichever the data fit better", choices=PRIOR_REGISTRATIONS,
           needs="prior"),
    Option("registration_reference_iterations", "TV iterations for the registration's reference image", kind="int",
           minimum=1, needs="prior"),
    Option("prior_slice_search_mm", "NeRP, 2D data, a prior volume: pick the prior's slice within this distance of "
           "the plane that matches the data best (0: off)", kind="float", minimum=0, needs="prior"),
    Option("prior_min_correlation", "NeRP: the rigidly aligned prior must correlate at least this much with the TV "
           "reference (own earlier scan 0.93-0.98, another patient 0.47; -1: no check)", kind="float", minimum=-1,
           maximum=1, needs="prior"),
    Option("prior_mismatch", "below prior_min_correlation: error (stop, naming the mismatch) or warn (go on)",
           choices=("error", "warn"), needs="prior"),
    Option("embed_iterations", "NeRP: Adam steps fitting the field to the prior (0: no embedding)", kind="int",
           minimum=0, needs="prior"),
    Option("embed_lr", "learning rate of the prior embedding", kind="float", minimum=0, above=True, needs="prior"),
    Option("iterations", "data-fitting steps (ADMM: Adam steps of the network in total)", kind="int", minimum=1),
    Option("lr", "learning rate of the data fit", kind="float", minimum=0, above=True),
    Option("schedule", "learning-rate schedule of both stages", choices=SCHEDULES),
    Option("step_size", "schedule step: steps between decays (0: a quarter of the steps)", kind="int", minimum=0),
    Option("gamma", "schedule step: factor per decay", kind="float", minimum=0, above=True),
    Option("loss", "data loss: l2, l1, fls (CT, ramp-filtered) or rel_l2 (MR k-space)", choices=LOSSES),
    Option("rel_l2_eps", "rel_l2: ε relative to the largest k-space sample", kind="float", minimum=0, above=True),
    Option("fls_window", "fls: ramp filter window", choices=RAMP_WINDOWS),
    Option("fls_handover", "fls: blend to plain L2 over this fraction of the fitting steps (0: FLS throughout)",
           kind="float", minimum=0, maximum=1),
    Option("optimizer", "adam, or admm (CGLS on the physics, Adam on the image fit)", choices=("adam", "admm")),
    Option("admm", "ADMM settings: adam_steps, cgls_steps, rho (see ADMM)", kind="mapping"),
    Option("coarse_to_fine", "hash grid: bring resolution levels in over this fraction of the fitting steps (0: all "
           "from the start)", kind="float", minimum=0, maximum=1),
    Option("coarse_to_fine_prior", "NeRP: freeze the embedded fine levels until their turn, mask them out, or off "
           "(every level trains from the start, for a registered prior)", choices=("freeze", "mask", "off"),
           needs="prior"),
    Option("prior_change_relax", "NeRP: fit the field without the prior first; where that image differs from the "
           "aligned prior by more than this many background spreads (change-map units; full at twice), embed it "
           "instead of the prior (0: off; costs one more fit; CT: only from 40 views)", kind="float", minimum=0,
           needs="prior"),
    Option("model", "disinr: the pre-trained population model's folder (inrrecon pretrain --out); its field replaces "
           "the preset's", kind="str", needs="model"),
    Option("finetune_shared", "disinr: also train the shared encoder and decoder on the new scan (false: only a fresh "
           "subject encoder, as published)", kind="bool", needs="model"),
    Option("pretrain_iterations", "inrrecon pretrain: steps over the cohort, each on subjects_per_step subjects",
           kind="int", minimum=1, needs="model"),
    Option("pretrain_lr", "inrrecon pretrain: learning rate (the schedule is the config's; every hash level trains "
           "from the first step: coarse_to_fine is for the adaptation)", kind="float", minimum=0, above=True,
           needs="model"),
    Option("subjects_per_step", "inrrecon pretrain: subjects per step and process (under torchrun each process takes "
           "its own share of the cohort)", kind="int", minimum=1, needs="model"),
    Option("tv_weight", "TV on the normalised image, quoted for a grid 128 voxels wide and one coil (0: off)",
           kind="float", minimum=0),
    Option("temporal_tv_weight", "dynamic: TV along time of the normalised frames (0: off)", kind="float",
           minimum=0, needs="frames"),
    Option("low_rank_weight", "dynamic: nuclear norm of the frames' Casorati matrix, per its RMS (0: off)",
           kind="float", minimum=0, needs="frames"),
    Option("temporal_extent", "dynamic: the acquisition's time span maps onto [-e, e] of the field's input (1: as "
           "space; smaller: coarser in time, frames share more of the field)", kind="float", minimum=0, above=True,
           maximum=1, needs="frames"),
    dataclasses.replace(SPOKES_PER_FRAME, default=None),  # the preset's value
    Option("frames_out", "dynamic: render this many frames evenly over the acquisition (0: at the data's frame "
           "times; more: temporal super-resolution)", kind="int", minimum=0, maximum=10000, needs="frames"),
    Option("times_out_s", "dynamic: render at these times (s) instead (empty: frames_out)", kind="floats",
           needs="frames"),
    Option("subsets", "CT ordered subsets of views, one per step (1: all views)", kind="int", minimum=1),
    Option("points_per_chunk", "evaluate the field in chunks of this many points with gradient checkpointing (0: all "
           "at once); lowers GPU memory for 3D", kind="int", minimum=0),
    Option("seed", "torch seed for anything random outside the field (subset order)", kind="int"),
)

# The "admm" mapping of the INR options.
ADMM = (
    Option("adam_steps", "Adam steps of the network per outer iteration", kind="int", minimum=1),
    Option("cgls_steps", "CGLS steps of the physics sub-problem per outer iteration", kind="int", minimum=0),
    Option("rho", "penalty of the split z = raster(f), relative to ‖A‖²", kind="float", minimum=0, above=True),
)
