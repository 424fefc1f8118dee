"""The variable catalogue of a site (canonical names, CF standard names, units, ranges) and unit conversion
to canonical units; :class:`SiteError`, the error of every site problem."""

from __future__ import annotations

from dataclasses import dataclass

from .sensors import SensorError as SensorError  # re-exported: the sensor mapping lives in dam.sensors


class SiteError(ValueError):
    """A site folder, Dataset or converter input is missing something or holds invalid values."""


# --------------------------------------------------------------------------------------------------------------
# Variable catalogue
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VarSpec:
    """A canonical variable: CF standard name, canonical units, long name and the valid range (an error outside)."""

    standard_name: str
    units: str
    long_name: str
    valid_min: float
    valid_max: float
    depth_dim: str | None = None


FORCING_VARIABLES: dict[str, VarSpec] = {
    "T_air": VarSpec("air_temperature", "K", "air temperature at the reference height", 180.0, 340.0),
    "q_air": VarSpec("specific_humidity", "kg kg-1", "specific humidity at the reference height", 0.0, 0.06),
    "p_sfc": VarSpec("surface_air_pressure", "Pa", "surface air pressure", 30000.0, 110000.0),
    "wind": VarSpec("wind_speed", "m s-1", "wind speed at the reference height", 0.0, 100.0),
    "sw_down": VarSpec(
        "surface_downwelling_shortwave_flux_in_air", "W m-2", "downward shortwave radiation", 0.0, 1400.0
    ),
    "lw_down": VarSpec("surface_downwelling_longwave_flux_in_air", "W m-2", "downward longwave radiation", 50.0, 700.0),
    "precip": VarSpec("precipitation_flux", "kg m-2 s-1", "total precipitation rate (rain + snow)", 0.0, 0.2),
}

OBSERVATION_VARIABLES: dict[str, VarSpec] = {
    "soil_moisture": VarSpec(
        "volume_fraction_of_condensed_water_in_soil",
        "m3 m-3",
        "volumetric soil water content (liquid + ice) at the sensor depth",
        0.0,
        1.0,
        depth_dim="sm_depth",
    ),
    "soil_temperature": VarSpec(
        "soil_temperature", "K", "soil temperature at the sensor depth", 200.0, 350.0, depth_dim="st_depth"
    ),
    "sensible_heat_flux": VarSpec(
        "surface_upward_sensible_heat_flux", "W m-2", "sensible heat flux, positive upward", -1000.0, 1500.0
    ),
    "latent_heat_flux": VarSpec(
        "surface_upward_latent_heat_flux", "W m-2", "latent heat flux, positive upward", -1000.0, 1500.0
    ),
    "ground_heat_flux": VarSpec(
        "downward_heat_flux_in_soil", "W m-2", "ground heat flux, positive into the soil", -1000.0, 1000.0
    ),
    "net_radiation": VarSpec(
        "surface_net_downward_radiative_flux", "W m-2", "net radiation, positive downward", -500.0, 1400.0
    ),
    "surface_temperature": VarSpec("surface_temperature", "K", "radiometric surface temperature", 180.0, 360.0),
    "evapotranspiration": VarSpec(
        "water_evapotranspiration_flux", "kg m-2 s-1", "evapotranspiration, positive upward", -1e-3, 1e-3
    ),
    "snow_water_equivalent": VarSpec("surface_snow_amount", "kg m-2", "snow water equivalent", 0.0, 5000.0),
    "snow_depth": VarSpec("surface_snow_thickness", "m", "snow depth", 0.0, 20.0),
}

ALL_VARIABLES = {**FORCING_VARIABLES, **OBSERVATION_VARIABLES}
SOIL_VARIABLES = ("soil_moisture", "soil_temperature")
SOIL_MOISTURE_MEASURES = ("total", "liquid")  # what a soil moisture sensor sees (SiteMeta)

#: Raw missing-value codes treated as missing when found in a variable without a _FillValue.
MISSING_CODES = (-9999.0, -6999.0, -999.9, -9999.9)

GAP_METHODS = ("error", "interpolate", "previous", "climatology")
DEFAULT_MAX_GAP = 6  # steps: the longest run interpolate/previous will fill unless told otherwise

# dam.physics.constants' ZERO_CELSIUS and TFRZ for the site tools, which load without JAX (importing dam.physics
# would load it); tests/test_tables.py checks that they are the same numbers.
ZERO_C = 273.15  # K, 0 degC
TFRZ = 273.16  # K, Noah-MP's freezing point

# Unit aliases, keyed by canonical units: normalised alias -> (scale, offset), canonical = value * scale + offset.
_UNIT_TABLE: dict[str, dict[str, tuple[float, float]]] = {
    "K": {"k": (1.0, 0.0), "kelvin": (1.0, 0.0), "degk": (1.0, 0.0), "deg_k": (1.0, 0.0)},
    "kg kg-1": {"kgkg-1": (1.0, 0.0), "kg/kg": (1.0, 0.0), "1": (1.0, 0.0), "gkg-1": (1e-3, 0.0), "g/kg": (1e-3, 0.0)},
    "Pa": {"pa": (1.0, 0.0), "hpa": (100.0, 0.0), "mb": (100.0, 0.0), "mbar": (100.0, 0.0), "kpa": (1000.0, 0.0)},
    "m s-1": {"ms-1": (1.0, 0.0), "m/s": (1.0, 0.0), "kmh-1": (1 / 3.6, 0.0), "km/h": (1 / 3.6, 0.0)},
    "W m-2": {"wm-2": (1.0, 0.0), "w/m2": (1.0, 0.0), "w/m^2": (1.0, 0.0)},
    "kg m-2 s-1": {
        "kgm-2s-1": (1.0, 0.0),
        "mms-1": (1.0, 0.0),
        "mm/s": (1.0, 0.0),
        "mmh-1": (1 / 3600.0, 0.0),
        "mm/h": (1 / 3600.0, 0.0),
        "mmd-1": (1 / 86400.0, 0.0),
        "mmday-1": (1 / 86400.0, 0.0),
        "mm/day": (1 / 86400.0, 0.0),
        "mm/d": (1 / 86400.0, 0.0),
        "ms-1": (1000.0, 0.0),
    },
    "m3 m-3": {"m3m-3": (1.0, 0.0), "m3/m3": (1.0, 0.0), "1": (1.0, 0.0), "%": (0.01, 0.0), "percent": (0.01, 0.0)},
    "kg m-2": {"kgm-2": (1.0, 0.0), "mm": (1.0, 0.0)},
    "m": {"m": (1.0, 0.0), "cm": (0.01, 0.0), "mm": (1e-3, 0.0)},
}
_CELSIUS = {"degc", "c", "°c", "deg_c", "celsius", "degrees_celsius", "degreescelsius", "degreec", "degree_celsius"}


def _normalise_units(units: str) -> str:
    u = str(units).strip().lower().replace("**", "").replace("^", "").replace(" ", "").replace(".", "")
    return u.replace("meter", "m").replace("metre", "m")


def unit_conversion(units: str, canonical: str, name: str) -> tuple[float, float]:
    """``(scale, offset)`` such that ``canonical_value = value * scale + offset``.

    Raises
    ------
    SiteError
        If ``units`` cannot be converted to ``canonical`` (the message names the variable).
    """
    u = _normalise_units(units)
    if canonical == "K" and u in _CELSIUS:
        return 1.0, ZERO_C
    table = _UNIT_TABLE.get(canonical, {})
    if u in table:
        return table[u]
    if u == _normalise_units(canonical):
        return 1.0, 0.0
    raise SiteError(f"variable {name!r}: units {units!r} cannot be converted to {canonical!r}")
