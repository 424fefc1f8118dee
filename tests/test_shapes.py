"""The jaxtyping shape and dtype annotations of the physics and the coupling losses hold on real calls, and
catch a wrong shape.

The annotations (dam.physics.shapes) are checked with beartype: in a fresh process with jaxtyping's import
hook on every module of dam.physics and dam.coupling (every annotated function and every equinox Module
built on the way is checked, also inside jit and scan), and here on single calls with ``jaxtyped``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

from dam.cases import read_case, shipped_case
from dam.coupling.losses import column_heat_residual, masked_mse, water_balance_residual, water_storage_mm
from dam.physics.phase_change import phase_change
from dam.physics.soil_temperature import heat_diffusion
from dam.physics.soil_thermal_properties import soil_thermal_properties

# The modules whose annotations are checked on every call: the soil types (every SoilState, SoilForcing,
# SoilParams and SoilGrid built, also inside the station model), the heat and phase-change steps and the losses.
HOOKED = ["dam.physics.types", "dam.physics.soil_temperature", "dam.physics.phase_change", "dam.coupling.losses"]
CHECKED_RUN = textwrap.dedent(
    f"""
    from jaxtyping import install_import_hook

    HOOKED = {HOOKED!r}

    with install_import_hook(HOOKED, "beartype.beartype"):
        from dam.precision import enable_x64

        enable_x64()
        import equinox as eqx, jax, jax.numpy as jnp, numpy as np
        from jaxtyping import TypeCheckError
        from dam import physics
        from dam.cases import read_case, shipped_case
        from dam.coupling import losses
        from dam.physics.station import run_station
        from dam.sites import load_site
        from dam.site_run import setup_station

    # the soil column: a free run, a batch of two columns and a replay, 96 steps
    case = read_case(shipped_case("bondville_soil"))
    params, state0, forcing = case.as_dtype(jnp.float64)
    forcing = jax.tree_util.tree_map(lambda a: a[:96], forcing)
    final, (states, fluxes) = eqx.filter_jit(physics.run)(state0, forcing, params, case.grid, case.options)
    two = lambda a: jnp.stack([a, a])
    eqx.filter_jit(physics.run)(jax.tree_util.tree_map(two, state0),
                                jax.tree_util.tree_map(lambda a: jnp.stack([a, a], axis=1), forcing),
                                jax.tree_util.tree_map(two, params), case.grid, case.options)
    ref = jax.tree_util.tree_map(lambda a: jnp.asarray(a[:96]), case.reference_states())
    physics.replay(ref, forcing, params, case.grid, case.options)

    # the station model: 60 daily steps at Hyytiala
    setup = setup_station(load_site("hyytiala_2000_2010"), end="2000-02-29")
    frc = jax.tree_util.tree_map(jnp.asarray, setup.forcing)
    _, (st, fl) = eqx.filter_jit(run_station)(setup.state0, frc, setup.params, setup.grid, setup.options)

    # the coupling losses on those outputs
    dz = case.grid.dz
    losses.water_storage_mm(states.smc, dz)
    losses.water_balance_residual(states.smc, dz, 1800 * 1000 * forcing.qinsurf_mps, fluxes.runoff_surface_mm,
                                  theta_initial=state0.smc)
    losses.column_heat_residual(states.t, state0.t, fluxes.heat_capacity, dz, forcing.ghf_wm2,
                                fluxes.heat_bottom_wm2, 1800.0)
    losses.masked_mse(st.soil.smc, st.soil.smc)

    # and a wrong shape is refused
    for bad in (lambda: physics.SoilState(t=jnp.ones(4), smc=jnp.ones(3), sh2o=jnp.ones(4)),
                lambda: losses.water_storage_mm(jnp.ones((5, 4)), jnp.ones(3))):
        try:
            bad()
        except TypeCheckError:
            continue
        raise SystemExit("a wrong shape was not refused")
    print("CHECKED")
    """
)  # fmt: skip


@pytest.mark.slow
def test_every_annotation_holds_on_real_runs_with_the_import_hook(tmp_path):
    script = tmp_path / "checked_run.py"
    script.write_text(CHECKED_RUN)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0 and "CHECKED" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-6000:]


def _checked(fn):
    return jaxtyped(typechecker=beartype)(fn)


@pytest.fixture(scope="module")
def column():
    """The shipped Bondville case: (case, parameters, initial state, forcing of the first step)."""
    case = read_case(shipped_case("bondville_soil"))
    params, state, forcing = case.as_dtype(jnp.float64)
    return case, params, state, jax.tree_util.tree_map(lambda a: a[0], forcing)


def test_heat_diffusion_and_phase_change_annotations(column):
    case, params, state, forcing = column
    cap, cond, factor = soil_thermal_properties(state, params, case.grid, case.options.const, case.options.dt_s)
    t_new, h_bot = _checked(heat_diffusion)(state.t, cap, cond, forcing.ghf_wm2, params, case.grid, case.options)
    assert t_new.shape == (4,) and h_bot.shape == ()
    _checked(phase_change)(t_new, state.smc, state.sh2o, factor, params, case.grid.dz, case.options)
    with pytest.raises(TypeCheckError):  # three layers of heat capacity for four of temperature
        _checked(heat_diffusion)(state.t, cap[:3], cond, forcing.ghf_wm2, params, case.grid, case.options)
    with pytest.raises(TypeCheckError):  # integer temperatures
        _checked(heat_diffusion)(jnp.arange(4), cap, cond, forcing.ghf_wm2, params, case.grid, case.options)


def test_loss_annotations(column):
    case, _, state, _ = column
    theta = np.tile(np.asarray(state.smc), (5, 1))  # (T, N) NumPy works as well as JAX
    assert _checked(water_storage_mm)(theta, case.grid.dz).shape == (5,)
    res = _checked(water_balance_residual)(theta, case.grid.dz, np.zeros(5), np.zeros(5), theta_initial=state.smc)
    np.testing.assert_allclose(res, 0.0, atol=1e-12)
    _checked(column_heat_residual)(theta + 270.0, state.t, np.ones((5, 4)), case.grid.dz, np.zeros(5), np.zeros(5), 1.0)
    assert float(_checked(masked_mse)(jnp.ones(3), jnp.array([1.0, np.nan, 1.0]))) == 0.0
    with pytest.raises(TypeCheckError):  # layer thicknesses of three layers for a four-layer state
        _checked(water_storage_mm)(theta, case.grid.dz[:3])
