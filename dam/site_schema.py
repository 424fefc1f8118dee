"""The ``site.yaml`` schema (format 2): pydantic models on the shared validation layer (:mod:`dam.schema`), the
migration of format-1 files, and the set-up a site gives the station model (soil column, table overrides,
initial state), all checked when the file is read, before any computation.

The initial state's models live in :mod:`dam.site_initial_state` (re-exported here). Reference of every key:
``docs/site_format.md`` (its key table is :func:`reference_rows`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from .schema import Strict
from .site_initial_state import (  # re-exported: part of the site.yaml schema
    GRID_TOL_M,
    InitialState,
    check_initial_state,
)
from .site_initial_state import (
    MAX_SNOW_LAYERS as MAX_SNOW_LAYERS,
)
from .site_initial_state import (
    SNOW_LAYER_MIN_DEPTH_M as SNOW_LAYER_MIN_DEPTH_M,
)
from .site_initial_state import (
    TFRZ as TFRZ,
)
from .site_initial_state import (
    SnowLayers as SnowLayers,
)
from .site_initial_state import (
    profile_on_grid as profile_on_grid,
)
from .tables import TableError, noahmp_tables, site_tables, usda_soil_class

FORMAT_VERSION = 2
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NOAHMP_LAYER_THICKNESS_M = (0.1, 0.3, 0.6, 1.0)  # Noah-MP's default 4-layer soil column (bottoms 0.1/0.4/1.0/2.0 m)

Measure = Literal["total", "liquid"]
SOIL_VARIABLES = ("soil_moisture", "soil_temperature")


def _increasing(values: Sequence[float] | None, key: str) -> None:
    if values is not None and np.any(np.diff(np.asarray(values, float)) <= 0):
        raise ValueError(f"{key} {list(values)} must be strictly increasing")


def _per_item(value: Any, n: int, key: str) -> list:
    """One value for all items, or a list with one per item."""
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise ValueError(f"{key}: {len(value)} values for {n} sensors (give one value or one per sensor)")
        return list(value)
    return [value] * n


class ReferenceHeight(Strict):
    temperature_m: float = Field(ge=0.1, le=500, description="height of the air temperature/humidity sensor, m")
    wind_m: float = Field(ge=0.1, le=500, description="height of the anemometer (Noah-MP ZLVL), m")


class SensorDepths(Strict):
    soil_moisture: list[float] = Field([], description="soil moisture sensor depths, m (positive down, increasing)")
    soil_temperature: list[float] = Field([], description="soil temperature sensor depths, m")

    @field_validator("soil_moisture", "soil_temperature")
    @classmethod
    def _depths(cls, v: list[float]) -> list[float]:
        if any(d < 0 or not np.isfinite(d) for d in v):
            raise ValueError(f"depths {v} must be >= 0 m (positive down)")
        _increasing(v, "depths")
        return v


class SensorFootprint(Strict):
    soil_moisture: float | list[float] = Field(
        0.0, description="vertical extent each soil moisture probe averages over, m (one value or one per sensor)"
    )
    soil_temperature: float | list[float] = Field(0.0, description="likewise for the soil temperature sensors, m")

    @field_validator("soil_moisture", "soil_temperature")
    @classmethod
    def _positive(cls, v):
        if any(x < 0 or not np.isfinite(x) for x in np.atleast_1d(np.asarray(v, float))):
            raise ValueError(f"footprints {v} must be >= 0 m")
        return v


class Texture(Strict):
    sand: float = Field(ge=0, le=1, description="sand fraction, -")
    clay: float = Field(ge=0, le=1, description="clay fraction, -")

    @model_validator(mode="after")
    def _sum(self) -> Texture:
        if self.sand + self.clay > 1.0:
            raise ValueError(f"sand + clay = {self.sand + self.clay:g} > 1")
        return self


class Soil(Strict):
    stas_type: int | list[int] | None = Field(
        None, description="STAS soil class 1..19 (one for all layers, or one per layer of soil_column)"
    )
    texture: Texture | None = Field(
        None,
        description="sand and clay fractions; give the STAS class when stas_type is absent (USDA texture triangle)",
    )
    colour: int = Field(ge=1, le=8, description="Noah-MP soil colour 1..8 (soil albedo)")

    @field_validator("stas_type")
    @classmethod
    def _classes(cls, v):
        for c in [v] if isinstance(v, int) else v or []:
            if not 1 <= c <= 19:
                raise ValueError(f"STAS class {c} is outside 1..19")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> Soil:
        if self.stas_type is None and self.texture is None:
            raise ValueError("soil needs 'stas_type' (STAS class 1..19) or 'texture' ({sand, clay} fractions)")
        return self

    def classes(self, n_layers: int) -> tuple[int, ...]:
        """The STAS class of each of ``n_layers`` layers."""
        if self.stas_type is None:
            assert self.texture is not None
            return (usda_soil_class(self.texture.sand, self.texture.clay),) * n_layers
        if isinstance(self.stas_type, int):
            return (self.stas_type,) * n_layers
        if len(self.stas_type) != n_layers:
            raise ValueError(
                f"soil.stas_type has {len(self.stas_type)} classes for {n_layers} soil layers "
                "(give one class or one per layer of soil_column)"
            )
        return tuple(self.stas_type)


class Vegetation(Strict):
    igbp_type: int = Field(ge=1, le=20, description="MODIS IGBP class 1..20 (Noah-MP MODIFIED_IGBP_MODIS_NOAH row)")
    max_fraction: float | None = Field(
        None, ge=0, le=1, description="annual maximum vegetation fraction SHDMAX, - (default 0.8)"
    )


class SoilColumn(Strict):
    layer_thickness_m: list[float] = Field(
        list(NOAHMP_LAYER_THICKNESS_M), description="thickness of each soil layer, top first, m (>= 2 layers)"
    )
    bottom_depth_m: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="depth of the deep soil temperature boundary ZBOT, m (default 8 m, "
        "ZBOT_DATA; must lie below the column)",
    )
    bottom_temperature_K: float | None = Field(
        None,
        ge=200,
        le=330,
        description="deep soil temperature TBOT at bottom_depth_m, K (default: the mean air "
        "temperature of the forcing record)",
    )

    @field_validator("layer_thickness_m")
    @classmethod
    def _thickness(cls, v: list[float]) -> list[float]:
        if len(v) < 2:
            raise ValueError(f"{len(v)} layer(s): the soil column needs at least 2 layers")
        if any(not (0 < x <= 100) for x in v):
            raise ValueError(f"layer thicknesses {v} must lie in (0, 100] m")
        return v

    @property
    def bottoms_m(self) -> np.ndarray:
        """Layer bottoms, m (positive down)."""
        return np.cumsum(np.asarray(self.layer_thickness_m, float))

    @property
    def zbot_m(self) -> float:
        """Depth of the deep temperature boundary, m (positive down)."""
        return float(
            self.bottom_depth_m if self.bottom_depth_m is not None else -noahmp_tables()["general"]["ZBOT_DATA"]
        )

    @model_validator(mode="after")
    def _zbot_below(self) -> SoilColumn:
        depth = float(self.bottoms_m[-1])
        if self.zbot_m <= depth:
            given = "" if self.bottom_depth_m is not None else " (Noah-MP's ZBOT_DATA; give bottom_depth_m)"
            raise ValueError(
                f"bottom_depth_m = {self.zbot_m:g} m{given} must lie below the soil column ({depth:g} m deep)"
            )
        return self


class Unreliable(Strict):
    variable: str = Field(description="observed variable (a name of the observation catalogue)")
    reason: str = Field("", description="why")
    depth_m: float | None = Field(None, description="sensor depth (soil series), m")

    @field_validator("variable")
    @classmethod
    def _known(cls, v: str) -> str:
        from .sites import ALL_VARIABLES

        if v not in ALL_VARIABLES:
            raise ValueError(f"unknown variable {v!r} (known: {', '.join(ALL_VARIABLES)})")
        return v


class SiteYaml(Strict):
    """The whole ``site.yaml`` (format 2)."""

    format_version: Literal[2] = Field(2, description="site.yaml format (1 is read and migrated)")
    name: str = Field(pattern=SAFE_NAME, description="short identifier (letters, digits, '.', '_', '-')")
    title: str = Field("", description="long name (information)")
    latitude: float = Field(ge=-90, le=90, description="degrees north")
    longitude: float = Field(ge=-180, le=180, description="degrees east")
    elevation_m: float = Field(ge=-500, le=9000, description="m above sea level (information)")
    time_zone: str = Field("", description="free text (information; the files are UTC)")
    utc_offset_hours: float = Field(ge=-14, le=14, description="local standard time = UTC + offset (local days)")
    time_step_s: float = Field(gt=0, le=86400 * 31, description="forcing time step, s (must equal forcing.nc's)")
    reference_height: ReferenceHeight
    sensor_depths_m: SensorDepths = Field(SensorDepths(), description="depths of the soil sensors")
    soil_moisture_measures: Measure | list[Measure] = Field(
        "total",
        description="what each soil moisture sensor sees: total (liquid + ice) or liquid water (one value "
        "or one per sensor)",
    )
    sensor_footprint_m: SensorFootprint = Field(SensorFootprint(), description="vertical footprints of the sensors")
    soil: Soil
    vegetation: Vegetation
    soil_column: SoilColumn = Field(SoilColumn(), description="the model's soil layers and deep boundary")
    parameters: dict[str, dict[str, float | list[float]]] = Field(
        {}, description="overrides of Noah-MP table values, {section: {TABLE_NAME: value}} (docs/site_format.md)"
    )
    licence: str = Field(min_length=1, description="licence of the data")
    citation: str | list[str] = Field([], description="references to cite")
    source: str = Field("", description="where the data came from")
    notes: list[str] = Field([], description="free-text notes")
    unreliable: list[Unreliable] = Field([], description="series to flag in metrics and calibration")
    initial_state: InitialState | None = Field(None, description="the state entering the first step")
    assumed: dict[str, str] = Field(
        {}, description="dotted site.yaml key -> reason, for each value that is a best guess rather than a "
        "documented fact (results carry that caveat)"
    )  # fmt: skip
    attributes: dict[str, Any] = Field(
        {}, description="static site attributes for information and multi-site models (site_id, igbp, ...)"
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> SiteYaml:
        bottoms = self.soil_column.bottoms_m
        n_sm = len(self.sensor_depths_m.soil_moisture)
        _per_item(self.soil_moisture_measures, n_sm, "soil_moisture_measures")
        for var in SOIL_VARIABLES:
            depths = getattr(self.sensor_depths_m, var)
            _per_item(getattr(self.sensor_footprint_m, var), len(depths), f"sensor_footprint_m.{var}")
            for d in depths:
                if d > bottoms[-1] + GRID_TOL_M:
                    raise ValueError(
                        f"sensor_depths_m.{var}: a sensor at {d:g} m lies below the soil column "
                        f"({bottoms[-1]:g} m deep; allowed [0, {bottoms[-1]:g}] m): deepen "
                        "soil_column.layer_thickness_m"
                    )
        try:
            tables = self.tables()
        except TableError as exc:
            raise ValueError(str(exc)) from None
        if self.initial_state is not None:
            check_initial_state(self.initial_state, bottoms, tables.soil_layer_values("MAXSMC"))
        return self

    def soil_classes(self) -> tuple[int, ...]:
        return self.soil.classes(len(self.soil_column.layer_thickness_m))

    def tables(self, n_layers: int | None = None):
        """The site's resolved Noah-MP table values (:class:`dam.tables.SiteTables`)."""
        classes = self.soil.classes(n_layers or len(self.soil_column.layer_thickness_m))
        return site_tables(self.vegetation.igbp_type, classes, self.soil.colour, self.parameters)


# --------------------------------------------------------------------------------------------------------------
# Format 1
# --------------------------------------------------------------------------------------------------------------

_V1_DROPPED = {
    "canopy_water_mm": "the HRLDAS setup-file canopy water, which Noah-MP's initialisation sets to 0 (format 1 did "
    "not use it); give canopy_liquid_mm / canopy_ice_mm",
    "leaf_area_index": "LAI comes from the table by month (DYNAMIC_VEG_OPTION 4)",
    "soil_type_per_layer_noahpy": "NoahPy's own soil classes; give soil.stas_type per layer",
}


def migrate_v1(d: Mapping[str, Any], where: str = "site.yaml") -> dict[str, Any]:
    """A format-1 ``site.yaml`` mapping as format 2 (warns about each value format 2 does not take).

    Format 1 kept the deep soil temperature and its depth in ``initial_state`` (now ``soil_column``), and
    carried values the model never used (canopy water of the HRLDAS setup file, the setup LAI, NoahPy's soil
    classes): these are dropped with a warning, so a format-1 folder runs exactly as before.
    """
    out = {k: v for k, v in d.items()}
    out["format_version"] = FORMAT_VERSION
    init = dict(out.get("initial_state") or {})
    column = dict(out.get("soil_column") or {})
    if "deep_soil_temperature_K" in init:
        column["bottom_temperature_K"] = init.pop("deep_soil_temperature_K")
    if "deep_soil_depth_m" in init:
        column["bottom_depth_m"] = init.pop("deep_soil_depth_m")
    for key, why in _V1_DROPPED.items():
        if key in init:
            init.pop(key)
            warnings.warn(
                f"{where} (format 1): initial_state.{key} is not used: {why}; rewrite the file as "
                "format 2 (docs/site_format.md)",
                UserWarning,
                stacklevel=3,
            )
    if column:
        out["soil_column"] = column
    if "initial_state" in out:
        out["initial_state"] = init or None
    return out


def _nested(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``Model``, ``Model | None`` or ``list[Model]``, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_nested, get_args(annotation)) if m is not None), None)


def reference_rows(model: type[BaseModel] = None, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, default, description)`` of every ``site.yaml`` key (nested keys dotted; ``[]`` marks list items)."""
    rows = []
    for name, field in (model or SiteYaml).model_fields.items():
        key = f"{prefix}{name}"
        inner = _nested(field.annotation)
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        if inner is not None:
            if field.description:
                rows.append((key, "" if field.is_required() else "optional", field.description))
            rows += reference_rows(inner, f"{key}[]." if get_origin(field.annotation) is list else f"{key}.")
        else:
            rows.append((key, default if len(default) < 40 else "see below", field.description or ""))
    return rows
