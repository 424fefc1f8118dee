"""Hierarchical LSTM with attention for layered soil moisture: one recurrent block per soil layer, top down.

At every step t, the block of layer k reads ``[x_t, static, y_{k-1,t}, h_{k-1,t}]`` (the forcing, the site's
static features, the prediction of the layer above and, with ``feed_hidden``, its hidden state; layer 0 reads
``[x_t, static]``). Two optional attentions refine each layer's hidden state before its linear head:

* ``"temporal"``: scaled dot-product attention of the layer's hidden state ``h_{k,t}`` (query) over its own
  last ``window`` hidden states ``h_{k,t-window+1} .. h_{k,t}`` (keys and values). Why hidden states and not the
  raw input window: the hidden states already carry the long memory and, for deep layers, the signal
  processed by the layers above, so attention can pick e.g. the state at the time a wetting front arrived;
  the raw input window would only see forcing of the last ``window`` steps, shorter than the lags of deep
  layers. It is applied on top of the recurrence (it does not feed back into the cell), so the recurrence
  stays a plain LSTM scan and the attention of all steps is computed at once with a causal band mask
  (blocked matrix products, O(T * window * attention_size) work; no window buffer in the scan carry, whose
  per-step copies would otherwise be stored for the backward pass).
* ``"layers"``: layer k's hidden state (query) attends over the hidden states of layers 0 .. k at the same step
  (the layers above and itself; including itself gives layer 0 a defined context and lets any layer put its
  weight on itself when the layers above are uninformative).

``"both"`` uses the two, ``"none"`` neither (plain hierarchical LSTM). The head of layer k maps
``[h_{k,t}, temporal context, layer context]`` to ``y_{k,t}``, optionally squashed into physical bounds.

Because layer k at step t depends only on layer k at steps < t and layers < k at steps <= t, the layers are
computed one after the other, each over the whole sequence (one ``lax.scan`` per layer): this is the same
function as a step-by-step sweep through the layers, and causal (the output at t uses inputs at steps <= t).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from .lstm import Bounds, init_lstm_cell, lstm_hidden, normalise_bounds, squash_to_bounds, with_static

ATTENTION = ("none", "temporal", "layers", "both")


def windowed_causal_attention(q: Array, k: Array, v: Array, window: int) -> tuple[Array, Array]:
    """Each step's query over the keys/values of its last ``window`` steps (lags 0 .. window-1).

    Computed in blocks of ``window`` queries, each against the keys of its own and the previous block
    (2 x window keys, lags outside 0 .. window-1 masked): batched matrix products, O(T * window * d) work and
    memory, and cheap to differentiate (4x faster on CPU than gathering the (T, window, d) lagged keys).

    Parameters
    ----------
    q, k, v
        Queries, keys and values, shape (T, d) each.
    window
        Look-back length in steps (lag 0 is the step itself).

    Returns
    -------
    context
        (T, d): ``sum_l a[t, l] v[t - l]``.
    weights
        (T, window): softmax weights ``a[t, l]`` over lags; lags reaching before the sequence start get 0.
    """
    n, d = q.shape
    c = window
    n_blocks = -(-n // c)
    tail = n_blocks * c - n
    blocks = lambda a, front: jnp.pad(a, ((front, tail), (0, 0))).reshape(-1, c, d)  # noqa: E731
    qb, kb, vb = blocks(q, 0), blocks(k, c), blocks(v, c)  # keys/values get one block of zeros in front
    kk = jnp.concatenate([kb[:-1], kb[1:]], axis=1)  # (blocks, 2c, d): previous and own block
    vv = jnp.concatenate([vb[:-1], vb[1:]], axis=1)
    row, col = jnp.arange(c)[:, None], jnp.arange(2 * c)[None, :]
    lag = row + c - col  # query row r of block b is step b*c + r; key column j is step b*c + j - c
    key_step = jnp.arange(n_blocks)[:, None, None] * c + col - c
    valid = (lag >= 0) & (lag < window) & (key_step >= 0)
    scores = jnp.einsum("brd,bjd->brj", qb, kk) / math.sqrt(d)
    a = jax.nn.softmax(jnp.where(valid, scores, -jnp.inf), axis=-1)
    a = jnp.where(valid, a, 0.0)
    context = jnp.einsum("brj,bjd->brd", a, vv).reshape(-1, d)[:n]
    by_lag = jnp.broadcast_to(row + c - jnp.arange(window)[None, :], (n_blocks, c, window))
    weights = jnp.take_along_axis(a, by_lag, axis=-1).reshape(-1, window)[:n]
    return context, weights


class TemporalAttention(eqx.Module):
    """Query/key/value projections (no bias) for attention of a layer over its own recent hidden states."""

    query: eqx.nn.Linear
    key: eqx.nn.Linear
    value: eqx.nn.Linear
    window: int = eqx.field(static=True)

    def __init__(self, hidden_size: int, attention_size: int, window: int, *, key: Array, dtype=None):
        kq, kk, kv = jax.random.split(key, 3)
        self.query = eqx.nn.Linear(hidden_size, attention_size, use_bias=False, dtype=dtype, key=kq)
        self.key = eqx.nn.Linear(hidden_size, attention_size, use_bias=False, dtype=dtype, key=kk)
        self.value = eqx.nn.Linear(hidden_size, attention_size, use_bias=False, dtype=dtype, key=kv)
        self.window = window

    def __call__(self, h: Array) -> tuple[Array, Array]:
        """Context (T, attention_size) and weights (T, window) for hidden states ``h`` (T, H)."""
        proj = lambda lin: h @ lin.weight.T  # noqa: E731
        return windowed_causal_attention(proj(self.query), proj(self.key), proj(self.value), self.window)


class LayerAttention(eqx.Module):
    """Query/key/value projections (no bias) for attention of layer k over layers 0 .. k at the same step."""

    query: eqx.nn.Linear
    key: eqx.nn.Linear
    value: eqx.nn.Linear

    def __init__(self, hidden_size: int, attention_size: int, *, key: Array, dtype=None):
        kq, kk, kv = jax.random.split(key, 3)
        self.query = eqx.nn.Linear(hidden_size, attention_size, use_bias=False, dtype=dtype, key=kq)
        self.key = eqx.nn.Linear(hidden_size, attention_size, use_bias=False, dtype=dtype, key=kk)
        self.value = eqx.nn.Linear(hidden_size, attention_size, use_bias=False, dtype=dtype, key=kv)

    def __call__(self, h: Array, above: list[Array]) -> tuple[Array, Array]:
        """Context (T, attention_size) and weights (T, k + 1) of ``h`` (T, H) over ``[*above, h]``."""
        stack = jnp.stack([*above, h], axis=1)  # (T, k + 1, H)
        q = h @ self.query.weight.T
        keys, values = stack @ self.key.weight.T, stack @ self.value.weight.T
        # elementwise products and sums: k + 1 is tiny, so batched matrix products would waste the CPU
        scores = jnp.sum(q[:, None, :] * keys, axis=-1) / math.sqrt(q.shape[-1])
        weights = jax.nn.softmax(scores, axis=-1)
        return jnp.sum(weights[..., None] * values, axis=1), weights


class HierarchicalOutput(eqx.Module):
    """Everything :meth:`HierarchicalLSTM.details` computes for one sequence.

    Attributes
    ----------
    y
        (T, n_layers) predictions (in the units of the targets; within ``out_bounds`` when given).
    hidden
        (n_layers, T, hidden_size) LSTM hidden states per layer.
    temporal_weights
        (n_layers, T, window) attention weights over lags 0 .. window-1, or None.
    layer_weights
        (n_layers, T, n_layers) weights of layer k over layers j <= k (zero for j > k), or None.
    """

    y: Array
    hidden: Array
    temporal_weights: Array | None
    layer_weights: Array | None


class HierarchicalLSTM(eqx.Module):
    """One LSTM block per soil layer, top down, each fed the prediction (and hidden state) of the layer above.

    ``model(x, static=None)`` maps inputs (T, in_size) and optional static features (static_size,) to
    predictions (T, n_layers); ``model.details(x, static)`` also returns hidden states and attention weights.
    ``jax.vmap(model)`` runs a batch of sites. See the module docstring for the architecture.

    Parameters
    ----------
    in_size
        Input (forcing) features per step.
    n_layers
        Soil layers (recurrent blocks and outputs).
    hidden_size
        Width of each block's LSTM.
    attention
        ``"temporal"``, ``"layers"``, ``"both"`` or ``"none"``.
    window
        Look-back of the temporal attention, in steps (lag 0 = the step itself).
    key
        PRNG key for the initial weights.
    static_size
        Static (per-site) features appended to every block's input at every step (0: none).
    feed_hidden
        Also feed layer k-1's hidden state (not only its prediction) to layer k.
    attention_size
        Width of queries/keys/values (default ``hidden_size``).
    out_bounds
        Optional ``(lo, hi)``, scalars or one value per layer, in the units of the targets (e.g. wilting point
        and porosity when the targets are unnormalised volumetric moisture): sigmoid squash into (lo, hi).
    forget_bias
        Added to every forget-gate bias at initialisation.
    """

    cells: tuple[eqx.nn.LSTMCell, ...]
    heads: tuple[eqx.nn.Linear, ...]
    temporal: tuple[TemporalAttention, ...] | None
    layers: tuple[LayerAttention, ...] | None
    n_layers: int = eqx.field(static=True)
    static_size: int = eqx.field(static=True)
    attention: str = eqx.field(static=True)
    window: int = eqx.field(static=True)
    feed_hidden: bool = eqx.field(static=True)
    out_bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        n_layers: int,
        hidden_size: int,
        *,
        attention: str = "temporal",
        window: int = 32,
        key: Array,
        static_size: int = 0,
        feed_hidden: bool = True,
        attention_size: int | None = None,
        out_bounds: Bounds | None = None,
        forget_bias: float = 1.0,
        dtype=None,
    ):
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
        if n_layers < 1 or hidden_size < 1 or window < 1:
            raise ValueError(f"need n_layers, hidden_size, window >= 1, got {n_layers}, {hidden_size}, {window}")
        d = hidden_size if attention_size is None else attention_size
        use_t, use_l = attention in ("temporal", "both"), attention in ("layers", "both")
        keys = jax.random.split(key, (n_layers, 4))
        base = in_size + static_size
        self.cells = tuple(
            init_lstm_cell(
                base + (k > 0) * (1 + feed_hidden * hidden_size),
                hidden_size,
                forget_bias=forget_bias,
                key=keys[k, 0],
                dtype=dtype,
            )
            for k in range(n_layers)
        )
        head_in = hidden_size + d * (use_t + use_l)
        self.heads = tuple(eqx.nn.Linear(head_in, 1, dtype=dtype, key=keys[k, 1]) for k in range(n_layers))
        self.temporal = (
            tuple(TemporalAttention(hidden_size, d, window, key=keys[k, 2], dtype=dtype) for k in range(n_layers))
            if use_t
            else None
        )
        self.layers = (
            tuple(LayerAttention(hidden_size, d, key=keys[k, 3], dtype=dtype) for k in range(n_layers))
            if use_l
            else None
        )
        self.n_layers, self.static_size, self.attention = n_layers, static_size, attention
        self.window, self.feed_hidden = window, feed_hidden
        self.out_bounds = normalise_bounds(out_bounds, n_layers)

    def details(self, x: Array, static: Array | None = None) -> HierarchicalOutput:
        """Predictions, hidden states and attention weights for inputs ``x`` (T, in_size)."""
        base = with_static(x, static, self.static_size)
        bounds = None if self.out_bounds is None else tuple(self.out_bounds)
        hs, ys, t_weights, l_weights = [], [], [], []
        for k in range(self.n_layers):
            inp = base if k == 0 else jnp.concatenate([base, ys[-1], *([hs[-1]] if self.feed_hidden else [])], -1)
            h = lstm_hidden(self.cells[k], inp)
            parts = [h]
            if self.temporal is not None:
                ctx, w = self.temporal[k](h)
                parts.append(ctx)
                t_weights.append(w)
            if self.layers is not None:
                ctx, w = self.layers[k](h, hs)
                parts.append(ctx)
                l_weights.append(jnp.pad(w, ((0, 0), (0, self.n_layers - k - 1))))
            head = self.heads[k]
            z = jnp.concatenate(parts, -1) @ head.weight.T + head.bias
            layer_bounds = None if bounds is None else ((bounds[0][k],), (bounds[1][k],))
            ys.append(squash_to_bounds(z, layer_bounds))
            hs.append(h)
        return HierarchicalOutput(
            y=jnp.concatenate(ys, -1),
            hidden=jnp.stack(hs),
            temporal_weights=jnp.stack(t_weights) if t_weights else None,
            layer_weights=jnp.stack(l_weights) if l_weights else None,
        )

    def __call__(self, x: Array, static: Array | None = None) -> Array:
        """Predictions (T, n_layers) for inputs ``x`` (T, in_size) and static features (static_size,)."""
        return self.details(x, static).y
