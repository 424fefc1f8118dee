"""``run(..., column_chunk=...)``: columns run in chunks give the unchunked results, values and gradients."""

import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dam import physics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import make_columns  # noqa: E402

OPTIONS = physics.SoilOptions()


@pytest.fixture(scope="module")
def columns():
    return make_columns(37, 12, jnp.float64, seed=3)  # 37 = 4 chunks of 10 with the last one padded


_jit_run = eqx.filter_jit(physics.run)  # one function object: the unchunked run compiles once for the module


def _run(params, state, forcing, grid, **kwargs):
    return _jit_run(state, forcing, params, grid, OPTIONS, **kwargs)


@pytest.mark.parametrize("chunk", [10, 37, 100])
def test_chunked_run_is_bit_identical(columns, chunk):
    params, state, forcing, grid = columns
    ref = _run(params, state, forcing, grid)
    out = _run(params, state, forcing, grid, column_chunk=chunk)
    assert out[1][0].smc.shape == (12, 37, 4)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_parameters_shared_by_all_columns_are_not_split(columns):
    params, state, forcing, grid = columns
    shared = eqx.tree_at(lambda p: (p.bexp, p.slope), params, (params.bexp[5], jnp.asarray(0.3)))
    ref = _run(shared, state, forcing, grid, observe=None)
    out = _run(shared, state, forcing, grid, observe=None, column_chunk=10)
    np.testing.assert_array_equal(np.asarray(out[0].sh2o), np.asarray(ref[0].sh2o))


def test_chunked_gradient_equals_unchunked(columns):
    params, state, forcing, grid = columns

    def loss(params, chunk):
        final, _ = physics.run(state, forcing, params, grid, OPTIONS, observe=None, column_chunk=chunk)
        return jnp.sum(final.smc) + 1e-3 * jnp.sum(final.t)

    ref = jax.grad(loss)(params, None)
    out = jax.grad(loss)(params, 10)
    assert float(jnp.max(jnp.abs(ref.bexp))) > 0.0
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-300)


def test_bad_chunks_are_refused(columns):
    params, state, forcing, grid = columns
    with pytest.raises(ValueError, match="positive integer"):
        physics.run(state, forcing, params, grid, OPTIONS, column_chunk=0)
    one = jax.tree_util.tree_map(lambda x: x[0], state)
    with pytest.raises(ValueError, match="columns, layers"):
        physics.run(one, jax.tree_util.tree_map(lambda x: x[:, 0], forcing), params, grid, OPTIONS, column_chunk=4)
    with pytest.raises(ValueError, match="per-column arrays"):
        physics.run(state, forcing, params, grid, OPTIONS, observe=lambda s, f: jnp.mean(s.smc), column_chunk=10)
