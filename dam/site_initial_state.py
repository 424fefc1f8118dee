"""The ``initial_state`` of ``site.yaml`` (format 2): pydantic models of the state entering the first step (soil
profiles on any layers, canopy, snow and its layers) and the checks of a profile against the model column."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator

from .schema import Strict
from .site_variables import TFRZ

MAX_SNOW_LAYERS = 3  # Noah-MP NumSnowLayerMax
SNOW_LAYER_MIN_DEPTH_M = 0.025  # Noah-MP builds the first snow layer at this snow depth (SnowWater)
GRID_TOL_M = 1e-6  # tolerance of depth comparisons (m)


class SnowLayers(Strict):
    """Snow layers, top first (Noah-MP's indices -2..0 for three layers). Parsed and validated here; the
    multi-layer snowpack consumes them (until then the station model starts from their total SWE and depth)."""

    thickness_m: list[float] = Field(description="thickness of each snow layer, m (> 0)")
    ice_mm: list[float] = Field(description="ice of each layer, mm (kg m-2, >= 0)")
    liquid_mm: list[float] = Field(description="liquid water of each layer, mm (>= 0)")
    temperature_K: list[float] = Field(description=f"temperature of each layer, K (<= {TFRZ})")

    @model_validator(mode="after")
    def _consistent(self) -> SnowLayers:
        n = len(self.thickness_m)
        if not 1 <= n <= MAX_SNOW_LAYERS:
            raise ValueError(f"{n} snow layers: Noah-MP holds 1..{MAX_SNOW_LAYERS}")
        for key in ("ice_mm", "liquid_mm", "temperature_K"):
            if len(getattr(self, key)) != n:
                raise ValueError(f"snow_layers.{key} has {len(getattr(self, key))} values for {n} layers")
        for k in range(n):
            dz, ice, liq, t = self.thickness_m[k], self.ice_mm[k], self.liquid_mm[k], self.temperature_K[k]
            if not 0 < dz <= 100:
                raise ValueError(f"snow_layers.thickness_m[{k}] = {dz!r} must lie in (0, 100] m")
            if ice < 0 or liq < 0:
                raise ValueError(f"snow_layers layer {k}: ice_mm = {ice!r} and liquid_mm = {liq!r} must be >= 0")
            if ice + liq <= 0:
                raise ValueError(
                    f"snow_layers layer {k} holds no water (ice_mm + liquid_mm = 0): a snow layer needs snow"
                )
            if not 150 <= t <= TFRZ:
                raise ValueError(f"snow_layers.temperature_K[{k}] = {t!r} must lie in [150, {TFRZ}] K")
            density = (ice + liq) / dz
            if not 10 <= density <= 1000:
                raise ValueError(
                    f"snow_layers layer {k}: density (ice + liquid) / thickness = {density:.4g} kg m-3 "
                    "is outside [10, 1000]"
                )
        if sum(self.thickness_m) < SNOW_LAYER_MIN_DEPTH_M:
            raise ValueError(
                f"snow layers {sum(self.thickness_m):g} m deep: Noah-MP builds snow layers only from "
                f"{SNOW_LAYER_MIN_DEPTH_M} m of snow (give snow_water_equivalent_mm and snow_depth_m "
                "without layers)"
            )
        return self

    @property
    def swe_mm(self) -> float:
        return float(sum(self.ice_mm) + sum(self.liquid_mm))

    @property
    def depth_m(self) -> float:
        return float(sum(self.thickness_m))


T_RANGE = dict(ge=150, le=350)


class InitialState(Strict):
    """The state entering the first step (every key optional; defaults in docs/site_format.md)."""

    valid_at_utc: _dt.datetime | None = Field(None, description="time the state is valid at (information)")
    source: str = Field("", description="provenance of the values (information)")
    soil_layer_thickness_m: list[float] | None = Field(
        None,
        description="layers of the soil profiles below, top first, m (default: the model's soil column); "
        "profiles are averaged onto the model layers by overlap",
    )
    soil_temperature_K: list[float] | None = Field(None, description="soil temperature per layer, K [150, 350]")
    soil_moisture: list[float] | None = Field(
        None, description="total soil water (liquid + ice) per layer, m3 m-3 [0, porosity]"
    )
    soil_liquid: list[float] | None = Field(
        None,
        description="liquid soil water per layer, m3 m-3 [0, soil_moisture] "
        "(default: Noah-MP's supercooled-water limit in frozen layers)",
    )
    skin_temperature_K: float | None = Field(
        None,
        **T_RANGE,
        description="skin temperature (HRLDAS TSK): default of the vegetation and ground temperatures, K",
    )
    vegetation_temperature_K: float | None = Field(None, **T_RANGE, description="canopy (leaf) temperature TV, K")
    ground_temperature_K: float | None = Field(None, **T_RANGE, description="ground surface temperature TG, K")
    canopy_air_temperature_K: float | None = Field(
        None, **T_RANGE, description="canopy air temperature TAH, K (default: the air temperature of the first step)"
    )
    canopy_vapour_pressure_Pa: float | None = Field(
        None, gt=0, le=20000, description="canopy air vapour pressure EAH, Pa (default: that of the first step's air)"
    )
    canopy_liquid_mm: float = Field(0.0, ge=0, le=100, description="intercepted liquid water CANLIQ, mm")
    canopy_ice_mm: float = Field(0.0, ge=0, le=100, description="intercepted ice CANICE, mm")
    snow_water_equivalent_mm: float | None = Field(
        None, ge=0, le=1e5, description="snow water equivalent, mm (default 0, or the sum of snow_layers)"
    )
    snow_depth_m: float | None = Field(
        None, ge=0, le=100, description="snow depth, m (default 0, or the sum of snow_layers)"
    )
    snow_age: float = Field(0.0, ge=0, le=1e6, description="BATS non-dimensional snow age TAUSS, -")
    snow_layers: SnowLayers | None = Field(None, description="snow layers (see SnowLayers)")

    @field_validator("soil_layer_thickness_m")
    @classmethod
    def _thickness(cls, v):
        if v is not None and (len(v) == 0 or any(not (0 < x <= 100) for x in v)):
            raise ValueError(f"thicknesses {v} must be a non-empty list in (0, 100] m")
        return v

    @field_validator("soil_temperature_K")
    @classmethod
    def _temperatures(cls, v):
        for k, t in enumerate(v or []):
            if not 150 <= t <= 350:
                raise ValueError(f"soil_temperature_K[{k}] = {t!r} is outside [150, 350] K")
        return v

    @field_validator("soil_moisture", "soil_liquid")
    @classmethod
    def _fractions(cls, v, info):
        for k, x in enumerate(v or []):
            if not 0 <= x <= 1:
                raise ValueError(f"{info.field_name}[{k}] = {x!r} is outside [0, 1] m3 m-3")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> InitialState:
        n = None if self.soil_layer_thickness_m is None else len(self.soil_layer_thickness_m)
        profiles = {k: getattr(self, k) for k in ("soil_temperature_K", "soil_moisture", "soil_liquid")}
        for key, v in profiles.items():
            if v is not None and n is not None and len(v) != n:
                raise ValueError(f"{key} has {len(v)} values for the {n} layers of soil_layer_thickness_m")
        lengths = {len(v) for v in profiles.values() if v is not None}
        if len(lengths) > 1:
            raise ValueError(f"the soil profiles have different numbers of layers {sorted(lengths)}")
        if self.soil_liquid is not None:
            if self.soil_moisture is None:
                raise ValueError("soil_liquid needs soil_moisture (the total water it is part of)")
            for k, (liq, tot) in enumerate(zip(self.soil_liquid, self.soil_moisture, strict=True)):
                if liq > tot + 1e-12:
                    raise ValueError(
                        f"soil_liquid[{k}] = {liq:g} exceeds soil_moisture[{k}] = {tot:g} (liquid is "
                        "part of the total water; allowed [0, soil_moisture])"
                    )
        swe, depth = self.snow_water_equivalent_mm, self.snow_depth_m
        if self.snow_layers is not None:
            for key, given, total, tol in (
                ("snow_water_equivalent_mm", swe, self.snow_layers.swe_mm, 1e-6),
                ("snow_depth_m", depth, self.snow_layers.depth_m, 1e-9),
            ):
                if given is not None and abs(given - total) > tol * max(1.0, total):
                    raise ValueError(
                        f"{key} = {given:g} differs from the sum over snow_layers ({total:g}); give "
                        "one or make them agree"
                    )
        elif (swe or 0.0) > 0.0 or (depth or 0.0) > 0.0:
            if not (swe or 0.0) > 0.0 or not (depth or 0.0) > 0.0:
                raise ValueError(
                    f"snow_water_equivalent_mm = {swe} and snow_depth_m = {depth}: snow needs both > 0 (or neither)"
                )
            density = swe / depth
            if not 10 <= density <= 1000:
                raise ValueError(
                    f"snow density snow_water_equivalent_mm / snow_depth_m = {density:.4g} kg m-3 is outside [10, 1000]"
                )
        return self

    @property
    def swe_mm(self) -> float:
        """Total snow water equivalent, mm."""
        if self.snow_layers is not None:
            return self.snow_layers.swe_mm
        return float(self.snow_water_equivalent_mm or 0.0)

    @property
    def depth_m(self) -> float:
        """Total snow depth, m."""
        if self.snow_layers is not None:
            return self.snow_layers.depth_m
        return float(self.snow_depth_m or 0.0)

    def profile_on(self, key: str, bottoms_m: Sequence[float]) -> np.ndarray | None:
        """The profile ``key`` on model layers with ``bottoms_m`` (None if not given); see :func:`profile_on_grid`."""
        values = getattr(self, key)
        if values is None:
            return None
        if self.soil_layer_thickness_m is None:
            if len(values) != len(bottoms_m):
                raise ValueError(
                    f"initial_state.{key} has {len(values)} values for the {len(bottoms_m)} model soil "
                    "layers (or give soil_layer_thickness_m: the layers of the profile)"
                )
            return np.asarray(values, float)
        return profile_on_grid(np.cumsum(self.soil_layer_thickness_m), values, bottoms_m, f"initial_state.{key}")


def profile_on_grid(
    profile_bottoms_m: Sequence[float], values: Sequence[float], bottoms_m: Sequence[float], key: str = "profile"
) -> np.ndarray:
    """Layer values of a profile given on other layers: the overlap-weighted mean over each model layer.

    A model layer inside one profile layer takes its value exactly (so identical grids, or a finer model grid,
    reproduce the values bit for bit); averaging conserves the water of a moisture profile. The profile must
    reach the bottom of the model column.
    """
    pb = np.asarray(profile_bottoms_m, float)
    mb = np.asarray(bottoms_m, float)
    v = np.asarray(values, float)
    if pb[-1] < mb[-1] - GRID_TOL_M:
        raise ValueError(
            f"{key}: the profile reaches {pb[-1]:g} m but the soil column is {mb[-1]:g} m deep (give "
            "the profile down to the column bottom)"
        )
    pt = np.r_[0.0, pb[:-1]]
    mt = np.r_[0.0, mb[:-1]]
    overlap = np.minimum(mb[:, None], pb[None, :]) - np.maximum(mt[:, None], pt[None, :])
    overlap = np.where(overlap > GRID_TOL_M, overlap, 0.0)
    w = overlap / overlap.sum(axis=1, keepdims=True)
    single = (w > 0).sum(axis=1) == 1
    out = np.where(single, v[np.argmax(w, axis=1)], w @ v)
    return out


def check_initial_state(init: InitialState, bottoms_m: Sequence[float], smcmax: Sequence[float]) -> None:
    """Profiles against the model column: number of layers, depth reached, water within [0, porosity]."""
    porosity = np.asarray(smcmax, float)
    for key in ("soil_temperature_K", "soil_moisture", "soil_liquid"):
        values = init.profile_on(key, bottoms_m)
        if values is None or key == "soil_temperature_K":
            continue
        for k, x in enumerate(values):
            if x > porosity[k] + 1e-12:
                raise ValueError(
                    f"initial_state.{key}: {x:.4g} m3 m-3 in model layer {k + 1} exceeds its porosity "
                    f"MAXSMC = {porosity[k]:g} (allowed [0, MAXSMC])"
                )
