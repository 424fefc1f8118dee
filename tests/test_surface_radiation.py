"""Phenology, snow cover, albedo, shortwave and emissivity against the full Noah-MP v5.2 Bondville 1998 run.

Each step is replayed from the reference state at the end of the previous step (the start-of-step state Noah-MP
uses); the snow age is the only state carried by the replay itself. Two inputs of the radiation are not in the
reference and are rebuilt here from it:

- the canopy wetted fraction after this step's interception (``CanopyWaterIntercept``; the reference column is
  the value after ``CanopyHydrology`` at the end of the step), and
- the SWE that ``SnowAgingBats`` compares with (SnowWaterEquivPrev = SWE after the previous step's phase change),
  estimated as SWE(end of previous step) minus that step's ground snowfall, frost and sublimation. The estimate
  is inexact where snow melted in the previous step or snow layers exist, so steps that start with snow are
  compared with a looser tolerance.
"""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from dam.physics.albedo import RadiationOptions, RadiationParams, SnowCoverParams, snow_cover_fraction
from dam.physics.phenology import PhenologyParams, phenology
from dam.physics.radiation import emissivity, surface_radiation

DT = 1800.0
TFRZ = 273.16


def eqx_replace(module, **fields):
    """A copy of an equinox module with some fields replaced."""
    names = list(fields)
    return eqx.tree_at(lambda m: [getattr(m, n) for n in names], module, [fields[n] for n in names])


def _arr(x) -> jax.Array:
    return jnp.asarray(x["values_fortran_order"] if isinstance(x, dict) else x, jnp.float64)


def build_params(setup: dict) -> tuple[PhenologyParams, SnowCoverParams, RadiationParams]:
    """Parameters from setup.json (the lead will move this to dam/)."""
    e = setup["parameters_used"]["energy"]
    w = setup["parameters_used"]["water"]
    b = setup["parameters_used"]["biochem"]
    pheno = PhenologyParams(
        lai_monthly=_arr(e["LeafAreaIndexMon"]),
        sai_monthly=_arr(e["StemAreaIndexMon"]),
        canopy_top_m=_arr(e["HeightCanopyTop"]),
        canopy_bottom_m=_arr(e["HeightCanopyBot"]),
        veg_frac_max=_arr(e["VegFracAnnMax"]),
        t_min_photosynthesis_k=_arr(b["TemperatureMinPhotosyn"]),
        latitude_deg=_arr(setup["noahmp_domain_at_step1"]["Latitude"]),
    )
    cover = SnowCoverParams(melt_factor=_arr(w["SnowMeltFac"]), cover_factor_m=_arr(w["SnowCoverFac"]))
    rad = RadiationParams(
        rho_leaf=_arr(e["ReflectanceLeaf"]),
        rho_stem=_arr(e["ReflectanceStem"]),
        tau_leaf=_arr(e["TransmittanceLeaf"]),
        tau_stem=_arr(e["TransmittanceStem"]),
        leaf_orientation=_arr(e["CanopyOrientIndex"]),
        albedo_soil_sat=_arr(e["AlbedoSoilSat"]),
        albedo_soil_dry=_arr(e["AlbedoSoilDry"]),
        snow_scatter=_arr(e["ScatterCoeffSnow"]),
        snow_upscatter_dir=_arr(e["UpscatterCoeffSnowDir"]),
        snow_upscatter_dif=_arr(e["UpscatterCoeffSnowDif"]),
        snow_age_tau_s=_arr(e["SnowAgeFacBats"]),
        snow_grain_growth=_arr(e["SnowGrowVapFacBats"]),
        snow_extra_growth=_arr(e["SnowGrowFrzFacBats"]),
        snow_dirt_soot=_arr(e["SnowSootFacBats"]),
        swe_full_cover_mm=_arr(w["SnowMassFullCoverOld"]),
        bats_cosz=_arr(e["SolarZenithAdjBats"]),
        snow_albedo_new=_arr([e["FreshSnoAlbVisBats"], e["FreshSnoAlbNirBats"]]),
        snow_albedo_age=_arr([e["SnoAgeFacDifVisBats"], e["SnoAgeFacDifNirBats"]]),
        snow_albedo_zenith=_arr([e["SzaFacDirVisBats"], e["SzaFacDirNirBats"]]),
        emissivity_snow=_arr(e["EmissivitySnow"]),
        emissivity_soil=_arr(e["EmissivitySoilLake"]["values_fortran_order"][0]),
    )
    return pheno, cover, rad


def _previous(out: pd.DataFrame, column: str, initial: float) -> np.ndarray:
    """The reference column at the end of the previous step (the initial value before step 1)."""
    return np.r_[initial, out[column].to_numpy()[:-1]]


def _interception(out: pd.DataFrame, forcing: pd.DataFrame, t_canopy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canopy wetted fraction after interception and ground snowfall (mm/s) of each step, from reference inputs.

    A numpy transcription of Noah-MP ``CanopyWaterIntercept`` (PCP=1 area fraction, new-snow density of
    ``ProcessAtmosForcing``) for the test only; the physics port belongs to the canopy-hydrology module.
    """
    lai, sai, fveg = out.lai_eff.to_numpy(), out.sai_eff.to_numpy(), out.veg_frac.to_numpy()
    vai = lai + sai
    veg = vai > 0.0
    liq0 = _previous(out, "canopy_liq_mm", 0.0)
    ice0 = _previous(out, "canopy_ice_mm", 0.0)
    rain, snow = out.rain_ref_mm_s.to_numpy(), out.snowfall_ref_mm_s.to_numpy()
    p = forcing.precip_total_kg_m2_s.to_numpy()
    pc, pl = 0.10 * p, 0.90 * p
    area = np.where(pc + pl > 0.0, (pc + pl) / np.where(pc + pl > 0.0, 10.0 * pc + pl, 1.0), 0.0)
    t_air = forcing.T_air_K.to_numpy()
    rho_new = np.minimum(120.0, 67.92 + 51.25 * np.exp((t_air - TFRZ) / 2.59))
    wind = np.sqrt(forcing.u_ms.to_numpy() ** 2 + forcing.v_ms.to_numpy() ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        liq_max = fveg * 0.1 * vai
        icpt = np.minimum(fveg * rain * area, (liq_max - liq0) / DT * (1.0 - np.exp(-rain * DT / liq_max)))
        liq = np.where(veg, np.maximum(0.0, liq0 + np.maximum(icpt, 0.0) * DT), 0.0)
        ice_max = fveg * 6.6 * (0.27 + 46.0 / rho_new) * vai
        icpt_s = np.minimum(fveg * snow * area, (ice_max - ice0) / DT * (1.0 - np.exp(-snow * DT / ice_max)))
        icpt_s = np.maximum(icpt_s, 0.0)
        drip = np.maximum(0.0, ice0) * (wind / 1.56e5 + np.maximum(0.0, (t_canopy - 270.15) / 1.87e5))
        drip = np.minimum(ice0 / DT + icpt_s, drip)
        ice = np.where(veg, np.maximum(0.0, ice0 + (icpt_s - drip) * DT), 0.0)
        wet = np.where(ice > 0.0, ice / np.maximum(ice_max, 1e-6), np.maximum(0.0, liq) / np.maximum(liq_max, 1e-6))
    snow_ground = np.where(veg, (fveg * snow - icpt_s) + drip + (1.0 - fveg) * snow, snow + np.maximum(ice0, 0) / DT)
    return np.minimum(wet, 1.0) ** 0.667, snow_ground


def _swe_prev_estimate(out: pd.DataFrame, snow_ground: np.ndarray) -> np.ndarray:
    """Estimate of SnowWaterEquivPrev entering each step: SWE at the end of the previous step minus what that
    step's water routine added (ground snowfall and frost) and removed (sublimation)."""
    swe_end = out.swe_mm.to_numpy()
    evap = out.evap_ground_mm_s.to_numpy()
    vap, cond = np.maximum(evap, 0.0), np.maximum(-evap, 0.0)
    sublim = np.minimum(vap, (swe_end + vap * DT) / DT)
    frost = np.where(swe_end > 0.0, cond, 0.0)
    after_phase_change = swe_end - (snow_ground + frost - sublim) * DT
    return np.r_[0.0, after_phase_change[:-1]]  # SnowWaterEquivPrev = 0 before step 1 (setup.json)


@pytest.fixture(scope="module")
def replay(full_reference_dir):
    setup = json.loads((full_reference_dir / "setup.json").read_text())
    forcing = pd.read_csv(full_reference_dir / "forcing.csv")
    out = pd.read_csv(full_reference_dir / "output.csv.gz")
    pheno_p, cover_p, rad_p = build_params(setup)
    init = setup["initial_state_key"]
    t_canopy = _previous(out, "T_veg_K", init["T_veg_K"])
    wet, snow_ground = _interception(out, forcing, t_canopy)
    inputs = dict(
        day=forcing.julian_day.to_numpy(),
        cosz=forcing.cos_zenith.to_numpy(),
        sw=forcing.sw_down_Wm2.to_numpy(),
        dir_frac=forcing.sw_dir_frac.to_numpy(),
        vis_frac=forcing.sw_vis_frac.to_numpy(),
        days_in_year=forcing.days_in_year.to_numpy(),
        snow_depth=_previous(out, "snow_depth_m", init["snow_depth_m"]),
        swe=_previous(out, "swe_mm", init["swe_mm"]),
        swe_prev=_swe_prev_estimate(out, snow_ground),
        t_grd=_previous(out, "T_grd_K", init["T_grd_K"]),
        t_canopy=t_canopy,
        smc1=_previous(out, "smc_1", init["smc"][0]),
        wet=wet,
    )
    xs = {k: jnp.asarray(v, jnp.float64) for k, v in inputs.items()}
    options = RadiationOptions()

    def step(snow_age, x):
        ph = phenology(x["day"], x["snow_depth"], x["t_canopy"], pheno_p, x["days_in_year"])
        fsno = snow_cover_fraction(x["snow_depth"], x["swe"], cover_p)
        rad = surface_radiation(
            cos_zenith=x["cosz"],
            sw_down_wm2=x["sw"],
            lai_eff=ph.lai_eff,
            sai_eff=ph.sai_eff,
            veg_frac=ph.veg_frac,
            snow_cover_frac=fsno,
            swe_mm=x["swe"],
            swe_prev_mm=x["swe_prev"],
            snow_age=snow_age,
            t_grd_k=x["t_grd"],
            t_canopy_k=x["t_canopy"],
            canopy_wet_frac=x["wet"],
            smc_top=x["smc1"],
            params=rad_p,
            options=options,
            dt_s=DT,
            sw_dir_frac=x["dir_frac"],
            sw_vis_frac=x["vis_frac"],
        )
        emis = emissivity(ph.lai_eff, ph.sai_eff, ph.veg_frac, fsno, rad_p)
        res = dict(
            lai=ph.lai,
            sai=ph.sai,
            lai_eff=ph.lai_eff,
            sai_eff=ph.sai_eff,
            veg_frac=ph.veg_frac,
            snow_cover_frac=fsno,
            sw_abs_veg_Wm2=rad.sav_wm2,
            sw_abs_grd_Wm2=rad.sag_wm2,
            sw_abs_Wm2=rad.fsa_wm2,
            sw_refl_Wm2=rad.fsr_wm2,
            albedo=rad.albedo,
            emissivity=emis.surface,
            par_sunlit=rad.par_sunlit_wm2,
            par_shade=rad.par_shade_wm2,
            lai_sunlit=rad.lai_sunlit,
            lai_shade=rad.lai_shade,
            fsr_veg=rad.fsr_veg_wm2,
            fsr_grd=rad.fsr_grd_wm2,
            snow_age=rad.snow_age,
        )
        return rad.snow_age, res

    run = jax.jit(lambda xs: jax.lax.scan(step, jnp.asarray(init["snow_age"], jnp.float64), xs)[1])
    got = {k: np.asarray(v) for k, v in run(xs).items()}
    return dict(got=got, out=out, forcing=forcing, inputs=inputs, params=(pheno_p, cover_p, rad_p), options=options)


def _max_abs(got: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = np.abs(got - ref)
    return float(d[mask].max() if mask is not None else d.max())


def test_phenology_snow_cover_emissivity_every_step(replay):
    got, out = replay["got"], replay["out"]
    for name in ["lai", "sai", "lai_eff", "sai_eff", "veg_frac", "snow_cover_frac", "emissivity"]:
        ref = out[name].to_numpy()
        np.testing.assert_allclose(got[name], ref, rtol=1e-12, atol=1e-14, err_msg=name)
    # the monthly interpolation and the burial both act in this year
    assert np.ptp(out.lai.to_numpy()) > 2.0 and np.any(out.sai_eff < out.sai)


def test_shortwave_without_snow_matches_to_round_off(replay):
    """Steps that start without snow: every input is known, the match is at round-off (incl. cold canopies)."""
    got, out, x = replay["got"], replay["out"], replay["inputs"]
    no_snow = x["swe"] <= 0.0
    for name in ["sw_abs_veg_Wm2", "sw_abs_grd_Wm2", "sw_abs_Wm2", "sw_refl_Wm2"]:
        ref = out[name].to_numpy()
        err = _max_abs(got[name], ref, no_snow)
        assert err < 1e-9 * np.abs(ref).max(), (name, err)
    day = (x["cosz"] > 0.0) & (x["sw"] > 0.0)
    np.testing.assert_allclose(got["albedo"][no_snow & day], out.albedo.to_numpy()[no_snow & day], rtol=1e-11)
    # cold, partly snow-covered canopies are among them (FWET from the interception helper)
    assert np.sum(no_snow & day & (x["t_canopy"] <= TFRZ) & (x["wet"] > 0.0)) > 100


def test_shortwave_with_snow_close(replay):
    """Steps that start with snow depend on the estimated SnowWaterEquivPrev (snow age): a looser match."""
    got, out, x = replay["got"], replay["out"], replay["inputs"]
    snow = x["swe"] > 0.0
    err = np.abs(got["sw_abs_Wm2"] - out.sw_abs_Wm2.to_numpy())[snow]
    assert err.max() < 1.5 and np.percentile(err, 95) < 0.05, (err.max(), np.percentile(err, 95))
    day = snow & (x["cosz"] > 0.0) & (x["sw"] > 0.0)
    assert _max_abs(got["albedo"], out.albedo.to_numpy(), day) < 3e-3


def test_sun_down_and_energy_bookkeeping(replay):
    got, out, x = replay["got"], replay["out"], replay["inputs"]
    night = x["cosz"] <= 0.0
    assert np.sum(night & (x["sw"] > 5.0)) == 191  # README caveat: SW with the sun down is not absorbed
    for name in ["sw_abs_Wm2", "sw_refl_Wm2", "par_sunlit", "par_shade"]:
        assert np.all(got[name][night] == 0.0), name
    assert np.all(out.albedo.to_numpy()[night | (x["sw"] <= 0.0)] == -9999.0)
    # shortwave conservation: absorbed + reflected = incoming; canopy + ground = total
    sw = np.where(night, 0.0, x["sw"])
    np.testing.assert_allclose(got["sw_abs_Wm2"] + got["sw_refl_Wm2"], sw, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(got["sw_abs_veg_Wm2"] + got["sw_abs_grd_Wm2"], got["sw_abs_Wm2"], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(got["fsr_veg"] + got["fsr_grd"], got["sw_refl_Wm2"], rtol=1e-12, atol=1e-10)
    # PAR per leaf area times the leaf area cannot exceed the visible light absorbed by the canopy
    par_can = got["par_sunlit"] * got["lai_sunlit"] + got["par_shade"] * got["lai_shade"]
    assert np.all(par_can <= got["sw_abs_veg_Wm2"] + 1e-9) and par_can.max() > 50.0


def test_batched_evaluation_equals_scan(replay):
    """The functions are elementwise over a leading batch axis: all snow-free steps at once, no vmap."""
    got, x = replay["got"], replay["inputs"]
    pheno_p, cover_p, rad_p = replay["params"]
    sel = np.where((x["swe"] <= 0.0) & (x["cosz"] > 0.0))[0]
    b = {k: jnp.asarray(v[sel]) for k, v in x.items()}
    ph = phenology(b["day"], b["snow_depth"], b["t_canopy"], pheno_p, b["days_in_year"])
    fsno = snow_cover_fraction(b["snow_depth"], b["swe"], cover_p)
    rad = jax.jit(surface_radiation, static_argnames=("options",))(
        cos_zenith=b["cosz"],
        sw_down_wm2=b["sw"],
        lai_eff=ph.lai_eff,
        sai_eff=ph.sai_eff,
        veg_frac=ph.veg_frac,
        snow_cover_frac=fsno,
        swe_mm=b["swe"],
        swe_prev_mm=b["swe_prev"],
        snow_age=jnp.zeros_like(b["swe"]),
        t_grd_k=b["t_grd"],
        t_canopy_k=b["t_canopy"],
        canopy_wet_frac=b["wet"],
        smc_top=b["smc1"],
        params=rad_p,
        options=replay["options"],
        dt_s=DT,
    )
    assert rad.sav_wm2.shape == sel.shape and rad.bands.albedo_dir.shape == sel.shape + (2,)
    np.testing.assert_allclose(np.asarray(rad.fsa_wm2), got["sw_abs_Wm2"][sel], rtol=1e-13, atol=1e-11)
    np.testing.assert_allclose(np.asarray(rad.par_sunlit_wm2), got["par_sunlit"][sel], rtol=1e-13, atol=1e-11)


def _summer_inputs(replay, step: int) -> dict:
    """The replay inputs of one step, as 0-d arrays."""
    return {k: jnp.asarray(v[step]) for k, v in replay["inputs"].items()}


def _radiation_at(replay, x: dict, lai_eff, rad_p: RadiationParams, dtype=jnp.float64):
    cover_p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), replay["params"][1])
    sai_eff = jnp.asarray(replay["out"].sai_eff.to_numpy()[STEP_SUMMER], dtype)
    fsno = snow_cover_fraction(x["snow_depth"], x["swe"], cover_p)
    return surface_radiation(
        cos_zenith=x["cosz"],
        sw_down_wm2=x["sw"],
        lai_eff=lai_eff,
        sai_eff=sai_eff,
        veg_frac=jnp.asarray(0.96, dtype),
        snow_cover_frac=fsno,
        swe_mm=x["swe"],
        swe_prev_mm=x["swe_prev"],
        snow_age=jnp.zeros((), dtype),
        t_grd_k=x["t_grd"],
        t_canopy_k=x["t_canopy"],
        canopy_wet_frac=x["wet"],
        smc_top=x["smc1"],
        params=rad_p,
        options=replay["options"],
        dt_s=DT,
    )


STEP_SUMMER = 9011  # 1998-07-08T18Z, near solar noon: full canopy (LAI ~ 2.7)


def test_gradients_of_absorbed_shortwave(replay):
    """Finite, non-zero gradients of SAV/SAG with respect to LAI and the soil albedo, matching finite differences."""
    _, _, rad_p = replay["params"]
    x = _summer_inputs(replay, STEP_SUMMER)
    lai0 = jnp.asarray(replay["out"].lai_eff.to_numpy()[STEP_SUMMER])
    assert float(lai0) > 2.0 and float(x["cosz"]) > 0.5

    def sav_sag(lai, sat, dry):
        p = eqx_replace(rad_p, albedo_soil_sat=sat, albedo_soil_dry=dry)
        r = _radiation_at(replay, x, lai, p)
        return jnp.stack([r.sav_wm2, r.sag_wm2])

    args = (lai0, rad_p.albedo_soil_sat, rad_p.albedo_soil_dry)
    jac = jax.jit(jax.jacrev(sav_sag, argnums=(0, 1)))(*args)
    d_lai, d_sat = np.asarray(jac[0]), np.asarray(jac[1])
    assert np.all(np.isfinite(d_lai)) and np.all(np.isfinite(d_sat))
    assert d_lai[0] > 0.0 and d_lai[1] < 0.0  # more leaves: canopy absorbs more, ground less
    assert np.all(d_sat[1] < 0.0) and np.all(np.abs(d_sat[0]) > 0.0)  # brighter soil: ground absorbs less
    h = 1e-6
    fd = (sav_sag(lai0 + h, *args[1:]) - sav_sag(lai0 - h, *args[1:])) / (2 * h)
    np.testing.assert_allclose(d_lai, np.asarray(fd), rtol=1e-6)

    # through the phenology table and the snow cover: d FSA / d (July LAI) and d FSA / d MFSNO on a snowy day
    pheno_p, cover_p, _ = replay["params"]

    def fsa_from_table(lai_monthly):
        ph = phenology(x["day"], x["snow_depth"], x["t_canopy"], eqx_replace(pheno_p, lai_monthly=lai_monthly))
        return _radiation_at(replay, x, ph.lai_eff, rad_p).fsa_wm2

    g = np.asarray(jax.grad(fsa_from_table)(pheno_p.lai_monthly))
    assert np.all(np.isfinite(g)) and g[6] != 0.0 and np.count_nonzero(g) == 2  # July and its neighbour month

    xs = replay["inputs"]
    snowy = int(np.where((xs["swe"] > 5.0) & (xs["cosz"] > 0.4))[0][0])
    xw = _summer_inputs(replay, snowy)

    def fsa_snow(melt_factor):
        fsno = snow_cover_fraction(xw["snow_depth"], xw["swe"], eqx_replace(cover_p, melt_factor=melt_factor))
        return surface_radiation(
            cos_zenith=xw["cosz"],
            sw_down_wm2=xw["sw"],
            lai_eff=jnp.asarray(0.0),
            sai_eff=jnp.asarray(0.3),
            veg_frac=jnp.asarray(0.96),
            snow_cover_frac=fsno,
            swe_mm=xw["swe"],
            swe_prev_mm=xw["swe_prev"],
            snow_age=jnp.asarray(1.0),
            t_grd_k=xw["t_grd"],
            t_canopy_k=xw["t_canopy"],
            canopy_wet_frac=xw["wet"],
            smc_top=xw["smc1"],
            params=rad_p,
            options=replay["options"],
            dt_s=DT,
        ).fsa_wm2

    gm = float(jax.grad(fsa_snow)(cover_p.melt_factor))
    assert np.isfinite(gm) and gm != 0.0

    # at night and without snow every gradient is finite (zero)
    night = _summer_inputs(replay, STEP_SUMMER + 24)
    assert float(night["cosz"]) <= 0.0
    gn = jax.grad(lambda lai: _radiation_at(replay, night, lai, rad_p).fsa_wm2)(lai0)
    assert np.isfinite(float(gn))


def test_float32_runs_and_is_close(replay):
    """The same step in float32 (inputs and parameters) stays close to float64."""
    _, _, rad_p = replay["params"]
    x = _summer_inputs(replay, STEP_SUMMER)
    r64 = _radiation_at(replay, x, jnp.asarray(3.0), rad_p)
    to32 = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), t)  # noqa: E731
    r32 = _radiation_at(replay, to32(x), jnp.asarray(3.0, jnp.float32), to32(rad_p), dtype=jnp.float32)
    assert r32.fsa_wm2.dtype == jnp.float32
    for name in ["sav_wm2", "sag_wm2", "fsa_wm2", "par_sunlit_wm2", "par_shade_wm2"]:
        np.testing.assert_allclose(float(getattr(r32, name)), float(getattr(r64, name)), rtol=2e-5, err_msg=name)
