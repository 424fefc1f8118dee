"""Pure-JAX Noah-MP v5.2 soil heat and soil water physics (no ML, no I/O).

Import as ``dam.physics``. Modules are named after the Noah-MP processes they port.
"""

from .column import check_finite, replay, run, soil_step
from .constants import Constants, constants
from .soil_water import WaterFluxes, soil_water
from .tridiagonal import tridiagonal_solve
from .types import SoilFluxes, SoilForcing, SoilGrid, SoilOptions, SoilParams, SoilState

__all__ = [
    "Constants",
    "SoilFluxes",
    "SoilForcing",
    "SoilGrid",
    "SoilOptions",
    "SoilParams",
    "SoilState",
    "WaterFluxes",
    "check_finite",
    "constants",
    "replay",
    "run",
    "soil_step",
    "soil_water",
    "tridiagonal_solve",
]
