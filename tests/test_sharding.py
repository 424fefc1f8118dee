"""Columns sharded over 8 emulated CPU devices give the same results as one device."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dam import physics
from dam.sharding import column_mesh, pad_axis, run_sharded, shard, trim_axis

N_DEV = 8


@pytest.fixture(scope="module")
def mesh():
    if len(jax.devices()) < N_DEV:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 before JAX starts")
    return column_mesh(jax.devices()[:N_DEV])


def _columns(n_columns, n_steps=48, seed=0):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from soil_throughput import make_columns

    return make_columns(n_columns, n_steps, jnp.float64, seed=seed)


@pytest.mark.parametrize("n_columns", [16, 13])  # 13 does not divide the 8 devices
def test_sharded_forward_equals_unsharded(mesh, n_columns):
    params, state, forcing, grid = _columns(n_columns)
    options = physics.SoilOptions()
    ref_final, (ref_states, ref_fluxes) = eqx.filter_jit(physics.run)(state, forcing, params, grid, options)
    final, (states, fluxes) = run_sharded(physics.run, state, forcing, params, grid, options, mesh=mesh)
    assert final.t.shape == (n_columns, 4) and states.smc.shape == (48, n_columns, 4)
    for a, b in zip(
        jax.tree_util.tree_leaves((final, states, fluxes)),
        jax.tree_util.tree_leaves((ref_final, ref_states, ref_fluxes)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sharded_chunked_forward_equals_unsharded(mesh):
    """Chunks of columns (``column_chunk``) inside a sharded run: same results as one device, no chunks."""
    params, state, forcing, grid = _columns(21, n_steps=12, seed=2)
    options = physics.SoilOptions()
    ref_final, _ = eqx.filter_jit(physics.run)(state, forcing, params, grid, options, observe=None)
    final, _ = run_sharded(physics.run, state, forcing, params, grid, options, mesh=mesh, observe=None, column_chunk=4)
    for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(ref_final), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sharded_gradient_equals_unsharded(mesh):
    n = 13
    params, state, forcing, grid = _columns(n, n_steps=24, seed=1)
    options = physics.SoilOptions()

    def loss(params, state, forcing):
        final, _ = physics.run(state, forcing, params, grid, options, observe=None, checkpoint_every=8)
        return jnp.mean(final.smc) + 1e-3 * jnp.mean(final.t)

    grad = eqx.filter_jit(jax.grad(loss))
    ref = grad(params, state, forcing)
    # Sharded: pad to 16 columns, but weight the loss so that the padding does not count.
    target = 16
    weights = shard(jnp.asarray(np.arange(target) < n, jnp.float64), mesh)

    def padded_loss(params, state, forcing):
        final, _ = physics.run(state, forcing, params, grid, options, observe=None, checkpoint_every=8)
        per_col = jnp.mean(final.smc, axis=-1) + 1e-3 * jnp.mean(final.t, axis=-1)
        return jnp.sum(per_col * weights) / n

    sp = shard(pad_axis(params, n, target), mesh)
    ss = shard(pad_axis(state, n, target), mesh)
    sf = shard(pad_axis(forcing, n, target, axis=1), mesh, axis=1)
    g = eqx.filter_jit(jax.grad(padded_loss))(sp, ss, sf)
    assert g.dksat.sharding.spec[0] == "columns"
    for a, b in zip(jax.tree_util.tree_leaves(trim_axis(g, n)), jax.tree_util.tree_leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-300)
