"""The training engine: chronological splits, normalisation, sequence windows and :func:`fit`.

:func:`fit` trains any equinox model with any loss ``loss_fn(model, batch)`` (physics-informed terms live in
the loss, never here) over a data set whose leaves share a leading member axis (sites, columns, sequence
windows, ensemble members):

* epochs of shuffled mini-batches (the order is a pure function of ``seed`` and the epoch, so the same seed
  gives the same numbers, and a resumed run the same order);
* optax optimiser (default :func:`default_optimizer`: AdamW with warm-up and cosine decay, gradient clipping);
* validation after every epoch with ``val_fn(model)``, early stopping (``patience``) and the best model kept;
* orbax checkpoints (trainable leaves, optimiser state, best model, epoch, RNG recipe, history) every
  ``checkpoint_every`` epochs; a killed run started again with the same arguments resumes at the next epoch
  and ends with the same parameters as an uninterrupted run (bit for bit on one device);
* data parallelism (issue 6): with ``mesh`` (a 1-D :class:`jax.sharding.Mesh`, e.g. from
  :func:`dam.sharding.column_mesh`) every batch is split along its member axis over the devices, parameters
  and optimiser state are replicated, and ``jit`` inserts the all-reduce of the gradient. Batches are padded to
  a multiple of the device count with zero-weight members, so results equal single-device training to
  round-off (reduction order only).

Losses: return one loss per member, shape (B,), and the engine takes their weighted mean (padding members get
weight 0); a scalar loss is accepted only when no batch ever needs padding (the batch size divides the member
count and, with a mesh, the device count is a divisor of the batch size).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

__all__ = [
    "Normaliser",
    "chronological_split",
    "default_optimizer",
    "fit",
    "gather_windows",
    "load_model",
    "save_model",
    "sliding_predict",
    "trainable_filter",
    "window_starts",
]


# --------------------------------------------------------------------------------------------------- data
def chronological_split(
    n_steps: int, train_frac: float = 0.8, val_frac_of_train: float = 0.1
) -> tuple[slice, slice, slice]:
    """Split ``n_steps`` time steps in time order: (train, validation, test) index slices.

    The first ``train_frac`` of the steps are the training period and the rest the test period; the last
    ``val_frac_of_train`` of the training period is held out as the validation tail. With the defaults:
    steps [0, 0.72 n) train, [0.72 n, 0.8 n) validation, [0.8 n, n) test (counts rounded down).
    """
    if not (0.0 < train_frac <= 1.0 and 0.0 <= val_frac_of_train < 1.0):
        raise ValueError(
            f"need 0 < train_frac <= 1 and 0 <= val_frac_of_train < 1, got {train_frac}, {val_frac_of_train}"
        )
    n_train = int(math.floor(n_steps * train_frac))
    n_val = int(math.floor(n_train * val_frac_of_train))
    if n_train - n_val < 1:
        raise ValueError(f"{n_steps} steps leave no training steps")
    return slice(0, n_train - n_val), slice(n_train - n_val, n_train), slice(n_train, n_steps)


class Normaliser(eqx.Module):
    """Per-feature standardisation ``(x - mean) / std`` (features on the last axis).

    An equinox module, so it can sit inside a model and be saved with it; :func:`fit` never trains it (see
    :func:`trainable_filter`). Fit it on the training period only.

    Attributes
    ----------
    mean, std
        Per-feature mean and standard deviation (shape (F,)), in the units of the data.
    """

    mean: jax.Array
    std: jax.Array

    @classmethod
    def fit(cls, x_train: Any, *, min_std: float = 1e-12) -> Normaliser:
        """Mean and standard deviation of each feature over all other axes, ignoring NaN.

        A feature with no finite value gets mean 0 and std 1 (with a warning); a (near-)constant one std 1,
        so that it is only centred.
        """
        x = np.asarray(x_train, dtype=float)
        flat = x.reshape(-1, x.shape[-1])
        finite = np.isfinite(flat)
        count = finite.sum(axis=0)
        if np.any(count == 0):
            warnings.warn(
                f"features {np.flatnonzero(count == 0).tolist()} have no finite value: mean 0, std 1",
                RuntimeWarning,
                stacklevel=2,
            )
        safe = np.where(finite, flat, 0.0)
        n = np.maximum(count, 1)
        mean = safe.sum(axis=0) / n
        std = np.sqrt(np.where(finite, (flat - mean) ** 2, 0.0).sum(axis=0) / n)
        std = np.where((count == 0) | (std < min_std), 1.0, std)
        dtype = jnp.asarray(x_train).dtype if jnp.issubdtype(jnp.asarray(x_train).dtype, jnp.floating) else None
        return cls(mean=jnp.asarray(mean, dtype), std=jnp.asarray(std, dtype))

    def apply(self, x: jax.Array) -> jax.Array:
        """Standardise ``x`` (..., F); NaN stays NaN."""
        return (x - jax.lax.stop_gradient(self.mean)) / jax.lax.stop_gradient(self.std)

    def invert(self, z: jax.Array) -> jax.Array:
        """Back to the units of the data: ``z * std + mean``."""
        return z * jax.lax.stop_gradient(self.std) + jax.lax.stop_gradient(self.mean)


def window_starts(span: slice, length: int, stride: int) -> np.ndarray:
    """Start indices of windows of ``length`` steps, ``stride`` apart, lying inside ``span`` (e.g. a split).

    A window that would cross ``span.stop`` is dropped, except that a last window ending exactly at
    ``span.stop`` is added when the stride leaves a tail, so every step of the span is covered.
    """
    start, stop = span.start or 0, span.stop
    if stop - start < length:
        raise ValueError(f"span {start}:{stop} is shorter than one window of {length} steps")
    starts = np.arange(start, stop - length + 1, stride)
    if starts[-1] + length < stop:
        starts = np.append(starts, stop - length)
    return starts


def gather_windows(series: Any, site: np.ndarray, start: np.ndarray, length: int) -> Any:
    """Windows ``series[site[i], start[i]:start[i]+length]`` of every leaf (sites, T, ...) -> (B, length, ...).

    Works on numpy (host) and jax arrays; handy inside a ``batch_fn`` that cuts windows lazily.
    """
    idx = np.asarray(start)[:, None] + np.arange(length)[None, :]
    site = np.asarray(site)[:, None]
    return jax.tree_util.tree_map(lambda a: a[site, idx], series)


def sliding_predict(predict: Callable[[jax.Array], jax.Array], x: Any, length: int, keep: int) -> jax.Array:
    """Predict a long series with a sequence model trained on windows of ``length`` steps.

    Windows of ``length`` steps start every ``keep`` steps; of each, only the last ``keep`` outputs are kept,
    so every step after the first window is predicted with a look-back of at least ``length - keep`` steps
    (like training with a warm-up of ``length - keep``), and a recurrent network never runs longer than it
    was trained to. The first window gives the first ``length`` steps; the last window ends at the last step.

    Parameters
    ----------
    predict
        ``predict(x_window)`` (length, F) -> (length, O), e.g. ``lambda w: model(w, static)``; vmapped here.
    x
        Inputs (T, F) with T >= length.
    length, keep
        Window length and the outputs kept per window (1 <= keep <= length).

    Returns
    -------
    (T, O) predictions; the output at t uses only inputs at steps <= t.
    """
    x = jnp.asarray(x)
    n = x.shape[0]
    if not (1 <= keep <= length <= n):
        raise ValueError(f"need 1 <= keep <= length <= T, got keep={keep}, length={length}, T={n}")
    starts = np.arange(0, n - length + 1, keep)
    if starts[-1] + length < n:
        starts = np.append(starts, n - length)
    windows = x[starts[:, None] + np.arange(length)[None, :]]
    out = jax.vmap(predict)(windows)  # (windows, length, O)
    # step t comes from the last window whose kept part starts at or before t (the first window keeps all)
    t = np.arange(n)
    win = np.where(t < length, 0, np.searchsorted(starts + length - keep, t, side="right") - 1)
    return out[win, t - starts[win]]


# ------------------------------------------------------------------------------------------- optimiser
def default_optimizer(
    learning_rate: float = 1e-3,
    total_steps: int = 1000,
    *,
    weight_decay: float = 1e-4,
    clip_norm: float = 1.0,
    warmup_frac: float = 0.05,
    final_frac: float = 0.05,
) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with a linear warm-up (from 10 % of the rate) and cosine decay to
    ``final_frac`` of the rate over ``total_steps``; weight decay only on matrices (not biases, not scalars)."""
    warmup = max(1, int(warmup_frac * total_steps))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.1 * learning_rate,
        peak_value=learning_rate,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=final_frac * learning_rate,
    )
    decay_mask = lambda params: jax.tree_util.tree_map(lambda x: x.ndim > 1, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(clip_norm), optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask)
    )


def trainable_filter(model: Any) -> Any:
    """Default filter spec: every floating-point array, except those inside a :class:`Normaliser`."""
    return jax.tree_util.tree_map(
        lambda x: False if isinstance(x, Normaliser) else eqx.is_inexact_array(x),
        model,
        is_leaf=lambda x: isinstance(x, Normaliser),
    )


# ----------------------------------------------------------------------------------------- model files
def save_model(path: str | Path, model: Any) -> None:
    """Write the array leaves of ``model`` (including a Normaliser inside it) to ``path`` (equinox format)."""
    eqx.tree_serialise_leaves(Path(path), model)


def load_model(path: str | Path, like: Any) -> Any:
    """Read a model saved by :func:`save_model` into the structure of ``like`` (a model built alike)."""
    return eqx.tree_deserialise_leaves(Path(path), like)


# ------------------------------------------------------------------------------------------------ fit
def _default_batch(data: Any, idx: np.ndarray) -> Any:
    return jax.tree_util.tree_map(lambda a: a[idx], data)


def _host(tree: Any) -> Any:
    """Leaves as numpy arrays: uncommitted to any device, so they mix with single-device and sharded data."""
    return jax.tree_util.tree_map(np.asarray, tree)


def _fingerprint(params: Any, opt_state: Any) -> str:
    shapes = [(str(x.dtype), tuple(x.shape)) for x in jax.tree_util.tree_leaves((params, opt_state))]
    text = json.dumps([str(jax.tree_util.tree_structure(params)), shapes], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit(
    model: Any,
    loss_fn: Callable[[Any, Any], jax.Array],
    data: Any,
    *,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    epochs: int = 10,
    batch_size: int = 16,
    batch_fn: Callable[[Any, np.ndarray], Any] | None = None,
    n_members: int | None = None,
    shuffle: bool = True,
    val_fn: Callable[[Any], Any] | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    restore_best: bool = True,
    seed: int = 0,
    trainable: Any = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    progress: bool = True,
    mesh: Mesh | None = None,
    stop_after: int | None = None,
) -> tuple[Any, dict]:
    """Train ``model`` to minimise ``loss_fn`` over mini-batches of ``data``; returns (model, history).

    Parameters
    ----------
    model
        Any equinox module (or PyTree); its trainable leaves are chosen by ``trainable``.
    loss_fn
        ``loss_fn(model, batch)`` -> per-member losses (B,) (preferred) or a scalar; must be jit-able.
    data
        PyTree whose leaves share a leading member axis (numpy arrays stay on the host until batched), or
        anything ``batch_fn`` understands (then give ``n_members``).
    optimizer
        optax transformation; default ``default_optimizer(learning_rate, epochs * batches_per_epoch)``.
    learning_rate
        Peak rate of the default optimiser (ignored when ``optimizer`` is given).
    epochs, batch_size
        Epochs in all (a resumed run counts those done before) and members per batch.
    batch_fn
        ``batch_fn(data, member_indices) -> batch`` (default: index every leaf along axis 0).
    n_members
        Number of members (default: leading size of the first leaf of ``data``).
    shuffle
        Shuffle the members every epoch (order from ``numpy.random.default_rng([seed, epoch])``).
    val_fn
        ``val_fn(model) -> scalar``, lower is better (e.g. validation MSE or ``-r``), called after every epoch.
    patience, min_delta
        Stop after ``patience`` epochs without an improvement of the validation score by more than
        ``min_delta`` (None: never stop early).
    restore_best
        Return the model of the best validation epoch (else the last one); without ``val_fn``, the last.
    seed
        Seed of the shuffling.
    trainable
        equinox filter spec (PyTree prefix of ``model`` of bools or callables) of the leaves to train; default
        :func:`trainable_filter` (all floating arrays outside :class:`Normaliser`).
    checkpoint_dir, checkpoint_every
        Orbax checkpoints every ``checkpoint_every`` epochs (and after the last); a later call with the same
        directory resumes after the latest checkpoint. The model passed in gives the structure and the
        untrained leaves, so pass the same (freshly built) model when resuming.
    progress
        Show a tqdm bar (epochs, train and validation loss).
    mesh
        1-D device mesh: shard batches along the member axis, replicate parameters.
    stop_after
        End after this many epochs of this call, as a kill after a checkpoint would (for tests).

    Returns
    -------
    model
        The trained model (best on validation when ``val_fn`` and ``restore_best``), leaves uncommitted to a
        device.
    history
        ``epoch``, ``train_loss`` (member-weighted mean over the epoch), ``val_loss`` (None without ``val_fn``),
        ``seconds`` (lists, one entry per epoch), ``best_epoch``, ``best_val``, ``stopped_early``,
        ``resumed_from`` (epochs done before this call).
    """
    spec = trainable_filter(model) if trainable is None else trainable
    params, frozen = eqx.partition(model, spec)
    batch_fn = _default_batch if batch_fn is None else batch_fn
    n = int(jax.tree_util.tree_leaves(data)[0].shape[0]) if n_members is None else int(n_members)
    if n < 1 or batch_size < 1:
        raise ValueError(f"need at least one member and batch_size >= 1, got {n}, {batch_size}")
    batch_size = min(batch_size, n)
    n_batches = -(-n // batch_size)
    if mesh is not None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"mesh must be 1-D, got axes {mesh.axis_names}")
        padded = -(-batch_size // mesh.devices.size) * mesh.devices.size
        member_sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
        replicated = NamedSharding(mesh, P())
    else:
        padded = batch_size
    needs_padding = padded != batch_size or n % batch_size != 0
    optimizer = default_optimizer(learning_rate, epochs * n_batches) if optimizer is None else optimizer
    opt_state = optimizer.init(params)

    def objective(params, frozen, batch, weight):
        losses = loss_fn(eqx.combine(params, frozen), batch)
        if jnp.ndim(losses) == 0:
            if needs_padding:
                raise ValueError(
                    "loss_fn returned a scalar but batches are padded with zero-weight members; "
                    "return one loss per member (shape (B,)) or choose batch_size dividing the "
                    "member count (and a multiple of the device count)"
                )
            return losses
        if jnp.shape(losses) != jnp.shape(weight):
            raise ValueError(f"loss_fn must return a scalar or shape {jnp.shape(weight)}, got {jnp.shape(losses)}")
        return jnp.sum(jnp.where(weight > 0, weight * losses, 0.0)) / jnp.sum(weight)

    @eqx.filter_jit
    def train_step(params, opt_state, frozen, batch, weight):
        loss, grads = jax.value_and_grad(objective)(params, frozen, batch, weight)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = eqx.apply_updates(params, updates)
        if mesh is not None:  # keep the model replicated (the gradient is already all-reduced by XLA)
            params, opt_state = jax.lax.with_sharding_constraint((params, opt_state), replicated)
        return params, opt_state, loss

    history: dict = {
        "epoch": [],
        "train_loss": [],
        "val_loss": [],
        "seconds": [],
        "best_epoch": None,
        "best_val": None,
        "stopped_early": False,
        "resumed_from": 0,
    }
    best_params, bad_epochs, first = params, 0, 0
    fingerprint = _fingerprint(params, opt_state)

    ckpt = None
    if checkpoint_dir is not None:
        import orbax.checkpoint as ocp

        ckpt = ocp.CheckpointManager(
            Path(checkpoint_dir).absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
        )
        latest = ckpt.latest_step()
        if latest is not None:
            tmpl = lambda tree: {f"{i:06d}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(tree))}  # noqa: E731
            items = {"params": tmpl(params), "best": tmpl(params), "opt_state": tmpl(opt_state)}
            meta = ckpt.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            if meta["fingerprint"] != fingerprint:
                raise ValueError(f"checkpoints in {checkpoint_dir} belong to another model/optimiser structure")
            restored = ckpt.restore(
                latest, args=ocp.args.Composite(**{k: ocp.args.StandardRestore(v) for k, v in items.items() if v})
            )
            unflat = lambda tree, d: jax.tree_util.tree_unflatten(  # noqa: E731
                jax.tree_util.tree_structure(tree), [jnp.asarray(d[k]) for k in sorted(d)] if d else []
            )
            params = unflat(params, restored["params"])
            best_params = unflat(params, restored["best"])
            opt_state = unflat(opt_state, restored.get("opt_state", {}))
            history, bad_epochs, first = meta["history"], meta["bad_epochs"], meta["next_epoch"]
            history["resumed_from"] = first

    def save(epoch_done: int) -> None:
        import orbax.checkpoint as ocp

        leaves = lambda tree: {f"{i:06d}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(tree))}  # noqa: E731
        items = {"params": leaves(params), "best": leaves(best_params), "opt_state": leaves(opt_state)}
        meta = {
            "fingerprint": fingerprint,
            "next_epoch": epoch_done,
            "bad_epochs": bad_epochs,
            "history": history,
            "rng": {
                "shuffle": "numpy.random.default_rng([seed, epoch]).permutation(n_members)",
                "seed": seed,
                "next_epoch": epoch_done,
            },
        }
        ckpt.save(
            epoch_done - 1,
            args=ocp.args.Composite(
                meta=ocp.args.JsonSave(meta), **{k: ocp.args.StandardSave(v) for k, v in items.items() if v}
            ),
        )
        ckpt.wait_until_finished()

    if mesh is not None:
        params, opt_state, frozen, best_params = jax.device_put((params, opt_state, frozen, best_params), replicated)

    done_before = first
    bar = tqdm(total=epochs, initial=first, desc="fit", unit="epoch", disable=not progress)
    epoch = first
    while epoch < epochs and not history["stopped_early"]:
        if stop_after is not None and epoch - done_before >= stop_after:
            break
        t0 = time.perf_counter()
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        total = 0.0
        for b in range(n_batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            real = idx.size
            weight = np.zeros(padded)
            weight[:real] = 1.0
            idx = np.concatenate([idx, np.full(padded - real, idx[-1])])
            batch = batch_fn(data, idx)
            weight = jnp.asarray(weight, jax.tree_util.tree_leaves(params)[0].dtype)
            if mesh is not None:
                batch, weight = jax.device_put((batch, weight), member_sharding)
            params, opt_state, loss = train_step(params, opt_state, frozen, batch, weight)
            total = total + loss * real
        model_now = eqx.combine(params, frozen)
        val = None
        if val_fn is not None:
            val = float(val_fn(_host(model_now) if mesh is not None else model_now))
            if (
                history["best_val"] is None
                or val < history["best_val"] - min_delta
                or not math.isfinite(history["best_val"])
            ):
                history["best_val"], history["best_epoch"], best_params, bad_epochs = val, epoch, params, 0
            else:
                bad_epochs += 1
                if patience is not None and bad_epochs >= patience:
                    history["stopped_early"] = True
        else:
            best_params, history["best_epoch"] = params, epoch
        history["epoch"].append(epoch)
        history["train_loss"].append(float(total) / n)
        history["val_loss"].append(val)
        history["seconds"].append(time.perf_counter() - t0)
        epoch += 1
        if ckpt is not None and (epoch % checkpoint_every == 0 or epoch == epochs or history["stopped_early"]):
            save(epoch)
        bar.set_postfix_str(
            f"loss {history['train_loss'][-1]:.4g}"
            + ("" if val is None else f" val {val:.4g}")
            + ("" if history["best_epoch"] is None else f" best@{history['best_epoch']}")
        )
        bar.update(1)
    bar.close()
    if ckpt is not None:
        ckpt.close()
    final = best_params if (restore_best and val_fn is not None) else params
    return _uncommitted(eqx.combine(final, frozen)), history


def _uncommitted(tree: Any) -> Any:
    """Copy the array leaves to the default device, uncommitted (so the model mixes with any data)."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)) if eqx.is_array(x) else x, tree)
