"""The training engine ``dam.training``: splits, normalisation, windows, ``fit`` (learning, determinism,
early stopping, checkpoint/resume bit for bit) and data-parallel training on 8 emulated CPU devices equal to
single-device training (float64, 1e-12), including batches that do not divide the device count."""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dam.sequences import Normaliser, chronological_split, gather_windows, sliding_predict, window_starts
from dam.sharding import column_mesh
from dam.surrogates import LSTM, HierarchicalLSTM
from dam.training import fit, load_model, per_member, save_model

N, T, F = 13, 48, 3  # 13 members: divides neither the batch sizes used nor the 8 devices


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))]


def _max_rel_diff(a, b):
    return max(
        float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300))) if x.size else 0.0
        for x, y in zip(_leaves(a), _leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def toy():
    """Targets: a leaky running sum of the first input (a memory task an LSTM can learn)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, T, F))
    y = np.zeros((N, T, 1))
    for t in range(1, T):
        y[:, t, 0] = 0.9 * y[:, t - 1, 0] + 0.3 * x[:, t, 0]
    return {"x": x, "y": y}


class Wrapped(eqx.Module):
    """A network with its input normaliser inside (the normaliser must not be trained)."""

    norm: Normaliser
    net: eqx.Module

    def __call__(self, x):
        return self.net(self.norm.apply(x))


def _model(toy, hidden=8):
    return Wrapped(Normaliser.fit(toy["x"]), LSTM(F, hidden, 1, key=jax.random.PRNGKey(0)))


def member_loss(model, batch):
    pred = jax.vmap(model)(batch["x"])
    return jnp.mean((pred - batch["y"]) ** 2, axis=(1, 2))


def test_chronological_split():
    train, val, test = chronological_split(100)
    assert (train, val, test) == (slice(0, 72), slice(72, 80), slice(80, 100))
    train, val, test = chronological_split(17472)  # Bondville 1998, half-hourly
    assert train.stop == val.start and val.stop == test.start == 13977 and test.stop == 17472
    assert val.stop - val.start == 1397
    with pytest.raises(ValueError):
        chronological_split(100, train_frac=1.5)


def test_normaliser_nan_aware_and_invertible():
    rng = np.random.default_rng(1)
    x = rng.normal(loc=[1.0, -2.0, 5.0], scale=[0.5, 3.0, 1.0], size=(4, 50, 3))
    x[0, :10, 1] = np.nan
    x[..., 2] = 5.0  # constant feature: centred only
    norm = Normaliser.fit(x)
    np.testing.assert_allclose(np.asarray(norm.mean), np.nanmean(x.reshape(-1, 3), axis=0), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(norm.std)[:2], np.nanstd(x.reshape(-1, 3), axis=0)[:2], rtol=1e-13)
    assert float(norm.std[2]) == 1.0
    z = norm.apply(jnp.asarray(x))
    assert np.all(np.isnan(np.asarray(z)[0, :10, 1]))
    np.testing.assert_allclose(np.nanmean(np.asarray(z)[..., :2].reshape(-1, 2), axis=0), 0.0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(norm.invert(z)), x, rtol=1e-14, atol=1e-14)
    with pytest.warns(RuntimeWarning, match="no finite"):
        Normaliser.fit(np.full((5, 2), np.nan))


def test_windows():
    starts = window_starts(slice(10, 50), 16, 10)
    np.testing.assert_array_equal(starts, [10, 20, 30, 34])  # last window ends exactly at the span end
    series = np.arange(2 * 60 * 2.0).reshape(2, 60, 2)
    w = gather_windows({"a": series}, np.array([1, 0]), np.array([5, 40]), 16)["a"]
    assert w.shape == (2, 16, 2)
    np.testing.assert_array_equal(w[0], series[1, 5:21])
    np.testing.assert_array_equal(w[1], series[0, 40:56])
    with pytest.raises(ValueError):
        window_starts(slice(0, 10), 16, 4)


def test_sliding_predict_lookback():
    """With predict = running sum inside the window, the output minus 1 is the look-back used at each step:
    the whole history in the first window, then at least length - keep steps, never more than length - 1."""
    x = jnp.ones((103, 1))
    t = np.arange(103)
    for length, keep in [(20, 5), (20, 1), (20, 7), (20, 20), (103, 7)]:
        lookback = np.asarray(sliding_predict(lambda w: jnp.cumsum(w, axis=0), x, length, keep))[:, 0] - 1
        np.testing.assert_array_equal(lookback[:length], t[:length])
        assert np.all(lookback[length:] >= length - keep) and np.all(lookback[length:] <= length - 1)
    # causal: it is the model's own output where the look-back covers the whole series
    m = LSTM(F, 4, 2, key=jax.random.PRNGKey(0))
    xs = jnp.asarray(np.random.default_rng(2).normal(size=(30, F)))
    np.testing.assert_allclose(np.asarray(sliding_predict(m, xs, 30, 10)), np.asarray(m(xs)), rtol=1e-14)
    with pytest.raises(ValueError):
        sliding_predict(m, xs, 40, 10)


def test_fit_learns_keeps_normaliser_and_is_deterministic(toy, tmp_path):
    model = _model(toy)
    kw = dict(epochs=8, batch_size=4, learning_rate=3e-2, progress=False)
    a, ha = fit(model, member_loss, toy, seed=3, **kw)
    b, hb = fit(model, member_loss, toy, seed=3, **kw)
    c, _ = fit(model, member_loss, toy, seed=4, **kw)
    first_loss = float(jnp.mean(member_loss(model, toy)))
    assert ha["train_loss"][-1] < 0.3 * first_loss, (first_loss, ha["train_loss"])
    assert float(jnp.mean(member_loss(a, toy))) < 0.3 * first_loss
    for x, y in zip(_leaves(a), _leaves(b), strict=True):  # same seed: bit for bit
        np.testing.assert_array_equal(x, y)
    assert ha["train_loss"] == hb["train_loss"]
    assert _max_rel_diff(a.net, c.net) > 1e-6  # another seed: another shuffle
    np.testing.assert_array_equal(np.asarray(a.norm.mean), np.asarray(model.norm.mean))
    np.testing.assert_array_equal(np.asarray(a.norm.std), np.asarray(model.norm.std))
    # the model file round-trips, normaliser included
    save_model(tmp_path / "model.eqx", a)
    back = load_model(tmp_path / "model.eqx", _model(toy))
    for x, y in zip(_leaves(a), _leaves(back), strict=True):
        np.testing.assert_array_equal(x, y)


def test_resume_after_kill_equals_straight_run(toy, tmp_path):
    """4 epochs straight == 2 epochs, 'kill', a fresh call resuming 2 more: parameters bit for bit."""
    kw = dict(
        epochs=4,
        batch_size=5,
        learning_rate=1e-2,
        progress=False,
        seed=7,
        val_fn=eqx.filter_jit(lambda m: jnp.mean(member_loss(m, toy))),
    )
    straight, hs = fit(_model(toy), member_loss, toy, checkpoint_dir=tmp_path / "a", **kw)
    _, h1 = fit(_model(toy), member_loss, toy, checkpoint_dir=tmp_path / "b", stop_after=2, **kw)
    assert h1["epoch"] == [0, 1]
    resumed, hr = fit(_model(toy), member_loss, toy, checkpoint_dir=tmp_path / "b", **kw)
    assert hr["resumed_from"] == 2 and hr["epoch"] == [0, 1, 2, 3]
    for x, y in zip(_leaves(straight), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(x, y)
    assert hr["train_loss"] == hs["train_loss"] and hr["val_loss"] == hs["val_loss"]
    assert hr["best_epoch"] == hs["best_epoch"]
    # a finished run called again does no more work and returns the same model
    again, h3 = fit(_model(toy), member_loss, toy, checkpoint_dir=tmp_path / "b", **kw)
    assert h3["resumed_from"] == 4
    for x, y in zip(_leaves(straight), _leaves(again), strict=True):
        np.testing.assert_array_equal(x, y)
    # a checkpoint of another model structure is refused
    other = Wrapped(Normaliser.fit(toy["x"]), LSTM(F, 5, 1, key=jax.random.PRNGKey(0)))
    with pytest.raises(ValueError, match="another model"):
        fit(other, member_loss, toy, checkpoint_dir=tmp_path / "b", **kw)


def test_unreadable_newest_checkpoint_falls_back_to_the_previous(toy, tmp_path):
    """Every file of the newest checkpoint truncated to half (a disk filled or a copy cut short): the run warns,
    moves it aside, resumes from the previous checkpoint and still ends bit for bit as an uninterrupted run."""
    kw = dict(epochs=4, batch_size=5, learning_rate=1e-2, progress=False, seed=7)
    straight, hs = fit(_model(toy), member_loss, toy, **kw)
    ckpt = tmp_path / "ckpt"
    fit(_model(toy), member_loss, toy, checkpoint_dir=ckpt, stop_after=3, **kw)
    assert sorted(int(d.name) for d in ckpt.iterdir() if d.name.isdigit()) == [1, 2]  # after epochs 2 and 3
    for f in (ckpt / "2").rglob("*"):
        if f.is_file():
            os.truncate(f, f.stat().st_size // 2)
    with pytest.warns(RuntimeWarning, match="checkpoint 2 .* unreadable .*falling back to checkpoint 1"):
        resumed, hr = fit(_model(toy), member_loss, toy, checkpoint_dir=ckpt, **kw)
    assert (tmp_path / "ckpt.unreadable" / "2").is_dir()
    assert hr["resumed_from"] == 2 and hr["epoch"] == [0, 1, 2, 3]
    assert hr["train_loss"] == hs["train_loss"]
    for x, y in zip(_leaves(straight), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(x, y)


def test_select_train_keeps_the_parameters_of_the_lowest_full_batch_loss(toy):
    """``select="train"`` with a custom full-batch gradient (as calibration uses): the parameters returned are
    those whose loss was the lowest evaluated, and ``info`` is kept per epoch."""
    target = jnp.asarray([1.0, -2.0])
    seen = []

    def grad_fn(p, _):
        seen.append(np.asarray(p["x"]))
        loss, grad = jax.value_and_grad(lambda q: jnp.sum((q["x"] - target) ** 2))(p)
        return loss, grad, {"x0": p["x"][0]}

    best, h = fit({"x": jnp.zeros(2)}, None, None, n_members=1, batch_size=1, batch_fn=lambda d, i: None,
                  grad_fn=grad_fn, optimizer=optax.sgd(0.9), epochs=5, select="train", progress=False)  # fmt: skip
    losses = np.asarray(h["train_loss"])
    assert h["best_epoch"] == int(np.argmin(losses)) == 4  # the error shrinks by 0.8 a step
    np.testing.assert_array_equal(np.asarray(best["x"]), seen[h["best_epoch"]])
    assert h["x0"] == [float(x[0]) for x in seen]


def test_line_search_optimiser_gets_the_objective(toy):
    """optax.lbfgs (zoom line search) gets the value, gradient and objective from ``fit``: on a least-squares
    problem it reaches the solution in a few full-batch steps, with ``loss_fn`` and with ``grad_fn`` + ``value_fn``
    alike, and the history counts its line-search evaluations."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 4)), rng.normal(size=20)
    solution = np.linalg.lstsq(a, b, rcond=None)[0]
    data = {"a": jnp.asarray(a), "b": jnp.asarray(b)}
    loss = lambda w, d: jnp.mean((d["a"] @ w["w"] - d["b"]) ** 2)  # noqa: E731
    w0 = {"w": jnp.zeros(4)}
    kw = dict(epochs=8, batch_size=20, shuffle=False, optimizer=optax.lbfgs(), progress=False)
    fitted, history = fit(w0, loss, data, **kw)
    np.testing.assert_allclose(np.asarray(fitted["w"]), solution, rtol=1e-6)
    assert len(history["linesearch_steps"]) == 8 and min(history["linesearch_steps"]) >= 1

    def grad_fn(w, _):
        value, grad = jax.value_and_grad(loss)(w, data)
        return value, grad

    fitted, history = fit(w0, None, None, n_members=1, batch_fn=lambda d, i: None, grad_fn=grad_fn,
                          value_fn=lambda w: loss(w, data), **{**kw, "batch_size": 1})  # fmt: skip
    np.testing.assert_allclose(np.asarray(fitted["w"]), solution, rtol=1e-6)
    assert "linesearch_steps" in history
    _, adam = fit(w0, loss, data, **{**kw, "optimizer": optax.adam(0.1)})  # no line search, nothing counted
    assert "linesearch_steps" not in adam


def test_per_member_runs_independent_line_searches_side_by_side():
    """``per_member(optax.lbfgs())`` on three starts of one least-squares problem, stacked (one summed objective, a
    line search per start): after 3 steps each start is where L-BFGS alone takes it (a shared line search would
    not be: the starts lie 1e4 apart in scale), after 25 all are at the solution; the history counts the batched
    search's evaluations (the most of any start)."""
    rng = np.random.default_rng(2)
    a, b = jnp.asarray(rng.normal(size=(20, 4)) * [1.0, 3.0, 0.3, 1.0]), jnp.asarray(rng.normal(size=20))
    one = lambda w: jnp.mean((a @ w["w"] - b) ** 2)  # noqa: E731
    starts = jnp.asarray([np.zeros(4), np.full(4, 100.0), rng.normal(size=4) * 1e-2])
    kw = dict(n_members=1, batch_size=1, batch_fn=lambda d, i: None, shuffle=False, progress=False)

    def fit_starts(epochs):
        def grad_fn(w, _):
            values, grads = jax.vmap(jax.value_and_grad(one))(w)
            return jnp.sum(values), grads

        return fit({"w": starts}, None, None, grad_fn=grad_fn, value_fn=one, epochs=epochs, select="last",
                   optimizer=per_member(optax.lbfgs()), **kw)  # fmt: skip

    def fit_alone(w, epochs):
        grad_fn = lambda w, _: jax.value_and_grad(one)(w)  # noqa: E731
        return fit({"w": w}, None, None, grad_fn=grad_fn, value_fn=one, epochs=epochs, select="last",
                   optimizer=optax.lbfgs(), **kw)[0]  # fmt: skip

    three, history = fit_starts(3)
    for k in range(3):
        np.testing.assert_allclose(np.asarray(three["w"][k]), np.asarray(fit_alone({"w": starts[k]}["w"], 3)["w"]),
                                   rtol=1e-9, atol=1e-12)  # fmt: skip
    assert not np.allclose(three["w"][0], three["w"][1])  # not yet converged: the comparison is not trivial
    solution = np.linalg.lstsq(np.asarray(a), np.asarray(b), rcond=None)[0]
    many, history = fit_starts(25)
    np.testing.assert_allclose(np.asarray(many["w"]), np.tile(solution, (3, 1)), rtol=1e-6, atol=1e-9)
    assert len(history["linesearch_steps"]) == 25 and min(history["linesearch_steps"]) >= 1


def test_early_stopping_returns_best(toy):
    """A validation score that worsens after epoch 2 stops the run after `patience` more epochs and the
    returned model is the one of epoch 2."""
    seen = []

    def val_fn(m):
        seen.append(m)
        return [3.0, 2.0, 1.0, 1.5, 1.7, 1.2, 0.5][len(seen) - 1]

    model, h = fit(
        _model(toy),
        member_loss,
        toy,
        epochs=7,
        batch_size=5,
        learning_rate=1e-2,
        progress=False,
        val_fn=val_fn,
        patience=3,
    )
    assert h["stopped_early"] and h["epoch"] == [0, 1, 2, 3, 4, 5] and h["best_epoch"] == 2
    for x, y in zip(_leaves(model), _leaves(seen[2]), strict=True):
        np.testing.assert_array_equal(x, y)


def test_scalar_loss_with_padding_is_refused(toy):
    with pytest.raises(ValueError, match="per member"):
        fit(_model(toy), lambda m, b: jnp.mean(member_loss(m, b)), toy, epochs=1, batch_size=5, progress=False)
    # a scalar loss is fine when nothing is padded
    _, h = fit(_model(toy), lambda m, b: jnp.mean(member_loss(m, b)), toy, epochs=1, batch_size=13, progress=False)
    assert np.isfinite(h["train_loss"][0])


@pytest.fixture(scope="module")
def mesh():
    if len(jax.devices()) < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 before JAX starts")
    return column_mesh(jax.devices()[:8])


def _hier_model():
    return HierarchicalLSTM(F, 3, 6, attention="both", window=4, key=jax.random.PRNGKey(2), out_bounds=(-3.0, 3.0))


def hier_loss(model, batch):
    pred = jax.vmap(model)(batch["x"])
    return jnp.mean((pred - batch["y"]) ** 2, axis=(1, 2))


@pytest.mark.parametrize(("batch_size", "epochs"), [(13, 1), (5, 3)])
def test_sharded_equals_single_device(toy, mesh, batch_size, epochs):
    """(13, 1): one training step, 13 members padded to 16; (5, 3): three epochs of three batches, each padded
    from 5 (the last from 3) to 8 members."""
    data = {"x": toy["x"], "y": np.repeat(toy["y"], 3, axis=-1) * np.array([1.0, 0.7, 0.4])}
    val_fn = eqx.filter_jit(lambda m: jnp.mean(hier_loss(m, data)))
    kw = dict(epochs=epochs, batch_size=batch_size, learning_rate=1e-2, progress=False, seed=1, val_fn=val_fn)
    ref, h_ref = fit(_hier_model(), hier_loss, data, **kw)
    shd, h_shd = fit(_hier_model(), hier_loss, data, mesh=mesh, **kw)
    assert _max_rel_diff(shd, ref) < 1e-12
    np.testing.assert_allclose(h_shd["train_loss"], h_ref["train_loss"], rtol=1e-12)
    np.testing.assert_allclose(h_shd["val_loss"], h_ref["val_loss"], rtol=1e-12)
    assert _max_rel_diff(ref, _hier_model()) > 1e-6  # it did train


def test_sharded_step_places_batches_and_replicates_params(toy, mesh):
    """Inside fit's compiled step, batches are split over the devices and the parameters replicated."""
    seen = {}

    def loss(model, batch):
        jax.debug.inspect_array_sharding(batch["x"], callback=lambda s: seen.setdefault("x", s))
        jax.debug.inspect_array_sharding(model.net.cell.weight_hh, callback=lambda s: seen.setdefault("w", s))
        return member_loss(model, batch)

    fit(_model(toy), loss, toy, epochs=1, batch_size=5, progress=False, mesh=mesh)
    assert len(seen["x"].device_set) == 8 and seen["x"].spec[0] == "columns"
    assert seen["x"].shard_shape((8, T, F)) == (1, T, F)  # 5 members padded to the 8 devices
    assert len(seen["w"].device_set) == 8 and seen["w"].is_fully_replicated
