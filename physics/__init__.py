"""Pure-JAX Noah-MP v5.2 physics (no ML, no I/O): the soil column and the surface energy and water balance.

Import as ``dam.physics``. Modules are named after the Noah-MP processes they port; the two runnable models
are the soil column (:func:`soil_step`, :func:`run`) and the station model (:func:`station_step`,
:func:`run_station`), which puts the surface physics on top of the same soil column.
"""

from .column import check_finite, replay, run, soil_heat, soil_step
from .constants import Constants, constants
from .snow_types import SnowpackOptions, SnowpackParams
from .soil_water import AbstractTransport, Richards, SubstepWater, WaterFluxes, soil_water
from .station import (
    CanopyWater,
    SnowState,
    StationFluxes,
    StationForcing,
    StationOptions,
    StationParams,
    StationState,
    run_station,
    station_step,
)
from .tridiagonal import tridiagonal_solve
from .types import SoilFluxes, SoilForcing, SoilGrid, SoilOptions, SoilParams, SoilState, ThinSnow

__all__ = [
    "AbstractTransport",
    "CanopyWater",
    "Constants",
    "Richards",
    "SnowState",
    "SnowpackOptions",
    "SnowpackParams",
    "SoilFluxes",
    "SoilForcing",
    "SoilGrid",
    "SoilOptions",
    "SoilParams",
    "SoilState",
    "StationFluxes",
    "StationForcing",
    "StationOptions",
    "StationParams",
    "StationState",
    "SubstepWater",
    "ThinSnow",
    "WaterFluxes",
    "check_finite",
    "constants",
    "replay",
    "run",
    "run_station",
    "soil_heat",
    "soil_step",
    "soil_water",
    "station_step",
    "tridiagonal_solve",
]
