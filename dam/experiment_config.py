"""The configuration of ``dam experiment``: validated pydantic models (:mod:`dam.schema`) with ranges, so that
``epochs: -5``, ``learning_rate: -0.01``, ``window_days: 0`` or a misspelt key stop before any work with one
message naming the key. docs/configuration.md lists every key (generated from these models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from .schema import ConfigError, Strict, read_text, validate

MODELS = (
    "physics_default",
    "physics_calibrated",
    "lstm",
    "hlstm_attention",
    "hlstm_no_attention",
    "hlstm_constrained",
    "hlstm_physics",
    "hlstm_physics_unconstrained",
    "ai_in_physics",
)
#: Models trained on many sites at once (dam.multisite): one network for all sites, static site attributes as inputs;
#: the ``_physics_`` ones read the physics_default run as inputs too and predict its correction; the ``_ensemble_``
#: one is pretrained on perturbed-parameter ensembles of its training sites (dam.multisite_pretrain); the
#: ``_constrained_`` one is too, and trained with the physics-in-AI loss terms (``constraints``) besides;
#: ``hlstm_physics_ensemble_multisite`` is physics-guided and pretrained on the ensembles' departures from the
#: default parameters' run.
MULTISITE_MODELS = ("lstm_multisite", "hlstm_multisite", "lstm_physics_multisite", "hlstm_physics_multisite",
                    "hlstm_ensemble_multisite", "hlstm_constrained_multisite",
                    "hlstm_physics_ensemble_multisite")  # fmt: skip
#: The multi-site networks that read and correct the physics_default run.
PHYSICS_GUIDED_MODELS = ("lstm_physics_multisite", "hlstm_physics_multisite", "hlstm_physics_ensemble_multisite")
#: The multi-site networks with physics-in-AI loss terms (their water balance needs physics_default's ice).
CONSTRAINED_MULTISITE_MODELS = ("hlstm_constrained_multisite",)
#: Physics with parameters regionalised across sites (dam.multisite_dpl): one network from site attributes to soil
#: parameters, trained through the physics at the training sites.
DPL_MODELS = ("physics_dpl",)
#: Models a leave-sites-out experiment can score at sites they never saw (physics_calibrated: in-site reference).
LEAVE_SITES_OUT_MODELS = ("physics_default", "physics_calibrated", *DPL_MODELS, *MULTISITE_MODELS)
ModelName = Literal[MODELS + DPL_MODELS + MULTISITE_MODELS]  # type: ignore[valid-type]
SPLITS = ("chronological", "leave_sites_out")
SHIPPED_CONFIGS = ("quick", "full", "shared")
PhaseChangeGradient = Literal["implicit", "exact"]
PHASE_CHANGE_GRADIENT_HELP = (
    "derivative of soil freezing in the gradients: implicit (well-conditioned through freeze-thaw, default) or "
    "exact (Noah-MP's explicit step; 1e15 over a winter); docs/gradients.md"
)


class NetworkConfig(Strict):
    """The networks (LSTM and hierarchical LSTMs) and their training on observations."""

    hidden: int = Field(32, ge=1, description="hidden units per LSTM layer")
    epochs: int = Field(40, ge=1, description="passes over the training windows")
    learning_rate: float = Field(3e-3, gt=0, description="Adam step size")
    window_days: int = Field(120, ge=1, description="length of a training window, days")
    stride_days: int = Field(10, ge=1, description="days between the starts of training windows")
    warmup_days: int = Field(30, ge=0, description="first days of each window not scored (at most half of it)")
    batch_size: int = Field(8, ge=1, description="windows per optimiser step")
    attention: Literal["none", "temporal", "layers", "both"] = Field("temporal", description="attention blocks")
    attention_window: int = Field(14, ge=1, description="days the temporal attention looks back")
    patience: int = Field(10, ge=1, description="epochs without validation improvement before stopping")
    site_balance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="multi-site networks: how far each site's weight in the training and validation losses is "
        "evened out; a site weighs its number of windows (validation: observations) to the power 1 - "
        "site_balance (0: every window weighs the same, so sites with long records dominate; 1: every site the same)",
    )
    validation_sites: int = Field(
        0,
        ge=0,
        description="multi-site networks, split leave_sites_out: training sites of each fold held out of "
        "training (and pretraining) to choose the epoch at sites the network never saw, scored on their training "
        "and validation days; 0: the epoch of the lowest loss on the training sites' validation days",
    )


class PretrainConfig(Strict):
    """Pretraining of the hierarchical LSTMs on a perturbed-parameter ensemble of the physics (per site; for
    ``hlstm_ensemble_multisite`` at every training site)."""

    members: int = Field(16, ge=1, description="ensemble members (physics runs with perturbed parameters)")
    epochs: int = Field(10, ge=1, description="passes over the ensemble windows")


class ConstraintConfig(Strict):
    """Weights of the physics-in-AI loss terms of ``hlstm_constrained``, ``hlstm_physics`` and
    ``hlstm_constrained_multisite``; ``sweep``: extra
    trainings of ``hlstm_constrained`` with both weights times each factor (0: none), their skill and
    plausibility in ``constraint_sweep.csv``."""

    bounds: float = Field(10.0, ge=0, description="weight of the physical-bounds penalty")
    water: float = Field(1e-4, ge=0, description="weight of the water-balance penalty")
    sweep: tuple[float, ...] = Field((), description="extra trainings with both weights times each factor (>= 0)")

    @field_validator("sweep")
    @classmethod
    def _non_negative(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(f < 0 for f in v):
            raise ValueError(f"factors must be >= 0, got {list(v)}")
        return v


class CalibrationConfig(Strict):
    """Gradient calibration scored on the last ``window_steps`` model steps of the training period, after
    ``warmup_steps`` run with the parameters being calibrated (earlier steps use the defaults).
    ``checkpoint_every``: rematerialisation segment of the gradient (steps). 1 (every step recomputed in the
    reverse pass, the states and water sub-step carries stored) compiles and runs fastest for the station model;
    ``None`` stores every step's intermediates; 48 was the setting before (the documented full.yaml results)."""

    parameters: tuple[str | dict[str, Any], ...] = Field(
        ("soil.bexp", "soil.dksat", "soil.smcmax", "surface.stomata.slope"),
        description="calibrated parameters: names of dam.coupling.calibration.DEFAULT_RANGES or {name, lower, "
        "upper, log, per_layer}",
    )
    steps: int = Field(15, ge=1, description="gradient steps (model runs)")
    learning_rate: float = Field(0.1, gt=0, description="Adam step size in the squashed parameter space")
    window_steps: int = Field(2880, ge=1, description="scored model steps at the end of the training period")
    warmup_steps: int = Field(480, ge=0, description="steps before the window run with the calibrated parameters")
    lhs_baseline: bool = Field(True, description="also run a Latin-hypercube search with the same budget")
    dpl_validation_sites: int = Field(
        0, ge=0, description="physics_dpl: training sites of each fold held out to choose the network's step (the "
        "lowest mean loss at them, the table parameters included); 0: the step of the lowest training loss",
    )  # fmt: skip
    dpl_learning_rate: float = Field(
        3e-3, gt=0, description="physics_dpl: Adam step size of the network's weights (each moves by about this "
        "much per step, the network's output by up to its width + 1 times as much: 0.1 moved the parameters of "
        "every site to their bounds in a few steps)",
    )  # fmt: skip
    dpl_loss: Literal["absolute", "relative"] = Field(
        "absolute", description="physics_dpl: the mean of the training sites' losses, or of each site's loss divided "
        "by its loss with its table parameters (every site counts by its relative change)",
    )  # fmt: skip
    dpl_metric: Literal["ubrmse", "rmse"] = Field(
        "ubrmse", description="physics_dpl: each site's loss, the unbiased RMSE of its sensors (each sensor's mean "
        "error removed: a sensor's calibration offset, which no attribute of a new site tells, is not learned) or "
        "their RMSE",
    )  # fmt: skip
    checkpoint_every: int | None = Field(1, ge=1, description="rematerialisation segment of the gradient, steps")
    phase_change_gradient: PhaseChangeGradient = Field("implicit", description=PHASE_CHANGE_GRADIENT_HELP)

    @field_validator("parameters")
    @classmethod
    def _known(cls, v: tuple) -> tuple:
        from .coupling.calibration import make_specs

        if not v:
            raise ValueError("give at least one parameter")
        make_specs(v)  # unknown names, missing bounds and duplicates raise ValueError
        return v


class HybridConfig(Strict):
    """The AI-in-physics hybrid (a network replaces the soil water transport)."""

    epochs: int = Field(6, ge=1, description="passes over the training windows")
    window_steps: int | None = Field(None, ge=1, description="steps per window (None: 10 days sub-daily, 48 daily)")
    learning_rate: float = Field(1e-3, gt=0, description="Adam step size")
    pretrain_iterations: int = Field(400, ge=0, description="steps imitating the Richards water step first")
    phase_change_gradient: PhaseChangeGradient = Field("implicit", description=PHASE_CHANGE_GRADIENT_HELP)


_GLOB = set("*?[")


def _site_entry(entry: str) -> str:
    """A site entry is the name of a shipped site, an existing site folder or a glob pattern matching some."""
    from .sites import shipped_sites

    if _GLOB & set(entry):
        if not _expand_pattern(entry):
            raise ValueError(f"the pattern {entry!r} matches no shipped site and no site folder (with site.yaml)")
        return entry
    if entry in shipped_sites() or Path(entry).expanduser().is_dir():
        return entry
    raise ValueError(f"{entry!r} is neither a shipped site ({', '.join(shipped_sites())}) nor a site folder")


def _expand_pattern(pattern: str) -> list[str]:
    """Shipped site names matching ``pattern`` and site folders (holding a site.yaml) matching it as a path,
    both restricted to sites with soil moisture sensors (the experiment scores soil moisture), sorted."""
    import fnmatch
    import glob

    import yaml as _yaml

    from .sites import SHIPPED_SITES_DIR, shipped_sites

    def has_soil_moisture(folder: Path) -> bool:
        try:
            meta = _yaml.safe_load((folder / "site.yaml").read_text()) or {}
        except (OSError, UnicodeDecodeError, _yaml.YAMLError):
            return False
        return bool((meta.get("sensor_depths_m") or {}).get("soil_moisture"))

    names = [n for n in shipped_sites() if fnmatch.fnmatchcase(n, pattern) and has_soil_moisture(SHIPPED_SITES_DIR / n)]
    folders = sorted(
        str(Path(p)) for p in glob.glob(str(Path(pattern).expanduser())) if (Path(p) / "site.yaml").is_file()
    )
    return names + [f for f in folders if has_soil_moisture(Path(f))]


def expand_sites(entries: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The configured site entries with every glob pattern replaced by the sites it matches (those with soil
    moisture sensors, sorted; a site named twice is kept once, at its first place)."""
    out: list[str] = []
    for entry in entries:
        for name in _expand_pattern(entry) if _GLOB & set(entry) else [entry]:
            if name not in out:
                out.append(name)
    return tuple(out)


class ExperimentConfig(Strict):
    """The experiment (YAML keys of the same names)."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", description="run name")
    seed: int = Field(0, ge=0, description="random seed (same seed, same numbers)")
    output_dir: str = Field("runs/experiment", min_length=1, description="run folder (resumable)")
    sites: tuple[str, ...] = Field(
        ("bondville_1998", "hyytiala_2000_2010"),
        min_length=1,
        description="shipped site names, site folders or glob patterns of either (e.g. sites/*: those with soil "
        "moisture sensors)",
    )
    split: Literal[SPLITS] = Field(  # type: ignore[valid-type]
        "chronological",
        description="chronological: every site's first days train, its last days test; leave_sites_out: k-fold "
        "over sites, each site tested (on its test days) by models that never saw it",
    )
    folds: int = Field(5, ge=2, description="folds over sites of the leave_sites_out split (at most the site count)")
    models: tuple[ModelName, ...] = Field(MODELS, min_length=1, description="models to run, in order")
    spinup_cycles: int = Field(1, ge=0, le=100, description="passes over the first year before the record")
    train_frac: float = Field(0.8, gt=0, lt=1, description="first fraction of the days for training (rest: test)")
    val_frac: float = Field(0.1, gt=0, lt=1, description="last fraction of the training days for validation")
    network: NetworkConfig = Field(NetworkConfig(), description="networks")
    multisite_level: Literal["physics", "learned", "input"] = Field(
        "physics",
        description="the _physics_multisite networks: physics keeps the physics run's mean level and learns only "
        "the variation of its correction (transfers to sites never seen); learned also corrects the level "
        "(a sensor's offset: pays off only at sites trained on); input reads the physics run as an input only and "
        "predicts the moisture itself (it follows the physics where that helps, and can leave it where its "
        "timing is poor)",
    )
    pretrain: PretrainConfig = Field(PretrainConfig(), description="ensemble pretraining")
    constraints: ConstraintConfig = Field(ConstraintConfig(), description="physics-in-AI loss weights")
    calibration: CalibrationConfig = Field(CalibrationConfig(), description="gradient calibration")
    hybrid: HybridConfig = Field(HybridConfig(), description="AI-in-physics hybrid")
    progress: bool = Field(True, description="progress bars")

    @field_validator("sites")
    @classmethod
    def _sites_exist(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            _site_entry(entry)
        if len(set(v)) != len(v):
            raise ValueError(f"a site is listed twice: {list(v)}")
        return v

    @model_validator(mode="after")
    def _unique_models(self) -> ExperimentConfig:
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models: a model is listed twice: {list(self.models)}")
        return self

    @model_validator(mode="after")
    def _physics_first(self) -> ExperimentConfig:
        for i, m in enumerate(self.models):
            if m in PHYSICS_GUIDED_MODELS and "physics_default" not in self.models[:i]:
                raise ValueError(f"models: {m} corrects the physics_default run: list physics_default before it")
            if m in CONSTRAINED_MULTISITE_MODELS and "physics_default" not in self.models[:i]:
                raise ValueError(f"models: {m} checks its water balance on the days the physics_default run has no "
                                 "ice: list physics_default before it")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _split_fits(self) -> ExperimentConfig:
        if self.split != "leave_sites_out":
            if self.network.validation_sites:
                raise ValueError(
                    "network.validation_sites holds sites out of training: it needs split: "
                    "leave_sites_out (a chronological split tests every site on its own later days)"
                )
            return self
        per_site = [m for m in self.models if m not in LEAVE_SITES_OUT_MODELS]
        if per_site:
            raise ValueError(
                f"models: {per_site} train on each site's own observations and cannot be scored at sites they never "
                f"saw; with split: leave_sites_out use {list(LEAVE_SITES_OUT_MODELS)}"
            )
        n_sites = len(expand_sites(self.sites))
        fewest_train = n_sites - -(-n_sites // self.folds)  # beside the largest fold
        if self.network.validation_sites and self.network.validation_sites >= fewest_train:
            raise ValueError(
                f"network.validation_sites: {self.network.validation_sites} held out of each fold's "
                f"training sites leaves none to train on ({n_sites} sites in {self.folds} folds)"
            )
        if self.folds > n_sites:
            raise ValueError(f"folds: {self.folds} folds need at least as many sites, got {n_sites}")
        return self

    @property
    def multisite(self) -> bool:
        """Whether the experiment trains across sites (:mod:`dam.multisite`)."""
        return self.split == "leave_sites_out" or any(m in MULTISITE_MODELS + DPL_MODELS for m in self.models)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "config") -> ExperimentConfig:
        """Validated configuration (:class:`dam.schema.ConfigError` naming the key)."""
        return validate(cls, d, where=where)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (lists for tuples), as written to the run folder's ``config.yaml``. ``split`` and
        ``folds`` appear only for a leave-sites-out split, ``multisite_level`` only with a physics-guided multi-site
        network, and ``phase_change_gradient``, ``calibration.dpl_*``, ``network.site_balance`` and
        ``network.validation_sites`` only where they are not the default, so that the run folders and stage
        fingerprints of experiments made before these keys existed stay valid."""
        d = json.loads(json.dumps(self.model_dump(mode="json")))
        if self.split == "chronological":
            del d["split"], d["folds"]
        if not set(self.models) & set(PHYSICS_GUIDED_MODELS):  # the key means nothing without these models
            del d["multisite_level"]
        for section in ("calibration", "hybrid"):  # the default derivative: keys absent, as before they existed
            if d[section]["phase_change_gradient"] == "implicit":
                del d[section]["phase_change_gradient"]
        for key, default in (("dpl_loss", "absolute"), ("dpl_learning_rate", 3e-3), ("dpl_metric", "ubrmse")):
            if d["calibration"][key] == default:
                del d["calibration"][key]
        for key in ("site_balance", "validation_sites"):
            if not d["network"][key]:
                del d["network"][key]
        return d

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with ``changes`` (validated again)."""
        return validate(type(self), {**self.model_dump(), **changes}, where="config")


def shipped_config(name: str) -> Path:
    """The path of a shipped configuration (``quick`` or ``full``)."""
    from importlib import resources

    return Path(str(resources.files("dam.data") / "experiments" / f"{name}.yaml"))


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file, or a shipped configuration by name (``quick``, ``full``).

    Raises
    ------
    ConfigError
        A missing file (listing the shipped configurations), invalid YAML, or any invalid key.
    """
    if str(path) in SHIPPED_CONFIGS and not Path(path).exists():
        path = shipped_config(str(path))
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"experiment config {path} does not exist (shipped configurations: {', '.join(SHIPPED_CONFIGS)})"
        )
    try:
        raw = yaml.safe_load(read_text(path, path.name))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML ({exc})") from None
    return ExperimentConfig.from_dict(raw, where=path.name)
