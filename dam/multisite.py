"""One network across many sites, and its skill at sites it never saw (``dam experiment`` with multi-site models
or ``split: leave_sites_out``).

The multi-site networks (``lstm_multisite``, ``hlstm_multisite``) read the daily forcing of
:data:`dam.experiment_data.FEATURES` plus static site attributes (:data:`ATTRIBUTES`: latitude, elevation, the
soil and vegetation parameters the site's classes give, climate means of its forcing) and predict daily soil
moisture on one standard soil column (:data:`LAYERS`, the Noah-MP default layers); each site's sensors read
those layers through their sensor mapping (:mod:`dam.sensors`), so sites with any number and depths of sensors
train one network. Training members are (site, window) pairs of all training sites, batched by
:func:`dam.training.fit` (data-parallel over a device mesh when there is more than one device); the loss is the
masked squared error at the sensors in units of each sensor's standard deviation on its training days.

Splits (``split``):

* ``chronological``: one network trained on the first days of every site (its last tenth validates), scored on
  every site's last days, as the single-site models are;
* ``leave_sites_out``: the sites are dealt into ``folds`` folds (:func:`assign_folds`); for each fold a network
  is trained on the training days of the other folds' sites and scored on the test days of the fold's sites, so
  every site is a test site once, scored by a network that never saw any of its days.

Per-site physics models (``physics_default``, ``physics_calibrated``; under the chronological split also the
single-site networks of :mod:`dam.experiment`) run as in :mod:`dam.experiment`. The run folder gets, besides the
tables of :func:`dam.experiment.write_tables`, ``multisite.md`` (per-site and pooled skill, folds),
``pooled.csv``, ``folds.csv``, ``figures/skill_by_site.png`` and, last, ``models/index.json``: the trained
networks that ``dam predict`` (:func:`dam.predict.predict_run`) uses at other sites or periods.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import yaml

from . import io_safety
from .coupling.losses import masked_mse
from .experiment import Experiment, _check_resume, _core
from .experiment_config import (
    DPL_MODELS,
    MULTISITE_MODELS,
    PHYSICS_GUIDED_MODELS,
    ExperimentConfig,
    NetworkConfig,
    expand_sites,
)
from .experiment_data import FEATURES, SiteData, prepare_site
from .experiment_stages import STAGES
from .experiment_training import _make_net
from .multisite_dpl import dpl_folds
from .multisite_inputs import (  # noqa: F401  (re-exported: dam.multisite is where users look)
    ATTRIBUTES,
    LAYERS,
    SCALE_FLOOR,
    layer_weights,
    site_attributes,
    site_inputs,
    standard_layers,
    training_targets,
)
from .physics.guards import PlausibilityError
from .predictions import Prediction, load_prediction, save_prediction
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
from .scoring import score, summary, write_tables
from .sequences import Normaliser, window_starts
from .training import fit

INDEX = "index.json"
Level = Literal["learned", "physics"]


def assign_folds(names: list[str] | tuple[str, ...], folds: int, seed: int) -> dict[str, int]:
    """Deal the sites into ``folds`` folds of sizes differing by at most one: a seeded permutation of the sorted
    names, dealt in turn (the same names and seed give the same folds whatever their order)."""
    names = sorted(names)
    if not 2 <= folds <= len(names):
        raise ValueError(f"{folds} folds need 2 <= folds <= number of sites ({len(names)})")
    order = np.random.default_rng([seed, 14]).permutation(len(names))
    return {names[j]: i % folds for i, j in enumerate(order)}


# ------------------------------------------------------------------------------------------ the network
class MultiSiteModel(eqx.Module):
    """A sequence network on normalised daily inputs (T, F) (:func:`site_inputs`) and normalised site attributes
    (A,) predicting soil moisture (T, len(LAYERS)) in m3 m-3 on the standard column, or with physics inputs its
    correction to the physics run; ``at_sensors`` maps it to a site's sensors and adds the base."""

    net: eqx.Module
    x_norm: Normaliser
    a_norm: Normaliser
    y_norm: Normaliser  # one mean and std for all layers (pooled training observations, or residuals of physics)
    level: Level = eqx.field(static=True, default="learned")

    def __call__(self, x: jax.Array, attributes: jax.Array) -> jax.Array:
        a = jnp.nan_to_num(self.a_norm.apply(attributes))
        return self.y_norm.invert(self.net(jnp.nan_to_num(self.x_norm.apply(x)), a))

    def at_sensors(self, x: jax.Array, attributes: jax.Array, weights: jax.Array, base: jax.Array) -> jax.Array:
        """Daily moisture the sensors read (T, S), given their layer ``weights`` (S, len(LAYERS)) and the ``base``
        (T, S) the network's output adds to (zero, or the physics run at the sensors). With ``level="physics"``
        the output has zero mean over the T days: the base keeps its level, the network adds its variation."""
        out = self(x, attributes) @ weights.T
        if self.level == "physics":
            out = out - jnp.mean(out, axis=0, keepdims=True)
        return out + base


def build_model(kind: str, cfg: NetworkConfig, seed: int, norms: dict[str, Normaliser] | None = None,
                physics: bool = False, level: Level = "learned"):  # fmt: skip
    """A freshly initialised :class:`MultiSiteModel` (``kind``: ``lstm`` or ``hlstm``; ``physics``: it reads the
    physics run too; ``level``: see :class:`MultiSiteModel`); ``norms`` the fitted normalisers (default
    placeholders of the right shapes, e.g. to load a saved model into)."""
    if level == "physics" and not physics:
        raise ValueError("level='physics' needs a network that reads the physics run (physics=True)")
    n_in, n_attr = len(FEATURES) + (2 * len(LAYERS) if physics else 0), len(ATTRIBUTES)
    net = _make_net(kind, n_in, len(LAYERS), cfg, jax.random.PRNGKey(seed), n_attr)
    if physics:  # heads start at zero: the untrained network is the physics run (plus the mean residual)
        heads = (lambda n: [n.head]) if hasattr(net, "head") else (lambda n: list(n.heads))
        net = eqx.tree_at(lambda n: [x for h in heads(n) for x in (h.weight, h.bias)], net, replace_fn=jnp.zeros_like)
    if norms is None:
        norms = {"x_norm": Normaliser(jnp.zeros(n_in), jnp.ones(n_in)),
                 "a_norm": Normaliser(jnp.zeros(n_attr), jnp.ones(n_attr)),
                 "y_norm": Normaliser(jnp.zeros(1), jnp.ones(1))}  # fmt: skip
    return MultiSiteModel(net, **norms, level=level)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Sites stacked for training (padded to the longest record and the most sensors; padding is NaN in the
    targets and zero weight, so it never counts): inputs (n, D, F) and base (n, D, S) of :func:`site_inputs`,
    attributes (n, A), targets (n, D, S), validation targets (n, D, S) (NaN outside each site's validation days),
    weights (n, S, L), scale (n, S)."""

    names: tuple[str, ...]
    forcing: np.ndarray
    base: np.ndarray
    attributes: np.ndarray
    targets: np.ndarray
    val_targets: np.ndarray
    weights: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, sites: list[SiteData], physics: dict[str, Prediction] | None = None) -> Batch:
        n, d = len(sites), max(len(s.days) for s in sites)
        s_max = max(s.n_sensors for s in sites)
        inputs = [site_inputs(s, None if physics is None else physics[s.name]) for s in sites]
        forcing = np.zeros((n, d, inputs[0][0].shape[1]))
        base = np.zeros((n, d, s_max))
        targets = np.full((n, d, s_max), np.nan)
        val = np.full((n, d, s_max), np.nan)
        weights = np.zeros((n, s_max, len(LAYERS)))
        scale = np.ones((n, s_max))
        for i, s in enumerate(sites):
            y = training_targets(s)
            forcing[i, : len(s.days)] = np.nan_to_num(inputs[i][0])
            base[i, : len(s.days), : s.n_sensors] = inputs[i][1]
            targets[i, s.train, : s.n_sensors] = y[s.train]
            val[i, s.val, : s.n_sensors] = y[s.val]
            weights[i, : s.n_sensors] = layer_weights(s)
            with warnings.catch_warnings():  # a sensor without training data: NaN, then the floor only
                warnings.simplefilter("ignore", RuntimeWarning)
                sd = np.nanstd(y[s.train], axis=0)
            scale[i, : s.n_sensors] = np.where(np.isfinite(sd), sd, 0.0) + SCALE_FLOOR
        attributes = np.stack([site_attributes(s) for s in sites])
        return cls(tuple(s.name for s in sites), forcing, base, attributes, targets, val, weights, scale)


def _loss(pred: jax.Array, obs: jax.Array, scale: jax.Array) -> jax.Array:
    return masked_mse((pred - obs) / scale, 0.0)


def train_multisite(
    kind: str,
    sites: list[SiteData],
    cfg: NetworkConfig,
    *,
    seed: int,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
    mesh=None,
    init: MultiSiteModel | None = None,
    epochs: int | None = None,
    physics: dict[str, Prediction] | None = None,
    level: Level = "learned",
) -> tuple[MultiSiteModel, dict]:
    """Train one network on the training days of ``sites`` (validated on their validation days, best epoch
    kept); returns the model and :func:`dam.training.fit`'s history. Members are (site, window) pairs; windows of
    ``cfg.window_days`` (at most the shortest training period) start every ``cfg.stride_days`` and their first
    ``cfg.warmup_days`` are not scored. ``init`` continues from a trained model (its normalisers kept).
    ``physics`` (site name -> physics_default's prediction) makes it a network that corrects the physics run,
    ``level="physics"`` one that keeps the run's level (:class:`MultiSiteModel`)."""
    if not sites:
        raise ValueError("train_multisite needs at least one site")
    b = Batch.of(sites, physics)
    if init is None:
        fit_x = np.concatenate([site_inputs(s, None if physics is None else physics[s.name])[0][s.train]
                                for s in sites])  # fmt: skip
        pooled = np.concatenate([(training_targets(s) - b.base[i, : len(s.days), : s.n_sensors])[s.train].ravel()
                                 for i, s in enumerate(sites)])[:, None]  # fmt: skip
        norms = {"x_norm": Normaliser.fit(fit_x), "a_norm": Normaliser.fit(b.attributes),
                 "y_norm": Normaliser.fit(pooled)}  # fmt: skip
        init = build_model(kind, cfg, seed, norms, physics=physics is not None, level=level)
    return fit_batch(
        init,
        b,
        [s.train for s in sites],
        cfg,
        seed=seed,
        epochs=epochs or cfg.epochs,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        mesh=mesh,
        desc=f"{kind} x {len(sites)} sites",
    )


def fit_batch(
    init: MultiSiteModel,
    b: Batch,
    spans: list[slice],
    cfg: NetworkConfig,
    *,
    seed: int,
    epochs: int,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
    mesh=None,
    desc: str = "",
) -> tuple[MultiSiteModel, dict]:
    """Train ``init`` on the rows of ``b`` over the days ``spans`` (one per row; validated on ``b.val_targets``,
    best epoch kept) by :func:`dam.training.fit`; members are (row, window) pairs (see :func:`train_multisite`)."""
    length = min(cfg.window_days, min(sp.stop - sp.start for sp in spans))
    pairs = np.array([(i, st) for i, sp in enumerate(spans) for st in window_starts(sp, length, cfg.stride_days)])
    warm = min(cfg.warmup_days, length // 2)
    x_all, a_all, y_all = jnp.asarray(b.forcing), jnp.asarray(b.attributes), jnp.asarray(b.targets)
    w_all, s_all, base_all = jnp.asarray(b.weights), jnp.asarray(b.scale), jnp.asarray(b.base)

    def batch_fn(_, idx):
        site, start = pairs[idx, 0], pairs[idx, 1]
        rows = start[:, None] + np.arange(length)[None, :]
        return (x_all[site[:, None], rows], a_all[site], y_all[site[:, None], rows], w_all[site], s_all[site],
                base_all[site[:, None], rows])  # fmt: skip

    def loss_fn(m, batch):
        def one(x, a, y, w, sc, base):
            return _loss(m.at_sensors(x, a, w, base)[warm:], y[warm:], sc)

        return jax.vmap(one)(*batch)

    v_all = jnp.asarray(b.val_targets)
    predict_all = eqx.filter_jit(lambda m: jax.vmap(m.at_sensors)(x_all, a_all, w_all, base_all))

    def val_fn(m):
        return float(_loss(predict_all(m), v_all, s_all[:, None, :]))

    return fit(init, loss_fn, None, n_members=len(pairs), batch_fn=batch_fn, epochs=epochs,
               batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, val_fn=val_fn, validate_initial=True,
               patience=cfg.patience, seed=seed, checkpoint_dir=checkpoint_dir, progress=progress, mesh=mesh,
               desc=desc)  # fmt: skip


def predict_site(model: MultiSiteModel, data: SiteData, physics: Prediction | None = None) -> np.ndarray:
    """Daily soil moisture at the site's sensors (D, S), m3 m-3, over its whole record (``physics``: the site's
    physics_default prediction, for a network that corrects it)."""
    x, base = site_inputs(data, physics)
    a, w = jnp.asarray(site_attributes(data)), jnp.asarray(layer_weights(data))
    return np.asarray(model.at_sensors(jnp.asarray(np.nan_to_num(x)), a, w, jnp.asarray(base)))


# ------------------------------------------------------------------------------------------ saved models
def save_trained(folder: Path, name: str, model: MultiSiteModel, spec: dict) -> None:
    """Write a trained network (``name.eqx``, equinox leaves) and how to rebuild it (``name.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}{io_safety.TMP_MARK}{os.getpid()}.eqx"
    with open(tmp, "wb") as fh:  # a file object: equinox would change the suffix of a path
        eqx.tree_serialise_leaves(fh, model)
    tmp.replace(folder / f"{name}.eqx")
    io_safety.write_text(folder / f"{name}.json", json.dumps(spec, indent=1))


def load_trained(folder: Path, name: str) -> tuple[MultiSiteModel, dict]:
    """A network written by :func:`save_trained` and its description."""
    spec = json.loads((folder / f"{name}.json").read_text())
    like = build_model(spec["kind"], NetworkConfig(**spec["network"]), spec["seed"], physics=spec.get("physics", False),
                       level=spec.get("level", "learned"))  # fmt: skip
    with open(folder / f"{name}.eqx", "rb") as fh:
        return eqx.tree_deserialise_leaves(fh, like), spec


# ------------------------------------------------------------------------------------------ the run
def _mesh():
    """A 1-D device mesh when there is more than one device (members sharded over it), else None."""
    if jax.device_count() < 2:
        return None
    from .sharding import column_mesh

    return column_mesh()


class MultiSiteExperiment:
    """Runs a multi-site ``dam experiment`` into ``config.output_dir`` (see the module docs). The run folder
    follows :class:`dam.experiment.Experiment`'s rules (manifest, lock, resume, fingerprinted stages)."""

    def __init__(self, config: ExperimentConfig):
        self.config = config.replace(sites=expand_sites(config.sites))
        self.run_dir = Path(config.output_dir).expanduser().resolve()
        self.per_site = Experiment(self.config)  # runs the per-site stages (same methods, same run folder)
        self.failures: list[dict] = []  # per-site stages stopped by a physics guard
        self.ensembles: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # site -> pretraining ensemble

    def run(self) -> pd.DataFrame:
        cfg = self.config
        self.run_dir, _ = open_run_folder(self.run_dir, "experiment", legacy_marker="config.yaml")
        self.per_site.run_dir = self.run_dir
        with RunLock(self.run_dir):
            _check_resume(self.run_dir / "config.yaml", cfg)
            index = self.run_dir / "models" / INDEX
            if index.is_file():
                index.unlink()  # the run is not finished until its models are written again
            io_safety.write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            write_manifest(self.run_dir, "experiment", fingerprint(_core(cfg)), cfg.to_dict(), {})
            return self._run()

    def _run(self) -> pd.DataFrame:
        cfg = self.config
        t_start = time.perf_counter()
        sites: dict[str, SiteData] = {}
        physics = any(m not in MULTISITE_MODELS for m in cfg.models)
        for entry in cfg.sites:  # the networks need no spun-up physics state: skip the spin-up without physics
            data = prepare_site(entry, spinup_cycles=cfg.spinup_cycles if physics else 0, train_frac=cfg.train_frac,
                                val_frac=cfg.val_frac)  # fmt: skip
            safe_name(data.name, f"site name of {entry}")
            if data.name in sites:
                raise RunFolderError(f"two sites are named {data.name!r} ({entry}): site names must differ")
            sites[data.name] = data
        names = sorted(sites)
        if cfg.split == "leave_sites_out":
            fold_of = assign_folds(names, cfg.folds, cfg.seed)
        else:
            fold_of = dict.fromkeys(names, 0)
        keys = {n: fingerprint(_core(cfg), {"site": content_hash(d.site.path) if d.site.path else n})
                for n, d in sites.items()}  # fmt: skip
        preds: dict[str, dict[str, Prediction]] = {n: {} for n in names}
        self._chain = {n: [keys[n]] for n in names}  # per-site stage keys, as dam.experiment chains them
        timings: dict[str, float] = {}
        index: dict[str, Any] = {"split": cfg.split, "folds": {}, "models": {}}
        for model in cfg.models:
            if model in MULTISITE_MODELS:
                index["models"][model] = self._multisite_stage(model, sites, fold_of, keys, preds, timings)
            elif model in DPL_MODELS:
                dpl_folds(self.run_dir, cfg, sites, fold_of, keys, preds, timings, self.failures)
            else:
                for n in names:
                    self._site_stage(model, sites[n], keys[n], preds[n], timings)
                jax.clear_caches()  # the programs the sites shared: XLA:CPU runs out of memory maps with too many
        tables = []
        for n in names:
            tables.append(score(sites[n], preds[n]).assign(fold=fold_of[n]))
        table = pd.concat(tables, ignore_index=True)
        write_tables(self.run_dir, table)
        from .multisite_report import pooled_metrics, report

        pooled = pooled_metrics(sites, preds)
        io_safety.write_csv(pooled, self.run_dir / "pooled.csv")
        folds = pd.DataFrame({"site": names, "fold": [fold_of[n] for n in names]})
        io_safety.write_csv(folds, self.run_dir / "folds.csv")
        from .plots import plot_skill_by_site

        plot_skill_by_site(self.run_dir / "figures" / "skill_by_site.png", summary(table), tuple(cfg.models))
        seconds = time.perf_counter() - t_start
        io_safety.write_text(self.run_dir / "multisite.md", report(cfg, table, pooled, folds, seconds, self.failures))
        io_safety.write_text(self.run_dir / "timings.json",
                             json.dumps({"total_seconds": seconds, "stages": timings}, indent=1))  # fmt: skip
        index["folds"] = {n: fold_of[n] for n in names}
        index["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        io_safety.write_text(self.run_dir / "models" / INDEX, json.dumps(index, indent=1))
        return table

    def _site_stage(self, model: str, data: SiteData, site_key: str, preds: dict, timings: dict) -> None:
        """A per-site stage, computed by :class:`dam.experiment.Experiment` (or read back)."""
        exp = self.per_site
        exp.cache[(data.name, "key")] = site_key
        key = fingerprint({"model": model}, {"after": ",".join(self._chain[data.name])})
        self._chain[data.name].append(key)
        pred = load_prediction(self.run_dir, data, model, key)
        if pred is not None and model == "physics_default" and pred.layer_total is None:
            pred = None  # saved before predictions kept the layer series the physics-guided networks read
        if pred is None:
            t0 = time.perf_counter()
            exp._key = key
            try:
                pred = STAGES[model](exp, data, preds)
            except PlausibilityError as err:  # one site's physics must not end a many-site run: reported, retried
                self.failures.append({"site": data.name, "model": model, "error": str(err)})
                print(f"[{data.name}] {model}: FAILED ({err}); scored as missing, retried when the run is resumed")
                pred = Prediction(model, np.full(data.observed.shape, np.nan), 0.0, {"failed": str(err)})
                preds[model] = pred
                return
            pred.seconds = time.perf_counter() - t0
            save_prediction(self.run_dir, data, pred, key)
            if model != "physics_default":  # its compiled programs serve the next site (same options: no compile)
                jax.clear_caches()
            print(f"[{data.name}] {model}: computed in {pred.seconds:.1f} s", flush=True)
        preds[model] = pred
        timings[f"{data.name}/{model}"] = pred.seconds

    def _multisite_stage(self, model: str, sites: dict[str, SiteData], fold_of: dict[str, int], keys: dict,
                         preds: dict, timings: dict) -> list[dict]:  # fmt: skip
        """Train the network of every fold (or read its predictions back) and predict its test sites."""
        cfg = self.config
        kind = model.removesuffix("_multisite")
        physics, usable = None, set(fold_of)
        if model in PHYSICS_GUIDED_MODELS:
            kind = kind.removesuffix("_physics")
            physics = {n: preds[n]["physics_default"] for n in fold_of}  # listed before (checked by the config)
            usable = {n for n, p in physics.items() if p.layer_total is not None}  # not where the physics failed
        level = cfg.multisite_level if physics is not None else "learned"
        pretrain = kind.endswith("_ensemble")
        kind = kind.removesuffix("_ensemble")
        saved = []
        for fold in sorted(set(fold_of.values())):
            test = sorted(n for n, f in fold_of.items() if f == fold)
            train = sorted(n for n, f in fold_of.items() if f != fold) if cfg.split == "leave_sites_out" else test
            train = [n for n in train if n in usable]
            failed = [n for n in test if n not in usable]  # in the key: retried once their physics runs
            key = fingerprint({"model": model, "train": train, "test": test, **({"failed": failed} if failed else {})},
                              {n: keys[n] for n in (*train, *test)})  # fmt: skip
            tag = f"fold{fold}"
            folder = inside(self.run_dir, "models", model)
            got = {n: load_prediction(self.run_dir, sites[n], model, key) for n in test}
            spec = folder / f"{tag}.json"
            saved_key = json.loads(spec.read_text()).get("key") if spec.is_file() else None
            if all(p is not None for p in got.values()) and saved_key == key and (folder / f"{tag}.eqx").is_file():
                print(f"[{model} {tag}] read back ({len(test)} test sites)", flush=True)
            else:
                t0 = time.perf_counter()
                checkpoints = inside(self.run_dir, "checkpoints", "multisite", model, tag, key)
                init = None
                if pretrain:  # each site's ensemble runs once per run (self.ensembles)
                    from .multisite_pretrain import pretrain_fold  # (it builds on this module)

                    init = pretrain_fold(kind, [sites[n] for n in train], self.ensembles, cfg, checkpoints / "pretrain",
                                         mesh=_mesh())  # fmt: skip
                net, history = train_multisite(
                    kind, [sites[n] for n in train], cfg.network, seed=cfg.seed, progress=cfg.progress,
                    checkpoint_dir=checkpoints / "train", mesh=_mesh(), physics=physics, init=init, level=level,
                )  # fmt: skip
                seconds = time.perf_counter() - t0
                info = {"fold": fold, "train_sites": train, "best_epoch": int(history["best_epoch"]),
                        "train_loss": [float(v) for v in history["train_loss"]],
                        "val_loss": [float(v) for v in [history["initial_val"], *history["val_loss"]]]}  # fmt: skip
                save_trained(folder, tag, net, {"kind": kind, "physics": physics is not None, "level": level,
                                                "seed": cfg.seed,
                                                "spinup_cycles": cfg.spinup_cycles,
                                                "network": cfg.network.model_dump(mode="json"),
                                                "attributes": list(ATTRIBUTES), "layers_m": list(LAYERS),
                                                "features": list(FEATURES), "train_sites": train,
                                                "test_sites": test, "train_frac": cfg.train_frac,
                                                "val_frac": cfg.val_frac, "key": key, **info})  # fmt: skip
                for n in test:
                    if n in failed:
                        daily = np.full(sites[n].observed.shape, np.nan)
                    else:
                        daily = predict_site(net, sites[n], None if physics is None else physics[n])
                    pred = Prediction(model, daily, seconds / len(test), info)
                    save_prediction(self.run_dir, sites[n], pred, key)
                    got[n] = pred
                jax.clear_caches()
                print(f"[{model} {tag}] trained on {len(train)} sites in {seconds:.1f} s (best epoch "
                      f"{info['best_epoch']})", flush=True)  # fmt: skip
            for n in test:
                preds[n][model] = got[n]
                timings[f"{n}/{model}"] = got[n].seconds
            saved.append({"fold": fold, "file": f"{model}/{tag}.eqx", "train_sites": train, "test_sites": test})
        return saved


# ------------------------------------------------------------------------------------------ scoring
def run_multisite(config: ExperimentConfig) -> pd.DataFrame:
    """Run a multi-site experiment (:class:`MultiSiteExperiment`); returns the per-sensor metrics table."""
    return MultiSiteExperiment(config).run()
