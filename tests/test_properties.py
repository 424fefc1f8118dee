"""Property-based tests (hypothesis) of one soil-column step on random valid columns.

Each example is a batch of columns with random STAS soils (classes 1-12, a class per column), random
temperatures (250-300 K), total moisture between a tenth of the wilting point and the porosity, any split into
ice and liquid water, random boundary fluxes (heating and cooling, storms up to 5e-5 m s-1, evaporation,
transpiration, frozen ground), under two option sets (Niu06 supercooled water and permeability with the
semi-implicit temperature scheme; Koren99 with the full-implicit one: one compilation each). One step must:

* conserve water: ``sum_k dz_k dsmc_k = (P - E_eff - sum Tr) dt + [frozen] Fice dt / 1000 - R / 1000`` (m)
  to 1e-12 m (the bookkeeping of tests/test_conservation.py, Noah-MP SoilWaterMain);
* conserve energy: heat diffusion ``sum C dz (T_diff - T) = (G + H_bot) dt`` (with the full-implicit scheme,
  Noah-MP OPT_STC=2, the top flux also loses ``2 k_1 (T_diff,1 - T_1) / dz_1``: the top layer is tied to the
  surface temperature of the step's start) and phase change ``sum C dz (T_new - T_diff) = -L dt``, to a few ulp
  of the column's heat content;
* keep every layer within bounds: ``0 <= sh2o <= smc <= porosity`` and finite temperatures.

Examples are derandomized (the same in every run), so a failure is reproducible.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dam.physics import SoilForcing, SoilGrid, SoilOptions, SoilParams, SoilState, soil_step
from dam.physics.soil_thermal_properties import soil_thermal_properties
from dam.soil_table import stas_parameters

COLUMNS, N = 16, 4
GRID = SoilGrid(zsoil=jnp.array([-0.1, -0.4, -1.0, -2.0]))
DT_S = 1800.0
EPS = float(np.finfo(np.float64).eps)
LAYER_FIELDS = ("smcmax", "smcref", "smcwlt", "bexp", "dksat", "dwsat", "psisat", "quartz")
_step = eqx.filter_jit(soil_step)


def _unit(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False))


@st.composite
def columns(draw):
    """(params, state, forcing) of COLUMNS random valid columns."""
    soil = draw(hnp.arrays(np.int64, COLUMNS, elements=st.integers(1, 12)))
    table = {f: np.array([[stas_parameters(int(k))[f]] * N for k in soil]) for f in LAYER_FIELDS}
    column = {"csoil": 2e6, "slope": 0.1, "refkdt": 3.0, "refdk": 2e-6, "frzk": 0.15}
    params = SoilParams(
        **{f: jnp.asarray(v) for f, v in table.items()},
        **{f: jnp.full(COLUMNS, v) for f, v in column.items()},
        tbot=jnp.asarray(270.0 + 20.0 * draw(_unit(COLUMNS))),
    )
    smcmax, smcwlt = table["smcmax"], table["smcwlt"]
    lo = 0.1 * smcwlt
    smc = lo + (smcmax - lo) * draw(_unit((COLUMNS, N)))
    sh2o = smc * (0.02 + 0.98 * draw(_unit((COLUMNS, N))))  # any share of ice
    t = 250.0 + 50.0 * draw(_unit((COLUMNS, N)))
    state = SoilState(t=jnp.asarray(t), smc=jnp.asarray(smc), sh2o=jnp.asarray(sh2o))
    u = draw(_unit((7, COLUMNS)))
    rain = np.where(u[1] > 0.5, 5e-5 * (2.0 * u[1] - 1.0) ** 2, 0.0)  # half the columns dry
    forcing = SoilForcing(
        ghf_wm2=jnp.asarray(-200.0 + 400.0 * u[0]),
        qinsurf_mps=jnp.asarray(rain),
        evap_mps=jnp.asarray(1e-7 * u[2]),
        etran_mps=jnp.asarray(5e-8 * draw(_unit((COLUMNS, N)))),
        frozen_ground=jnp.asarray((u[3] > 0.7).astype(np.float64)),
        frz_top_ice_flux_mmps=jnp.asarray(2e-5 * (u[4] - 0.5)),
    )
    return params, state, forcing


@pytest.mark.parametrize(("frozen_soil", "scheme"), [("niu06", "semi_implicit"), ("koren99", "full_implicit")])
@settings(max_examples=20, deadline=None, derandomize=True)
@given(case=columns())
def test_one_step_conserves_water_and_energy_and_stays_in_bounds(frozen_soil, scheme, case):
    params, state, forcing = case
    options = SoilOptions(dt_s=DT_S, supercooled=frozen_soil, frozen_permeability=frozen_soil,
                          temperature_scheme=scheme)  # fmt: skip
    new, fl = _step(state, forcing, params, GRID, options)
    t_new, smc_new, sh2o_new = np.asarray(new.t), np.asarray(new.smc), np.asarray(new.sh2o)
    dz = np.asarray(GRID.dz)
    smc, t = np.asarray(state.smc), np.asarray(state.t)

    # water (m)
    frozen = np.asarray(forcing.frozen_ground) > 0
    evap = np.where(frozen, 0.0, np.asarray(forcing.evap_mps))
    inputs = (np.asarray(forcing.qinsurf_mps) - evap - np.asarray(forcing.etran_mps).sum(-1)) * DT_S
    inputs = inputs + np.where(frozen, np.asarray(forcing.frz_top_ice_flux_mmps) * DT_S / 1000.0, 0.0)
    runoff = (np.asarray(fl.runoff_surface_mm) + np.asarray(fl.runoff_subsurface_mm)) / 1000.0
    water = np.sum(dz * (smc_new - smc), axis=-1) - (inputs - runoff)
    assert np.abs(water).max() <= 1e-12, f"water residual {np.abs(water).max():.3e} m"

    # energy (J m-2): diffusion and phase change, each to a few ulp of the heat content
    cdz = np.asarray(fl.heat_capacity) * dz
    t_diff = np.asarray(fl.t_diff)
    boundary = (np.asarray(forcing.ghf_wm2) + np.asarray(fl.heat_bottom_wm2)) * DT_S
    if scheme == "full_implicit":  # Noah-MP OPT_STC=2: the top flux also answers the change of the top layer
        k1 = np.asarray(soil_thermal_properties(state, params, GRID, options.const, DT_S)[1])[:, 0]
        boundary = boundary - 2.0 * k1 * (t_diff[:, 0] - t[:, 0]) / dz[0] * DT_S
    latent = np.asarray(fl.latent_heat_wm2) * DT_S
    tol = 4.0 * EPS * (np.sum(cdz * np.abs(t), axis=-1) + np.abs(boundary) + np.abs(latent))
    diffusion = np.sum(cdz * (t_diff - t), axis=-1) - boundary
    phase = np.sum(cdz * (t_new - t_diff), axis=-1) + latent
    assert np.all(np.abs(diffusion) <= tol), f"diffusion residual {np.abs(diffusion).max():.3e} J m-2"
    assert np.all(np.abs(phase) <= tol), f"phase-change residual {np.abs(phase).max():.3e} J m-2"

    # bounds
    tiny = 1e-14
    assert sh2o_new.min() >= 0.0
    assert np.all(sh2o_new <= smc_new + tiny)
    assert np.all(smc_new <= np.asarray(params.smcmax) + tiny)
    assert np.all(np.isfinite(t_new)) and abs(t_new - t).max() < 60.0
