"""A snowpack without snow layers on soil layer 1 (Noah-MP's thin-snow branch of the heat step).

Checks the physics rather than numbers from a run: melt happens only above freezing, the melt water equals
the SWE lost, energy is conserved with the snow melt counted as latent heat, energy left after all snow
has melted goes on warming the soil, the snow depth blend insulates, and the gradients exist.
"""

from __future__ import annotations

from importlib import resources

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dam.cases import read_case
from dam.physics.column import soil_heat
from dam.physics.types import SoilState, ThinSnow


@pytest.fixture(scope="module")
def case():
    with resources.as_file(resources.files("dam.data") / "bondville_soil") as case_dir:
        return read_case(case_dir)


def _state(t1: float) -> SoilState:
    return SoilState(
        t=jnp.array([t1, 276.0, 278.0, 280.0]),
        smc=jnp.array([0.30, 0.32, 0.33, 0.34]),
        sh2o=jnp.array([0.30, 0.32, 0.33, 0.34]),
    )


def _heat_content(state, heat_capacity, dz):
    return jnp.sum(heat_capacity * dz * state.t)


@pytest.mark.parametrize("swe", [0.5, 5.0])
def test_melt_conserves_water_and_energy(case, swe):
    state = _state(274.0)
    snow = ThinSnow(swe_mm=jnp.asarray(swe), depth_m=jnp.asarray(swe / 150.0))
    new, diag, after = soil_heat(state, jnp.asarray(80.0), case.params, case.grid, case.options, snow=snow)
    dz = case.grid.dz
    melt = float(after.melt_mm)
    assert melt > 0.0
    np.testing.assert_allclose(swe - float(after.swe_mm), melt, rtol=0, atol=1e-12)
    # Soil water is untouched by snow melt (the melt water is ponding for the water step).
    np.testing.assert_allclose(np.asarray(new.smc), np.asarray(state.smc), rtol=0, atol=1e-15)
    # Energy: what phase change took from the layers equals the latent heat (snow melt included).
    dt = case.options.dt_s
    lost = float(
        _heat_content(SoilState(diag.t_diff, state.smc, state.sh2o), diag.heat_capacity, dz)
        - _heat_content(new, diag.heat_capacity, dz)
    )
    np.testing.assert_allclose(lost, float(diag.latent_heat_wm2) * dt, rtol=1e-10)
    np.testing.assert_allclose(float(diag.latent_heat_wm2) * dt, melt * 0.3336e6, rtol=1e-10)
    if swe < 1.0:  # all snow gone: the energy left keeps layer 1 above freezing
        assert float(after.swe_mm) == 0.0 and float(new.t[0]) > 273.16
    else:  # energy used up: layer 1 pinned at freezing, density kept within 50..500 kg m-3
        assert float(new.t[0]) == pytest.approx(273.16, abs=1e-12)
        density = float(after.swe_mm / after.depth_m)
        assert 50.0 - 1e-9 <= density <= 500.0 + 1e-9


def test_no_melt_below_freezing_and_no_snow_is_the_snow_free_path(case):
    frozen = _state(270.0)
    snow = ThinSnow(swe_mm=jnp.asarray(5.0), depth_m=jnp.asarray(0.05))
    _, _, after = soil_heat(frozen, jnp.asarray(-20.0), case.params, case.grid, case.options, snow=snow)
    assert float(after.melt_mm) == 0.0 and float(after.swe_mm) == 5.0
    warm = _state(285.0)
    none = soil_heat(warm, jnp.asarray(30.0), case.params, case.grid, case.options)[0]
    zero = soil_heat(
        warm,
        jnp.asarray(30.0),
        case.params,
        case.grid,
        case.options,
        snow=ThinSnow(swe_mm=jnp.asarray(0.0), depth_m=jnp.asarray(0.0)),
    )[0]
    assert jnp.array_equal(none.t, zero.t) and jnp.array_equal(none.sh2o, zero.sh2o)


def test_snow_insulates(case):
    """Layer 1's conductivity blends towards snow's 0.35 W m-1 K-1 as the snowpack deepens."""
    from dam.physics.soil_thermal_properties import soil_thermal_properties

    state = _state(275.0)
    k = [
        float(soil_thermal_properties(state, case.params, case.grid, case.options.const, 1800.0, d)[1][0])
        for d in (0.0, 0.05, 0.2, 1.0)
    ]
    assert k[0] > 0.35 and k[0] > k[1] > k[2] > k[3] > 0.35


def test_melt_gradients(case):
    state = _state(274.0)

    @eqx.filter_jit
    def melt(ghf, swe):
        snow = ThinSnow(swe_mm=swe, depth_m=swe / 150.0)
        return soil_heat(state, ghf, case.params, case.grid, case.options, snow=snow)[2].melt_mm

    g_ghf, g_swe = jax.grad(melt, argnums=(0, 1))(jnp.asarray(80.0), jnp.asarray(5.0))
    assert np.isfinite(g_ghf) and float(g_ghf) > 0.0
    assert np.isfinite(g_swe)
    eps = 1e-3
    fd = (melt(jnp.asarray(80.0 + eps), jnp.asarray(5.0)) - melt(jnp.asarray(80.0 - eps), jnp.asarray(5.0))) / (2 * eps)
    np.testing.assert_allclose(float(g_ghf), float(fd), rtol=1e-5)
