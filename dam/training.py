"""The training engine: :func:`fit` trains networks, hybrids and calibrated parameters alike.

:func:`fit` trains any equinox model (or PyTree of parameters) with any loss ``loss_fn(model, batch)``
(physics-informed terms live in the loss, never here), or with a custom gradient ``grad_fn``, over a data set
whose leaves share a leading member axis (sites, columns, sequence windows, ensemble members, samples):

* epochs of shuffled mini-batches (the order is a pure function of ``seed`` and the epoch, so the same seed
  gives the same numbers, and a resumed run the same order);
* optax optimiser (default :func:`default_optimizer`: AdamW with warm-up and cosine decay, gradient clipping);
* validation after every epoch with ``val_fn(model)``, early stopping (``patience``) and the best model kept
  (best on validation, the parameters of the lowest full-batch loss, or the last: ``select``);
* orbax checkpoints (:mod:`dam.checkpoints`: trainable leaves, optimiser state, best model, epoch, history)
  every ``checkpoint_every`` epochs; a killed run started again with the same arguments resumes at the next
  epoch and ends with the same parameters as an uninterrupted run (bit for bit on one device); an unreadable
  newest checkpoint is skipped with a warning for the previous one;
* one tqdm progress bar per call (``progress``, named ``desc``).
* data parallelism (issue 6): with ``mesh`` (a 1-D :class:`jax.sharding.Mesh`, e.g. from
  :func:`dam.sharding.column_mesh`) every batch is split along its member axis over the devices, parameters
  and optimiser state are replicated, and ``jit`` inserts the all-reduce of the gradient. Batches are padded to
  a multiple of the device count with zero-weight members, so results equal single-device training to
  round-off (reduction order only).

The masked data misfit is :func:`dam.coupling.losses.masked_mse` for every model. Drivers: the networks of
:mod:`dam.experiment`, :mod:`dam.hybrid_training` (AI in physics), :mod:`dam.calibration` (parameters).

Losses: return one loss per member, shape (B,), and the engine takes their weighted mean (padding members get
weight 0); a scalar loss is accepted only when no batch ever needs padding (the batch size divides the member
count and, with a mesh, the device count is a divisor of the batch size).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from .checkpoints import TrainingCheckpoints
from .sequences import Normaliser

__all__ = ["default_optimizer", "fit", "load_model", "save_model", "trainable_filter"]


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


def per_member(optimizer: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``optimizer`` applied to every entry of the parameters' leading axis on its own (independent
    optimisations side by side, e.g. the starts of a multi-start calibration): its state and update are
    ``jax.vmap``-ed, and a line search (``optax.lbfgs``) gets each entry's own loss and step length.

    The objective of a line search, ``value_fn``, must take one entry's parameters; the loss ``value`` passed to
    the update (the sum over entries) is not used: each entry's is computed again with ``value_fn``. A batched
    line search runs until every entry's search has ended.
    """
    searches = isinstance(optimizer, optax.GradientTransformationExtraArgs)

    def update(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
        del value, grad, extra  # each entry's value and gradient are its own
        if value_fn is None or not searches:
            return jax.vmap(optimizer.update)(updates, state, params)

        def one(u, s, p, v):
            return optimizer.update(u, s, p, value=v, grad=u, value_fn=value_fn)

        return jax.vmap(one)(updates, state, params, jax.vmap(value_fn)(params))

    return optax.GradientTransformationExtraArgs(jax.vmap(optimizer.init), update)


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
Select = Literal["val", "train", "last"]


def _default_batch(data: Any, idx: np.ndarray) -> Any:
    return jax.tree_util.tree_map(lambda a: a[idx], data)


def _host(tree: Any) -> Any:
    """Leaves as numpy arrays: uncommitted to any device, so they mix with single-device and sharded data."""
    return jax.tree_util.tree_map(np.asarray, tree)


def _uncommitted(tree: Any) -> Any:
    """Copy the array leaves to the default device, uncommitted (so the model mixes with any data)."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)) if eqx.is_array(x) else x, tree)


def _fingerprint(params: Any, opt_state: Any) -> str:
    shapes = [(str(x.dtype), tuple(x.shape)) for x in jax.tree_util.tree_leaves((params, opt_state))]
    text = json.dumps([str(jax.tree_util.tree_structure(params)), shapes], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit(
    model: Any,
    loss_fn: Callable[[Any, Any], jax.Array] | None,
    data: Any,
    *,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    epochs: int = 10,
    batch_size: int = 16,
    batch_fn: Callable[[Any, np.ndarray], Any] | None = None,
    n_members: int | None = None,
    shuffle: bool = True,
    grad_fn: Callable[[Any, Any], tuple] | None = None,
    value_fn: Callable[[Any], Any] | None = None,
    val_fn: Callable[[Any], Any] | None = None,
    validate_initial: bool = False,
    select: Select | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    seed: int = 0,
    trainable: Any = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    progress: bool = True,
    desc: str = "fit",
    mesh: Mesh | None = None,
    stop_after: int | None = None,
) -> tuple[Any, dict]:
    """Train ``model`` over mini-batches of ``data``; returns (model, history). The module docs describe the loop.

    Parameters
    ----------
    model : any equinox module or PyTree; its trainable leaves are chosen by ``trainable``.
    loss_fn : ``loss_fn(model, batch)`` -> per-member losses (B,) (preferred) or a scalar; jit-able.
    data : PyTree whose leaves share a leading member axis (numpy stays on the host until batched), anything
        ``batch_fn`` understands (then give ``n_members``), or ``data(model) -> PyTree`` called at the start of
        every epoch (data that depends on the model, e.g. window start states of a free run).
    optimizer : optax transformation; default ``default_optimizer(learning_rate, epochs * batches_per_epoch)``.
    learning_rate : peak rate of the default optimiser.
    epochs, batch_size : epochs in all (a resumed run counts those done before) and members per batch.
    batch_fn : ``batch_fn(data, member_indices) -> batch``; default: index every leaf along axis 0.
    n_members : number of members; default the leading size of the first leaf of ``data``.
    shuffle : shuffle the members every epoch (order ``numpy.random.default_rng([seed, epoch]).permutation``).
    grad_fn : ``grad_fn(model, batch) -> (loss, grads)`` or ``(loss, grads, info)`` in place of the gradient of
        ``loss_fn``, for objectives that are not one jit-able function (grads shaped like the trainable part,
        ``None`` elsewhere; ``info`` a dict of floats, kept per epoch in the history). Batches are not padded.
    value_fn : with ``grad_fn``, the objective ``value_fn(model)`` for a line search (``optax.lbfgs``): :func:`_update`.
    val_fn : ``val_fn(model) -> scalar``, lower is better, after every epoch.
    validate_initial : also validate the model before training; it is then a candidate (``best_epoch`` -1).
    select : the model returned: ``"val"`` the best validation epoch (default with ``val_fn``), ``"train"`` the
        parameters at the start of the epoch with the lowest training loss (for full-batch objectives, where that
        is their exact loss), ``"last"`` (default without ``val_fn``).
    patience, min_delta : stop after ``patience`` epochs without an improvement of the selection score by more
        than ``min_delta`` (None: never).
    seed : seed of the shuffling.
    trainable : equinox filter spec of the leaves to train; default :func:`trainable_filter`.
    checkpoint_dir, checkpoint_every : orbax checkpoints every ``checkpoint_every`` epochs (and after the last);
        a later call with the same directory resumes after the newest readable checkpoint (an unreadable one is
        skipped with a warning). Pass the same freshly built model when resuming.
    progress, desc : show a tqdm bar named ``desc``.
    mesh : 1-D device mesh: shard batches along the member axis, replicate parameters.
    stop_after : end after this many epochs of this call, as a kill after a checkpoint would (for tests).

    Returns
    -------
    model : the selected model, leaves uncommitted to a device.
    history : ``epoch``, ``train_loss`` (member-weighted mean over the epoch), ``val_loss`` (None without
        ``val_fn``), ``seconds`` (one entry per epoch), the keys of ``info``, ``initial_val``, ``best_epoch``,
        ``best_score``, ``stopped_early``, ``resumed_from`` (epochs done before this call).
    """
    if select is None:
        select = "val" if val_fn is not None else "last"
    if select not in ("val", "train", "last") or (select == "val" and val_fn is None):
        raise ValueError(f"select must be 'val' (with val_fn), 'train' or 'last', got {select!r}")
    if grad_fn is not None and mesh is not None:
        raise ValueError("grad_fn and mesh cannot be combined: the engine cannot place a custom gradient")
    run = _Run(model, loss_fn, data, trainable, batch_fn, n_members, batch_size, mesh, grad_fn, min_delta, value_fn)
    optimizer = default_optimizer(learning_rate, epochs * run.n_batches) if optimizer is None else optimizer
    run.start(optimizer, checkpoint_dir)
    if validate_initial and run.first == 0 and val_fn is not None:
        run.history["initial_val"] = float(val_fn(run.model_for_val()))
        if select == "val":
            run.consider(run.history["initial_val"], run.params, -1)
    bar = tqdm(total=epochs, initial=run.first, desc=desc, unit="epoch", disable=not progress)
    epoch = run.first
    while epoch < epochs and not run.history["stopped_early"]:
        if stop_after is not None and epoch - run.first >= stop_after:
            break
        t0 = time.perf_counter()
        start = run.params
        train_loss = run.epoch(np.random.default_rng([seed, epoch]).permutation(run.n) if shuffle else None)
        val = None if val_fn is None else float(val_fn(run.model_for_val()))
        run.record(epoch, start, train_loss, val, select, patience, time.perf_counter() - t0)
        epoch += 1
        if run.ckpt is not None and (epoch % checkpoint_every == 0 or epoch == epochs or run.history["stopped_early"]):
            run.save(epoch)
        bar.set_postfix_str(run.postfix())
        bar.update(1)
    bar.close()
    return run.finish()


def _update(optimizer, params, opt_state, grads, value, value_fn):
    """One optimiser update; one that takes extra arguments (a line search: ``optax.lbfgs``) also gets the value,
    the gradient and the objective ``value_fn(params)``. The history of :func:`fit` then has ``linesearch_steps``
    (the line search's evaluations of the objective in the last batch of each epoch). A ``grad_fn`` training's
    update compiles once per optimiser object and shapes (:func:`_jit_update`): pass the same optimiser and a
    ``jax.tree_util.Partial`` objective (its arrays are traced) and later fits reuse the program."""
    kw = {}
    if value_fn is not None and isinstance(optimizer, optax.GradientTransformationExtraArgs):
        kw = dict(value=value, grad=grads, value_fn=value_fn)
    updates, opt_state = optimizer.update(grads, opt_state, params, **kw)
    return eqx.apply_updates(params, updates), opt_state


@eqx.filter_jit
def _jit_update(optimizer, params, opt_state, grads, value, frozen, value_fn):
    """:func:`_update` of a ``grad_fn`` training, compiled once per optimiser and shapes: a ``value_fn`` that is a
    pytree (``jax.tree_util.Partial`` of arrays) is traced, so later fits with the same optimiser and objective
    structure (another site's calibration) reuse the program."""
    objective = None if value_fn is None else (lambda p: value_fn(eqx.combine(p, frozen)))
    return _update(optimizer, params, opt_state, grads, value, objective)


class _Run:
    """The state of one :func:`fit` call: batching, the compiled step, the best model, history, checkpoints."""

    def __init__(self, model, loss_fn, data, trainable, batch_fn, n_members, batch_size, mesh, grad_fn, min_delta,
                 value_fn=None):  # fmt: skip
        self.spec = trainable_filter(model) if trainable is None else trainable
        self.params, self.frozen = eqx.partition(model, self.spec)
        self.loss_fn, self.grad_fn, self.mesh, self.min_delta = loss_fn, grad_fn, mesh, min_delta
        self.value_fn = value_fn
        self.data = data
        self.batch_fn = _default_batch if batch_fn is None else batch_fn
        if n_members is None:
            first = data(model) if callable(data) else data
            n_members = jax.tree_util.tree_leaves(first)[0].shape[0]
        self.n = int(n_members)
        if self.n < 1 or batch_size < 1:
            raise ValueError(f"need at least one member and batch_size >= 1, got {self.n}, {batch_size}")
        self.batch_size = min(batch_size, self.n)
        self.n_batches = -(-self.n // self.batch_size)
        self.padded = self.batch_size
        if mesh is not None:
            if len(mesh.axis_names) != 1:
                raise ValueError(f"mesh must be 1-D, got axes {mesh.axis_names}")
            self.padded = -(-self.batch_size // mesh.devices.size) * mesh.devices.size
            self.member_sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
            self.replicated = NamedSharding(mesh, P())
        self.needs_padding = grad_fn is None and (self.padded != self.batch_size or self.n % self.batch_size != 0)
        self.best, self.bad_epochs, self.first, self.ckpt = self.params, 0, 0, None
        self.history: dict = {
            "epoch": [],
            "train_loss": [],
            "val_loss": [],
            "seconds": [],
            "initial_val": None,
            "best_epoch": None,
            "best_score": None,
            "stopped_early": False,
            "resumed_from": 0,
        }

    # ------------------------------------------------------------------ set-up and checkpoints
    def start(self, optimizer: optax.GradientTransformation, checkpoint_dir: str | Path | None) -> None:
        self.optimizer = optimizer
        # weak-typed leaves (optax.lbfgs's line-search info) come back strong from the first update: make them
        # strong now, else the update compiles twice
        self.opt_state = jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, x.dtype) if getattr(x, "weak_type", False) else x, optimizer.init(self.params)
        )
        self.fingerprint = _fingerprint(self.params, self.opt_state)
        self.step = self._make_step()
        if checkpoint_dir is not None:
            self.ckpt = TrainingCheckpoints(checkpoint_dir)
            found = self.ckpt.restore({"params": self.params, "best": self.params, "opt_state": self.opt_state},
                                      check=self._check)  # fmt: skip
            if found is not None:
                arrays, record = found
                self.params, self.best, self.opt_state = arrays["params"], arrays["best"], arrays["opt_state"]
                self.bad_epochs, self.first = record["bad_epochs"], record["next_epoch"]
                old = record["history"]  # checkpoints of earlier versions name the best score best_val
                self.history = {**self.history, "best_score": old.get("best_val"), **old, "resumed_from": self.first}
        if self.mesh is not None:
            self.params, self.opt_state, self.frozen, self.best = jax.device_put(
                (self.params, self.opt_state, self.frozen, self.best), self.replicated
            )

    def _check(self, record: dict) -> None:
        if record.get("fingerprint") != self.fingerprint:
            raise ValueError(f"checkpoints in {self.ckpt.directory} belong to another model/optimiser structure")

    def save(self, epoch_done: int) -> None:
        record = {"fingerprint": self.fingerprint, "next_epoch": epoch_done, "bad_epochs": self.bad_epochs,
                  "history": self.history,
                  "rng": "numpy.random.default_rng([seed, epoch]).permutation(n_members) per epoch"}  # fmt: skip
        self.ckpt.save(epoch_done - 1, {"params": self.params, "best": self.best, "opt_state": self.opt_state}, record)

    # ------------------------------------------------------------------ the loop
    def _make_step(self) -> Callable:
        optimizer, mesh = self.optimizer, self.mesh

        if self.grad_fn is not None:
            value_fn = self.value_fn

            def custom(params, opt_state, frozen, batch, weight):
                out = self.grad_fn(eqx.combine(params, frozen), batch)
                loss, grads, info = out if len(out) == 3 else (*out, {})
                value = jnp.asarray(loss, jax.tree_util.tree_leaves(params)[0].dtype)
                return (*_jit_update(optimizer, params, opt_state, grads, value, frozen, value_fn), loss, info)

            return custom

        def objective(params, frozen, batch, weight):
            losses = self.loss_fn(eqx.combine(params, frozen), batch)
            if jnp.ndim(losses) == 0:
                if self.needs_padding:
                    raise ValueError(
                        "loss_fn returned a scalar but batches are padded with zero-weight members; return one "
                        "loss per member (shape (B,)) or choose batch_size dividing the member count (and a "
                        "multiple of the device count)"
                    )
                return losses
            if jnp.shape(losses) != jnp.shape(weight):
                raise ValueError(f"loss_fn must return a scalar or shape {jnp.shape(weight)}, got {jnp.shape(losses)}")
            return jnp.sum(jnp.where(weight > 0, weight * losses, 0.0)) / jnp.sum(weight)

        @eqx.filter_jit
        def step(params, opt_state, frozen, batch, weight):
            loss, grads = jax.value_and_grad(objective)(params, frozen, batch, weight)
            params, opt_state = _update(optimizer, params, opt_state, grads, loss,
                                        lambda p: objective(p, frozen, batch, weight))  # fmt: skip
            if mesh is not None:  # keep the model replicated (the gradient is already all-reduced by XLA)
                params, opt_state = jax.lax.with_sharding_constraint((params, opt_state), self.replicated)
            return params, opt_state, loss, {}

        return step

    def epoch(self, order: np.ndarray | None) -> float:
        """One pass over the members in ``order`` (None: in turn); returns the member-weighted mean loss."""
        order = np.arange(self.n) if order is None else order
        data = self.data(eqx.combine(self.params, self.frozen)) if callable(self.data) else self.data
        dtype = jax.tree_util.tree_leaves(self.params)[0].dtype
        total, info = 0.0, {}
        for b in range(self.n_batches):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            real = idx.size
            weight = np.zeros(self.padded)
            weight[:real] = 1.0
            if self.grad_fn is None:  # custom gradients see the real members only
                idx = np.concatenate([idx, np.full(self.padded - real, idx[-1])])
            batch, weight = self.batch_fn(data, idx), jnp.asarray(weight, dtype)
            if self.mesh is not None:
                batch, weight = jax.device_put((batch, weight), self.member_sharding)
            self.params, self.opt_state, loss, info = self.step(self.params, self.opt_state, self.frozen, batch,
                                                                weight)  # fmt: skip
            trials = optax.tree_utils.tree_get(self.opt_state, "num_linesearch_steps")
            if trials is not None:  # a line search's objective evaluations (optax.lbfgs; batched: the most)
                info = {**info, "linesearch_steps": jnp.max(trials)}
            total = total + loss * real
        for key, value in info.items():
            self.history.setdefault(key, []).append(float(value))
        return float(total) / self.n

    def model_for_val(self) -> Any:
        model = eqx.combine(self.params, self.frozen)
        return _host(model) if self.mesh is not None else model

    def record(self, epoch: int, start: Any, train_loss: float, val, select: Select, patience, seconds: float) -> None:
        """Book an epoch: its losses, the model selection and early stopping."""
        if select == "last":
            self.best, self.history["best_epoch"] = self.params, epoch
        elif not self.consider(val if select == "val" else train_loss, self.params if select == "val" else start,
                               epoch):  # fmt: skip
            self.history["stopped_early"] = patience is not None and self.bad_epochs >= patience
        for key, value in (("epoch", epoch), ("train_loss", train_loss), ("val_loss", val), ("seconds", seconds)):
            self.history[key].append(value)

    def consider(self, score: float | None, params: Any, epoch: int) -> bool:
        """Keep ``params`` as the best if ``score`` improves on the best; count a bad epoch otherwise."""
        best = self.history["best_score"]
        if best is None or not math.isfinite(best) or score < best - self.min_delta:
            self.history["best_score"], self.history["best_epoch"], self.best, self.bad_epochs = score, epoch, params, 0
            return True
        self.bad_epochs += 1
        return False

    def postfix(self) -> str:
        h = self.history
        val = h["val_loss"][-1]
        return (f"loss {h['train_loss'][-1]:.4g}" + ("" if val is None else f" val {val:.4g}")
                + ("" if h["best_epoch"] is None else f" best@{h['best_epoch']}"))  # fmt: skip

    def finish(self) -> tuple[Any, dict]:
        if self.ckpt is not None:
            self.ckpt.close()
        return _uncommitted(eqx.combine(self.best, self.frozen)), self.history
