"""Parameters of the station model from Noah-MP's tables (:mod:`dam.tables`, ``dam/data/noahmp_tables.yaml``).

One place turns a site description (vegetation type, STAS soil class per layer, soil colour, reference height,
deep soil temperature, table overrides, ...) into the physics' parameter Modules. The values are the ones Noah-MP
v5.2 reads from ``NoahmpTable.TBL`` (with a site's overrides applied); ``tests/test_tables.py`` checks them against
every value the Fortran references used.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np

from .physics.albedo import RadiationParams, SnowCoverParams
from .physics.atmos_forcing import AtmosParams
from .physics.canopy_hydrology import CanopyWaterParams
from .physics.energy_balance import SurfaceParams
from .physics.phenology import PhenologyParams
from .physics.snow_types import SnowpackParams
from .physics.stomata import StomataParams
from .physics.transpiration import RootParams
from .physics.types import SoilParams
from .tables import MONTHS, SiteTables, noahmp_tables, site_tables

__all__ = ["MONTHS", "SiteDescription", "noahmp_tables", "station_params"]


@dataclass(frozen=True)
class SiteDescription:
    """What the parameters depend on.

    ``vegetation_type`` MODIS IGBP class (Noah-MP ``VegType``); ``soil_types`` STAS class per soil layer;
    ``soil_colour`` 1-8; ``veg_frac_max`` annual maximum vegetation fraction, - (SHDMAX / 100);
    ``ref_height_m`` height of the forcing above the surface, m (ZLVL); ``tbot_k`` deep soil temperature at
    ``zbot``, K (the annual mean air temperature is the usual choice); ``latitude_deg`` degrees north;
    ``overrides`` table values replacing the rows', ``{section: {TABLE_NAME: value}}`` (see
    :func:`dam.tables.site_tables`; the drainage slope factor is ``general.SLOPE_DATA``).
    """

    vegetation_type: int
    soil_types: tuple[int, ...]
    soil_colour: int
    veg_frac_max: float
    ref_height_m: float
    tbot_k: float
    latitude_deg: float
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @functools.cached_property
    def tables(self) -> SiteTables:
        """The resolved, range-checked table values (raises :class:`dam.tables.TableError`)."""
        return site_tables(self.vegetation_type, self.soil_types, self.soil_colour, self.overrides)


def _a(x) -> jnp.ndarray:
    return jnp.asarray(np.asarray(x, dtype=np.float64))


def soil_params(site: SiteDescription) -> SoilParams:
    """STAS soil hydraulic/thermal parameters per layer plus Noah-MP's general parameters."""
    t = site.tables
    g = t.general
    per_layer = {
        name: _a(t.soil_layer_values(table))
        for name, table in (("smcmax", "MAXSMC"), ("smcref", "REFSMC"), ("smcwlt", "WLTSMC"), ("bexp", "BB"),
                            ("dksat", "SATDK"), ("dwsat", "SATDW"), ("psisat", "SATPSI"), ("quartz", "QTZ"))
    }  # fmt: skip
    return SoilParams(
        **per_layer,
        csoil=_a(g["CSOIL_DATA"]),
        slope=_a(g["SLOPE_DATA"]),
        refkdt=_a(g["REFKDT_DATA"]),
        refdk=_a(g["REFDK_DATA"]),
        frzk=_a(g["FRZK_DATA"]),
        tbot=_a(site.tbot_k),
    )


def phenology_params(site: SiteDescription) -> PhenologyParams:
    v = site.tables.vegetation
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
    t = site.tables
    v, r, gl = t.vegetation, t.radiation, t.global_
    return RadiationParams(
        rho_leaf=_a([v["RHOL_VIS"], v["RHOL_NIR"]]),
        rho_stem=_a([v["RHOS_VIS"], v["RHOS_NIR"]]),
        tau_leaf=_a([v["TAUL_VIS"], v["TAUL_NIR"]]),
        tau_stem=_a([v["TAUS_VIS"], v["TAUS_NIR"]]),
        leaf_orientation=_a(v["XL"]),
        albedo_soil_sat=_a([r["ALBSAT_VIS"], r["ALBSAT_NIR"]]),
        albedo_soil_dry=_a([r["ALBDRY_VIS"], r["ALBDRY_NIR"]]),
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
        emissivity_soil=_a(r["EG"]),
    )


def snow_cover_params(site: SiteDescription) -> SnowCoverParams:
    v = site.tables.vegetation
    return SnowCoverParams(melt_factor=_a(v["MFSNO"]), cover_factor_m=_a(v["SCFFAC"]))


def canopy_water_params(site: SiteDescription) -> CanopyWaterParams:
    return CanopyWaterParams(liq_hold_cap_mm=_a(site.tables.vegetation["CH2OP"]))


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
    return AtmosParams(snowfall_density_max=_a(site.tables.global_["SNOWDEN_MAX"]))


def stomata_params(site: SiteDescription) -> StomataParams:
    v, gl = site.tables.vegetation, site.tables.global_
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
    v, gl = site.tables.vegetation, site.tables.global_
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


def root_params(site: SiteDescription) -> RootParams:
    """The root zone (:class:`dam.physics.transpiration.RootParams`): :func:`n_root_layers` layers."""
    return RootParams(n_root=jnp.asarray(n_root_layers(site)))


def n_root_layers(site: SiteDescription) -> int:
    """Number of soil layers with roots: table NROOT (a number of layers, as Noah-MP counts it on whatever grid
    it runs), at most the number of layers."""
    return min(int(site.tables.vegetation["NROOT"]), len(site.soil_types))


def station_params(site: SiteDescription):
    """All parameter Modules of the station model (:class:`dam.physics.station.StationParams`)."""
    from .physics.station import StationParams

    return StationParams(
        soil=soil_params(site), phenology=phenology_params(site), snow_cover=snow_cover_params(site),
        radiation=radiation_params(site), canopy=canopy_water_params(site), surface=surface_params(site),
        atmos=atmos_params(site), snowpack=snowpack_params(site), roots=root_params(site),
    )  # fmt: skip
