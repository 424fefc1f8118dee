"""Observation targets of calibration: observations (arrays) lined up with the model steps (each sensor read
from the model layers, the model averaged onto coarser observation periods), padded so that sites share one
compiled loss (:meth:`ObservationTarget.padded`)."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ObservationTarget", "moisture_kind"]


def moisture_kind(liquid) -> str:
    """``"liquid"`` / ``"total"`` where all sensors (``liquid`` per sensor) see liquid / total water, else
    ``"both"``."""
    liquid = np.asarray(liquid, bool)
    return "liquid" if liquid.all() and liquid.size else "total" if not liquid.any() else "both"


class ObservationTarget(eqx.Module):
    """Observations lined up with the model steps of a window.

    ``values`` (n_obs, n_sensors) observed series (NaN missing); ``segment`` (T,) the observation period of
    each model step (``n_obs`` for steps outside the window or any period); ``counts`` (n_obs,) model steps
    per period; ``weights`` (n_sensors,) sensor weights; static ``layer_index`` the model layer that contains
    each sensor and ``depths`` the sensor depths (m); ``layer_weights`` (n_sensors, K) how each sensor reads the
    modelled moisture series, K = N layers of the water the sensors see or 2N (total, then liquid) where they
    see different water (static ``moisture``: ``"total"``, ``"liquid"`` or ``"both"``, see :func:`moisture_kind`);
    None reads the layer of ``layer_index``.
    """

    values: jax.Array
    segment: jax.Array
    counts: jax.Array
    weights: jax.Array
    layer_index: tuple[int, ...] = eqx.field(static=True)
    depths: tuple[float, ...] = eqx.field(static=True)
    n_obs: int = eqx.field(static=True)
    layer_weights: jax.Array | None = None
    moisture: str = eqx.field(static=True, default="total")

    def model_at_obs(self, series: jax.Array) -> jax.Array:
        """Model (T, K) -> (n_obs, n_sensors): what each sensor reads, averaged over each observation period."""
        if self.layer_weights is None:
            x = series[:, jnp.asarray(self.layer_index)]
        else:
            x = series @ self.layer_weights.T.astype(series.dtype)
        sums = jax.ops.segment_sum(x, self.segment, num_segments=self.n_obs + 1)[: self.n_obs]
        c = self.counts[:, None]
        return jnp.where(c > 0, sums / jnp.where(c > 0, c, 1.0), jnp.nan)

    def padded(self, n_obs: int, n_sensors: int) -> ObservationTarget:
        """The same target with ``n_obs`` periods and ``n_sensors`` sensors, the added ones empty (NaN values, no
        model steps, weight 0), and no static sensor positions (``layer_index`` and ``depths`` emptied; they are
        read through ``layer_weights``, which it needs): targets of sites with other sensors and observation
        steps then share one compiled loss. The loss is unchanged but for the order of its sums (round-off)."""
        if self.layer_weights is None:
            raise ValueError("only a target with layer_weights can be padded")
        extra_obs, extra_sensors = n_obs - self.n_obs, n_sensors - self.values.shape[1]
        if extra_obs < 0 or extra_sensors < 0:
            raise ValueError(f"cannot pad {self.values.shape} observations to ({n_obs}, {n_sensors})")
        pad = lambda x, rows, cols, v: jnp.pad(x, ((0, rows), (0, cols)), constant_values=v)  # noqa: E731
        return ObservationTarget(
            values=pad(self.values, extra_obs, extra_sensors, jnp.nan),
            segment=jnp.where(self.segment == self.n_obs, n_obs, self.segment),
            counts=jnp.pad(self.counts, (0, extra_obs)), weights=jnp.pad(self.weights, (0, extra_sensors)),
            layer_index=(), depths=(), n_obs=n_obs, layer_weights=pad(self.layer_weights, extra_sensors, 0, 0.0),
            moisture=self.moisture,
        )  # fmt: skip

    @classmethod
    def aligned(
        cls,
        values: np.ndarray,
        obs_times: np.ndarray,
        model_times: np.ndarray,
        dt_model_s: float,
        steps: tuple[int, int],
        layer_index: Sequence[int],
        depths: Sequence[float],
        weights: Sequence[float] | None = None,
        *,
        layer_weights: np.ndarray | None = None,
        liquid: Sequence[bool] | bool = False,
    ) -> ObservationTarget:
        """Observations ``values`` (n_times, n_sensors) at ``obs_times`` lined up with the model steps ending at
        ``model_times`` (datetime64), scored over the steps ``[steps[0], steps[1])``. Each sensor reads the layers
        with ``layer_weights`` (n_sensors, N) (default its ``layer_index`` layer) of liquid water where ``liquid``
        (one value or one per sensor), else of total water.

        Observations as fine as the model or finer are taken at the model step ends; coarser ones are compared
        with the model mean over their period ``(t_obs - dt_obs, t_obs]``, only where the steps cover the whole
        period.
        """
        i0, i1 = steps
        values = np.asarray(values, float)
        dt_model = np.timedelta64(int(round(dt_model_s * 1e9)), "ns")
        dt_obs = np.median(np.diff(obs_times)) if len(obs_times) > 1 else dt_model
        segment = np.full(len(model_times), -1, np.int64)
        if dt_obs <= dt_model:  # observations at the model step ends
            pos = np.searchsorted(obs_times, model_times)
            hit = (pos < len(obs_times)) & (obs_times[np.minimum(pos, len(obs_times) - 1)] == model_times)
            use = np.flatnonzero(hit[i0:i1]) + i0
            obs_vals = values[pos[use]]
            segment[use] = np.arange(len(use))
        else:  # model mean over each observation period
            per = np.searchsorted(obs_times, model_times, side="left")  # first obs time >= model time
            inside = (per < len(obs_times)) & (model_times > obs_times[np.minimum(per, len(obs_times) - 1)] - dt_obs)
            seg = np.where(inside, per, -1)
            seg[:i0] = -1
            seg[i1:] = -1
            periods, inverse = np.unique(seg[seg >= 0], return_inverse=True)
            segment[seg >= 0] = inverse
            counts = np.bincount(inverse, minlength=len(periods))
            obs_vals = np.where((counts == int(round(dt_obs / dt_model)))[:, None], values[periods], np.nan)
        n_obs = obs_vals.shape[0]
        segment = np.where(segment < 0, n_obs, segment)
        counts = np.bincount(segment, minlength=n_obs + 1)[:n_obs].astype(float)
        w = np.ones(len(depths)) if weights is None else np.asarray(weights, float)
        liquid = np.broadcast_to(np.asarray(liquid, bool), (len(depths),))
        moisture = moisture_kind(liquid)
        layer_w = None if layer_weights is None else np.asarray(layer_weights, float)
        if moisture == "both":  # total-water sensors read the first N columns, liquid-water sensors the next N
            if layer_w is None:
                raise ValueError("sensors that see different water need layer_weights")
            layer_w = np.concatenate([np.where(liquid[:, None], 0.0, layer_w), np.where(liquid[:, None], layer_w, 0.0)],
                                     axis=1)  # fmt: skip
        return cls(
            values=jnp.asarray(obs_vals), segment=jnp.asarray(segment), counts=jnp.asarray(counts),
            weights=jnp.asarray(w), layer_index=tuple(int(k) for k in layer_index),
            depths=tuple(float(d) for d in depths), n_obs=int(n_obs),
            layer_weights=None if layer_w is None else jnp.asarray(layer_w), moisture=moisture,
        )  # fmt: skip
