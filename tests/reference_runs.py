"""Full Fortran Noah-MP v5.2 station references (``tests/data/noahmp_full/*``) as the station model's
inputs: forcing, parameters from the shipped tables, grid, the state entering step 1, and the checks that the
station tests share (RMSE, energy and water closure)."""

from __future__ import annotations

import json

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dam import parameters as P
from dam.physics.energy_balance import SurfaceEnergyState
from dam.physics.station import (
    CanopyWater,
    SnowState,
    StationForcing,
    StationOptions,
    StationState,
    run_station,
)
from dam.physics.types import SoilGrid, SoilState

FORCING_COLUMNS = ("T_air_K", "q_air_kgkg", "p_sfc_Pa", "u_ms", "v_ms", "sw_down_Wm2", "lw_down_Wm2",
                   "precip_total_kg_m2_s", "cos_zenith", "julian_day")  # fmt: skip

run = eqx.filter_jit(run_station)


def _a(x):
    return jnp.asarray(np.asarray(x, dtype=np.float64))


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) ** 2)))


class Reference:
    """A full Fortran Noah-MP reference folder (forcing.csv, output.csv.gz, setup.json): parameters from the
    shipped tables, the grid, and the state entering step 1 (``initial_state_key``: a cold start as in the
    Bondville run, or a restart with snow layers as in bondville_cold)."""

    def __init__(self, root):
        self.forcing = pd.read_csv(root / "forcing.csv")
        self.output = pd.read_csv(root / "output.csv.gz")
        self.setup = json.loads((root / "setup.json").read_text())
        s = self.setup
        self.site = P.SiteDescription(
            vegetation_type=s["vegetation_type"], soil_types=(s["soil_type"],) * 4, soil_colour=s["soil_color"],
            veg_frac_max=0.96, ref_height_m=s["forcing_height_m"], tbot_k=s["deep_soil_temperature_K"],
            latitude_deg=s["location"]["latitude_as_used_deg"],
        )  # fmt: skip
        d = self.site
        self.params = P.station_params(d)
        self.grid = SoilGrid(zsoil=_a(s["soil_layers"]["bottom_depth_m"]), zbot=s["deep_soil_temperature_depth_m"])
        self.options = StationOptions()
        self.state0 = self._state(s["initial_state_key"])

    def _state(self, k: dict) -> StationState:
        if "zsnso_m_index_-2_to_4" in k:  # a restart: snow layers (Fortran indices -2..0) and their depths
            n = int(k["n_snow_layers"])
            z = np.nan_to_num(np.asarray(k["zsnso_m_index_-2_to_4"][:3], dtype=float))
            dz = np.where(np.arange(3) >= 3 - n, -np.diff(np.r_[0.0, z]), 0.0)
            layer = lambda key: _a(np.nan_to_num(np.asarray(k[key], dtype=float)))  # noqa: E731
            snow = SnowState(
                swe_mm=_a(k["swe_mm"]), depth_m=_a(k["snow_depth_m"]), age=_a(k["snow_age_tauss"]),
                swe_prev_mm=_a(k["swe_prev_mm"]), n_layers=jnp.asarray(n, jnp.int32),
                t_k=layer("snow_T_K_index_-2_-1_0"), ice_mm=layer("snow_ice_mm_index_-2_-1_0"),
                liq_mm=layer("snow_liq_mm_index_-2_-1_0"), dz_m=_a(dz),
            )  # fmt: skip
        else:
            snow = SnowState.without_layers(_a(k["swe_mm"]), _a(k["snow_depth_m"]), age=_a(k["snow_age"]))
        return StationState(
            soil=SoilState(t=_a(k["soil_T_K"]), smc=_a(k["smc"]), sh2o=_a(k["sh2o"])),
            energy=SurfaceEnergyState(
                t_veg=_a(k["T_veg_K"]), t_grd=_a(k["T_grd_K"]), t_canair=_a(k["T_canair_K"]),
                e_canair=_a(k["e_canair_Pa"]), cm=_a(k["CM_ms"]), ch=_a(k["CH_ms"]),
            ),
            canopy=CanopyWater(liq_mm=_a(k["canopy_liq_mm"]), ice_mm=_a(k["canopy_ice_mm"])),
            snow=snow,
        )  # fmt: skip

    def cold_start_state(self) -> StationState:
        """The state entering pass 1 of a spun-up reference (``spinup.pass1_cold_start``): the setup file's
        values as HRLDAS initialises them (frozen layers at the liquid limit of ``NoahmpInitMain``, no canopy
        water, no snow layer below 2.5 cm) and the driver's step-1 guesses."""
        start = self.setup["spinup"]["pass1_cold_start"]
        f, g = start["setup_file_initial"], start["driver_step1_guesses_from_cold_forcing"]
        t = np.float32(f["soil_temperature"]).astype(float)
        smc = np.float32(f["soil_moisture"]).astype(float)
        p = {k: np.asarray(getattr(self.params.soil, k)) for k in ("bexp", "smcmax", "psisat")}
        frozen = t < 273.149
        base = (3.335e5 / (9.81 * -p["psisat"])) * ((np.where(frozen, t, 272.0) - 273.15) / t)
        fk = base ** (-1.0 / p["bexp"]) * p["smcmax"]
        sh2o = np.where(frozen, np.minimum(np.maximum(fk, 0.02), smc), smc)
        tsk = float(np.float32(f["skin_temperature"]))
        return StationState(
            soil=SoilState(t=_a(t), smc=_a(smc), sh2o=_a(sh2o)),
            energy=SurfaceEnergyState(
                t_veg=_a(tsk), t_grd=_a(tsk), t_canair=_a(g["T_canair_K"]), e_canair=_a(g["e_canair_Pa"]),
                cm=_a(g["CM_ms"]), ch=_a(g["CH_ms"]),
            ),
            canopy=CanopyWater(liq_mm=_a(0.0), ice_mm=_a(0.0)),
            snow=SnowState.initial(_a(np.float32(f["snow_water_equivalent"])), _a(np.float32(f["snow_depth"])),
                                   _a(tsk)),
        )  # fmt: skip

    def station_forcing(self, n: int | None = None) -> StationForcing:
        return StationForcing(*(_a(self.forcing[c].to_numpy()[:n]) for c in FORCING_COLUMNS))


def assert_balances_close(ref, year) -> None:
    """Energy: SW_abs + precipitation heat = LW_net + SH + LH + G + canopy storage (W m-2, round-off);
    water: P = ET + runoff + drainage + storage change (soil, canopy, snow: the snow layers' ice and liquid, or
    the SWE of a pack without layers) + thresholded remnants, to 1e-10 m, every step."""
    states, fluxes = year
    e = fluxes.energy
    residual = fluxes.sw_abs_wm2 + e.precip_adv - e.lw_net - e.sh - e.lh - e.g - e.canopy_storage
    assert np.abs(residual).max() < 1e-9

    dt = ref.options.dt_s
    dz = np.asarray(ref.grid.dz)

    def storage(s):
        soil = (np.asarray(s.soil.smc) * dz).sum(axis=-1) * 1000.0
        return soil + np.asarray(s.canopy.liq_mm) + np.asarray(s.canopy.ice_mm) + np.asarray(s.snow.water_mm)

    d_storage = np.diff(np.r_[storage(ref.state0), storage(states)])
    precip = (fluxes.rain_mmps + fluxes.snowfall_mmps) * dt
    et = (fluxes.evap_canopy_mmps + fluxes.transpiration_mmps + fluxes.evap_ground_mmps) * dt
    runoff = fluxes.runoff_surface_mm + fluxes.runoff_subsurface_mm
    water_residual_m = (precip - et - runoff - d_storage - fluxes.discarded_mm) / 1000.0
    assert np.abs(water_residual_m).max() < 1e-10
    assert precip.sum() > 800.0 and runoff.sum() > 0.0  # the balance is exercised, not vacuous
