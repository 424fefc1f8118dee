"""Sequence data for networks: chronological splits, per-feature normalisation, windows and sliding prediction."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Normaliser", "chronological_split", "gather_windows", "sliding_predict", "window_starts"]


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

    An equinox module, so it can sit inside a model and be saved with it; :func:`dam.training.fit` never trains it (see
    :func:`dam.training.trainable_filter`). Fit it on the training period only.

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
