"""A step's values with its ``exp(y log x)`` twin's derivatives (dam.physics.tangents, ``SoilOptions.pow`` and
``derivative_pow``): the values stay the Fortran-exact ones bit for bit, the derivatives agree with the step's own to
rounding, reach every parameter, state and network weight, and the runners take the twin only where it pays."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from soil_forcing import synthetic_soil_forcing

from dam.coupling.hybrid import NeuralWaterTransport
from dam.physics.column import run
from dam.physics.soil_water import RICHARDS
from dam.physics.station import run_station
from dam.physics.tangents import differentiated_as
from dam.physics.types import TWIN_MIN_COLUMNS, SoilOptions, SoilState
from dam.site_run import setup_station
from dam.sites import load_site, shipped_site_dir


def test_differentiated_as_gives_one_functions_values_and_the_others_derivatives():
    """Values of ``f``, JVPs and gradients of ``g`` (deliberately a different function here), under jit and vmap;
    integer outputs pass through."""

    def f(x, a):
        return jnp.sin(x) * a, jnp.int32(3)

    def g(x, a):
        return x * x * a, jnp.int32(3)

    x, a = jnp.array([0.3, 1.2]), jnp.array(2.0)
    value, count = jax.jit(lambda x, a: differentiated_as(f, g, x, a))(x, a)
    np.testing.assert_array_equal(value, f(x, a)[0])
    assert int(count) == 3
    _, t = jax.jvp(lambda x: differentiated_as(f, g, x, a)[0], (x,), (jnp.ones(2),))
    np.testing.assert_allclose(t, 2.0 * x * a)
    gx, ga = jax.grad(lambda x, a: differentiated_as(f, g, x, a)[0].sum(), argnums=(0, 1))(x, a)
    np.testing.assert_allclose(gx, 2.0 * x * a)
    np.testing.assert_allclose(ga, (x * x).sum())
    batched = jax.vmap(jax.grad(lambda x: differentiated_as(f, g, x, a)[0]))(x)
    np.testing.assert_allclose(batched, 2.0 * x * a)


def test_options_check_and_decide_where_the_twin_runs():
    with pytest.raises(ValueError, match="pow"):
        SoilOptions(pow="fast")
    with pytest.raises(ValueError, match="derivative_pow"):
        SoilOptions(derivative_pow="vector")
    auto = SoilOptions()
    assert auto.pow == "libm" and auto.derivative_pow == "auto" and auto.derivative_options is None
    if jax.default_backend() == "cpu":  # measured faster there; accelerators keep the step's own
        assert auto.for_run(TWIN_MIN_COLUMNS, 1).derivative_pow == "exp_log"
        assert auto.for_run(TWIN_MIN_COLUMNS, 1).derivative_options.const.exp_log_pow
    else:
        assert auto.for_run(TWIN_MIN_COLUMNS, 1).derivative_options is None
    assert auto.for_run(TWIN_MIN_COLUMNS - 1, 1).derivative_pow == "libm"  # few columns: the step itself
    assert auto.for_run(10 * TWIN_MIN_COLUMNS, 8).derivative_pow == "libm"  # segments recompute both
    assert auto.for_run(10 * TWIN_MIN_COLUMNS, None).derivative_options is None
    explicit = SoilOptions(derivative_pow="exp_log")
    assert explicit.for_run(1, None) is explicit and not explicit.const.exp_log_pow
    assert SoilOptions(pow="exp_log", derivative_pow="exp_log").derivative_options is None


@pytest.fixture(scope="module")
def columns():
    """24 columns of Bondville's soil with random moisture, x 48 half-hour steps of storms, sinks and heat flux."""
    s = setup_station(load_site(shipped_site_dir("bondville_1998")), start="1998-05-01", end="1998-05-03")
    rng = np.random.default_rng(0)
    n_cols, n = 24, s.grid.n_layers
    smc = jnp.asarray(rng.uniform(0.1, 0.4, (n_cols, n)))
    state = SoilState(t=jnp.asarray(rng.uniform(280.0, 295.0, (n_cols, n))), smc=smc, sh2o=smc)
    forcing = synthetic_soil_forcing(48, n_cols, n)
    return s, state, forcing


def _value_and_grad(columns, options, transport):
    s, state, forcing = columns

    @eqx.filter_jit
    @eqx.filter_value_and_grad
    def loss(diff):
        params, state0, net = diff
        final, _ = run(state0, forcing, params, s.grid, options, transport=net, observe=None, checkpoint_every=1)
        return jnp.sum(final.smc) + 1e-3 * jnp.sum(final.t)

    return loss((s.params.soil, state, transport))


@pytest.mark.parametrize("transport", ["richards", "network"])
def test_twin_derivatives_agree_with_the_steps_own_and_leave_the_values_alone(columns, transport):
    """Through a 48-step run with per-step checkpoints (the twin's setting), parameters, initial state and the
    weights of a neural water transport get the step's own gradient to 1e-10 of each leaf's largest, not bit for
    bit (the twin really ran); the value is the same bit for bit, and ``pow="exp_log"`` values stay within 1e-9."""
    s, state, forcing = columns
    net = NeuralWaterTransport(jax.random.PRNGKey(0)) if transport == "network" else RICHARDS
    own = SoilOptions(derivative_pow="libm")
    v_own, g_own = _value_and_grad(columns, own, net)
    v_twin, g_twin = _value_and_grad(columns, dataclasses.replace(own, derivative_pow="exp_log"), net)
    assert v_own == v_twin
    leaves_own = jax.tree_util.tree_leaves(eqx.filter(g_own, eqx.is_inexact_array))
    leaves_twin = jax.tree_util.tree_leaves(eqx.filter(g_twin, eqx.is_inexact_array))
    assert len(leaves_own) == len(leaves_twin) and leaves_own
    for a, b in zip(leaves_own, leaves_twin, strict=True):
        assert np.all(np.isfinite(b))
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10 * float(np.max(np.abs(a))) + 1e-300)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves_own, leaves_twin, strict=True))
    if transport == "network":  # the network's weights get a gradient through the twin
        weights = jax.tree_util.tree_leaves(eqx.filter(g_twin[2], eqx.is_inexact_array))
        assert weights and all(np.abs(w).max() > 0 for w in weights)
    exact, _ = run(state, forcing, s.params.soil, s.grid, own, transport=net, observe=None)
    fast, _ = run(state, forcing, s.params.soil, s.grid, SoilOptions(pow="exp_log"), transport=net, observe=None)
    np.testing.assert_allclose(fast.smc, exact.smc, rtol=0, atol=1e-9)


@pytest.mark.slow  # compiles the station model's gradient twice (about 2 min on 2 cores)
def test_station_twin_derivatives_agree_with_the_steps_own():
    """The station model (one column, 96 steps) differentiated through its soil twin: the same loss bit for bit,
    the parameters' gradient within 1e-10 of each leaf's largest."""
    s = setup_station(load_site(shipped_site_dir("bondville_1998")), start="1998-05-01", end="1998-05-03")

    def grad(derivative_pow):
        soil = dataclasses.replace(s.options.soil, derivative_pow=derivative_pow)
        options = dataclasses.replace(s.options, soil=soil)

        @eqx.filter_jit
        @eqx.filter_value_and_grad
        def loss(params):
            _, smc = run_station(s.state0, s.forcing, params, s.grid, options, checkpoint_every=1,
                                 observe=lambda st, fl: st.soil.smc)  # fmt: skip
            return jnp.mean(smc)

        return loss(s.params)

    (v_own, g_own), (v_twin, g_twin) = grad("libm"), grad("exp_log")
    assert v_own == v_twin
    for a, b in zip(jax.tree_util.tree_leaves(g_own), jax.tree_util.tree_leaves(g_twin), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10 * float(np.max(np.abs(a))) + 1e-300)
