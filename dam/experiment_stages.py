"""The experiment's stages: one function per model, registered by name in :data:`STAGES`.

A stage takes the running :class:`~dam.experiment.Experiment` (its configuration, checkpoint folders and a
cache shared by the stages of a site), the site's data and the predictions of the stages before it at that
site, and returns its :class:`~dam.predictions.Prediction`. A new model is a function decorated with
``@stage("name")`` here plus its name in :data:`dam.experiment_config.MODELS` (the order of a run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .experiment_config import ConstraintConfig, NetworkConfig
from .experiment_data import FEATURES, SiteData
from .experiment_training import (
    SequenceModel,
    _pretrain,
    calibrate_site,
    physics_daily,
    progress_bars,
    train_sequence_model,
    train_site_hybrid,
)
from .physics_in_ai import ice_free_days, physics_constraint
from .predictions import Prediction, UpstreamFailedError
from .scoring import DRY_FACTOR, plausibility, score

if TYPE_CHECKING:
    from .experiment import Experiment

Stage = Callable[["Experiment", SiteData, dict[str, Prediction]], Prediction]
#: Stage name -> stage function (see the module docs); filled by :func:`stage`.
STAGES: dict[str, Stage] = {}


def stage(name: str) -> Callable[[Stage], Stage]:
    """Register a stage function under ``name`` (a model name of the configuration)."""

    def register(fn: Stage) -> Stage:
        if name in STAGES:
            raise ValueError(f"stage {name!r} is registered twice")
        STAGES[name] = fn
        return fn

    return register


# ------------------------------------------------------------------------------------------ physics
@stage("physics_default")
def physics_default(exp: Experiment, data: SiteData, preds) -> Prediction:
    pred = physics_daily(data, progress=exp.config.progress)[0]
    return dataclasses.replace(pred, model="physics_default")


@stage("physics_calibrated")
def physics_calibrated(exp: Experiment, data: SiteData, preds) -> Prediction:
    params, info = calibrate_site(data, exp.config.calibration, seed=exp.config.seed,
                                  progress=exp.config.progress, memo=exp.cache)  # fmt: skip
    pred = physics_daily(data, params=params)[0]
    return dataclasses.replace(pred, model="physics_calibrated", info=info)


# ------------------------------------------------------------------------------------------ networks
@stage("lstm")
def lstm(exp: Experiment, data: SiteData, preds) -> Prediction:
    cfg = exp.config
    m = train_sequence_model(data, "lstm", data.forcing, cfg.network, seed=cfg.seed, progress=cfg.progress,
                             checkpoint_dir=exp.checkpoint_dir(data.name, "lstm"))  # fmt: skip
    daily = np.asarray(m(jnp.asarray(data.forcing)))
    dry = np.asarray(m(jnp.asarray(_dry_forcing(exp, data))))
    return Prediction("lstm", daily, 0.0, _plausibility(exp, data, preds, daily, dry))


@stage("hlstm_attention")
def hlstm_attention(exp: Experiment, data: SiteData, preds) -> Prediction:
    return _hlstm_pretrained(exp, data, preds, "hlstm_attention", exp.config.network)


@stage("hlstm_no_attention")
def hlstm_no_attention(exp: Experiment, data: SiteData, preds) -> Prediction:
    """The attention ablation: the same pretraining and fine-tuning with ``attention="none"``."""
    return _hlstm_pretrained(exp, data, preds, "hlstm_no_attention",
                             exp.config.network.model_copy(update={"attention": "none"}))  # fmt: skip


@stage("hlstm_constrained")
def hlstm_constrained(exp: Experiment, data: SiteData, preds) -> Prediction:
    """Physics in AI: ``hlstm_attention`` fine-tuned with the physics constraint terms in the loss (and, with
    ``constraints.sweep``, the weight study)."""
    c, net = exp.config.constraints, exp.config.network
    pred = _hlstm_pretrained(exp, data, preds, "hlstm_constrained", net, c)
    if c.sweep:
        rows = [_sweep_row(exp, data, 1.0, pred)]
        for f in c.sweep:
            w = c.model_copy(update={"bounds": c.bounds * f, "water": c.water * f}) if f > 0 else None
            rows.append(_sweep_row(exp, data, f, _hlstm_pretrained(exp, data, preds, f"hlstm_constrained_x{f:g}",
                                                                   net, w)))  # fmt: skip
        pred.info["sweep"] = sorted(rows, key=lambda r: r["factor"])
    return pred


def _hlstm_pretrained(
    exp: Experiment, data: SiteData, preds, name: str, net_cfg: NetworkConfig, weights: ConstraintConfig | None = None
) -> Prediction:
    """Pretrained on the perturbed-parameter physics ensemble (forcing + member parameters -> member
    moisture at the sensors), then fine-tuned on the observations (with the constraint terms when
    ``weights``) with the default parameters as static features."""
    cfg = exp.config
    model, site_static = _pretrained(exp, data, net_cfg)
    extra = None if weights is None else physics_constraint(data, weights, _ice_free(exp, data, preds))
    model = train_sequence_model(data, "hlstm", data.forcing, net_cfg, seed=cfg.seed, init=model,
                                 static=site_static, checkpoint_dir=exp.checkpoint_dir(data.name, name),
                                 progress=cfg.progress, extra_loss=extra)  # fmt: skip
    daily = np.asarray(model(jnp.asarray(data.forcing), jnp.asarray(site_static)))
    dry = np.asarray(model(jnp.asarray(_dry_forcing(exp, data)), jnp.asarray(site_static)))
    info = {"members": int(cfg.pretrain.members), "attention": net_cfg.attention,
            **_plausibility(exp, data, preds, daily, dry)}  # fmt: skip
    return Prediction(name, daily, 0.0, info)


def _pretrained(exp: Experiment, data: SiteData, net_cfg: NetworkConfig) -> tuple[SequenceModel, np.ndarray]:
    """The ensemble-pretrained network for ``net_cfg`` (one ensemble per site, one pretraining per network
    configuration) and the static features of the site (the default parameters: zero factors)."""
    from .coupling.ensemble import DEFAULT_FACTOR_RANGES, perturbed_ensemble

    cfg = exp.config
    key = (data.name, "ensemble")
    if key not in exp.cache:
        bars = progress_bars("ensemble", {"members": cfg.pretrain.members}, cfg.progress)
        ens = perturbed_ensemble(data.setup, cfg.pretrain.members, seed=cfg.seed, progress=bars)
        members = zip(ens["soil_moisture"].values, ens["soil_liquid_water"].values, strict=True)  # (T, N) each
        targets = np.stack([data.seen(data.daily(t), data.daily(w)) for t, w in members])  # (M, D, S)
        static = np.stack([ens[p].values for p in DEFAULT_FACTOR_RANGES], axis=-1)  # (M, P) sampled factors
        exp.cache[key] = (targets, (static - static.mean(0)) / (static.std(0) + 1e-12))
    targets, static = exp.cache[key]
    key = (data.name, "pretrained", net_cfg)
    if key not in exp.cache:
        folder = "hlstm_pretrain" if net_cfg == cfg.network else f"hlstm_pretrain_{net_cfg.attention}"
        pre_cfg = net_cfg.model_copy(update={"epochs": cfg.pretrain.epochs})
        site_key = exp.cache[(data.name, "key")]  # pretraining depends on the site and configuration only
        exp.cache[key] = _pretrain(data, targets, static, pre_cfg, seed=cfg.seed, progress=cfg.progress,
                                   checkpoint_dir=exp.checkpoint_dir(data.name, folder, site_key))  # fmt: skip
    return exp.cache[key], np.zeros(static.shape[-1])


def _physics_base(exp: Experiment, data: SiteData, preds) -> Prediction:
    """The physics model the physics-guided networks build on: calibrated when that stage ran."""
    base = preds.get("physics_calibrated") or preds.get("physics_default")
    if base is not None and "failed" in base.info:  # a many-site run went on past it (dam.multisite_run)
        raise UpstreamFailedError(f"site {data.name}: it builds on {base.model}, which failed ({base.info['failed']})")
    if base is None:
        key = (data.name, "physics_default")
        if key not in exp.cache:
            exp.cache[key] = physics_default(exp, data, preds)
        base = exp.cache[key]
    return base


def _physics_inputs(exp: Experiment, data: SiteData, preds) -> tuple[np.ndarray, np.ndarray]:
    """Forcing plus the physics model's total and liquid moisture at the sensors, and the moisture the
    sensors see as the base the network corrects."""
    base = _physics_base(exp, data, preds)
    return np.concatenate([data.forcing, base.total, base.liquid], axis=-1), base.daily


def _ice_free(exp: Experiment, data: SiteData, preds) -> np.ndarray:
    """(D,) days without ice at the top sensor in the physics run (:func:`dam.physics_in_ai.ice_free_days`)."""
    if not data.sensor_liquid[0]:
        return ice_free_days(data, None, None)
    base = _physics_base(exp, data, preds)
    return ice_free_days(data, base.total, base.liquid)


def _dry_forcing(exp: Experiment, data: SiteData) -> np.ndarray:
    """Daily forcing of the dry scenario: precipitation times ``DRY_FACTOR`` from the first test day on."""
    forcing = data.forcing.copy()
    forcing[data.test, FEATURES.index("precip")] *= DRY_FACTOR
    return forcing


def _plausibility(exp: Experiment, data: SiteData, preds, daily: np.ndarray, dry: np.ndarray) -> dict:
    """Plausibility of a network's test days, as observed and in the dry scenario (same ice-free days)."""
    ice_free = _ice_free(exp, data, preds)
    i_p = FEATURES.index("precip")
    dry_precip = _dry_forcing(exp, data)[:, i_p]
    return {"test": plausibility(data, daily, data.forcing[:, i_p], ice_free),
            f"test_precip_x{DRY_FACTOR:g}": plausibility(data, dry, dry_precip, ice_free)}  # fmt: skip


@stage("hlstm_physics")
def hlstm_physics(exp: Experiment, data: SiteData, preds, constrained: bool = True) -> Prediction:
    cfg = exp.config
    name = "hlstm_physics" if constrained else "hlstm_physics_unconstrained"
    inputs, base = _physics_inputs(exp, data, preds)
    extra = physics_constraint(data, cfg.constraints, _ice_free(exp, data, preds)) if constrained else None
    model = train_sequence_model(
        data, "hlstm", inputs, cfg.network, seed=cfg.seed, extra_loss=extra, base=base,
        checkpoint_dir=exp.checkpoint_dir(data.name, name), progress=cfg.progress,
    )  # fmt: skip
    daily = np.asarray(model(jnp.asarray(inputs), base=jnp.asarray(base)))
    dry_inputs, dry_base = _dry_scenario(exp, data, preds)
    dry = np.asarray(model(jnp.asarray(dry_inputs), base=jnp.asarray(dry_base)))
    return Prediction(name, daily, 0.0, _plausibility(exp, data, preds, daily, dry))


def _sweep_row(exp: Experiment, data: SiteData, factor: float, pred: Prediction) -> dict:
    c = exp.config.constraints
    rel = score(data, {"m": pred}).query("reliable")
    test, dry = pred.info["test"], pred.info[f"test_precip_x{DRY_FACTOR:g}"]
    return {"factor": float(factor), "bounds": c.bounds * factor, "water": c.water * factor,
            "r": float(rel["r"].mean()), "rmse": float(rel["rmse"].mean()),
            "bound_violations": test["bound_violations"], "water_created_mm": test["water_created_mm"],
            "dry_bound_violations": dry["bound_violations"],
            "dry_water_created_mm": dry["water_created_mm"]}  # fmt: skip


def _dry_scenario(exp: Experiment, data: SiteData, preds) -> tuple[np.ndarray, np.ndarray]:
    """Inputs of the physics-guided networks in the dry scenario (:meth:`_dry_forcing`), the physics re-run
    on that forcing, and its moisture as the base."""
    key = (data.name, "dry")
    if key not in exp.cache:
        first = int(np.searchsorted(data.step_day, data.test.start))
        frc = data.setup.forcing
        precip = np.asarray(frc.precip_mmps).copy()
        precip[first:] *= DRY_FACTOR
        calibrated = preds.get("physics_calibrated")
        params = None
        if calibrated is not None:  # the calibrated values are in the prediction's info (also after resume)
            from .coupling.calibration import apply_parameters, make_specs

            values = {k: np.asarray(v) for k, v in calibrated.info["values"].items()}
            params = apply_parameters(data.setup.params, make_specs(exp.config.calibration.parameters), values)
        setup = dataclasses.replace(data.setup, forcing=eqx.tree_at(lambda f: f.precip_mmps, frc, precip))
        pred = physics_daily(dataclasses.replace(data, setup=setup), params=params)[0]
        dry = _dry_forcing(exp, data)
        exp.cache[key] = (np.concatenate([dry, pred.total, pred.liquid], axis=-1), pred.daily)
    return exp.cache[key]


@stage("hlstm_physics_unconstrained")
def hlstm_physics_unconstrained(exp: Experiment, data: SiteData, preds) -> Prediction:
    return hlstm_physics(exp, data, preds, constrained=False)


@stage("ai_in_physics")
def ai_in_physics(exp: Experiment, data: SiteData, preds) -> Prediction:
    net, info = train_site_hybrid(data, exp.config.hybrid, seed=exp.config.seed, progress=exp.config.progress,
                                  checkpoint_dir=exp.checkpoint_dir(data.name, "ai_in_physics"))  # fmt: skip
    pred = physics_daily(data, transport=net)[0]
    return dataclasses.replace(pred, model="ai_in_physics", info=info)
