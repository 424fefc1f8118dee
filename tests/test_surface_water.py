"""Canopy water, precipitation heat, transpiration factors, the snowpack's water step and the soil-column water
boundary against the full Noah-MP v5.2 Bondville reference.

Every step is replayed from the reference state at the end of the previous step (snow layers included), with
the reference fluxes of the energy balance as inputs (latent heats, ground heat flux), so all 17,472 steps
run as one batch. The melt of a step comes from the column's own heat step (``ground_heat``: conduction
through snow layers and soil, phase change), fed with the previous reference state and the reference ground
heat flux.

Input missing from the reference: the canopy temperature between the energy balance and ``CanopyHydrology``
(the output is after the latent heat of canopy melt/freeze): recovered by inverting T_out = f TFRZ + (1 - f) T;
impossible where the canopy is fully wet (f = 1, T_out = TFRZ exactly), 456 steps, where only the total
canopy water is compared.
"""

from __future__ import annotations

import json
from importlib import resources

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from dam import parameters as P
from dam.cases import read_case
from dam.physics.canopy_hydrology import TFRZ, CanopyWaterParams, canopy_hydrology, canopy_water_intercept
from dam.physics.constants import constants
from dam.physics.ground_heat import ground_heat, ground_thermal_properties
from dam.physics.precip_heat import precipitation_heat_advect
from dam.physics.snow_types import SnowpackOptions, SnowState, layer_mask
from dam.physics.soil_water import soil_water
from dam.physics.transpiration import (
    RootParams,
    TranspirationOptions,
    soil_water_transpiration,
    transpiration_water_loss,
)
from dam.physics.types import SoilGrid, SoilState
from dam.physics.water_main import ground_water

DT = 1800.0
SNOWPACK = P.snowpack_params()
SOIL_CONST = constants()
RTOL = 1e-10  # float64 replay tolerance (relative) ...
ATOL = 1e-13  # ... and absolute, in the unit of the compared column


def _precip_area_frac(total: np.ndarray) -> np.ndarray:
    """Noah-MP ``ProcessAtmosForcing`` for OPT_PCP 1: 10 % convective, 90 % large-scale."""
    conv, large = 0.10 * total, 0.90 * total
    wet = conv + large > 0.0
    return np.where(wet, (conv + large) / np.where(wet, 10.0 * conv + large, 1.0), 0.0)


def _snowfall_density(t_air: np.ndarray) -> np.ndarray:
    return np.minimum(120.0, 67.92 + 51.25 * np.exp((t_air - 273.16) / 2.59))


@pytest.fixture(scope="module")
def ref(full_reference_dir):
    out = pd.read_csv(full_reference_dir / "output.csv.gz")
    frc = pd.read_csv(full_reference_dir / "forcing.csv")
    setup = json.loads((full_reference_dir / "setup.json").read_text())
    init = setup["initial_state_key"]
    water = setup["parameters_used"]["water"]

    def prev(col: str, first) -> np.ndarray:
        return np.concatenate([np.atleast_1d(np.asarray(first, float)), out[col].to_numpy()[:-1]])

    def layers(fmt: str, key: str) -> np.ndarray:
        return np.stack([prev(fmt.format(k), init[key][k - 1]) for k in range(1, 5)], axis=-1)

    def snow_layers(fmt: str) -> np.ndarray:
        return np.stack([prev(fmt.format(k), 0.0) for k in range(1, 4)], axis=-1)

    with resources.as_file(resources.files("dam.data") / "bondville_soil") as case_dir:
        case = read_case(case_dir)
    n_layers_prev = prev("n_snow_layers", init["n_snow_layers"])
    zero = np.zeros(len(out))
    return dict(
        out=out,
        frc=frc,
        case=case,
        canopy_params=CanopyWaterParams(liq_hold_cap_mm=jnp.asarray(water["CanopyLiqHoldCap"])),
        n_root=int(water["NumSoilLayerRoot"]),
        smcwlt=np.asarray(water["SoilMoistureWilt"]["values_fortran_order"]),
        smcref=np.asarray(water["SoilMoistureFieldCap"]["values_fortran_order"]),
        precip_area_frac=_precip_area_frac(frc["precip_total_kg_m2_s"].to_numpy()),
        snowfall_density=_snowfall_density(frc["T_air_K"].to_numpy()),
        t_veg_prev=prev("T_veg_K", init["T_veg_K"]),
        t_grd_prev=prev("T_grd_K", init["T_grd_K"]),
        liq_prev=prev("canopy_liq_mm", init["canopy_liq_mm"]),
        ice_prev=prev("canopy_ice_mm", init["canopy_ice_mm"]),
        swe_prev=prev("swe_mm", init["swe_mm"]),
        depth_prev=prev("snow_depth_m", init["snow_depth_m"]),
        snow_prev=SnowState(
            swe_mm=jnp.asarray(prev("swe_mm", init["swe_mm"])),
            depth_m=jnp.asarray(prev("snow_depth_m", init["snow_depth_m"])),
            age=jnp.asarray(zero),
            swe_prev_mm=jnp.asarray(zero),
            n_layers=jnp.asarray(n_layers_prev.astype(np.int32)),
            t_k=jnp.asarray(snow_layers("snow_T_{}_K")),
            ice_mm=jnp.asarray(snow_layers("snow_ice_{}_mm")),
            liq_mm=jnp.asarray(snow_layers("snow_liq_{}_mm")),
            dz_m=jnp.asarray(snow_layers("dz_{}_m")),
        ),  # fmt: skip
        soil_prev=SoilState(
            t=jnp.asarray(layers("soil_T_{}_K", "soil_T_K")),
            smc=jnp.asarray(layers("smc_{}", "smc")),
            sh2o=jnp.asarray(layers("sh2o_{}", "sh2o")),
        ),
    )


def _col(ref, name):
    return jnp.asarray(ref["out"][name].to_numpy())


@pytest.fixture(scope="module")
def replay(ref):
    """All processes of the surface water step for every reference step, in one jitted batch."""
    frc, case = ref["frc"], ref["case"]
    veg_frac = _col(ref, "veg_frac")
    lai, sai = _col(ref, "lai_eff"), _col(ref, "sai_eff")
    rain, snow = _col(ref, "rain_ref_mm_s"), _col(ref, "snowfall_ref_mm_s")
    tveg_out = _col(ref, "T_veg_K")
    grid = case.grid
    params = case.params

    @jax.jit
    def run(tveg_in):
        icp = canopy_water_intercept(
            ref["liq_prev"],
            ref["ice_prev"],
            rain,
            snow,
            ref["precip_area_frac"],
            ref["snowfall_density"],
            lai,
            sai,
            veg_frac,
            ref["t_veg_prev"],
            jnp.asarray(frc["u_ms"].to_numpy()),
            jnp.asarray(frc["v_ms"].to_numpy()),
            ref["canopy_params"],
            DT,
        )
        heat = precipitation_heat_advect(
            jnp.asarray(frc["T_air_K"].to_numpy()),
            ref["t_veg_prev"],
            ref["t_grd_prev"],
            veg_frac,
            rain,
            snow,
            icp.drip_rain_mmps,
            icp.throughfall_rain_mmps,
            icp.drip_snow_mmps,
            icp.throughfall_snow_mmps,
        )
        can = canopy_hydrology(
            icp.liq_mm,
            icp.ice_mm,
            _col(ref, "LH_canevap_Wm2"),
            _col(ref, "LH_transp_Wm2"),
            ref["t_veg_prev"] <= TFRZ,
            tveg_in,
            lai,
            sai,
            veg_frac,
            ref["snowfall_density"],
            ref["canopy_params"],
            DT,
        )
        factors = soil_water_transpiration(ref["soil_prev"].sh2o, params, grid, RootParams(jnp.asarray(ref["n_root"])))
        # The column's heat step melts snow (layers and thin snow), then the snowpack's water step.
        ghf = _col(ref, "bnd_G_soiltop_Wm2")
        snow0 = ref["snow_prev"]
        thermal = ground_thermal_properties(ref["soil_prev"], snow0, params, grid, case.options)
        heated, melted, gheat = ground_heat(ref["soil_prev"], snow0, thermal, ghf, params, grid, case.options)
        melted = eqx.tree_at(lambda s: s.dz_m, melted, thermal.snow_dz)
        water0 = snow0.ice_mm + snow0.liq_mm
        has_water = layer_mask(snow0.n_layers) & (water0 > 0.0)
        ice_frac = jnp.where(has_water, snow0.ice_mm / jnp.where(has_water, water0, 1.0), 0.0)
        ground = ground_water(
            melted, gheat.thin_snow_melt_mm, gheat.melting, ice_frac, heated, thermal.soil_dz[..., 0],
            _col(ref, "LH_grd_Wm2"), ref["t_grd_prev"] <= TFRZ, icp.rain_ground_mmps, icp.snow_ground_mmps,
            icp.snow_depth_incr_mps, can.transpiration_mmps, factors.root_fac, ghf,
            jnp.asarray(frc["T_air_K"].to_numpy()), jnp.asarray(frc["p_ref_Pa"].to_numpy()), SNOWPACK,
            SnowpackOptions(), case.options.const, DT,
        )  # fmt: skip
        smc, sh2o, _ = soil_water(ground.soil.smc, ground.soil.sh2o, ground.forcing, params, grid, case.options)
        return icp, heat, can, factors, (melted, gheat), ground, smc, sh2o, heated.smc[:, 0]

    # First pass with the output canopy temperature gives the wetted fraction (independent of it), which
    # inverts the canopy melt/freeze temperature update.
    first = run(tveg_out)[2]
    f = np.asarray(first.wet_frac)
    t_out = np.asarray(tveg_out)
    # T_out - TFRZ has the sign of T - TFRZ, so the first pass finds the steps with canopy melt or freeze.
    phase = (np.asarray(first.melt_ice_mmps) > 0.0) | (np.asarray(first.freeze_liq_mmps) > 0.0)
    changed = phase & (f < 1.0)
    tveg_in = np.where(changed, TFRZ + (t_out - TFRZ) / np.where(changed, 1.0 - f, 1.0), t_out)
    ambiguous = (t_out == TFRZ) & (f >= 1.0)
    names = ("intercept", "heat", "canopy", "factors", "melted", "ground", "smc", "sh2o", "heated_smc1")
    res = dict(zip(names, run(jnp.asarray(tveg_in)), strict=True))
    res["ambiguous"] = ambiguous
    return res


def _ground_water(snow, lh, frozen, rain, snowfall, depth_incr, transpiration, root_fac, ghf):
    """:func:`ground_water` for a column without melt, on a wet unfrozen soil, at 270 K and 1000 hPa."""
    dtype = snow.swe_mm.dtype
    soil = SoilState(*(jnp.full(root_fac.shape, v, dtype) for v in (275.0, 0.3, 0.3)))
    c = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    no_melt = jnp.zeros(snow.swe_mm.shape + (3,), bool)
    return ground_water(
        snow, c(0.0), no_melt, c(no_melt), soil, c(0.1), lh, frozen, rain, snowfall, depth_incr, transpiration,
        root_fac, ghf, c(270.0), c(1e5), jax.tree_util.tree_map(c, SNOWPACK), SnowpackOptions(),
        SOIL_CONST, DT,
    )  # fmt: skip


def _assert_match(mine, expected, mask=None, rtol=RTOL, atol=ATOL, what=""):
    mine, expected = np.asarray(mine), np.asarray(expected)
    if mask is not None:
        mine, expected = mine[mask], expected[mask]
    np.testing.assert_allclose(mine, expected, rtol=rtol, atol=atol, err_msg=what)


def test_precipitation_heat_matches(ref, replay):
    total = replay["heat"].total_wm2(_col(ref, "veg_frac"))
    _assert_match(total, ref["out"]["precip_adv_heat_Wm2"], what="precip_adv_heat_Wm2")
    assert np.count_nonzero(ref["out"]["precip_adv_heat_Wm2"]) > 1000


def test_canopy_water_matches(ref, replay):
    out, can = ref["out"], replay["canopy"]
    ok = ~replay["ambiguous"]
    assert ok.mean() > 0.97  # 17,016 of 17,472 steps: all but the fully wet canopies at exactly TFRZ
    for mine, col in (
        (can.liq_mm, "canopy_liq_mm"),
        (can.ice_mm, "canopy_ice_mm"),
        (can.t_canopy_k, "T_veg_K"),
    ):
        _assert_match(mine, out[col], ok, what=col)
    # Independent of the canopy temperature: every step.
    _assert_match(can.liq_mm + can.ice_mm, out["canopy_liq_mm"] + out["canopy_ice_mm"], what="canopy water")
    _assert_match(can.wet_frac, out["canopy_wet_frac"], what="canopy_wet_frac")
    _assert_match(can.transpiration_mmps, out["transp_mm_s"], what="transp_mm_s")
    _assert_match(can.evap_net_mmps, out["evap_canopy_mm_s"], what="evap_canopy_mm_s")
    assert np.count_nonzero(np.asarray(can.melt_ice_mmps)) + np.count_nonzero(np.asarray(can.freeze_liq_mmps)) > 500


def test_transpiration_factors_match(ref, replay):
    out, factors = ref["out"], replay["factors"]
    # The packaged Bondville soil case carries the parameters of setup.json.
    np.testing.assert_array_equal(np.asarray(ref["case"].params.smcwlt), ref["smcwlt"])
    np.testing.assert_array_equal(np.asarray(ref["case"].params.smcref), ref["smcref"])
    _assert_match(factors.btran, out["btran"], what="btran")
    loss = replay["ground"].forcing.etran_mps
    for k in range(4):
        _assert_match(loss[:, k], out[f"bnd_transp_{k + 1}_m_s"], rtol=RTOL, atol=1e-22, what=f"layer {k + 1}")
    np.testing.assert_allclose(np.asarray(factors.root_fac).sum(-1), 1.0, rtol=1e-14)


def test_soil_boundary_and_snowpack_match(ref, replay):
    """Every step, snow layers included: the soil-column boundary, the snowpack (SWE, depth, number of layers,
    each layer's ice, liquid, thickness and temperature) and the ground evaporation."""
    out, ground = ref["out"], replay["ground"]
    _assert_match(ground.forcing.qinsurf_mps, out["bnd_water_in_m_s"], atol=1e-22, what="bnd_water_in")
    _assert_match(ground.forcing.evap_mps, out["bnd_soil_evap_m_s"], atol=1e-22, what="bnd_soil_evap")
    _assert_match(ground.forcing.evap_mps, out["evap_soil_liq_m_s"], atol=1e-22, what="evap_soil_liq")
    _assert_match(ground.evap_ground_net_mmps, out["evap_ground_mm_s"], what="evap_ground")
    _assert_match(ground.snow.swe_mm, out["swe_mm"], atol=1e-12, what="swe_mm")
    _assert_match(ground.snow.depth_m, out["snow_depth_m"], atol=1e-14, what="snow_depth_m")
    n_layers = out["n_snow_layers"].to_numpy()
    np.testing.assert_array_equal(np.asarray(ground.snow.n_layers), n_layers)
    assert (n_layers > 0).sum() == 111 and n_layers.max() == 3  # layers form, grow to three and go
    for k in range(1, 4):
        for mine, col, atol in (
            (ground.snow.ice_mm, "snow_ice_{}_mm", 1e-12),
            (ground.snow.liq_mm, "snow_liq_{}_mm", 1e-12),
            (ground.snow.dz_m, "dz_{}_m", 1e-14),
            (ground.snow.t_k, "snow_T_{}_K", 1e-9),
        ):
            _assert_match(mine[:, k - 1], out[col.format(k)], atol=atol, what=col.format(k))  # fmt: skip
    melted, gheat = replay["melted"]
    assert np.count_nonzero(np.asarray(gheat.thin_snow_melt_mm)) > 500  # thin-snow melt is exercised
    assert np.count_nonzero(np.asarray(gheat.snow_melt_mm - gheat.thin_snow_melt_mm)) > 20  # and melt of layers
    assert np.count_nonzero(np.asarray(ground.snow_outflow_mmps)) > 20  # percolation out of the layers
    assert np.count_nonzero(np.asarray(ground.sublim_snow_mmps)) > 300
    assert np.count_nonzero(np.asarray(ground.forcing.frz_top_ice_flux_mmps)) > 1000


def test_soil_water_from_the_boundary_matches(ref, replay):
    """End to end: the boundary fed to the soil column's water step gives the reference soil moisture."""
    out = ref["out"]
    for k in range(4):
        _assert_match(replay["smc"][:, k], out[f"smc_{k + 1}"], rtol=1e-12, atol=1e-15, what=f"smc_{k + 1}")
        _assert_match(replay["sh2o"][:, k], out[f"sh2o_{k + 1}"], rtol=1e-12, atol=1e-15, what=f"sh2o_{k + 1}")


def test_canopy_and_snowpack_conserve_water(ref, replay):
    """Per step: precipitation = water to the soil surface + vapour to the air + storage change (+ Noah-MP's
    threshold removals), to 1e-12 mm; the snowpack's water is its layers' ice and liquid, or its SWE."""
    icp, can, ground = replay["intercept"], replay["canopy"], replay["ground"]
    melted, gheat = replay["melted"]
    precip = (_col(ref, "rain_ref_mm_s") + _col(ref, "snowfall_ref_mm_s")) * DT
    d_canopy = can.liq_mm + can.ice_mm - (ref["liq_prev"] + ref["ice_prev"])
    canopy_out = (icp.rain_ground_mmps + icp.snow_ground_mmps + can.evap_net_mmps) * DT + can.discarded_mm
    np.testing.assert_allclose(np.asarray(precip - canopy_out - d_canopy), 0.0, atol=1e-12)

    # Snowpack from after the melt: snowfall + rain + frost - sublimation = change + outflow + ponding + removals
    # + what it took from soil layer 1 (negative).
    d_snow = ground.snow.water_mm - melted.water_mm
    thin_melt = gheat.thin_snow_melt_mm
    snow_in = (icp.snow_ground_mmps + ground.frost_snow_mmps - ground.sublim_snow_mmps) * DT
    rain_in = jnp.where(ground.snow.n_layers > 0, icp.rain_ground_mmps * DT, 0.0)
    soil_taken = (ground.soil.smc[:, 0] - replay["heated_smc1"]) * 100.0  # m3 m-3 x 0.1 m x 1000 mm m-1
    out_of_snow = ground.snow_outflow_mmps * DT + (ground.pond_mm - thin_melt) + ground.discarded_mm
    residual = snow_in + rain_in - d_snow - out_of_snow - ground.glacier_excess_mm + soil_taken
    np.testing.assert_allclose(np.asarray(residual), 0.0, atol=1e-11)

    # Ground surface: rain + melt + dew + snowpack outflow reach the soil; the frozen ground takes dew - evaporation.
    rain_soil = jnp.where(ground.snow.n_layers > 0, 0.0, icp.rain_ground_mmps)
    surface = (rain_soil + ground.dew_soil_mmps + ground.snow_outflow_mmps) * DT + ground.pond_mm
    frozen = np.asarray(ground.forcing.frozen_ground) > 0
    surface = surface - jnp.where(frozen, ground.dew_soil_mmps * DT, 0.0)
    np.testing.assert_allclose(np.asarray(ground.forcing.qinsurf_mps * 1000.0 * DT - surface), 0.0, atol=1e-12)
    vapour = (ground.evap_soil_mmps - ground.dew_soil_mmps + ground.sublim_snow_mmps - ground.frost_snow_mmps) * DT
    np.testing.assert_allclose(np.asarray(vapour - ground.evap_ground_net_mmps * DT), 0.0, atol=1e-12)


def test_buried_canopy_drops_its_water_and_conserves():
    """No leaves or stems above the snow: everything falls through and the held water drips at once."""
    p = CanopyWaterParams(liq_hold_cap_mm=jnp.asarray(0.1))
    icp = canopy_water_intercept(
        jnp.asarray(0.3), jnp.asarray(0.7), jnp.asarray(1e-3), jnp.asarray(2e-3), jnp.asarray(1 / 1.9),
        jnp.asarray(100.0), jnp.asarray(0.0), jnp.asarray(0.0), jnp.asarray(0.96), jnp.asarray(270.0),
        jnp.asarray(3.0), jnp.asarray(0.0), p, DT,
    )  # fmt: skip
    assert float(icp.liq_mm) == 0.0 and float(icp.ice_mm) == 0.0 and float(icp.wet_frac) == 0.0
    np.testing.assert_allclose(float(icp.rain_ground_mmps) * DT, 1e-3 * DT + 0.3, rtol=1e-15)
    np.testing.assert_allclose(float(icp.snow_ground_mmps) * DT, 2e-3 * DT + 0.7, rtol=1e-15)


def test_gradients_are_finite_and_nonzero(ref):
    case = ref["case"]
    p = CanopyWaterParams(liq_hold_cap_mm=jnp.asarray(0.1))

    def to_ground(lai, liq):  # a nearly full canopy: interception is capacity-limited
        icp = canopy_water_intercept(
            liq, jnp.asarray(0.0), jnp.asarray(1e-3), jnp.asarray(0.0), jnp.asarray(1 / 1.9), jnp.asarray(100.0),
            lai, jnp.asarray(0.3), jnp.asarray(0.96), jnp.asarray(275.0), jnp.asarray(3.0), jnp.asarray(0.0), p, DT,
        )  # fmt: skip
        return icp.rain_ground_mmps + icp.wet_frac

    g_lai, g_liq = jax.jit(jax.grad(to_ground, argnums=(0, 1)))(jnp.asarray(2.0), jnp.asarray(0.2))
    assert np.isfinite(g_lai) and float(g_lai) < 0.0  # more leaves hold more water
    assert np.isfinite(g_liq) and float(g_liq) != 0.0
    eps = 1e-5
    fd = (to_ground(jnp.asarray(2.0 + eps), jnp.asarray(0.2)) - to_ground(jnp.asarray(2.0 - eps), jnp.asarray(0.2))) / (
        2 * eps
    )
    np.testing.assert_allclose(float(g_lai), float(fd), rtol=1e-6)
    # A dry canopy (zero storage) still has finite gradients through the wetted fraction.
    g_dry = jax.grad(to_ground, argnums=(0, 1))(jnp.asarray(0.0), jnp.asarray(0.0))
    assert all(np.isfinite(g) for g in g_dry)

    def btran(sh2o):
        return soil_water_transpiration(sh2o, case.params, case.grid).btran

    g = jax.grad(btran)(jnp.asarray([0.25, 0.26, 0.30, 0.30]))
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[:3] > 0.0) and float(g[3]) == 0.0

    def boundary(rain, swe, lh):
        icp = canopy_water_intercept(
            jnp.asarray(0.05), jnp.asarray(0.0), rain, jnp.asarray(0.0), jnp.asarray(1 / 1.9), jnp.asarray(100.0),
            jnp.asarray(1.0), jnp.asarray(0.3), jnp.asarray(0.96), jnp.asarray(275.0), jnp.asarray(3.0),
            jnp.asarray(0.0), p, DT,
        )  # fmt: skip
        gw = _ground_water(
            SnowState.without_layers(swe, swe / 100.0), lh, jnp.asarray(False), icp.rain_ground_mmps,
            icp.snow_ground_mmps, icp.snow_depth_incr_mps, jnp.asarray(1e-5), jnp.asarray([0.3, 0.5, 0.2, 0.0]),
            jnp.asarray(10.0),
        )  # fmt: skip
        return gw.forcing.qinsurf_mps * 1e6 + gw.snow.swe_mm + gw.forcing.evap_mps * 1e6

    grads = jax.grad(boundary, argnums=(0, 1, 2))(jnp.asarray(1e-3), jnp.asarray(0.5), jnp.asarray(200.0))
    assert all(np.isfinite(g) and float(g) != 0.0 for g in grads)


def test_float32_jit_vmap(ref, replay):
    """The same batch in float32, one column per vmap lane, stays float32 and close to float64."""
    n = 2000
    sl = slice(6000, 6000 + n)  # spring: rain, growing canopy
    args64 = (
        ref["liq_prev"][sl], ref["ice_prev"][sl], ref["out"]["rain_ref_mm_s"].to_numpy()[sl],
        ref["out"]["snowfall_ref_mm_s"].to_numpy()[sl], ref["precip_area_frac"][sl], ref["snowfall_density"][sl],
        ref["out"]["lai_eff"].to_numpy()[sl], ref["out"]["sai_eff"].to_numpy()[sl],
        ref["out"]["veg_frac"].to_numpy()[sl], ref["t_veg_prev"][sl], ref["frc"]["u_ms"].to_numpy()[sl],
        ref["frc"]["v_ms"].to_numpy()[sl],
    )  # fmt: skip
    args32 = tuple(jnp.asarray(a, jnp.float32) for a in args64)
    p32 = CanopyWaterParams(liq_hold_cap_mm=jnp.asarray(0.1, jnp.float32))
    fn = jax.jit(jax.vmap(lambda *a: canopy_water_intercept(*a, p32, DT)))
    icp = fn(*args32)
    assert icp.liq_mm.dtype == jnp.float32 and icp.rain_ground_mmps.dtype == jnp.float32
    ref64 = replay["intercept"]
    np.testing.assert_allclose(np.asarray(icp.liq_mm), np.asarray(ref64.liq_mm)[sl], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(icp.rain_ground_mmps), np.asarray(ref64.rain_ground_mmps)[sl], rtol=1e-4, atol=1e-9
    )
    params32 = ref["case"].as_dtype(jnp.float32)[0]
    f32 = soil_water_transpiration(jnp.asarray(ref["soil_prev"].sh2o[sl], jnp.float32), params32, ref["case"].grid)
    assert f32.btran.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(f32.btran), np.asarray(replay["factors"].btran)[sl], rtol=1e-5)
    loss = transpiration_water_loss(jnp.asarray(1e-4, jnp.float32), f32.root_fac)
    assert loss.dtype == jnp.float32

    def water_main(icp, lh_can, lh_tr, t_prev, t_veg, lai, sai, fveg, rho, swe, depth, lh_grd, t_grd, root_fac):
        can = canopy_hydrology(
            icp.liq_mm, icp.ice_mm, lh_can, lh_tr, t_prev <= TFRZ, t_veg, lai, sai, fveg, rho, p32, DT
        )
        snow = SnowState.without_layers(swe, depth)
        return can, _ground_water(
            snow, lh_grd, t_grd <= TFRZ, icp.rain_ground_mmps, icp.snow_ground_mmps, icp.snow_depth_incr_mps,
            can.transpiration_mmps, root_fac, lh_grd * 0.0,
        )  # fmt: skip

    cols = [ref["out"][c].to_numpy()[sl] for c in ("LH_canevap_Wm2", "LH_transp_Wm2")]
    more = (
        *cols, ref["t_veg_prev"][sl], ref["out"]["T_veg_K"].to_numpy()[sl], *args64[6:9], args64[5],
        ref["swe_prev"][sl], ref["depth_prev"][sl], ref["out"]["LH_grd_Wm2"].to_numpy()[sl], ref["t_grd_prev"][sl],
    )  # fmt: skip
    can, gw = jax.jit(jax.vmap(water_main))(icp, *(jnp.asarray(a, jnp.float32) for a in more), f32.root_fac)
    for leaf in jax.tree_util.tree_leaves((can, gw.forcing, gw.snow)):
        assert leaf.dtype == jnp.float32 or leaf.dtype == jnp.int32  # the number of snow layers is an integer
    np.testing.assert_allclose(np.asarray(can.transpiration_mmps), ref["out"]["transp_mm_s"].to_numpy()[sl], rtol=1e-5)
    assert gw.forcing.etran_mps.shape == (n, 4)


def test_transpiration_options_are_validated(ref):
    with pytest.raises(ValueError, match="n_root"):
        RootParams(jnp.asarray(0))
    with pytest.raises(ValueError, match="n_root"):
        RootParams(jnp.asarray(2.0))
    with pytest.raises(ValueError, match="scheme"):
        TranspirationOptions(scheme="clm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exceeds"):
        soil_water_transpiration(jnp.zeros(2), ref["case"].params, SoilGrid(zsoil=jnp.asarray([-0.1, -0.4])),
                                 RootParams(jnp.asarray(3)))  # fmt: skip


def test_root_layers_are_traced_and_match_noahmp_loop(ref):
    """One compiled function serves every number of root layers (vmapped over it here), with the factors of
    Noah-MP's loop over the root layers only, bit for bit."""
    params, grid = ref["case"].params, ref["case"].grid
    sh2o = np.array([0.18, 0.27, 0.33, 0.21])
    counts = jnp.arange(1, 5)
    got = jax.jit(jax.vmap(lambda n: soil_water_transpiration(jnp.asarray(sh2o), params, grid, RootParams(n))))(counts)
    zsoil, dz = np.asarray(grid.zsoil), np.asarray(grid.dz)
    wlt, fc = np.asarray(params.smcwlt), np.asarray(params.smcref)
    for i, nr in enumerate(np.asarray(counts)):  # SoilWaterTranspiration: DO IZ = 1, NumSoilLayerRoot
        facs = [max(1e-6, dz[k] / -zsoil[nr - 1] * min(1.0, max(0.0, (sh2o[k] - wlt[k]) / (fc[k] - wlt[k]))))
                for k in range(nr)]  # fmt: skip
        total = 0.0
        for f in facs:
            total += f
        btran = max(1e-6, total)
        assert float(got.btran[i]) == btran
        np.testing.assert_array_equal(np.asarray(got.root_fac[i]), [f / btran for f in facs] + [0.0] * (4 - nr))
