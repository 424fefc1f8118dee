"""Neural networks of dam (pure equinox; they know nothing of physics or training).

Every network maps a sequence of inputs ``x`` (T, in_size) and optional per-site static features
(static_size,) to outputs (T, out): ``model(x, static)``; ``jax.vmap(model)`` runs a batch of sites. All are
causal (the output at step t depends only on inputs at steps <= t). See docs/networks.md.

- :class:`LSTM`: one LSTM block and a linear head.
- :class:`MLP`: per-step MLP on the current and a fixed number of lagged inputs (no recurrence).
- :class:`HierarchicalLSTM`: one LSTM block per soil layer, each fed the layer above, with optional temporal
  and across-layer attention.
"""

from .hierarchical import (
    ATTENTION,
    HierarchicalLSTM,
    HierarchicalOutput,
    LayerAttention,
    TemporalAttention,
    windowed_causal_attention,
)
from .lstm import LSTM, lstm_hidden, squash_to_bounds
from .mlp import MLP, lagged_features

__all__ = [
    "ATTENTION",
    "HierarchicalLSTM",
    "HierarchicalOutput",
    "LSTM",
    "LayerAttention",
    "MLP",
    "TemporalAttention",
    "lagged_features",
    "lstm_hidden",
    "squash_to_bounds",
    "windowed_causal_attention",
]
