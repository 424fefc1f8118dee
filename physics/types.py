"""Types of the soil column: static options, grid, parameters, state, forcing and fluxes.

Every array type works for one column (per-layer fields of shape ``(N,)``) and for any batch of
columns (leading batch axes, ``(..., N)``); the physics broadcasts over the leading axes, so
``jax.vmap`` is optional. Units are SI unless a field name says otherwise (``_mm`` per step,
``_mmps`` mm s-1, ``_mps`` m s-1, ``_wm2`` W m-2).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._safe import div
from .constants import Constants, LiteralFlavour, constants
from .shapes import ColumnParam, Flag, Layered, LayerParam, PerColumn, PerLayer

Supercooled = Literal["niu06", "koren99"]
FrozenPermeability = Literal["niu06", "koren99"]
BottomTemperature = Literal["zero_flux", "tbot"]
TemperatureScheme = Literal["semi_implicit", "full_implicit"]
SurfaceRunoff = Literal["schaake96"]
SubsurfaceRunoff = Literal["free_drainage"]
PhaseChangeGradient = Literal["implicit", "exact"]
Pow = Literal["libm", "exp_log"]
DerivativePow = Literal["auto", "libm", "exp_log"]
# Columns from which a run's gradient with per-step checkpoints is faster through the exp(y log x) twin (float64,
# soil column: 3.98x instead of 6.05x the forward at 1,000 columns, 3.98x instead of 4.55x at 1e4; slower at 1-100).
TWIN_MIN_COLUMNS = 1000


def _check_choice(name: str, value: str, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"option {name}={value!r} is not one of {allowed}")


class SoilOptions(eqx.Module):
    """Static process choices of the soil column (hashable: changing one recompiles).

    Noah-MP namelist equivalents: ``supercooled`` = OPT_FRZ (1 ``"niu06"``, 2 ``"koren99"``);
    ``frozen_permeability`` = OPT_INF (1 ``"niu06"``: K and D from total moisture times (1 - impermeable
    fraction); 2 ``"koren99"``: from liquid moisture with the column-maximum ice); ``bottom_temperature`` =
    OPT_TBOT (1 ``"zero_flux"``, 2 ``"tbot"``); ``temperature_scheme`` = OPT_STC (1 and 3
    ``"semi_implicit"``, 2 ``"full_implicit"``); ``surface_runoff``/``subsurface_runoff`` = OPT_RUN 3
    (Schaake et al. 1996 infiltration, free drainage at the bottom).

    ``phase_change_gradient`` chooses the derivative of soil freezing, not its values: ``"implicit"`` (default)
    differentiates layers that freeze to the supercooled limit as the implicit energy/ice equilibrium step
    would be (bounded through freeze-thaw, for calibration); ``"exact"`` is the exact derivative of Noah-MP's
    explicit step, which grows without bound over slow freezing (docs/gradients.md).

    ``pow`` chooses how the soil functions evaluate ``x ** y``: ``"libm"`` (default) is libm's ``pow``, the
    Fortran's value bit for bit; ``"exp_log"`` is ``exp(y log x)``, which XLA:CPU vectorises (soil columns about 1.5x
    faster on one core) but which differs in the last bits, and over long runs those differences grow where they
    cross thresholds (docs/performance.md). ``derivative_pow`` chooses the arithmetic of the derivatives only: with
    ``"exp_log"`` a step's values come from ``pow`` and its derivatives from the same step evaluated with
    ``exp(y log x)`` at the same point (:func:`~dam.physics.tangents.differentiated_as`; float64 gradients within
    about 1e-13 of the step's own); ``"libm"`` differentiates the step itself; ``"auto"`` (default) lets the runners
    take the twin where it was measured faster: on CPU with per-step checkpoints (``checkpoint_every=1``, the default
    of calibration and training) and at least :data:`TWIN_MIN_COLUMNS` columns (:meth:`for_run`).
    """

    dt_s: float = eqx.field(static=True, default=1800.0)
    supercooled: Supercooled = eqx.field(static=True, default="niu06")
    frozen_permeability: FrozenPermeability = eqx.field(static=True, default="niu06")
    bottom_temperature: BottomTemperature = eqx.field(static=True, default="tbot")
    temperature_scheme: TemperatureScheme = eqx.field(static=True, default="semi_implicit")
    surface_runoff: SurfaceRunoff = eqx.field(static=True, default="schaake96")
    subsurface_runoff: SubsurfaceRunoff = eqx.field(static=True, default="free_drainage")
    literals: LiteralFlavour = eqx.field(static=True, default="f64")
    phase_change_gradient: PhaseChangeGradient = eqx.field(static=True, default="implicit")
    pow: Pow = eqx.field(static=True, default="libm")
    derivative_pow: DerivativePow = eqx.field(static=True, default="auto")

    def __check_init__(self) -> None:
        if not (isinstance(self.dt_s, float | int) and self.dt_s > 0):
            raise ValueError(f"option dt_s must be a positive number of seconds, got {self.dt_s!r}")
        _check_choice("supercooled", self.supercooled, Supercooled)
        _check_choice("frozen_permeability", self.frozen_permeability, FrozenPermeability)
        _check_choice("bottom_temperature", self.bottom_temperature, BottomTemperature)
        _check_choice("temperature_scheme", self.temperature_scheme, TemperatureScheme)
        _check_choice("surface_runoff", self.surface_runoff, SurfaceRunoff)
        _check_choice("subsurface_runoff", self.subsurface_runoff, SubsurfaceRunoff)
        _check_choice("literals", self.literals, LiteralFlavour)
        _check_choice("phase_change_gradient", self.phase_change_gradient, PhaseChangeGradient)
        _check_choice("pow", self.pow, Pow)
        _check_choice("derivative_pow", self.derivative_pow, DerivativePow)

    @property
    def const(self) -> Constants:
        return constants(self.literals, exp_log_pow=self.pow == "exp_log")

    @property
    def derivative_options(self) -> SoilOptions | None:
        """The options of the twin whose derivatives stand for the step's (``derivative_pow``), or None where the
        step is differentiated itself (also for ``"auto"``, which :meth:`for_run` decides)."""
        if self.derivative_pow in ("auto", self.pow):
            return None
        return dataclasses.replace(self, pow=self.derivative_pow, derivative_pow=self.derivative_pow)

    def for_run(self, n_columns: int, checkpoint_every: int | None) -> SoilOptions:
        """These options with ``derivative_pow="auto"`` decided for a run of ``n_columns`` columns: the
        ``exp(y log x)`` twin on CPU with per-step checkpoints and at least :data:`TWIN_MIN_COLUMNS` columns.
        Elsewhere it was measured slower (the forward pass or a segment's recomputation evaluates both, and one to a
        hundred columns gain nothing from vectorised ``exp`` and ``log``) or not measured (accelerators, whose
        ``pow`` is vectorised already)."""
        if self.derivative_pow != "auto":
            return self
        twin = checkpoint_every == 1 and n_columns >= TWIN_MIN_COLUMNS and jax.default_backend() == "cpu"
        return dataclasses.replace(self, derivative_pow="exp_log" if twin else self.pow)


class SoilGrid(eqx.Module):
    """Layer geometry: ``zsoil`` (N,) depths of the layer bottoms, negative down, m; ``zbot`` depth of the
    deep temperature boundary, m (negative). Thickness and node distances are derived exactly as Noah-MP does
    (``dz2 = 0.30000000000000004`` for the default grid)."""

    zsoil: PerLayer
    zbot: float = eqx.field(static=True, default=-8.0)

    def __check_init__(self) -> None:
        z = self.zsoil
        if isinstance(z, jax.core.Tracer):
            return
        z = np.asarray(z)
        if z.ndim != 1 or z.size < 2:
            raise ValueError(f"zsoil must be a 1-D array of at least 2 layer depths, got shape {z.shape}")
        if not (z[0] < 0 and np.all(np.diff(z) < 0)):
            raise ValueError(f"zsoil must be negative and strictly decreasing (m), got {z.tolist()}")
        if not self.zbot < z[-1]:
            raise ValueError(f"zbot={self.zbot} m must lie below the last layer bottom {z[-1]} m")

    @property
    def n_layers(self) -> int:
        return self.zsoil.shape[-1]

    def astype(self, dtype) -> SoilGrid:
        """The grid with depths in ``dtype`` (the precision of the state it is used with)."""
        return SoilGrid(zsoil=jnp.asarray(self.zsoil, dtype), zbot=self.zbot)

    @property
    def dz(self) -> jax.Array:
        """Layer thickness, m: dz_1 = -z_1, dz_k = z_{k-1} - z_k."""
        z = self.zsoil
        return jnp.concatenate([-z[..., :1], z[..., :-1] - z[..., 1:]], axis=-1)

    @property
    def node_distance(self) -> jax.Array:
        """Twice the distance between node k and node k+1 for k < N, m: -z_2, then z_{k-1} - z_{k+1}."""
        z = self.zsoil
        ztop = jnp.concatenate([jnp.zeros_like(z[..., :1]), z[..., :-2]], axis=-1)
        return ztop - z[..., 1:]


LAYER_PARAMS = ("smcmax", "smcref", "smcwlt", "bexp", "dksat", "dwsat", "psisat", "quartz")  # (..., N) fields


class SoilParams(eqx.Module):
    """Soil parameters of a column. Per-layer fields have shape (..., N); the others (...,).

    Names and units follow Noah-MP's STAS table: ``smcmax`` porosity, ``smcref`` field capacity,
    ``smcwlt`` wilting point (m3 m-3); ``bexp`` Clapp-Hornberger b (-); ``dksat`` saturated hydraulic
    conductivity (m s-1); ``dwsat`` saturated diffusivity (m2 s-1); ``psisat`` saturated matric potential
    magnitude (m, positive); ``quartz`` quartz fraction (-). Column scalars: ``csoil`` solids heat capacity
    (J m-3 K-1), ``slope`` free-drainage factor (-), ``refkdt`` (-) and ``refdk`` (m s-1) of the Schaake
    infiltration capacity, ``frzk`` frozen-ground parameter (m), ``tbot`` deep soil temperature (K).
    """

    smcmax: LayerParam
    smcref: LayerParam
    smcwlt: LayerParam
    bexp: LayerParam
    dksat: LayerParam
    dwsat: LayerParam
    psisat: LayerParam
    quartz: LayerParam
    csoil: ColumnParam
    slope: ColumnParam
    refkdt: ColumnParam
    refdk: ColumnParam
    frzk: ColumnParam
    tbot: ColumnParam

    @property
    def infmax_coeff(self) -> jax.Array:
        """Schaake KDT = (REFKDT * DKSAT_1) / REFDK (SoilInfilMaxCoeff), -."""
        return div(self.refkdt * self.dksat[..., 0], self.refdk)

    def imperv_coeff(self, const: Constants) -> jax.Array:
        """FRZX = FRZK * ((SMCMAX_1 / SMCREF_1) * (0.412/0.468)) (SoilImpervFracCoeff), m."""
        return self.frzk * (div(self.smcmax[..., 0], self.smcref[..., 0]) * const.frzx_ratio)


class SoilState(eqx.Module):
    """Prognostic state: layer temperature ``t`` (K), total ``smc`` and liquid ``sh2o`` volumetric
    moisture (m3 m-3), each (..., N). Ice is ``smc - sh2o``."""

    t: Layered
    smc: Layered
    sh2o: Layered


class SoilForcing(eqx.Module):
    """Boundary fluxes of one step (Noah-MP names in brackets).

    ``ghf_wm2`` ground heat flux into the top of layer 1, positive down [HeatGroundTotMean];
    ``qinsurf_mps`` water reaching the soil surface, >= 0 [SoilSfcInflowMean];
    ``evap_mps`` soil surface evaporation from layer 1, positive = loss [EvapSoilSfcLiqMean];
    ``etran_mps`` (..., N) transpiration loss per layer, positive = loss [TranspWatLossSoilMean];
    ``frozen_ground`` 1 where the ground skin is at or below freezing, else 0 [FlagFrozenGround];
    ``frz_top_ice_flux_mmps`` dew minus evaporation added to layer-1 ice when ``frozen_ground`` is 1,
    mm s-1 (kg m-2 s-1).
    """

    ghf_wm2: PerColumn
    qinsurf_mps: PerColumn
    evap_mps: PerColumn
    etran_mps: Layered
    frozen_ground: Flag
    frz_top_ice_flux_mmps: PerColumn


class ThinSnow(eqx.Module):
    """A snowpack without snow layers of its own, lying on soil layer 1 (Noah-MP ``NumSnowLayerNeg == 0``).

    ``swe_mm`` snow water equivalent, mm; ``depth_m`` snow depth, m; ``melt_mm`` melt of the current step
    handed to the soil surface as ponding, mm per step (Noah-MP ``PondSfcThinSnwMelt``).
    """

    swe_mm: jax.Array
    depth_m: jax.Array
    melt_mm: jax.Array | float = 0.0


class HeatDiagnostics(eqx.Module):
    """Diagnostics of the heat part of a step (fields as in :class:`SoilFluxes`)."""

    t_diff: jax.Array
    heat_bottom_wm2: jax.Array
    latent_heat_wm2: jax.Array
    heat_capacity: jax.Array


class SoilFluxes(eqx.Module):
    """Diagnostics of one step.

    ``runoff_surface_mm`` infiltration and saturation excess, mm per step; ``runoff_subsurface_mm``
    free drainage minus the negative-water refill, mm per step; ``drainage_mmps`` bottom drainage, mm s-1
    (mean over the water sub-steps); ``infil_mps`` infiltration rate of the last sub-step, m s-1; ``nsub``
    number of water sub-steps (3 or 6); ``t_diff`` (..., N) temperature after heat diffusion, before phase
    change, K; ``heat_bottom_wm2`` heat flux into the column through its bottom, W m-2 (positive up, Noah-MP's Hbot: the
    diffusion step conserves ``sum C dz dT = (ghf + heat_bottom) dt``);
    ``latent_heat_wm2`` energy consumed by melt (negative for freezing), W m-2; ``heat_capacity`` (..., N)
    volumetric heat capacity used by the step, J m-3 K-1.
    """

    runoff_surface_mm: jax.Array
    runoff_subsurface_mm: jax.Array
    drainage_mmps: jax.Array
    infil_mps: jax.Array
    nsub: jax.Array
    t_diff: jax.Array
    heat_bottom_wm2: jax.Array
    latent_heat_wm2: jax.Array
    heat_capacity: jax.Array
