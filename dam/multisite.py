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
networks that ``dam predict`` (:func:`dam.predict.predict_run`) uses at other sites or periods. The run itself is
:class:`dam.multisite_run.MultiSiteExperiment`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import io_safety
from .coupling.constraints import SensorTarget, constraint_penalty
from .coupling.losses import masked_mse
from .experiment_config import ConstraintConfig, NetworkConfig
from .experiment_data import FEATURES, SiteData
from .experiment_training import _make_net
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
from .physics_in_ai import ice_free_days, sensor_target
from .predictions import Prediction
from .sequences import Normaliser, window_starts
from .training import fit

INDEX = "index.json"
Level = Literal["learned", "physics", "input"]


def assign_folds(names: list[str] | tuple[str, ...], folds: int, seed: int) -> dict[str, int]:
    """Deal the sites into ``folds`` folds of sizes differing by at most one: a seeded permutation of the sorted
    names, dealt in turn (the same names and seed give the same folds whatever their order)."""
    names = sorted(names)
    if not 2 <= folds <= len(names):
        raise ValueError(f"{folds} folds need 2 <= folds <= number of sites ({len(names)})")
    order = np.random.default_rng([seed, 14]).permutation(len(names))
    return {names[j]: i % folds for i, j in enumerate(order)}


def held_out(n_train: int, n_held: int, seed: int, what: str, usable: Sequence[bool] | None = None) -> list[int]:
    """Indices of the ``n_held`` of ``n_train`` training sites held out of training to choose when to stop (the
    first ``usable`` ones of a permutation drawn with ``seed``: only sites with observations can tell one epoch
    from another); ``what`` names the setting in the error when none would be left to train or too few can
    validate."""
    if n_held >= n_train:
        raise ValueError(f"{what} = {n_held} leaves none of the {n_train} training sites to train on")
    usable = np.ones(n_train, bool) if usable is None else np.asarray(usable, bool)
    if usable.sum() < n_held:
        raise ValueError(f"{what} = {n_held}: only {usable.sum()} of the {n_train} training sites have observations "
                         "on their training days to validate on")  # fmt: skip
    return [int(i) for i in np.random.default_rng(seed).permutation(n_train) if usable[i]][:n_held]


# ------------------------------------------------------------------------------------------ the network
class MultiSiteModel(eqx.Module):
    """A sequence network on normalised daily inputs (T, F) (:func:`site_inputs`) and normalised site attributes
    (A,) predicting soil moisture (T, len(LAYERS)) in m3 m-3 on the standard column, or with physics inputs its
    correction to the physics run; ``at_sensors`` maps it to a site's sensors and adds the base. ``level``:
    ``learned`` (the network's output is the moisture, or the whole correction), ``physics`` (the correction keeps
    the physics run's mean level) or ``input`` (the network reads the physics run but predicts the moisture
    itself: the base is not added)."""

    net: eqx.Module
    x_norm: Normaliser
    a_norm: Normaliser
    y_norm: Normaliser  # one mean and std for all layers (pooled training observations, or residuals of physics)
    level: Level = eqx.field(static=True, default="learned")

    def __call__(self, x: jax.Array, attributes: jax.Array) -> jax.Array:
        a = jnp.nan_to_num(self.a_norm.apply(attributes))
        return self.y_norm.invert(self.net(jnp.nan_to_num(self.x_norm.apply(x)), a))

    def at_sensors(self, x: jax.Array, attributes: jax.Array, weights: jax.Array, base: jax.Array,
                   days: jax.Array | None = None) -> jax.Array:  # fmt: skip
        """Daily moisture the sensors read (T, S), given their layer ``weights`` (S, len(LAYERS)) and the ``base``
        (T, S) the network's output adds to (zero, or the physics run at the sensors). With ``level="physics"``
        the output has zero mean over the T days (or over the ``days`` (T,) marked True, e.g. a padded record's
        real days): the base keeps its level, the network adds its variation."""
        out = self(x, attributes) @ weights.T
        if self.level == "input":
            return out
        if self.level == "physics":
            if days is None:  # jnp.mean, not the weighted form below: the shipped results' round-off
                out = out - jnp.mean(out, axis=0, keepdims=True)
            else:
                w = days.astype(out.dtype)
                out = out - (w @ out)[None] / jnp.maximum(jnp.sum(w), 1.0)
        return out + base


def build_model(kind: str, cfg: NetworkConfig, seed: int, norms: dict[str, Normaliser] | None = None,
                physics: bool = False, level: Level = "learned"):  # fmt: skip
    """A freshly initialised :class:`MultiSiteModel` (``kind``: ``lstm`` or ``hlstm``; ``physics``: it reads the
    physics run too; ``level``: see :class:`MultiSiteModel`); ``norms`` the fitted normalisers (default
    placeholders of the right shapes, e.g. to load a saved model into)."""
    if level in ("physics", "input") and not physics:
        raise ValueError(f"level={level!r} needs a network that reads the physics run (physics=True)")
    n_in, n_attr = len(FEATURES) + (2 * len(LAYERS) if physics else 0), len(ATTRIBUTES)
    net = _make_net(kind, n_in, len(LAYERS), cfg, jax.random.PRNGKey(seed), n_attr)
    # heads start at zero: the untrained network is the physics run (plus the mean residual)
    if physics and level != "input":
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
    attributes (n, A), targets (n, D, S), validation targets (n, D, S) (NaN outside each site's validation days,
    or for sites held out of training outside its training and validation days), weights (n, S, L), scale (n, S),
    days (n, D) True on each site's real (not padded) days."""

    names: tuple[str, ...]
    forcing: np.ndarray
    base: np.ndarray
    attributes: np.ndarray
    targets: np.ndarray
    val_targets: np.ndarray
    weights: np.ndarray
    scale: np.ndarray
    days: np.ndarray

    @classmethod
    def of(cls, sites: list[SiteData], physics: dict[str, Prediction] | None = None, held_out: bool = False) -> Batch:
        """``held_out``: the sites validate a network not trained on them (validation targets on their
        :attr:`~dam.experiment_data.SiteData.fit_days`)."""
        n, d = len(sites), max(len(s.days) for s in sites)
        s_max = max(s.n_sensors for s in sites)
        inputs = [site_inputs(s, None if physics is None else physics[s.name]) for s in sites]
        forcing = np.zeros((n, d, inputs[0][0].shape[1]))
        base = np.zeros((n, d, s_max))
        targets = np.full((n, d, s_max), np.nan)
        val = np.full((n, d, s_max), np.nan)
        weights = np.zeros((n, s_max, len(LAYERS)))
        scale = np.ones((n, s_max))
        days = np.zeros((n, d), bool)
        for i, s in enumerate(sites):
            y = training_targets(s)
            forcing[i, : len(s.days)] = np.nan_to_num(inputs[i][0])
            base[i, : len(s.days), : s.n_sensors] = inputs[i][1]
            targets[i, s.train, : s.n_sensors] = y[s.train]
            scored = s.fit_days if held_out else s.val
            val[i, scored, : s.n_sensors] = y[scored]
            days[i, : len(s.days)] = True
            weights[i, : s.n_sensors] = layer_weights(s)
            with warnings.catch_warnings():  # a sensor without training data: NaN, then the floor only
                warnings.simplefilter("ignore", RuntimeWarning)
                sd = np.nanstd(y[s.train], axis=0)
            scale[i, : s.n_sensors] = np.where(np.isfinite(sd), sd, 0.0) + SCALE_FLOOR
        attributes = np.stack([site_attributes(s) for s in sites])
        return cls(tuple(s.name for s in sites), forcing, base, attributes, targets, val, weights, scale, days)


@dataclasses.dataclass(frozen=True)
class Constraint:
    """The physics-in-AI loss terms of a :class:`Batch` (``hlstm_constrained_multisite``): each site's
    :func:`dam.physics_in_ai.sensor_target` stacked and padded like the batch: bounds (n, S) in m3 m-3 (padded
    sensors 0..1, around the zero the network gives them), daily precipitation (n, D) in mm, ice-free days (n, D),
    thickness of the top sensor's layer (n,) in m; ``weights`` of the bounds and water-balance terms."""

    lower: np.ndarray
    upper: np.ndarray
    precip_mm: np.ndarray
    ice_free: np.ndarray
    top_layer_m: np.ndarray
    weights: ConstraintConfig

    @classmethod
    def of(cls, sites: list[SiteData], ice_free: dict[str, np.ndarray] | None, weights: ConstraintConfig, b: Batch):
        """``ice_free``: site name -> (D,) days its water balance is checked (default: those
        :func:`dam.physics_in_ai.ice_free_days` gives without a physics run)."""
        n, d, s_max = b.targets.shape
        lower, upper = np.zeros((n, s_max)), np.ones((n, s_max))
        precip, ice, top = np.zeros((n, d)), np.zeros((n, d), bool), np.zeros(n)
        for i, s in enumerate(sites):
            ice_s = ice_free[s.name] if ice_free else ice_free_days(s, None, None)
            t = sensor_target(s, s.forcing[:, FEATURES.index("precip")], ice_s)
            lower[i, : s.n_sensors], upper[i, : s.n_sensors] = t.lower, t.upper
            precip[i, : len(s.days)], ice[i, : len(s.days)], top[i] = t.precip_mm, t.ice_free, t.top_layer_m
        return cls(lower, upper, precip, ice, top, weights)

    def arrays(self) -> tuple[jax.Array, ...]:
        """The per-site arrays, in :class:`dam.coupling.constraints.SensorTarget`'s order."""
        return tuple(jnp.asarray(a) for a in (self.lower, self.upper, self.precip_mm, self.ice_free, self.top_layer_m))


def _loss(pred: jax.Array, obs: jax.Array, scale: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    return masked_mse((pred - obs) / scale, 0.0, weights)


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
    constraints: ConstraintConfig | None = None,
    ice_free: dict[str, np.ndarray] | None = None,
    validation: list[SiteData] | None = None,
) -> tuple[MultiSiteModel, dict]:
    """Train one network on the training days of ``sites`` (validated on their validation days, or with
    ``validation`` on those sites' training and validation days; best epoch kept); returns the model and
    :func:`dam.training.fit`'s history. Members are (site, window) pairs; windows of ``cfg.window_days`` (at most
    the shortest training period) start every ``cfg.stride_days`` and their first ``cfg.warmup_days`` are not
    scored. ``init`` continues from a trained model (its normalisers kept; its level becomes ``level``).
    ``physics`` (site name -> physics_default's prediction) makes it a network that corrects the physics run,
    ``level="physics"`` one that keeps the run's level (:class:`MultiSiteModel`). ``constraints`` adds the
    physics-in-AI loss terms (:class:`Constraint`; ``ice_free``: site name -> (D,) days its water balance is
    checked, :func:`dam.physics_in_ai.ice_free_days`). ``validation``: sites held out of training that choose the
    epoch by how the network does at sites it never saw."""
    if not sites:
        raise ValueError("train_multisite needs at least one site")
    b = Batch.of(sites, physics)
    if init is None:
        init = initial_model(kind, sites, b, cfg, seed, physics, level)
    elif init.level != level:  # e.g. pretrained with a learned level on ensemble members whose levels differ
        if level in ("physics", "input") and physics is None:
            raise ValueError(f"level={level!r} needs a network that reads the physics run (physics=...)")
        if "input" in (level, init.level):  # its output normaliser is of moisture, the others' of corrections
            raise ValueError(f"a network of level {init.level!r} cannot continue as level {level!r}")
        init = MultiSiteModel(init.net, init.x_norm, init.a_norm, init.y_norm, level=level)
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
        constraint=None if constraints is None else Constraint.of(sites, ice_free, constraints, b),
        val=Batch.of(validation, physics, held_out=True) if validation else None,
    )


def initial_model(
    kind: str, sites: list[SiteData], b: Batch, cfg: NetworkConfig, seed: int,
    physics: dict[str, Prediction] | None = None, level: Level = "learned",
) -> MultiSiteModel:  # fmt: skip
    """An untrained network for :func:`train_multisite` with normalisers fitted on the training days of ``sites``
    (stacked in ``b``): inputs, attributes, and the targets pooled over sensors (minus the physics base, but for
    ``level="input"``)."""
    fit_x = np.concatenate([site_inputs(s, None if physics is None else physics[s.name])[0][s.train] for s in sites])
    base = np.zeros_like(b.base) if level == "input" else b.base
    pooled = np.concatenate([(training_targets(s) - base[i, : len(s.days), : s.n_sensors])[s.train].ravel()
                             for i, s in enumerate(sites)])[:, None]  # fmt: skip
    norms = {"x_norm": Normaliser.fit(fit_x), "a_norm": Normaliser.fit(b.attributes), "y_norm": Normaliser.fit(pooled)}
    return build_model(kind, cfg, seed, norms, physics=physics is not None, level=level)


def row_weights(count: np.ndarray, balance: float) -> np.ndarray:
    """Weight of one item of each row holding ``count`` items, so that a row weighs ``count ** (1 - balance)`` in
    all (0: every item the same; 1: every row the same); rows without items 0."""
    return np.where(count > 0, np.maximum(count, 1) ** -float(balance), 0.0)


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
    constraint: Constraint | None = None,
    val: Batch | None = None,
) -> tuple[MultiSiteModel, dict]:
    """Train ``init`` on the rows of ``b`` over the days ``spans`` (one per row; validated on ``b.val_targets``,
    best epoch kept) by :func:`dam.training.fit`; members are (row, window) pairs (see :func:`train_multisite`),
    a row's members and validation observations weighed by ``cfg.site_balance`` (:func:`row_weights`).
    ``constraint`` adds its loss terms on every member's whole window (validation stays the observation loss).
    ``val``: held-out sites validating instead (their real days only set a physics-level output's mean; on ``b``
    the mean runs over the padded length, which acts as early stopping: docs/experiment.md)."""
    length = min(cfg.window_days, min(sp.stop - sp.start for sp in spans))
    pairs = np.array([(i, st) for i, sp in enumerate(spans) for st in window_starts(sp, length, cfg.stride_days)])
    warm = min(cfg.warmup_days, length // 2)
    x_all, a_all, y_all = jnp.asarray(b.forcing), jnp.asarray(b.attributes), jnp.asarray(b.targets)
    w_all, s_all, base_all = jnp.asarray(b.weights), jnp.asarray(b.scale), jnp.asarray(b.base)

    c = None if constraint is None else constraint.arrays()
    member_weight = row_weights(np.bincount(pairs[:, 0], minlength=len(spans)), cfg.site_balance)[pairs[:, 0]]
    member_weight = jnp.asarray(member_weight / member_weight.mean())  # mean 1: the learning rate keeps its scale

    def batch_fn(_, idx):
        site, start = pairs[idx, 0], pairs[idx, 1]
        rows = start[:, None] + np.arange(length)[None, :]
        members = (x_all[site[:, None], rows], a_all[site], y_all[site[:, None], rows], w_all[site], s_all[site],
                   base_all[site[:, None], rows])  # fmt: skip
        if c is not None:
            lo, hi, precip, ice, top = c
            members += (lo[site], hi[site], precip[site[:, None], rows], ice[site[:, None], rows], top[site])
        return member_weight[idx], members

    def loss_fn(m, batch):
        weight, members = batch

        def one(x, a, y, w, sc, base, *target):
            pred = m.at_sensors(x, a, w, base)
            loss = _loss(pred[warm:], y[warm:], sc)
            if target:
                wts = constraint.weights
                loss = loss + constraint_penalty(pred, jnp.arange(length), SensorTarget(*target), wts.bounds, wts.water)
            return loss

        return weight * jax.vmap(one)(*members)

    v = b if val is None else val
    v_in = tuple(jnp.asarray(a) for a in (v.forcing, v.attributes, v.weights, v.base))
    v_days = None if val is None else jnp.asarray(v.days)
    v_obs, v_scale = jnp.asarray(v.val_targets), jnp.asarray(v.scale)[:, None, :]
    predict_all = eqx.filter_jit(lambda m: jax.vmap(m.at_sensors)(*v_in, v_days))
    # each row's validation observations weigh as its training windows do
    v_weight = jnp.asarray(row_weights(np.isfinite(v.val_targets).sum(axis=(1, 2)), cfg.site_balance))[:, None, None]

    def val_fn(m):
        return float(_loss(predict_all(m), v_obs, v_scale, v_weight))

    validated = bool(np.isfinite(v.val_targets).any())  # else the last epoch: a loss of 0 would keep the first
    if not validated:
        print(f"[{desc}] no observation on the validation days: the last epoch is kept", flush=True)
    return fit(init, loss_fn, None, n_members=len(pairs), batch_fn=batch_fn, epochs=epochs,
               batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, val_fn=val_fn if validated else None,
               validate_initial=True, patience=cfg.patience, seed=seed, checkpoint_dir=checkpoint_dir,
               progress=progress, mesh=mesh, desc=desc)  # fmt: skip


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
