"""Parameters of the station model from Noah-MP's tables (shipped rows in ``dam/data/noahmp_tables.yaml``).

One place turns a site description (vegetation type, STAS soil class per layer, soil colour, reference height,
deep soil temperature, ...) into the physics' parameter Modules. The values are the ones Noah-MP v5.2 reads from
``NoahmpTable.TBL``; ``tests/test_station.py`` checks them against every value the Fortran reference used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jax.numpy as jnp
import numpy as np
import yaml

from .physics.albedo import RadiationParams, SnowCoverParams
from .physics.atmos_forcing import AtmosParams
from .physics.canopy_hydrology import CanopyWaterParams
from .physics.energy_balance import SurfaceParams
from .physics.phenology import PhenologyParams
from .physics.snow_types import SnowpackParams
from .physics.stomata import StomataParams
from .physics.types import SoilParams
from .soil_table import stas_parameters

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


@functools.cache
def noahmp_tables() -> dict[str, Any]:
    """The shipped Noah-MP table rows (vegetation types, soil colours, global and general parameters)."""
    text = (resources.files("dam.data") / "noahmp_tables.yaml").read_text()
    return yaml.safe_load(text)


@dataclass(frozen=True)
class SiteDescription:
    """What the parameters depend on.

    ``vegetation_type`` MODIS IGBP class (Noah-MP ``VegType``); ``soil_types`` STAS class per soil layer;
    ``soil_colour`` 1-8; ``veg_frac_max`` annual maximum vegetation fraction, - (SHDMAX / 100);
    ``ref_height_m`` height of the forcing above the surface, m (ZLVL); ``tbot_k`` deep soil temperature at
    ``zbot``, K (the annual mean air temperature is the usual choice); ``latitude_deg`` degrees north;
    ``slope_type`` index of the drainage slope table (SLOPE_DATA, 1 = 0.1).
    """

    vegetation_type: int
    soil_types: tuple[int, ...]
    soil_colour: int
    veg_frac_max: float
    ref_height_m: float
    tbot_k: float
    latitude_deg: float
    slope_type: int = 1


def _a(x) -> jnp.ndarray:
    return jnp.asarray(np.asarray(x, dtype=np.float64))


def vegetation_row(vegetation_type: int) -> dict[str, float]:
    rows = noahmp_tables()["modis_vegetation"]
    if vegetation_type not in rows:
        raise ValueError(
            f"vegetation type {vegetation_type} is not in the shipped Noah-MP table rows {sorted(rows)}; "
            "add its noahmp_modis_parameters column to dam/data/noahmp_tables.yaml"
        )
    return rows[vegetation_type]


def soil_params(site: SiteDescription) -> SoilParams:
    """STAS soil hydraulic/thermal parameters per layer plus Noah-MP's general parameters."""
    g = noahmp_tables()["general"]
    rows = [stas_parameters(s) for s in site.soil_types]
    per_layer = {
        k: _a([r[k] for r in rows])
        for k in ("smcmax", "smcref", "smcwlt", "bexp", "dksat", "dwsat", "psisat", "quartz")
    }
    return SoilParams(
        **per_layer,
        csoil=_a(g["CSOIL_DATA"]),
        slope=_a(g["SLOPE_DATA"][site.slope_type - 1]),
        refkdt=_a(g["REFKDT_DATA"]),
        refdk=_a(g["REFDK_DATA"]),
        frzk=_a(g["FRZK_DATA"]),
        tbot=_a(site.tbot_k),
    )


def phenology_params(site: SiteDescription) -> PhenologyParams:
    v = vegetation_row(site.vegetation_type)
    return PhenologyParams(
        lai_monthly=_a([v[f"LAI_{m}"] for m in MONTHS]),
        sai_monthly=_a([v[f"SAI_{m}"] for m in MONTHS]),
        canopy_top_m=_a(v["HVT"]),
        canopy_bottom_m=_a(v["HVB"]),
        veg_frac_max=_a(site.veg_frac_max),
        t_min_photosynthesis_k=_a(v["TMIN"]),
        latitude_deg=_a(site.latitude_deg),
    )


def radiation_params(site: SiteDescription) -> RadiationParams:
    v = vegetation_row(site.vegetation_type)
    r, gl = noahmp_tables()["radiation"], noahmp_tables()["global"]
    colour = site.soil_colour - 1
    if not 0 <= colour < len(r["ALBSAT_VIS"]):
        raise ValueError(f"soil colour must be 1..{len(r['ALBSAT_VIS'])}, got {site.soil_colour}")
    return RadiationParams(
        rho_leaf=_a([v["RHOL_VIS"], v["RHOL_NIR"]]),
        rho_stem=_a([v["RHOS_VIS"], v["RHOS_NIR"]]),
        tau_leaf=_a([v["TAUL_VIS"], v["TAUL_NIR"]]),
        tau_stem=_a([v["TAUS_VIS"], v["TAUS_NIR"]]),
        leaf_orientation=_a(v["XL"]),
        albedo_soil_sat=_a([r["ALBSAT_VIS"][colour], r["ALBSAT_NIR"][colour]]),
        albedo_soil_dry=_a([r["ALBDRY_VIS"][colour], r["ALBDRY_NIR"][colour]]),
        snow_scatter=_a(r["OMEGAS"]),
        snow_upscatter_dir=_a(r["BETADS"]),
        snow_upscatter_dif=_a(r["BETAIS"]),
        snow_age_tau_s=_a(gl["TAU0"]),
        snow_grain_growth=_a(gl["GRAIN_GROWTH"]),
        snow_extra_growth=_a(gl["EXTRA_GROWTH"]),
        snow_dirt_soot=_a(gl["DIRT_SOOT"]),
        swe_full_cover_mm=_a(gl["SWEMX"]),
        bats_cosz=_a(gl["BATS_COSZ"]),
        snow_albedo_new=_a([gl["BATS_VIS_NEW"], gl["BATS_NIR_NEW"]]),
        snow_albedo_age=_a([gl["BATS_VIS_AGE"], gl["BATS_NIR_AGE"]]),
        snow_albedo_zenith=_a([gl["BATS_VIS_DIR"], gl["BATS_NIR_DIR"]]),
        emissivity_snow=_a(gl["SNOW_EMIS"]),
        emissivity_soil=_a(r["EG"][0]),
    )


def snow_cover_params(site: SiteDescription) -> SnowCoverParams:
    v = vegetation_row(site.vegetation_type)
    return SnowCoverParams(melt_factor=_a(v["MFSNO"]), cover_factor_m=_a(v["SCFFAC"]))


def canopy_water_params(site: SiteDescription) -> CanopyWaterParams:
    return CanopyWaterParams(liq_hold_cap_mm=_a(vegetation_row(site.vegetation_type)["CH2OP"]))


def snowpack_params(site: SiteDescription | None = None) -> SnowpackParams:
    """Snow-layer water and compaction parameters (NoahmpTable.TBL global section; the same at every site)."""
    gl = noahmp_tables()["global"]
    return SnowpackParams(
        liq_hold_cap=_a(gl["SSI"]),
        liq_frac_max=_a(gl["SNLIQMAXFRAC"]),
        liq_release_fac_ps=_a(gl["SNOW_RET_FAC"]),
        burden_fac=_a(gl["C2_SNOWCOMPACT"]),
        aging_fac1=_a(gl["C3_SNOWCOMPACT"]),
        aging_fac2=_a(gl["C4_SNOWCOMPACT"]),
        aging_fac3=_a(gl["C5_SNOWCOMPACT"]),
        aging_density_max=_a(gl["DM_SNOWCOMPACT"]),
        viscosity=_a(gl["ETA0_SNOWCOMPACT"]),
        ar24_slope=_a(gl["SNOWCOMPACTm_AR24"]),
        ar24_intercept=_a(gl["SNOWCOMPACTb_AR24"]),
        ar24_floor_high=_a(gl["SNOWCOMPACT_P1_AR24"]),
        ar24_floor_mid=_a(gl["SNOWCOMPACT_P2_AR24"]),
        ar24_floor_low=_a(gl["SNOWCOMPACT_P3_AR24"]),
        ar24_cap=_a(gl["SNOWCOMPACT_Up_AR24"]),
        swe_max_mm=_a(gl["SWEMAXGLA"]),
    )


def atmos_params(site: SiteDescription) -> AtmosParams:
    return AtmosParams(snowfall_density_max=_a(noahmp_tables()["global"]["SNOWDEN_MAX"]))


def stomata_params(site: SiteDescription) -> StomataParams:
    v, gl = vegetation_row(site.vegetation_type), noahmp_tables()["global"]
    return StomataParams(
        vcmax25=_a(v["VCMX25"]),
        vcmax_q10=_a(v["AVCMX"]),
        quantum_eff=_a(v["QE25"]),
        c3=_a(v["C3PSN"]),
        slope=_a(v["MP"]),
        g_min=_a(v["BP"]),
        kc25=_a(v["KC25"]),
        ko25=_a(v["KO25"]),
        kc_q10=_a(v["AKC"]),
        ko_q10=_a(v["AKO"]),
        foliage_n_max=_a(v["FOLNMX"]),
        co2_ratio=_a(gl["CO2"]),
        o2_ratio=_a(gl["O2"]),
    )


def surface_params(site: SiteDescription) -> SurfaceParams:
    v, gl = vegetation_row(site.vegetation_type), noahmp_tables()["global"]
    return SurfaceParams(
        canopy_top_height=_a(v["HVT"]),
        z0m_veg=_a(v["Z0MVT"]),
        z0m_soil=_a(gl["Z0SOIL"]),
        z0m_snow=_a(gl["Z0SNO"]),
        leaf_dimension=_a(v["DLEAF"]),
        canopy_wind_ext=_a(v["CWPVT"]),
        canopy_heat_capacity_factor=_a(v["CBIOM"]),
        rsurf_exp=_a(gl["RSURF_EXP"]),
        rsurf_snow=_a(gl["RSURF_SNOW"]),
        ref_height=_a(site.ref_height_m),
        stomata=stomata_params(site),
    )


def n_root_layers(site: SiteDescription) -> int:
    """Number of soil layers with roots (table NROOT), at most the number of layers."""
    return min(int(vegetation_row(site.vegetation_type)["NROOT"]), len(site.soil_types))
