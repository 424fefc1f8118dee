"""The trainings of the experiment at one site: sequence networks on daily windows (:func:`train_sequence_model`,
ensemble pretraining), the AI-in-physics hybrid (:func:`train_site_hybrid`) and gradient calibration
(:func:`calibrate_site`), all through the one training engine (:func:`dam.training.fit`), and the physics run
whose daily moisture at the sensors they build on (:func:`physics_daily`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .calibration import NoObservationsError
from .coupling.losses import masked_mse
from .experiment_config import CalibrationConfig, HybridConfig, NetworkConfig
from .experiment_data import SiteData
from .multisite_inputs import training_targets
from .predictions import Prediction
from .sequences import Normaliser, window_starts
from .site_run import run_blocks
from .training import fit


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
    layer_total, layer_liquid = data.daily(states.soil.smc), data.daily(states.soil.sh2o)
    total, liquid = data.at_sensors(layer_total), data.at_sensors(layer_liquid)
    seen = np.where(data.sensor_liquid, liquid, total)
    pred = Prediction("physics", seen, 0.0, liquid=liquid, total=total, layer_liquid=layer_liquid,
                      layer_total=layer_total)  # fmt: skip
    return pred, states, fluxes


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
    validate on the validation tail (run from the start of the record), keep the best epoch; without a validation
    observation, the last epoch. ``extra_loss(pred, days)``, if given, adds a term for each window: its prediction
    (W, S) and its days (W,), indices into the record (e.g. :func:`physics_constraint`). A site without an
    observation on its training days raises :class:`~dam.calibration.NoObservationsError`."""
    y = data.observed if targets is None else targets
    fit_days = fit_days or data.train
    val_days = val_days or data.val
    if not np.isfinite(y[fit_days]).any():
        raise NoObservationsError(f"site {data.name}: no soil moisture observation on the training days "
                                  f"{data.days[fit_days][0].date()} .. {data.days[fit_days][-1].date()}")  # fmt: skip
    validated = bool(np.isfinite(y[val_days]).any())
    if not validated:
        print(f"[{data.name}] no soil moisture observation on the validation days: the last epoch is kept", flush=True)
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
                     batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, val_fn=val_fn if validated else None,
                     patience=cfg.patience, seed=seed, checkpoint_dir=checkpoint_dir, progress=progress)  # fmt: skip
    return trained


def train_site_hybrid(
    data: SiteData, c: HybridConfig, *, seed: int, progress: bool, checkpoint_dir: Path | None = None
):
    """AI in physics at one site: the network water transport is first taught to imitate the Richards sub-step on
    the physics run of the training period, then trained end to end through the station model against the
    observed soil moisture (truncated back-propagation in windows of ``c.window_steps``)."""
    from .coupling.hybrid import NeuralWaterTransport, physics_water_samples
    from .hybrid_training import pretrain_to_physics, train_hybrid

    setup = data.setup.with_phase_change_gradient(c.phase_change_gradient)
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


def calibration_window(data: SiteData, c: CalibrationConfig, memo: dict | None = None):
    """A short set-up for calibration: it starts ``warmup_steps`` before the scored window (the state there from
    a default run) and ends with the training period, or where that window holds no observation, with the last
    training day that has one (announced); returns (setup, first scored step). ``memo``: a run's dict that keeps
    each site's state at the window's start, so the stages and folds after the first do not run the default run's
    first years again."""
    setup = data.setup
    n_train = int(np.searchsorted(data.step_day, data.test.start))
    observed = np.flatnonzero(np.isfinite(training_targets(data)[data.fit_days]).any(axis=1))  # observed training days
    moved = observed.size and observed[-1] <= data.step_day[max(0, n_train - c.window_steps)]  # e.g. a record
    if moved:  # that stops before the training period does (the window's first day may not be whole: not counted)
        n_train = int(np.searchsorted(data.step_day, observed[-1] + 1))
    w0 = max(0, n_train - c.window_steps)
    s0 = max(0, w0 - c.warmup_steps)
    state = setup.state0
    key = (data.name, "calibration_window_state", s0)
    if moved and (memo is None or key not in memo):  # once per run
        print(f"[{data.name}] no observation in the calibration window at the end of the training period: it ends "
              f"on {data.days[observed[-1]].date()}, the last training day with one", flush=True)  # fmt: skip
    if memo is not None and key in memo:
        state = memo[key]
    elif s0 > 0:  # in the blocks of the site's run: the program physics_default compiled, whatever s0 is
        state = jax.tree_util.tree_map(lambda x: jnp.asarray(x[-1]), run_blocks(setup, steps=s0, progress=False)[0])
    if memo is not None:
        memo[key] = state
    short = dataclasses.replace(
        setup, state0=state, times=setup.times[s0:n_train],
        forcing=jax.tree_util.tree_map(lambda x: np.asarray(x)[s0:n_train], setup.forcing),
    )  # fmt: skip
    return short, w0 - s0


def calibrate_site(data: SiteData, c: CalibrationConfig, *, seed: int, progress: bool, memo: dict | None = None):
    """Gradient calibration of ``c.parameters`` (squashed into their physical ranges) against the site's
    reliable soil moisture sensors, plus the Latin-hypercube baseline with the same number of model runs
    (``memo``: see :func:`calibration_window`)."""
    from .calibration import calibrate, latin_hypercube_search
    from .coupling.calibration import make_specs

    specs = make_specs(c.parameters)
    short, first = calibration_window(data, c, memo)
    short = short.with_phase_change_gradient(c.phase_change_gradient)
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
