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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
import yaml

from . import io_safety
from . import metrics as M
from .coupling.losses import masked_mse
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
from .plots import plot_metric_bars, plot_site
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
from .sequences import Normaliser, window_starts
from .station import run_blocks
from .training import fit

DRY_FACTOR = 0.3  # precipitation factor of the dry test scenario of the physics-guided networks
__all__ = [  # the configuration lives in dam.experiment_config; re-exported here
    "MODELS", "CalibrationConfig", "ConstraintConfig", "ExperimentConfig", "HybridConfig", "NetworkConfig",
    "PretrainConfig", "load_config", "run_experiment", "summary",
]  # fmt: skip


# ------------------------------------------------------------------------------------------ predictions
@dataclasses.dataclass
class Prediction:
    """Daily soil moisture at the sensors (D, S), m3 m-3, as each sensor sees it (liquid or total water, see
    :attr:`SiteData.sensor_liquid`), plus optional extras for plausibility checks."""

    model: str
    daily: np.ndarray
    seconds: float
    info: dict = dataclasses.field(default_factory=dict)
    liquid: np.ndarray | None = None  # daily liquid moisture at the sensors (physics-based models)
    total: np.ndarray | None = None  # daily total (liquid + ice) moisture at the sensors (physics-based models)


_EXTRAS = {  # Prediction field -> netCDF variable and attributes
    "liquid": ("soil_liquid_water", {"standard_name": "volume_fraction_of_liquid_water_in_soil", "units": "m3 m-3"}),
    "total": ("total_soil_moisture", {"standard_name": "volume_fraction_of_condensed_water_in_soil",
                                      "units": "m3 m-3"}),
}  # fmt: skip


def _prediction_path(run_dir: Path, site: str, model: str) -> Path:
    return inside(run_dir, "predictions", site, f"{model}.nc")


def save_prediction(run_dir: Path, data: SiteData, pred: Prediction, stage_fingerprint: str = "") -> None:
    """Write a prediction (atomically) with the fingerprint of the inputs it was made from."""
    path = _prediction_path(run_dir, data.name, pred.model)
    seen = data.describe_seen()
    ds = xr.Dataset(
        {"soil_moisture": (("time", "sm_depth"), pred.daily, {
            "units": "m3 m-3", "long_name": f"daily mean soil moisture predicted by {pred.model}",
            "comment": f"as the site's sensors see it: {seen}"})},
        coords={"time": data.days.values, "sm_depth": ("sm_depth", data.sensor_depths_m, {"units": "m",
                                                                                        "positive": "down"})},
        attrs={"model": pred.model, "site": data.name, "seconds": pred.seconds,
               "info": json.dumps(pred.info, default=float), "Conventions": "CF-1.10",
               "stage_fingerprint": stage_fingerprint},
    )  # fmt: skip
    for field, (var, attrs) in _EXTRAS.items():
        if getattr(pred, field) is not None:
            ds[var] = (("time", "sm_depth"), getattr(pred, field), attrs)
    io_safety.write_netcdf(ds, path)


def load_prediction(run_dir: Path, data: SiteData, model: str, stage_fingerprint: str = "") -> Prediction | None:
    """The saved prediction of ``model`` at the site, or None where there is none or it was made from other
    inputs (its ``stage_fingerprint`` differs: e.g. the site's forcing changed since)."""
    path = _prediction_path(run_dir, data.name, model)
    if not path.is_file():
        return None
    with xr.open_dataset(path) as ds:
        if ds.attrs.get("stage_fingerprint", "") != stage_fingerprint:
            print(f"[{data.name}] {model}: inputs changed since the saved prediction; running it again", flush=True)
            return None
        extras = {f: ds[var].values.copy() for f, (var, _) in _EXTRAS.items() if var in ds}
        return Prediction(model, ds["soil_moisture"].values.copy(), float(ds.attrs["seconds"]),
                          json.loads(ds.attrs["info"]), **extras)  # fmt: skip


def progress_bars(desc: str, totals: dict[str, int], enabled: bool) -> Callable[[dict], None] | bool:
    """A ``progress=`` callable for the coupling routines that report dicts: one tqdm bar per stage of ``totals``
    (stage -> units), placed by the report's 0-based ``iteration`` or ``epoch`` or its ``members_done``;
    ``False`` (no output) when not ``enabled``."""
    if not enabled:
        return False
    from tqdm.auto import tqdm

    bars: dict = {}

    def report(d: dict) -> None:
        stage = d.get("stage", next(iter(totals)))
        if stage not in bars:
            bars[stage] = tqdm(total=totals[stage], desc=f"{desc} {stage}", leave=True)
        bar = bars[stage]
        done = d["members_done"] if "members_done" in d else d.get("iteration", d.get("epoch", 0)) + 1
        bar.update(min(done, bar.total) - bar.n)
        bar.set_postfix({k: f"{v:.4g}" for k, v in d.items() if isinstance(v, float) and k != "seconds"})
        if bar.n >= bar.total:
            bar.close()

    return report


# ------------------------------------------------------------------------------------------ physics
def physics_daily(data: SiteData, params=None, transport=None, progress: bool = False) -> tuple[Prediction, Any, Any]:
    """Run the station model over the record: daily soil moisture at the sensors as the sensors see it (liquid
    or total; both kept as extras) as a :class:`Prediction` to be named, and the raw (states, fluxes)."""
    setup = data.setup if params is None else dataclasses.replace(data.setup, params=params)
    if transport is None:
        states, fluxes = run_blocks(setup, progress=progress)
    else:
        from .physics.station import run_station

        _, (states, fluxes) = eqx.filter_jit(run_station)(
            setup.state0,
            jax.tree_util.tree_map(jnp.asarray, setup.forcing),
            setup.params,
            setup.grid,
            setup.options,
            transport=transport,
        )
        states, fluxes = jax.tree_util.tree_map(np.asarray, (states, fluxes))
    total = data.at_sensors(data.daily(states.soil.smc))
    liquid = data.at_sensors(data.daily(states.soil.sh2o))
    seen = np.where(data.sensor_liquid, liquid, total)
    return Prediction("physics", seen, 0.0, liquid=liquid, total=total), states, fluxes


# ------------------------------------------------------------------------------------------ networks
class SequenceModel(eqx.Module):
    """A network on normalised daily inputs with outputs in m3 m-3 (targets normalised per sensor).

    With a ``base`` series (e.g. the physics model's moisture at the sensors) the network predicts the
    correction to it: output = base + correction, so an untrained network reproduces the base.
    """

    net: eqx.Module
    x_norm: Normaliser
    y_norm: Normaliser

    def __call__(self, x: jax.Array, static: jax.Array | None = None, base: jax.Array | None = None) -> jax.Array:
        y = self.y_norm.invert(self.net(jnp.nan_to_num(self.x_norm.apply(x)), static))
        return y if base is None else base + y


def _make_net(kind: str, n_in: int, n_out: int, cfg: NetworkConfig, key, static_size: int = 0):
    from .surrogates import LSTM, HierarchicalLSTM

    if kind == "lstm":
        return LSTM(n_in, cfg.hidden, n_out, key=key, static_size=static_size)
    return HierarchicalLSTM(n_in, n_out, cfg.hidden, attention=cfg.attention, window=cfg.attention_window, key=key,
                            static_size=static_size)  # fmt: skip


def _masked_mse(pred: jax.Array, obs: jax.Array, scale: jax.Array) -> jax.Array:
    """:func:`~dam.coupling.losses.masked_mse` of the error in units of ``scale`` (per sensor)."""
    return masked_mse((pred - obs) / scale, 0.0)


def train_sequence_model(
    data: SiteData,
    kind: str,
    inputs: np.ndarray,
    cfg: NetworkConfig,
    *,
    seed: int,
    checkpoint_dir: Path,
    progress: bool,
    extra_loss=None,
    init: SequenceModel | None = None,
    targets: np.ndarray | None = None,
    static: np.ndarray | None = None,
    fit_days: slice | None = None,
    val_days: slice | None = None,
    base: np.ndarray | None = None,
) -> SequenceModel:
    """Train on windows of the training days (the first ``warmup_days`` of each window are not scored),
    validate on the validation tail (run from the start of the record), keep the best epoch.
    ``extra_loss(pred, days)``, if given, adds a term for each window: its prediction (W, S) and its days (W,),
    indices into the record (e.g. :func:`physics_constraint`)."""
    y = data.observed if targets is None else targets
    fit_days = fit_days or data.train
    val_days = val_days or data.val
    x_norm = Normaliser.fit(inputs[fit_days])
    y_norm = Normaliser.fit((y if base is None else y - base)[fit_days])
    key = jax.random.PRNGKey(seed)
    static_size = 0 if static is None else static.shape[-1]
    model = init or SequenceModel(_make_net(kind, inputs.shape[-1], y.shape[-1], cfg, key, static_size), x_norm,
                                  y_norm)  # fmt: skip
    length = min(cfg.window_days, fit_days.stop - fit_days.start)
    starts = window_starts(fit_days, length, cfg.stride_days)
    x_all, y_all = jnp.asarray(inputs), jnp.asarray(y)
    b_all = jnp.zeros_like(y_all) if base is None else jnp.asarray(base)
    scale = jnp.asarray(np.nanstd(y[fit_days], axis=0) + 1e-3)
    warm = min(cfg.warmup_days, length // 2)
    s_all = None if static is None else jnp.asarray(static)

    def batch_fn(_, idx):
        rows = starts[idx][:, None] + np.arange(length)[None, :]
        return x_all[rows], y_all[rows], b_all[rows], jnp.asarray(rows)

    def loss_fn(m, batch):
        def one(x, yy, b, days):
            p = m(x, s_all, b)
            loss = _masked_mse(p[warm:], yy[warm:], scale)
            return loss if extra_loss is None else loss + extra_loss(p, days)

        return jax.vmap(one)(*batch)

    def val_fn(m):
        return float(_masked_mse(m(x_all, s_all, b_all)[val_days], y_all[val_days], scale))

    trained, _ = fit(model, loss_fn, None, n_members=len(starts), batch_fn=batch_fn, epochs=cfg.epochs,
                     batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, val_fn=val_fn,
                     patience=cfg.patience, seed=seed, checkpoint_dir=checkpoint_dir, progress=progress)  # fmt: skip
    return trained


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
                    path = _prediction_path(self.run_dir, data.name, model)
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


def train_site_hybrid(
    data: SiteData, c: HybridConfig, *, seed: int, progress: bool, checkpoint_dir: Path | None = None
):
    """AI in physics at one site: the network water transport is first taught to imitate the Richards sub-step on
    the physics run of the training period, then trained end to end through the station model against the
    observed soil moisture (truncated back-propagation in windows of ``c.window_steps``)."""
    from .coupling.hybrid import NeuralWaterTransport, physics_water_samples
    from .hybrid_training import pretrain_to_physics, train_hybrid

    setup = data.setup
    n_train = int(np.searchsorted(data.step_day, data.train.stop))
    n_fit = int(np.searchsorted(data.step_day, data.test.start))
    net = NeuralWaterTransport(jax.random.PRNGKey(seed))
    dtype = jnp.asarray(setup.state0.soil.smc).dtype
    head = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)[:n_train], dtype), setup.forcing)
    samples = physics_water_samples(setup.state0, head, setup.params, setup.grid, setup.options)
    folder = (lambda name: None) if checkpoint_dir is None else (lambda name: checkpoint_dir / name)
    net, pre = pretrain_to_physics(net, samples, setup.params.soil, setup.grid, setup.options.soil, seed=seed,
                                   iterations=c.pretrain_iterations, progress=progress,
                                   checkpoint_dir=folder("pretrain"))  # fmt: skip
    obs = data.site.observations["soil_moisture"].sel(time=setup.times).values
    window = c.window_steps or (480 if setup.options.dt_s < 86400.0 else 48)
    res = train_hybrid(setup, obs, net, sensor_layers=data.sensor_weights, liquid=data.sensor_liquid,
                       train_steps=slice(0, n_train),
                       val_steps=slice(n_train, n_fit), window=window, epochs=c.epochs,
                       learning_rate=c.learning_rate, seed=seed, progress=progress,
                       checkpoint_dir=folder("train"))  # fmt: skip
    h = res.history
    info = {
        "pretrain_loss": [float(pre["train_loss"][0]), float(pre["train_loss"][-1])],
        "best_epoch": int(res.best_epoch),
        "val_loss": [float(v) for v in [h["initial_val"], *h["val_loss"]]],
    }
    return res.net, info


def calibration_window(data: SiteData, c: CalibrationConfig):
    """A short set-up for calibration: it starts ``warmup_steps`` before the scored window (the state there from
    a default run) and ends with the training period; returns (setup, first scored step)."""
    setup = data.setup
    n_train = int(np.searchsorted(data.step_day, data.test.start))
    w0 = max(0, n_train - c.window_steps)
    s0 = max(0, w0 - c.warmup_steps)
    state = setup.state0
    if s0 > 0:
        from .physics.station import run_station

        head = jax.tree_util.tree_map(lambda x: jnp.asarray(x[:s0]), setup.forcing)
        state = eqx.filter_jit(run_station)(state, head, setup.params, setup.grid, setup.options,
                                            observe=None)[0]  # fmt: skip
    short = dataclasses.replace(
        setup, state0=state, times=setup.times[s0:n_train],
        forcing=jax.tree_util.tree_map(lambda x: np.asarray(x)[s0:n_train], setup.forcing),
    )  # fmt: skip
    return short, w0 - s0


def calibrate_site(data: SiteData, c: CalibrationConfig, *, seed: int, progress: bool):
    """Gradient calibration of ``c.parameters`` (squashed into their physical ranges) against the site's
    reliable soil moisture sensors, plus the Latin-hypercube baseline with the same number of model runs."""
    from .calibration import calibrate, latin_hypercube_search
    from .coupling.calibration import make_specs

    specs = make_specs(c.parameters)
    short, first = calibration_window(data, c)
    obs = data.site.observations
    res = calibrate(short, obs, specs, start=first, steps=c.steps, learning_rate=c.learning_rate,
                    checkpoint_every=c.checkpoint_every, progress=progress)  # fmt: skip
    info = {"values": {k: np.asarray(v).tolist() for k, v in res.values.items()},
            "train_loss_history": res.history["loss"].tolist(),
            "evaluations": int(res.evaluations)}  # fmt: skip
    if c.lhs_baseline:
        lhs = latin_hypercube_search(short, obs, specs, budget=c.steps, seed=seed, start=first)
        info["lhs_best_train_loss"] = float(lhs.history["loss"].min())
        info["lhs_values"] = {k: np.asarray(v).tolist() for k, v in lhs.values.items()}
    return res.params, info


def _pretrain(
    data: SiteData,
    targets: np.ndarray,
    static: np.ndarray,
    cfg: NetworkConfig,
    *,
    seed: int,
    checkpoint_dir: Path,
    progress: bool,
) -> SequenceModel:
    """Pretraining on ensemble members: windows over all days of every member (no observation is used)."""
    x_norm = Normaliser.fit(data.forcing[data.fit_days])
    y_norm = Normaliser.fit(targets[:, data.fit_days].reshape(-1, targets.shape[-1]))
    net = _make_net("hlstm", data.forcing.shape[-1], targets.shape[-1], cfg, jax.random.PRNGKey(seed),
                    static.shape[-1])  # fmt: skip
    model = SequenceModel(net, x_norm, y_norm)
    length = min(cfg.window_days, data.fit_days.stop)
    starts = window_starts(data.fit_days, length, cfg.stride_days)
    pairs = np.array([(m, s) for m in range(len(targets)) for s in starts])
    x_all, y_all, s_all = jnp.asarray(data.forcing), jnp.asarray(targets), jnp.asarray(static)
    scale = jnp.asarray(np.nanstd(targets[:, data.fit_days], axis=(0, 1)) + 1e-3)
    warm = min(cfg.warmup_days, length // 2)

    def batch_fn(_, idx):
        m, st = pairs[idx, 0], pairs[idx, 1]
        rows = st[:, None] + np.arange(length)[None, :]
        return x_all[rows], y_all[m[:, None], rows], s_all[m]

    def loss_fn(mdl, batch):
        xw, yw, sw = batch
        return jax.vmap(lambda x, y, s: _masked_mse(mdl(x, s)[warm:], y[warm:], scale))(xw, yw, sw)

    trained, _ = fit(model, loss_fn, None, n_members=len(pairs), batch_fn=batch_fn, epochs=cfg.epochs,
                     batch_size=cfg.batch_size * 2, learning_rate=cfg.learning_rate, seed=seed,
                     checkpoint_dir=checkpoint_dir, progress=progress)  # fmt: skip
    return trained


# ------------------------------------------------------------------------------------------ physics in AI
def _sensor_bounds(data: SiteData) -> tuple[np.ndarray, np.ndarray]:
    """Plausible moisture range at each sensor (m3 m-3): half the wilting point to the porosity of the model soil
    at the sensor's layer, widened to every value observed on the training days (a reading above the table
    porosity says the site's soil is more porous than its class, not that the reading is impossible)."""
    p = data.setup.params.soil
    n = len(data.setup.layer_bottoms_m)
    smcmax = np.broadcast_to(np.asarray(p.smcmax), (n,))
    smcdry = np.broadcast_to(np.asarray(p.smcwlt), (n,)) * 0.5
    seen = data.observed[data.fit_days]  # fmin/fmax skip NaN (a sensor without data keeps the table bounds)
    lo = np.fmin(data.at_sensors(smcdry), np.fmin.reduce(seen, axis=0))
    hi = np.fmax(data.at_sensors(smcmax), np.fmax.reduce(seen, axis=0))
    return lo, hi


ICE_FREE = 1e-3  # m3 m-3: the physics model's ice below which a layer counts as unfrozen


def _water_created(data: SiteData, pred, precip_mm, ice_free, xp=np):
    """Water gained by the top sensor's layer beyond the day's precipitation (mm), (D-1,), from the daily
    moisture ``pred`` (D, S), precipitation ``precip_mm`` (D,) and the ``ice_free`` (D,) days (a thaw turns ice
    into liquid without rain, so where the sensors see liquid water only days without ice count)."""
    dz_top = float(np.diff(np.r_[0.0, data.setup.layer_bottoms_m])[data.sensor_layers[0]])
    excess = xp.maximum(xp.diff(pred[:, 0]) * dz_top * 1000.0 - precip_mm[1:], 0.0)
    return xp.where(ice_free[1:] & ice_free[:-1], excess, 0.0)


def physics_constraint(data: SiteData, weights: ConstraintConfig, ice_free: np.ndarray):
    """Physics-in-AI loss terms on a predicted window (W, S) of days ``days`` (W,): physical bounds (half the
    wilting point <= theta <= porosity, widened to the training observations) and the water balance of the top
    sensor's layer (no day gains more water than falls as precipitation; on ``ice_free`` days)."""
    from .coupling.losses import bounds_penalty

    lo, hi = (jnp.asarray(b) for b in _sensor_bounds(data))
    precip = jnp.asarray(data.forcing[:, FEATURES.index("precip")])
    free = jnp.asarray(ice_free)

    def extra(pred: jax.Array, days: jax.Array) -> jax.Array:
        excess = _water_created(data, pred, precip[days], free[days], jnp)
        return weights.bounds * jnp.mean(bounds_penalty(pred, lo, hi)) + weights.water * jnp.mean(excess**2)

    return extra


def plausibility(data: SiteData, daily: np.ndarray, precip_mm: np.ndarray, ice_free: np.ndarray) -> dict:
    """Physical plausibility on the test days: bound violations (sensor-days outside the bounds of
    :func:`physics_constraint`) and water created in the top layer (mm, as there)."""
    lo, hi = _sensor_bounds(data)
    d, t = daily[data.test], data.test
    return {
        "bound_violations": int(np.sum((d < lo) | (d > hi))),
        "water_created_mm": float(np.sum(_water_created(data, d, precip_mm[t], ice_free[t]))),
    }


# ------------------------------------------------------------------------------------------ scoring
def score(data: SiteData, preds: dict[str, Prediction]) -> pd.DataFrame:
    rows = []
    obs = data.observed[data.test]
    for model, pred in preds.items():
        sim = pred.daily[data.test]
        for s in range(data.n_sensors):
            m = M.all_metrics(jnp.asarray(sim[:, s]), jnp.asarray(obs[:, s]))
            rows.append(
                {
                    "site": data.name,
                    "model": model,
                    "depth_m": float(data.sensor_depths_m[s]),
                    "reliable": bool(data.reliable[s]),
                    **{k: float(v) for k, v in m.items()},
                    "note": M.why_undefined(sim[:, s], obs[:, s]),
                }
            )
    return pd.DataFrame(rows)


#: Column headings with units, for tables people read (the CSV files keep the plain names).
UNITS = {"depth_m": "depth (m)", "r": "r (-)", "bias": "bias (m3 m-3)", "rmse": "RMSE (m3 m-3)",
         "ubrmse": "ubRMSE (m3 m-3)", "nse": "NSE (-)", "kge": "KGE (-)", "seconds": "time (s)",
         "bound_violations": "bound violations (sensor-days)", "water_created_mm": "water created (mm)",
         "factor": "weight factor (-)", "bounds": "bounds weight ((m3 m-3)-2)", "water": "water weight (mm-2)",
         "dry_bound_violations": "dry: bound violations (sensor-days)",
         "dry_water_created_mm": "dry: water created (mm)"}  # fmt: skip


def with_units(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the headings of :data:`UNITS`."""
    return table.rename(columns=UNITS)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over the reliable sensors of each site and model."""
    rel = table[table["reliable"]]
    return (
        rel.groupby(["site", "model"], sort=False)[["r", "bias", "rmse", "ubrmse", "nse", "kge"]].mean().reset_index()
    )


def write_tables(
    run_dir: Path, table: pd.DataFrame, plausible: pd.DataFrame | None = None, sweep: pd.DataFrame | None = None
) -> None:
    io_safety.write_csv(table, run_dir / "metrics.csv")
    summ = summary(table)
    io_safety.write_csv(summ, run_dir / "summary.csv")
    md = [
        "# Test-period metrics",
        "",
        "Per sensor:",
        "",
        with_units(table).to_markdown(index=False, floatfmt=".3f"),
        "",
        "Mean over reliable sensors:",
        "",
        with_units(summ).to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    extras = (
        (plausible, "plausibility.csv", "Physical plausibility of the networks on the test days (sensor-days outside "
         "the bounds; water gained by the top layer beyond the day's precipitation, mm)"),
        (sweep, "constraint_sweep.csv", "Constraint-weight study of `hlstm_constrained` (both weights times "
         "`factor`; 0 = no constraint terms): mean r and RMSE over reliable sensors, plausibility on the test days"),
    )  # fmt: skip
    for frame, name, caption in extras:
        if frame is not None and len(frame):
            io_safety.write_csv(frame, run_dir / name)
            md += [f"{caption}, as observed and with precipitation x {DRY_FACTOR:g}:", "",
                   with_units(frame).to_markdown(index=False, floatfmt=".3g"), ""]  # fmt: skip
    io_safety.write_text(run_dir / "metrics.md", "\n".join(md))


def run_experiment(config: ExperimentConfig) -> pd.DataFrame:
    """Run the experiment: across sites (:mod:`dam.multisite`) when it has multi-site models or splits over
    sites, else site by site (:class:`Experiment`); glob patterns in ``sites`` are expanded first."""
    if config.multisite:
        from .multisite import run_multisite

        return run_multisite(config)
    from .experiment_config import expand_sites

    return Experiment(config.replace(sites=expand_sites(config.sites))).run()
