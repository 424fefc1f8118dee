"""``dam experiment CONFIG.yaml``: the DAM paradigm on station data, end to end.

For every site of the configuration: the physics model with default table parameters, the physics model
calibrated by gradients (and a Latin-hypercube baseline of the same budget), a plain LSTM, a hierarchical LSTM
with attention pretrained on a perturbed-parameter ensemble of the physics and fine-tuned on observations
(without attention as an ablation, and with physics constraints in the loss, optionally over a sweep of their
weights), a physics-guided hierarchical LSTM that corrects the physics (with and without the constraints), and
the AI-in-physics hybrid where a network replaces the soil water transport inside the model. Every model is
scored on the last fifth of the record (Pearson r, bias, RMSE, ubRMSE, NSE, KGE per sensor) against the water
the site's sensors see (liquid or total), and every network's physical plausibility is checked on the test
days, as observed and in a drier scenario.

The run folder holds the resolved configuration, orbax checkpoints of every training, netCDF predictions, the
metrics table (CSV and Markdown) and figures. A stage whose result exists is not redone, and trainings resume
from their checkpoints, so a killed experiment started again continues where it stopped. Same seed, same
numbers.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import yaml

from . import io_safety
from .experiment_config import (
    MODELS,
    CalibrationConfig,
    ConstraintConfig,
    ExperimentConfig,
    HybridConfig,
    NetworkConfig,
    PretrainConfig,
    load_config,
)
from .experiment_data import FEATURES, SiteData, prepare_site
from .experiment_training import (
    SequenceModel,
    _pretrain,
    calibrate_site,
    physics_daily,
    progress_bars,
    train_sequence_model,
    train_site_hybrid,
)
from .physics_in_ai import ICE_FREE, physics_constraint
from .plots import plot_metric_bars, plot_site
from .predictions import Prediction, load_prediction, prediction_path, save_prediction
from .run_folder import (
    RunFolderError,
    RunLock,
    content_hash,
    fingerprint,
    inside,
    open_run_folder,
    safe_name,
    write_manifest,
)
from .scoring import DRY_FACTOR, plausibility, score, summary, with_units, write_tables

__all__ = [  # the configuration lives in dam.experiment_config; re-exported here
    "MODELS", "CalibrationConfig", "ConstraintConfig", "ExperimentConfig", "HybridConfig", "NetworkConfig",
    "PretrainConfig", "load_config", "run_experiment", "summary", "with_units",
]  # fmt: skip


# ------------------------------------------------------------------------------------------ the run
RESUME_MAY_CHANGE = ("name", "output_dir", "sites", "models", "progress")  # keys that leave finished stages valid


def _check_resume(path: Path, config: ExperimentConfig) -> None:
    """Refuse to continue a run folder made with another configuration: its finished stages would be mixed with
    stages of this one. Adding sites or models (or switching progress bars, or moving the folder) is fine."""
    if not path.is_file():
        return
    old, new = yaml.safe_load(path.read_text()) or {}, config.to_dict()
    changed = sorted(k for k in set(old) | set(new) if k not in RESUME_MAY_CHANGE and old.get(k) != new.get(k))
    if changed:
        raise RunFolderError(
            f"{path.parent} holds a run with a different configuration ({', '.join(changed)} changed): choose "
            "another output_dir, or delete the folder to start again"
        )


def _core(config: ExperimentConfig) -> dict:
    """The configuration that finished stages depend on (what a resume may not change)."""
    return {k: v for k, v in config.to_dict().items() if k not in RESUME_MAY_CHANGE}


class Experiment:
    """Runs the configured models at every site into ``config.output_dir`` (see the module docs).

    The run folder (:mod:`dam.run_folder`) is resolved, locked while the experiment runs, refused if it holds
    anything but an experiment of the same configuration, and written only after the configuration validated.
    Every stage (site x model) is keyed by the fingerprint of its inputs: the configuration, the content of the
    site's files and the stages before it; a saved prediction or checkpoint of other inputs is not reused.
    """

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.run_dir = Path(config.output_dir).expanduser().resolve()
        self._cache: dict = {}
        self._key: str = ""  # fingerprint of the stage being computed (its checkpoints' folder)

    def checkpoint_dir(self, site: str, model: str, key: str | None = None) -> Path:
        """Checkpoints of a training, in a folder keyed by the fingerprint of its inputs."""
        return inside(self.run_dir, "checkpoints", site, model, key or self._key)

    def run(self) -> pd.DataFrame:
        cfg = self.config
        self.run_dir, _ = open_run_folder(self.run_dir, "experiment", legacy_marker="config.yaml")
        with RunLock(self.run_dir):
            _check_resume(self.run_dir / "config.yaml", cfg)
            io_safety.write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            write_manifest(self.run_dir, "experiment", fingerprint(_core(cfg)), cfg.to_dict(), {})
            return self._run()

    def _site_key(self, data: SiteData) -> str:
        """Fingerprint of the configuration and the content of the site's files."""
        folder = data.site.path
        files = {"site": content_hash(folder) if folder is not None else data.name}
        return fingerprint(_core(self.config), files)

    def _run(self) -> pd.DataFrame:
        cfg = self.config
        t_start = time.perf_counter()
        tables, timings, plausible, sweep = [], {}, [], []
        for name in cfg.sites:
            data = prepare_site(name, spinup_cycles=cfg.spinup_cycles, train_frac=cfg.train_frac,
                                val_frac=cfg.val_frac)  # fmt: skip
            where = f"site name in {data.site.path / 'site.yaml'}" if data.site.path else "site name"
            safe_name(data.name, where)  # it names folders of the run: nothing may escape the run folder
            preds: dict[str, Prediction] = {}
            site_key = self._site_key(data)
            self._cache[(data.name, "key")] = site_key
            keys: list[str] = [site_key]
            for model in cfg.models:
                key = fingerprint({"model": model}, {"after": ",".join(keys)})
                keys.append(key)
                pred = load_prediction(self.run_dir, data, model, key)
                if pred is None:
                    t0 = time.perf_counter()
                    self._key = key
                    pred = getattr(self, f"_{model}")(data, preds)
                    pred.seconds = time.perf_counter() - t0
                    save_prediction(self.run_dir, data, pred, key)
                    jax.clear_caches()  # compiled code of finished stages: a long experiment would exhaust memory
                    status = f"computed in {pred.seconds:.1f} s"
                else:
                    path = prediction_path(self.run_dir, data.name, model)
                    status = f"read back from {path} (computed earlier in {pred.seconds:.1f} s)"
                preds[model] = pred
                timings[f"{data.name}/{model}"] = pred.seconds
                print(f"[{data.name}] {model}: {status}", flush=True)
            tables.append(score(data, preds))
            plausible += [{"site": data.name, "model": m, "scenario": sc, **v}
                          for m, p in preds.items() for sc, v in p.info.items() if sc.startswith("test")]  # fmt: skip
            if "hlstm_constrained" in preds:
                sweep += [{"site": data.name, **row} for row in preds["hlstm_constrained"].info.get("sweep", [])]
            plot_site(self.run_dir / "figures", data, preds)
        table = pd.concat(tables, ignore_index=True)
        write_tables(self.run_dir, table, pd.DataFrame(plausible), pd.DataFrame(sweep))
        plot_metric_bars(self.run_dir / "figures" / "metrics.png", summary(table), MODELS)
        io_safety.write_text(
            self.run_dir / "timings.json",
            json.dumps({"total_seconds": time.perf_counter() - t_start, "stages": timings}, indent=1),
        )
        return table

    # --- physics
    def _physics_default(self, data: SiteData, preds) -> Prediction:
        pred = physics_daily(data, progress=self.config.progress)[0]
        return dataclasses.replace(pred, model="physics_default")

    def _physics_calibrated(self, data: SiteData, preds) -> Prediction:
        params, info = calibrate_site(data, self.config.calibration, seed=self.config.seed,
                                      progress=self.config.progress)  # fmt: skip
        pred = physics_daily(data, params=params)[0]
        return dataclasses.replace(pred, model="physics_calibrated", info=info)

    # --- networks
    def _lstm(self, data: SiteData, preds) -> Prediction:
        cfg = self.config
        m = train_sequence_model(data, "lstm", data.forcing, cfg.network, seed=cfg.seed, progress=cfg.progress,
                                 checkpoint_dir=self.checkpoint_dir(data.name, "lstm"))  # fmt: skip
        daily = np.asarray(m(jnp.asarray(data.forcing)))
        dry = np.asarray(m(jnp.asarray(self._dry_forcing(data))))
        return Prediction("lstm", daily, 0.0, self._plausibility(data, preds, daily, dry))

    def _hlstm_attention(self, data: SiteData, preds) -> Prediction:
        return self._hlstm_pretrained(data, preds, "hlstm_attention", self.config.network)

    def _hlstm_no_attention(self, data: SiteData, preds) -> Prediction:
        """The attention ablation: the same pretraining and fine-tuning with ``attention="none"``."""
        return self._hlstm_pretrained(data, preds, "hlstm_no_attention",
                                      self.config.network.model_copy(update={"attention": "none"}))  # fmt: skip

    def _hlstm_constrained(self, data: SiteData, preds) -> Prediction:
        """Physics in AI: ``hlstm_attention`` fine-tuned with the physics constraint terms in the loss (and, with
        ``constraints.sweep``, the weight study)."""
        c, net = self.config.constraints, self.config.network
        pred = self._hlstm_pretrained(data, preds, "hlstm_constrained", net, c)
        if c.sweep:
            rows = [self._sweep_row(data, 1.0, pred)]
            for f in c.sweep:
                w = c.model_copy(update={"bounds": c.bounds * f, "water": c.water * f}) if f > 0 else None
                rows.append(self._sweep_row(data, f, self._hlstm_pretrained(data, preds, f"hlstm_constrained_x{f:g}",
                                                                             net, w)))  # fmt: skip
            pred.info["sweep"] = sorted(rows, key=lambda r: r["factor"])
        return pred

    def _hlstm_pretrained(
        self, data: SiteData, preds, name: str, net_cfg: NetworkConfig, weights: ConstraintConfig | None = None
    ) -> Prediction:
        """Pretrained on the perturbed-parameter physics ensemble (forcing + member parameters -> member
        moisture at the sensors), then fine-tuned on the observations (with the constraint terms when
        ``weights``) with the default parameters as static features."""
        cfg = self.config
        model, site_static = self._pretrained(data, net_cfg)
        extra = None if weights is None else physics_constraint(data, weights, self._ice_free(data, preds))
        model = train_sequence_model(data, "hlstm", data.forcing, net_cfg, seed=cfg.seed, init=model,
                                     static=site_static, checkpoint_dir=self.checkpoint_dir(data.name, name),
                                     progress=cfg.progress, extra_loss=extra)  # fmt: skip
        daily = np.asarray(model(jnp.asarray(data.forcing), jnp.asarray(site_static)))
        dry = np.asarray(model(jnp.asarray(self._dry_forcing(data)), jnp.asarray(site_static)))
        info = {"members": int(cfg.pretrain.members), "attention": net_cfg.attention,
                **self._plausibility(data, preds, daily, dry)}  # fmt: skip
        return Prediction(name, daily, 0.0, info)

    def _pretrained(self, data: SiteData, net_cfg: NetworkConfig) -> tuple[SequenceModel, np.ndarray]:
        """The ensemble-pretrained network for ``net_cfg`` (one ensemble per site, one pretraining per network
        configuration) and the static features of the site (the default parameters: zero factors)."""
        from .coupling.ensemble import DEFAULT_RANGES, perturbed_ensemble

        cfg = self.config
        key = (data.name, "ensemble")
        if key not in self._cache:
            bars = progress_bars("ensemble", {"members": cfg.pretrain.members}, cfg.progress)
            ens = perturbed_ensemble(data.setup, cfg.pretrain.members, seed=cfg.seed, progress=bars)
            members = zip(ens["soil_moisture"].values, ens["soil_liquid_water"].values, strict=True)  # (T, N) each
            targets = np.stack([data.seen(data.daily(t), data.daily(w)) for t, w in members])  # (M, D, S)
            static = np.stack([ens[p].values for p in DEFAULT_RANGES], axis=-1)  # (M, P) sampled factors
            self._cache[key] = (targets, (static - static.mean(0)) / (static.std(0) + 1e-12))
        targets, static = self._cache[key]
        key = (data.name, "pretrained", net_cfg)
        if key not in self._cache:
            folder = "hlstm_pretrain" if net_cfg == cfg.network else f"hlstm_pretrain_{net_cfg.attention}"
            pre_cfg = net_cfg.model_copy(update={"epochs": cfg.pretrain.epochs})
            site_key = self._cache[(data.name, "key")]  # pretraining depends on the site and configuration only
            self._cache[key] = _pretrain(data, targets, static, pre_cfg, seed=cfg.seed, progress=cfg.progress,
                                         checkpoint_dir=self.checkpoint_dir(data.name, folder, site_key))  # fmt: skip
        return self._cache[key], np.zeros(static.shape[-1])

    def _physics_base(self, data: SiteData, preds) -> Prediction:
        """The physics model the physics-guided networks build on: calibrated when that stage ran."""
        base = preds.get("physics_calibrated") or preds.get("physics_default")
        if base is None:
            key = (data.name, "physics_default")
            if key not in self._cache:
                self._cache[key] = self._physics_default(data, preds)
            base = self._cache[key]
        return base

    def _physics_inputs(self, data: SiteData, preds) -> tuple[np.ndarray, np.ndarray]:
        """Forcing plus the physics model's total and liquid moisture at the sensors, and the moisture the
        sensors see as the base the network corrects."""
        base = self._physics_base(data, preds)
        return np.concatenate([data.forcing, base.total, base.liquid], axis=-1), base.daily

    def _ice_free(self, data: SiteData, preds) -> np.ndarray:
        """(D,) days on which the physics model holds no ice at the top sensor (all days where that sensor sees
        total water: a thaw then moves no water into the measured quantity)."""
        if not data.sensor_liquid[0]:
            return np.ones(len(data.days), bool)
        base = self._physics_base(data, preds)
        return (base.total[:, 0] - base.liquid[:, 0]) < ICE_FREE

    def _dry_forcing(self, data: SiteData) -> np.ndarray:
        """Daily forcing of the dry scenario: precipitation times ``DRY_FACTOR`` from the first test day on."""
        forcing = data.forcing.copy()
        forcing[data.test, FEATURES.index("precip")] *= DRY_FACTOR
        return forcing

    def _plausibility(self, data: SiteData, preds, daily: np.ndarray, dry: np.ndarray) -> dict:
        """Plausibility of a network's test days, as observed and in the dry scenario (same ice-free days)."""
        ice_free = self._ice_free(data, preds)
        i_p = FEATURES.index("precip")
        dry_precip = self._dry_forcing(data)[:, i_p]
        return {"test": plausibility(data, daily, data.forcing[:, i_p], ice_free),
                f"test_precip_x{DRY_FACTOR:g}": plausibility(data, dry, dry_precip, ice_free)}  # fmt: skip

    def _hlstm_physics(self, data: SiteData, preds, constrained: bool = True) -> Prediction:
        cfg = self.config
        name = "hlstm_physics" if constrained else "hlstm_physics_unconstrained"
        inputs, base = self._physics_inputs(data, preds)
        extra = physics_constraint(data, cfg.constraints, self._ice_free(data, preds)) if constrained else None
        model = train_sequence_model(
            data, "hlstm", inputs, cfg.network, seed=cfg.seed, extra_loss=extra, base=base,
            checkpoint_dir=self.checkpoint_dir(data.name, name), progress=cfg.progress,
        )  # fmt: skip
        daily = np.asarray(model(jnp.asarray(inputs), base=jnp.asarray(base)))
        dry_inputs, dry_base = self._dry_scenario(data, preds)
        dry = np.asarray(model(jnp.asarray(dry_inputs), base=jnp.asarray(dry_base)))
        return Prediction(name, daily, 0.0, self._plausibility(data, preds, daily, dry))

    def _sweep_row(self, data: SiteData, factor: float, pred: Prediction) -> dict:
        c = self.config.constraints
        rel = score(data, {"m": pred}).query("reliable")
        test, dry = pred.info["test"], pred.info[f"test_precip_x{DRY_FACTOR:g}"]
        return {"factor": float(factor), "bounds": c.bounds * factor, "water": c.water * factor,
                "r": float(rel["r"].mean()), "rmse": float(rel["rmse"].mean()),
                "bound_violations": test["bound_violations"], "water_created_mm": test["water_created_mm"],
                "dry_bound_violations": dry["bound_violations"],
                "dry_water_created_mm": dry["water_created_mm"]}  # fmt: skip

    def _dry_scenario(self, data: SiteData, preds) -> tuple[np.ndarray, np.ndarray]:
        """Inputs of the physics-guided networks in the dry scenario (:meth:`_dry_forcing`), the physics re-run
        on that forcing, and its moisture as the base."""
        key = (data.name, "dry")
        if key not in self._cache:
            first = int(np.searchsorted(data.step_day, data.test.start))
            frc = data.setup.forcing
            precip = np.asarray(frc.precip_mmps).copy()
            precip[first:] *= DRY_FACTOR
            calibrated = preds.get("physics_calibrated")
            params = None
            if calibrated is not None:  # the calibrated values are in the prediction's info (also after resume)
                from .coupling.calibration import apply_parameters, make_specs

                values = {k: np.asarray(v) for k, v in calibrated.info["values"].items()}
                params = apply_parameters(data.setup.params, make_specs(self.config.calibration.parameters), values)
            setup = dataclasses.replace(data.setup, forcing=eqx.tree_at(lambda f: f.precip_mmps, frc, precip))
            pred = physics_daily(dataclasses.replace(data, setup=setup), params=params)[0]
            dry = self._dry_forcing(data)
            self._cache[key] = (np.concatenate([dry, pred.total, pred.liquid], axis=-1), pred.daily)
        return self._cache[key]

    def _hlstm_physics_unconstrained(self, data: SiteData, preds) -> Prediction:
        return self._hlstm_physics(data, preds, constrained=False)

    def _ai_in_physics(self, data: SiteData, preds) -> Prediction:
        net, info = train_site_hybrid(data, self.config.hybrid, seed=self.config.seed, progress=self.config.progress,
                                      checkpoint_dir=self.checkpoint_dir(data.name, "ai_in_physics"))  # fmt: skip
        pred = physics_daily(data, transport=net)[0]
        return dataclasses.replace(pred, model="ai_in_physics", info=info)


def run_experiment(config: ExperimentConfig) -> pd.DataFrame:
    return Experiment(config).run()
