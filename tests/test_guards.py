"""Physical plausibility guards under jit (dam.physics.guards): an implausible state stops the run naming the
variable, the step, the column and the layer; valid runs are unchanged bit for bit."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dam import stress
from dam.cases import read_case
from dam.physics import guards, run

_run = eqx.filter_jit(run)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 50-step unfrozen case in float64, three columns: (params, state0, forcing, grid, options)."""
    folder = stress.write_case("summer_stc1", tmp_path_factory.mktemp("guards"), days=50 / stress.STEPS_PER_DAY)
    case = read_case(folder)
    params, state0, forcing = case.as_dtype(jnp.float64)
    cols = lambda tree, axis: jax.tree_util.tree_map(lambda x: jnp.stack([x] * 3, axis=axis), tree)  # noqa: E731
    return cols(params, 0), cols(state0, 0), cols(forcing, 1), case.grid, case.options


def _poison(forcing, field: str, step: int, column: int, value: float):
    leaf = getattr(forcing, field)
    return eqx.tree_at(lambda f: getattr(f, field), forcing, leaf.at[step, column].set(value))


def test_huge_ground_heat_flux_stops_naming_step_column_and_variable(inputs):
    """Issue 16 item 6: a ground heat flux of 1e9 W m-2 gave T = 8.1e6 K and exit code 0."""
    params, state0, forcing, grid, options = inputs
    bad = _poison(forcing, "ghf_wm2", 17, 2, 1e9)
    guards.clear_violation()
    with pytest.raises(RuntimeError, match="soil temperature outside 150-350 K") as info:
        jax.block_until_ready(_run(state0, bad, params, grid, options))
    found = guards.last_violation()
    assert found is not None and found.variable == "soil temperature"
    assert found.step == 17 and found.column == (2,) and found.layer == 1 and found.value > 350
    with pytest.raises(guards.PlausibilityError, match=r"soil temperature = .* at step 117 \(then\), column 2"):
        guards.raise_located(info.value, step_offset=100, when=lambda step: "then")


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [("smc", 0.9, "total soil moisture"), ("smc", -0.01, "total soil moisture"), ("sh2o", 0.5, "liquid soil moisture"),
     ("t", np.nan, "soil temperature")],
)  # fmt: skip
def test_each_bound_is_named(inputs, field, value, variable):
    params, state0, *_ = inputs
    bad = eqx.tree_at(lambda s: getattr(s, field), state0, getattr(state0, field).at[1, 2].set(value))
    check = eqx.filter_jit(guards.guard_soil)
    jax.block_until_ready(check(state0, params, jnp.int32(0)))
    guards.clear_violation()
    with pytest.raises(RuntimeError, match=f"{variable} outside"):
        jax.block_until_ready(check(bad, params, jnp.int32(7)))
    found = guards.last_violation()
    assert found.variable == variable and found.step == 7 and found.column == (1,) and found.layer == 3


def test_guards_work_under_vmap(inputs):
    params, state0, forcing, grid, options = inputs
    bad = _poison(forcing, "ghf_wm2", 5, 1, -1e9)

    def one(s, f, p):
        return run(s, f, p, grid, options, observe=None)[0]

    batched = eqx.filter_jit(jax.vmap(one, in_axes=(0, 1, 0)))
    jax.block_until_ready(batched(state0, forcing, params))  # plausible: no error
    guards.clear_violation()
    with pytest.raises(RuntimeError, match="soil temperature"):
        jax.block_until_ready(batched(state0, bad, params))
    assert guards.last_violation().step == 5 and guards.last_violation().column == (1,)


def test_guarded_run_equals_unguarded_bit_for_bit(inputs):
    params, state0, forcing, grid, options = inputs
    a = _run(state0, forcing, params, grid, options)
    b = _run(state0, forcing, params, grid, options, finite_check=False)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_host_locate_finds_the_first_offender():
    t = np.full((4, 3, 2), 280.0)
    smc = np.full((4, 3, 2), 0.3)
    t[2, 1, 0] = 400.0
    smc[1, 2, 1] = -0.1
    found = guards.locate(t, smc, smc, 0.45)
    assert found.variable == "soil temperature" and found.column == (2, 1) and found.layer == 1
    assert guards.locate(np.full((3, 2), 280.0), smc[0], smc[0], 0.45) is None


def test_guarded_run_is_differentiable(inputs):
    params, state0, forcing, grid, options = inputs

    def loss(p):
        return jnp.sum(run(state0, forcing, p, grid, options, observe=None, checkpoint_every=5)[0].smc)

    grad = jax.grad(loss)(params)
    assert float(jnp.max(jnp.abs(grad.bexp))) > 0 and all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))
    jvp = jax.jvp(loss, (params,), (jax.tree_util.tree_map(jnp.ones_like, params),))[1]
    assert np.isfinite(float(jvp))
