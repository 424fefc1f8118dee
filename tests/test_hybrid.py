"""AI in physics: the neural soil water transport conserves water exactly and respects its bounds whatever its
weights, plugs into the soil column and the station model through the same sub-stepping as the physics, carries
gradients through long runs, imitates the Richards sub-step after pretraining and learns from observations end
to end."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from soil_forcing import synthetic_soil_forcing

from dam.coupling.hybrid import NeuralWaterTransport, physics_water_samples
from dam.hybrid_training import pretrain_to_physics, train_hybrid
from dam.physics.column import run as run_column
from dam.physics.column import soil_step
from dam.physics.soil_water import AbstractTransport, Richards, SubstepWater
from dam.physics.station import run_station
from dam.physics.types import SoilForcing, SoilState
from dam.site_run import setup_station
from dam.sites import load_site, map_sensors_to_layers, shipped_site_dir

_run_column = eqx.filter_jit(run_column)
_run_station = eqx.filter_jit(run_station)


@pytest.fixture(scope="module")
def bondville():
    return setup_station(load_site(shipped_site_dir("bondville_1998")), start="1998-05-01", end="1998-05-10")


def _wild(net: NeuralWaterTransport, key, scale: float = 3.0) -> NeuralWaterTransport:
    """Random weights far from the initialisation, so that the learned fluxes hit their bounds."""
    leaves, tree = jax.tree_util.tree_flatten(eqx.filter(net, eqx.is_inexact_array))
    keys = jax.random.split(key, len(leaves))
    new = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
    return eqx.combine(jax.tree_util.tree_unflatten(tree, new), net)


class PerColumn(AbstractTransport):
    """One network per column: stacked weights, the sub-step vmapped over the column axis."""

    weights: NeuralWaterTransport
    static: NeuralWaterTransport = eqx.field(static=True)

    def substep(self, water, prepared, params, grid, options, dt):
        one = lambda w, wat, d: eqx.combine(w, self.static).substep(wat, None, params, grid, options, d)  # noqa: E731
        return jax.vmap(one)(self.weights, water, dt)


def test_conservation_and_bounds_with_random_weights(bondville):
    """8 columns (each its own random weights) x 1500 half-hour steps of heavy rain and strong sinks: the column
    water balance closes to < 1e-12 m every step, moisture stays within [0, porosity]."""
    s = bondville
    n_cols, n_steps, n = 8, 1500, s.grid.n_layers
    keys = jax.random.split(jax.random.PRNGKey(1), n_cols)
    nets = [_wild(NeuralWaterTransport(k), k) for k in keys]
    weights = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[eqx.filter(m, eqx.is_array) for m in nets])
    transport = PerColumn(weights, eqx.filter(nets[0], eqx.is_array, inverse=True))

    rng = np.random.default_rng(0)
    smc0 = jnp.asarray(rng.uniform(0.05, 0.45, (n_cols, n)))
    state0 = SoilState(t=jnp.full((n_cols, n), 285.0), smc=smc0, sh2o=smc0)
    forcing = synthetic_soil_forcing(n_steps, n_cols, n)
    params, grid, options = s.params.soil, s.grid, s.options.soil
    _, (states, fluxes) = _run_column(state0, forcing, params, grid, options, transport=transport)

    dz = np.asarray(grid.dz)
    w = np.concatenate([np.asarray(smc0)[None], np.asarray(states.smc)]) @ dz  # m
    dt = options.dt_s
    f = forcing
    inflow = (np.asarray(f.qinsurf_mps) - np.asarray(f.evap_mps) - np.asarray(f.etran_mps).sum(-1)) * dt
    out = (np.asarray(fluxes.runoff_surface_mm) + np.asarray(fluxes.runoff_subsurface_mm)) / 1000.0
    residual = np.diff(w, axis=0) - (inflow - out)
    assert np.abs(residual).max() < 1e-12
    assert abs(residual.sum(axis=0)).max() < 1e-11
    smcmax = np.asarray(params.smcmax)
    assert np.asarray(states.sh2o).min() >= 0.0
    assert (np.asarray(states.smc) <= smcmax + 1e-12).all()
    # the wild weights really moved water through the bounds' limits (not a trivially idle network)
    assert np.asarray(fluxes.drainage_mmps).max() > 0.0
    assert np.ptp(np.asarray(states.smc)[:, :, 1:]) > 0.05


def test_substep_conserves_and_richards_is_the_default(bondville):
    """One sub-step of the network moves exactly the water its fluxes say (infiltration - sinks - drainage), and
    ``transport=Richards()`` is the default path bit for bit."""
    rng = np.random.default_rng(4)
    params, grid, options = bondville.params.soil, bondville.grid, bondville.options.soil
    sh2o = jnp.asarray(rng.uniform(0.05, 0.4, (16, 4)))
    water = SubstepWater(
        sh2o=sh2o, smc=sh2o, ice=jnp.zeros_like(sh2o), infil_mps=jnp.asarray(rng.random(16) * 1e-5),
        evap_mps=jnp.asarray(rng.random(16) * 1e-7), etran_mps=jnp.asarray(rng.random((16, 4)) * 1e-8),
    )  # fmt: skip
    dt = jnp.full(16, 600.0)
    net = _wild(NeuralWaterTransport(jax.random.PRNGKey(3)), jax.random.PRNGKey(4))
    new, drain = net.substep(water, None, params, grid, options, dt)
    dz = np.asarray(grid.dz)
    stored = (np.asarray(new) - np.asarray(sh2o)) @ dz
    budget = (
        np.asarray(water.infil_mps)
        - np.asarray(water.evap_mps)
        - np.asarray(water.etran_mps).sum(-1)
        - np.asarray(drain)
    ) * 600.0
    np.testing.assert_allclose(stored, budget, rtol=0, atol=1e-15)
    assert (np.asarray(drain) >= 0).all()
    forcing = jax.tree_util.tree_map(lambda x: jnp.asarray(x[:48, 0]), synthetic_soil_forcing(48, 1, 4, seed=6))
    state0 = SoilState(t=jnp.full(4, 288.0), smc=sh2o[0], sh2o=sh2o[0])
    a = _run_column(state0, forcing, params, grid, options)
    b = _run_column(state0, forcing, params, grid, options, transport=Richards())
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_plugs_into_soil_step_and_run_station(bondville):
    s = bondville
    net = NeuralWaterTransport(jax.random.PRNGKey(0))
    frc = jax.tree_util.tree_map(lambda x: jnp.asarray(x[:96]), s.forcing)
    final, (states, fluxes) = _run_station(s.state0, frc, s.params, s.grid, s.options, transport=net)
    _, (ref, _) = _run_station(s.state0, frc, s.params, s.grid, s.options)
    smc = np.asarray(states.soil.smc)
    assert np.isfinite(smc).all() and (smc <= np.asarray(s.params.soil.smcmax) + 1e-12).all()
    assert np.abs(smc - np.asarray(ref.soil.smc)).max() > 0.0  # the network, not Richards, moved the water
    assert np.abs(np.asarray(states.soil.t) - np.asarray(ref.soil.t)).max() < 5.0  # heat stays physical

    soil_forcing = SoilForcing(
        ghf_wm2=jnp.asarray(20.0), qinsurf_mps=jnp.asarray(5e-6), evap_mps=jnp.asarray(1e-8),
        etran_mps=jnp.full(4, 1e-8), frozen_ground=jnp.asarray(0.0), frz_top_ice_flux_mmps=jnp.asarray(0.0),
    )  # fmt: skip
    new, sf = soil_step(final.soil, soil_forcing, s.params.soil, s.grid, s.options.soil, transport=net)
    assert int(sf.nsub) == 3 and float(sf.infil_mps) > 0.0
    assert np.isfinite(np.asarray(new.smc)).all()


def test_gradients_through_150_steps_match_finite_differences(bondville):
    s = bondville
    net = NeuralWaterTransport(jax.random.PRNGKey(2))
    n = s.grid.n_layers
    forcing = jax.tree_util.tree_map(lambda x: x[:, 0], synthetic_soil_forcing(150, 1, n, seed=3))
    smc0 = jnp.asarray([0.30, 0.32, 0.35, 0.38])
    state0 = SoilState(t=jnp.full(n, 290.0), smc=smc0, sh2o=smc0)
    params, grid, options = s.params.soil, s.grid, s.options.soil

    def loss(model):
        _, smc = run_column(state0, forcing, params, grid, options, transport=model,
                            observe=lambda st, fl: st.smc, checkpoint_every=50)  # fmt: skip
        return jnp.mean((smc - 0.3) ** 2)

    value, grads = eqx.filter_jit(eqx.filter_value_and_grad(loss))(net)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert all(np.abs(np.asarray(g)).max() > 0.0 for g in leaves)
    # directional derivative along a random direction against central differences
    diff = eqx.filter(net, eqx.is_inexact_array)
    d_leaves, tree = jax.tree_util.tree_flatten(diff)
    keys = jax.random.split(jax.random.PRNGKey(5), len(d_leaves))
    direction = jax.tree_util.tree_unflatten(
        tree, [jax.random.normal(k, x.shape) for x, k in zip(d_leaves, keys, strict=True)]
    )
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(leaves, jax.tree_util.tree_leaves(direction), strict=True))
    f = eqx.filter_jit(loss)
    eps = 1e-5
    shifted = [eqx.apply_updates(net, jax.tree_util.tree_map(lambda d, e=e: e * d, direction)) for e in (eps, -eps)]
    fd = (float(f(shifted[0])) - float(f(shifted[1]))) / (2 * eps)
    np.testing.assert_allclose(analytic, fd, rtol=1e-4)


def test_pretraining_imitates_the_richards_substep(bondville):
    s = bondville
    frc = jax.tree_util.tree_map(jnp.asarray, s.forcing)
    samples = physics_water_samples(s.state0, frc, s.params, s.grid, s.options)
    assert samples.sh2o_out.shape == samples.water.sh2o.shape == (len(s.times), s.grid.n_layers)
    assert set(np.unique(np.asarray(s.options.dt_s / samples.dt_s)).round(6)) <= {3.0, 6.0}
    net = NeuralWaterTransport(jax.random.PRNGKey(0))
    trained, hist = pretrain_to_physics(
        net, samples, s.params.soil, s.grid, s.options.soil, iterations=150, learning_rate=1e-2, batch_size=None
    )
    assert hist["train_loss"][-1] < 0.3 * hist["train_loss"][0]


@pytest.mark.slow  # ~100 s on 2 busy CPU cores, most of it compiling the gradient of the station model
def test_short_end_to_end_training_reduces_the_loss():
    """Hyytiala 2000-2001 (daily): three epochs of truncated BPTT through the station model lower the
    free-running error against the observed layered soil moisture."""
    site = load_site(shipped_site_dir("hyytiala_2000_2010"))
    s = setup_station(site, start="2000-01-01", end="2001-06-30")
    obs = site.observations["soil_moisture"].sel(time=s.times)
    layers = map_sensors_to_layers(obs["sm_depth"].values, s.layer_bottoms_m).layer_index
    net = NeuralWaterTransport(jax.random.PRNGKey(0))
    n = len(s.times)
    res = train_hybrid(
        s, obs.values, net, sensor_layers=layers, train_steps=slice(0, n), val_steps=slice(0, n), window=30,
        windows_per_batch=6, epochs=3, learning_rate=1e-2, checkpoint_every=None,
    )  # fmt: skip
    val = [res.history["initial_val"], *res.history["val_loss"]]
    assert len(val) == 4 and np.isfinite(val).all()
    assert min(val[1:]) < 0.9 * val[0]
    assert res.best_epoch >= 0  # a trained epoch, not the untrained network (-1)
