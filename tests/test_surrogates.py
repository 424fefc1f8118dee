"""Networks of ``dam.surrogates``: shapes, causality, the top-down dependency of the hierarchical LSTM, the
attention switches (against a dense reference implementation), output bounds, gradients, vmap and jit."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dam.surrogates import (
    ATTENTION,
    LSTM,
    MLP,
    HierarchicalLSTM,
    lagged_features,
    lstm_hidden,
    windowed_causal_attention,
)

T, F, S, K, H, W = 40, 3, 2, 3, 8, 6


def _inputs(seed=0, t=T):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(t, F))), jnp.asarray(rng.normal(size=(S,)))


def _hier(attention, **kw):
    return HierarchicalLSTM(F, K, H, attention=attention, window=W, static_size=S, key=jax.random.PRNGKey(1), **kw)


def _all_models():
    key = jax.random.PRNGKey(0)
    models = {f"hier-{a}": _hier(a) for a in ATTENTION}
    models["hier-no-hidden"] = _hier("both", feed_hidden=False)
    models["lstm"] = LSTM(F, H, K, static_size=S, key=key)
    models["mlp"] = MLP(F, K, n_lags=3, lag_stride=2, width=8, depth=2, static_size=S, key=key)
    return models


@pytest.fixture(scope="module")
def models():
    return _all_models()


@pytest.fixture(scope="module")
def forward():
    return eqx.filter_jit(lambda m, x, s: m(x, s))


def test_shapes_dtype_and_jit_equals_eager(models, forward):
    x, s = _inputs()
    for name, m in models.items():
        y = forward(m, x, s)
        assert y.shape == (T, K) and y.dtype == jnp.float64, name
        if name in ("hier-both", "mlp"):  # eager (op by op) is slow: two suffice
            np.testing.assert_allclose(np.asarray(y), np.asarray(m(x, s)), rtol=1e-13, atol=1e-15, err_msg=name)
    # float32 models on float32 inputs stay in float32
    m32 = HierarchicalLSTM(F, K, H, attention="both", window=W, key=jax.random.PRNGKey(1), dtype=jnp.float32)
    y32 = m32(x.astype(jnp.float32))
    assert y32.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y32)))
    with pytest.raises(ValueError, match="attention"):
        HierarchicalLSTM(F, K, H, attention="spatial", key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="static"):
        models["lstm"](x)  # built with static features, called without


def test_scan_equals_lstm_cell_steps():
    """The pre-projected scan is eqx.nn.LSTMCell applied step by step (to round-off)."""
    x, _ = _inputs()
    cell = eqx.nn.LSTMCell(F, H, key=jax.random.PRNGKey(3))
    carry, ref = (jnp.zeros(H), jnp.zeros(H)), []
    for t in range(T):
        carry = cell(x[t], carry)
        ref.append(carry[0])
    np.testing.assert_allclose(np.asarray(lstm_hidden(cell, x)), np.asarray(jnp.stack(ref)), rtol=0, atol=1e-14)


def test_causal(models, forward):
    """Changing the input at step t0 leaves every output before t0 bit-identical and changes outputs from t0."""
    x, s = _inputs()
    t0 = 23
    x2 = x.at[t0].add(1.0)
    for name, m in models.items():
        y, y2 = np.asarray(forward(m, x, s)), np.asarray(forward(m, x2, s))
        np.testing.assert_array_equal(y[:t0], y2[:t0], err_msg=name)
        assert np.all(np.abs(y[t0] - y2[t0]) > 0), name
        if name != "mlp":  # recurrent: the perturbation persists beyond any window
            assert np.all(np.abs(y[-1] - y2[-1]) > 0), name


def test_hierarchical_dependency(forward):
    """Perturbing block 1 changes layers 1 and 2 but not layer 0; perturbing block 2 changes only layer 2;
    perturbing block 0 changes all (the information flows top down only)."""
    x, s = _inputs()
    for attention in ATTENTION:
        m = _hier(attention)
        y = np.asarray(forward(m, x, s))
        for k in range(K):
            bumped = eqx.tree_at(lambda mm, k=k: mm.cells[k].bias, m, m.cells[k].bias + 0.1)
            yk = np.asarray(forward(bumped, x, s))
            np.testing.assert_array_equal(yk[:, :k], y[:, :k], err_msg=f"{attention}, block {k}")
            assert np.all(np.max(np.abs(yk[:, k:] - y[:, k:]), axis=0) > 1e-6), (attention, k)
    # with feed_hidden=False the link is the prediction alone: its Jacobian path is still non-zero
    m = _hier("none", feed_hidden=False)
    jac = jax.jacrev(lambda b: m.__class__.__call__(eqx.tree_at(lambda mm: mm.heads[0].bias, m, b), x, s))(
        m.heads[0].bias
    )
    assert np.all(np.abs(np.asarray(jac)[:, 1:]) > 0)


def _dense_reference(q, k, v, window):
    """Dense (T, T) attention with a causal band mask: the definition the windowed version must match."""
    n, d = q.shape
    lag = jnp.arange(n)[:, None] - jnp.arange(n)[None, :]
    scores = jnp.where((lag >= 0) & (lag < window), q @ k.T / math.sqrt(d), -jnp.inf)
    a = jax.nn.softmax(scores, axis=-1)
    return a @ v, a


def test_windowed_attention_matches_dense_reference():
    rng = np.random.default_rng(4)
    q, k, v = (jnp.asarray(rng.normal(size=(30, 5))) for _ in range(3))
    ctx, w = windowed_causal_attention(q, k, v, 7)
    ref_ctx, ref_a = _dense_reference(q, k, v, 7)
    np.testing.assert_allclose(np.asarray(ctx), np.asarray(ref_ctx), rtol=1e-13, atol=1e-14)
    t = np.arange(30)
    for lag in range(7):  # w[t, lag] is the dense weight of step t - lag
        ok = t >= lag
        np.testing.assert_allclose(np.asarray(w)[ok, lag], np.asarray(ref_a)[t[ok], t[ok] - lag], rtol=1e-13)
        np.testing.assert_array_equal(np.asarray(w)[~ok, lag], 0.0)


def test_attention_switches():
    x, s = _inputs()
    outs = {}
    for attention in ATTENTION:
        m = _hier(attention)
        d = m.details(x, s)
        outs[attention] = np.asarray(d.y)
        assert d.hidden.shape == (K, T, H)
        assert (m.temporal is not None) == (attention in ("temporal", "both"))
        assert (m.layers is not None) == (attention in ("layers", "both"))
        if m.temporal is None:
            assert d.temporal_weights is None
        else:
            tw = np.asarray(d.temporal_weights)
            assert tw.shape == (K, T, W)
            np.testing.assert_allclose(tw.sum(-1), 1.0, rtol=1e-13)
            assert np.all(tw[:, 2, 3:] == 0.0)  # step 2 cannot look 3 or more steps back
        if m.layers is None:
            assert d.layer_weights is None
        else:
            lw = np.asarray(d.layer_weights)
            assert lw.shape == (K, T, K)
            np.testing.assert_allclose(lw.sum(-1), 1.0, rtol=1e-13)
            for k in range(K):
                assert np.all(lw[k, :, k + 1 :] == 0.0)  # only layers above and itself
            np.testing.assert_array_equal(lw[0, :, 0], 1.0)
    for a in ATTENTION:
        for b in ATTENTION:
            if a < b:
                assert np.max(np.abs(outs[a] - outs[b])) > 1e-4, (a, b)


def test_output_bounds():
    lo, hi = (0.05, 0.10, 0.15), (0.40, 0.45, 0.50)
    x, s = _inputs()
    for m in (
        _hier("both", out_bounds=(lo, hi)),
        LSTM(F, H, K, static_size=S, out_bounds=(lo, hi), key=jax.random.PRNGKey(0)),
    ):
        for scale in (1.0, 1e3):  # extreme inputs saturate the sigmoid but never leave the bounds
            y = np.asarray(m(scale * x, s))
            assert np.all(y >= np.asarray(lo)) and np.all(y <= np.asarray(hi))
    with pytest.raises(ValueError, match="lo < hi"):
        _hier("none", out_bounds=(0.5, 0.1))


def test_gradients_finite_and_nonzero(models):
    """Every parameter leaf gets a finite gradient, non-zero except the query/key of layer 0's attention over
    layers (a softmax over the single item 'itself' is constant)."""
    x, s = _inputs()
    y_target = jnp.asarray(np.random.default_rng(5).normal(size=(T, K)))

    @eqx.filter_jit
    def grads(m):
        return eqx.filter_grad(lambda m: jnp.mean((m(x, s) - y_target) ** 2))(m)

    for name in ("hier-both", "hier-no-hidden", "lstm", "mlp"):  # every parameter kind; 'both' has all attentions
        m = models[name]
        g = grads(m)
        flat = jax.tree_util.tree_flatten_with_path(eqx.filter(g, eqx.is_array))[0]
        for path, leaf in flat:
            label = jax.tree_util.keystr(path)
            assert np.all(np.isfinite(np.asarray(leaf))), (name, label)
            if "layers[0]" in label and (".query" in label or ".key" in label):
                assert float(jnp.max(jnp.abs(leaf))) == 0.0
                continue
            assert float(jnp.max(jnp.abs(leaf))) > 0.0, (name, label)
    # and with respect to the inputs (as needed when a network sits inside a physics graph)
    gx = jax.grad(lambda x: jnp.sum(models["hier-both"](x, s)))(x)
    assert np.all(np.isfinite(np.asarray(gx))) and float(jnp.max(jnp.abs(gx))) > 0


def test_vmap_over_sites(models):
    xs = jnp.stack([_inputs(seed)[0] for seed in range(4)])
    ss = jnp.stack([_inputs(seed)[1] for seed in range(4)])
    for name in ("hier-both", "lstm", "mlp"):
        m = models[name]
        batched = eqx.filter_jit(lambda m, xs, ss: jax.vmap(m)(xs, ss))(m, xs, ss)
        assert batched.shape == (4, T, K)
        for i in range(4):
            np.testing.assert_allclose(
                np.asarray(batched[i]), np.asarray(m(xs[i], ss[i])), rtol=1e-12, atol=1e-14, err_msg=name
            )


def test_lagged_features():
    x = jnp.arange(12.0).reshape(6, 2)
    lag = np.asarray(lagged_features(x, 2, 2))
    assert lag.shape == (6, 6)
    np.testing.assert_array_equal(lag[:, :2], np.asarray(x))
    np.testing.assert_array_equal(lag[4, 2:4], np.asarray(x[2]))  # lag 1 = 2 steps back
    np.testing.assert_array_equal(lag[4, 4:6], np.asarray(x[0]))  # lag 2 = 4 steps back
    np.testing.assert_array_equal(lag[1, 2:6], np.concatenate([np.asarray(x[0])] * 2))  # edge padding
