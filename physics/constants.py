"""Physical and numerical constants of Noah-MP v5.2 soil physics, in two literal flavours.

Noah-MP writes its literals without a kind suffix, so a double-precision build compiled without
``-fdefault-real-8`` widens each REAL(4) literal to REAL(8) (``"f32_widened"``), while a build with it uses
the exact decimal doubles (``"f64"``; the shared Fortran references). Every constant used by
``dam.physics`` lives here; no physics module types a literal such as ``273.16`` inline.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

LiteralFlavour = Literal["f64", "f32_widened"]

# Noah-MP ``ConstantDefineMod`` values as exact decimal doubles. The surface routines use these names directly; the
# soil routines read them through :class:`Constants`, where the ``"f32_widened"`` flavour widens the literals.
TFRZ = 273.16  # freezing point, K (ConstFreezePoint)
ZERO_CELSIUS = 273.15  # 0 degC, K (HumiditySaturation's reference temperature; unit conversions)
GRAV = 9.80616  # gravitational acceleration, m s-2
VON_KARMAN = 0.40  # von Karman constant, -
CP_AIR = 1004.64  # heat capacity of dry air, J kg-1 K-1
R_VAPOR = 461.269  # gas constant of water vapour, J kg-1 K-1
R_DRY = 287.04  # gas constant of dry air, J kg-1 K-1
EPS_Q = 0.622  # ratio of the gas constants, dry air / water vapour
ONE_MINUS_EPS = 0.378  # 1 - EPS_Q as Noah-MP writes it
STEFAN_BOLTZMANN = 5.67e-08  # W m-2 K-4
LATENT_HEAT_VAPORIZATION = 2.5104e6  # J kg-1
LATENT_HEAT_SUBLIMATION = 2.8440e6  # J kg-1
LATENT_HEAT_FUSION = 0.3336e6  # J kg-1
HEAT_CAPACITY_WATER = 4.188e6  # volumetric, J m-3 K-1
HEAT_CAPACITY_ICE = 2.094e6  # volumetric, J m-3 K-1
DENSITY_WATER = 1000.0  # kg m-3 (also the mm <-> m factor)
DENSITY_ICE = 917.0  # kg m-3


@dataclasses.dataclass(frozen=True)
class Constants:
    """Constants of the soil routines (SI units unless stated)."""

    tfrz: float  # freezing point, K
    grav: float  # gravitational acceleration, m s-2
    lf: float  # latent heat of fusion, J kg-1
    c_water: float  # volumetric heat capacity of water, J m-3 K-1
    c_ice: float  # volumetric heat capacity of ice, J m-3 K-1
    c_air: float  # "J kg-1 K-1" in Noah-MP, used as J m-3 K-1 (kept as the Fortran does)
    k_water: float  # thermal conductivity of water, W m-1 K-1
    k_ice: float  # thermal conductivity of ice, W m-1 K-1
    k_quartz: float  # thermal conductivity of quartz, W m-1 K-1
    k_other: float  # thermal conductivity of other minerals, W m-1 K-1
    k_snow_blend: float  # snow conductivity in the layer-1 blend, W m-1 K-1
    rho_solid: float  # soil particle density, kg m-3
    kdry_a: float  # dry conductivity coefficients (Peters-Lidard 1998)
    kdry_b: float
    kdry_c: float
    kersten_frozen: float  # liquid deficit marking a frozen layer in the Kersten number, m3 m-3
    kersten_sr: float  # saturation below which the unfrozen Kersten number is 0
    min_saturation: float  # floor of theta/theta_s in the hydraulic functions
    opt2_moisture: float  # moisture of the OPT_INF=2 frozen-soil diffusivity blend, m3 m-3
    porosity_floor: float  # floor of the effective porosity, m3 m-3
    min_water_mm: float  # minimum water per layer in the negative-water fix, mm
    iw_threshold: float  # column ice depth above which infiltration is reduced, m
    frzx_ratio: float  # 0.412/0.468, folded in the literal precision
    koren_no_freeze: float  # Koren99: no freezing above TFRZ - this, K
    koren_tol: float  # Koren99 Newton convergence on the ice content, m3 m-3
    koren_min_liquid: float  # Koren99 minimum liquid content, m3 m-3
    soil_imp_para: float = 4.0  # frozen impermeable-fraction parameter (SoilImpPara)
    exp_m_soil_imp: float = math.exp(-4.0)  # exp(-SoilImpPara), glibc as in the Fortran
    exp_log_pow: bool = False  # x ** y as exp(y log x), not libm's pow (SoilOptions.pow)
    cvfrz: float = 3.0  # Schaake frozen reduction parameter (CVFRZ)
    koren_ck: float = 8.0
    koren_bmax: float = 5.5
    koren_iterations: int = 10
    rho_water: float = DENSITY_WATER  # kg m-3 (also the mm <-> m factor)
    seconds_per_day: float = 86400.0


def _widen(x: float) -> float:
    """A REAL(4) literal widened to REAL(8)."""
    return float(np.float32(x))


_LITERALS = dict(
    tfrz=TFRZ,
    grav=GRAV,
    k_water=0.57,
    k_ice=2.2,
    k_quartz=7.7,
    c_air=CP_AIR,
    k_snow_blend=0.35,
    kdry_a=0.135,
    kdry_b=64.7,
    kdry_c=0.947,
    kersten_frozen=0.0005,
    kersten_sr=0.1,
    min_saturation=0.01,
    opt2_moisture=0.05,
    porosity_floor=1.0e-4,
    min_water_mm=0.01,
    iw_threshold=1.0e-2,
    koren_no_freeze=1.0e-3,
    koren_tol=0.005,
    koren_min_liquid=0.02,
)
_EXACT = dict(
    lf=LATENT_HEAT_FUSION, c_water=HEAT_CAPACITY_WATER, c_ice=HEAT_CAPACITY_ICE, k_other=2.0, rho_solid=2700.0
)


def constants(flavour: LiteralFlavour = "f64", exp_log_pow: bool = False) -> Constants:
    """Return the constants of a Fortran build flavour (see module docstring), with ``x ** y`` evaluated as
    ``exp(y log x)`` if ``exp_log_pow``."""
    if flavour == "f64":
        lits = dict(_LITERALS, frzx_ratio=0.412 / 0.468)
    elif flavour == "f32_widened":
        lits = {k: _widen(v) for k, v in _LITERALS.items()}
        lits["frzx_ratio"] = float(np.float32(0.412) / np.float32(0.468))
    else:
        raise ValueError(f"literal flavour must be 'f64' or 'f32_widened', got {flavour!r}")
    return Constants(**lits, **_EXACT, exp_log_pow=exp_log_pow)
