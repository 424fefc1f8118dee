"""The site metadata file a user writes next to a flux-tower file (``dam convert-site --metadata META.yaml``).

It says what the data file does not: location, time zone, measurement heights, vegetation and soil class, the
depth of every soil sensor, licence. It is validated by :func:`dam.schema.validate` (unknown keys are errors,
with the nearest valid name). Every value that is a best guess rather than a documented fact is listed under
``assumed`` with the reason, and the reason travels into ``site.yaml`` so that results can be read with that
caveat. The keys are documented in docs/adding_a_site.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from dam.disaggregate import Disaggregation
from dam.schema import ConfigError, Strict, read_text, validate

#: MODIS IGBP classes (Noah-MP ``MODIFIED_IGBP_MODIS_NOAH`` rows 1-17) by their FLUXNET/BADM code.
IGBP_CODES = {
    "ENF": 1, "EBF": 2, "DNF": 3, "DBF": 4, "MF": 5, "CSH": 6, "OSH": 7, "WSA": 8, "SAV": 9, "GRA": 10,
    "WET": 11, "CRO": 12, "URB": 13, "CVM": 14, "SNO": 15, "BSV": 16, "WAT": 17,
}  # fmt: skip
GAP_METHODS = ("error", "interpolate", "previous", "climatology")
FORCING_NAMES = ("T_air", "humidity", "p_sfc", "wind", "sw_down", "lw_down", "precip")
GapMethod = Literal["error", "interpolate", "previous", "climatology"]
Depth = Annotated[float, Field(ge=0.0, le=20.0)]


class Sensor(Strict):
    """One soil sensor: the file column(s) and its depth. Several columns (horizontal replicates at the same
    depth, e.g. AmeriFlux ``TS_1_1_1`` and ``TS_2_1_1``) are averaged where present."""

    column: str | list[str] = Field(description="column name in the data file, or replicate columns to average")
    depth_m: Depth = Field(description="sensor depth below the soil surface [m]")
    instrument: str = Field("", description="sensor type, e.g. 'CS616 reflectometer' (information)")

    @property
    def columns(self) -> list[str]:
        return [self.column] if isinstance(self.column, str) else list(self.column)


class Sensors(Strict):
    soil_moisture: list[Sensor] = Field([], description="soil water content sensors")
    soil_temperature: list[Sensor] = Field([], description="soil temperature sensors")
    soil_moisture_measures: Literal["total", "liquid"] | None = Field(
        None, description="what the moisture sensors see: 'liquid' (TDR, reflectometers, capacitance) or 'total'"
    )
    exclude: dict[str, str] = Field({}, description="soil columns in the file not to use: column -> reason")

    @model_validator(mode="after")
    def _measures_given(self) -> Sensors:
        if self.soil_moisture and self.soil_moisture_measures is None:
            raise ValueError("soil_moisture_measures ('liquid' or 'total') is required with soil moisture sensors")
        for kind in ("soil_moisture", "soil_temperature"):
            depths = [s.depth_m for s in getattr(self, kind)]
            if len(set(depths)) != len(depths):
                raise ValueError(f"{kind}: two sensors at the same depth {depths}; list replicates in one 'column'")
        return self


class TimeSpec(Strict):
    utc_offset_hours: float = Field(ge=-14, le=14, description="local standard time of the file = UTC + offset")
    time_zone: str = Field("", description="free text, e.g. 'China Standard Time (UTC+8, no DST)'")
    stamp: Literal["start", "middle", "end"] | None = Field(
        None, description="what a single time stamp marks in the averaging interval (table files; FLUXNET and "
        "AmeriFlux files say it in their column names)",
    )  # fmt: skip


class Heights(Strict):
    temperature_m: float = Field(gt=0, le=500, description="air temperature / humidity height above ground [m]")
    wind_m: float = Field(gt=0, le=500, description="wind speed height above ground [m]")


class Vegetation(Strict):
    igbp: str | int = Field(description="IGBP code (ENF, GRA, CRO, ...) or MODIS IGBP class 1..20")
    max_fraction: float | None = Field(None, ge=0, le=1, description="maximum green vegetation fraction (SHDMAX)")

    @field_validator("igbp")
    @classmethod
    def _known(cls, v: str | int) -> str | int:
        if isinstance(v, str) and v.upper() not in IGBP_CODES:
            raise ValueError(f"unknown IGBP code {v!r} (known: {', '.join(IGBP_CODES)})")
        if isinstance(v, int) and not 1 <= v <= 20:
            raise ValueError(f"MODIS IGBP class {v} outside 1..20")
        return v.upper() if isinstance(v, str) else v

    @property
    def igbp_class(self) -> int:
        return IGBP_CODES[self.igbp] if isinstance(self.igbp, str) else self.igbp


class Texture(Strict):
    sand: float = Field(ge=0, le=1, description="sand fraction")
    clay: float = Field(ge=0, le=1, description="clay fraction")

    @model_validator(mode="after")
    def _sum(self) -> Texture:
        if self.sand + self.clay > 1.0:
            raise ValueError("sand + clay > 1")
        return self


class Soil(Strict):
    stas_type: int | None = Field(None, ge=1, le=19, description="STAS/USDA soil class 1..19 (Noah-MP SOILPARM)")
    texture: Texture | None = Field(None, description="sand and clay fractions (the class follows if not given)")
    colour: int = Field(ge=1, le=8, description="Noah-MP soil colour 1 (light) .. 8 (dark)")

    @model_validator(mode="after")
    def _class_or_texture(self) -> Soil:
        if self.stas_type is None and self.texture is None:
            raise ValueError("give stas_type (1..19) or texture {sand, clay}")
        return self


class Unreliable(Strict):
    variable: str
    reason: str
    depth_m: float | None = None


class Quality(Strict):
    """Which quality-flagged values count as missing. FLUXNET HH/HR flags: 0 measured, 1 good gap-fill, 2 medium
    (ERA-downscaled for the met ``_F`` variables), 3 poor; DD/table ``_QC``: fraction of good half-hours."""

    forcing_max_flag: int | None = Field(None, ge=0, le=3, description="forcing values with a worse flag are gaps")
    forcing_min_fraction: float | None = Field(None, ge=0, le=1, description="daily forcing below it are gaps")
    observations_max_flag: int | None = Field(1, ge=0, le=3, description="observations with a worse flag -> NaN")
    observations_min_fraction: float | None = Field(0.5, ge=0, le=1, description="daily observations below -> NaN")
    good_flags: list[int] = Field([0], description="table files: flag values that mark a good value")


class Conversion(Strict):
    gaps: GapMethod | dict[str, GapMethod] = Field(
        "error", description="gap policy of dam.sites for the forcing, or per variable with a 'default' key"
    )
    max_gap: int | None = Field(6, ge=1, description="longest run of steps interpolate/previous may fill")
    quality: Quality = Quality()
    disaggregation: Disaggregation = Disaggregation()
    forcing_columns: dict[str, str] = Field(
        {}, description="file column for a forcing variable where the default is not wanted (e.g. LW_IN_JSB_F)"
    )

    @field_validator("gaps")
    @classmethod
    def _gap_keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            unknown = set(v) - {"default", "T_air", "q_air", "p_sfc", "wind", "sw_down", "lw_down", "precip"}
            if unknown:
                raise ValueError(f"unknown forcing variable(s) {sorted(unknown)} in gaps")
        return v

    @field_validator("forcing_columns")
    @classmethod
    def _forcing_keys(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = set(v) - set(FORCING_NAMES) - {"T_air_day", "T_air_night", "T_air_min", "T_air_max"}
        if unknown:
            raise ValueError(f"unknown forcing variable(s) {sorted(unknown)} (known: {', '.join(FORCING_NAMES)})")
        return v

    def gap_method(self, variable: str) -> str:
        if isinstance(self.gaps, str):
            return self.gaps
        return self.gaps.get(variable, self.gaps.get("default", "error"))


class TableColumn(Strict):
    column: str
    units: str
    kind: Literal["relative_humidity", "vapour_pressure_deficit", "specific_humidity", "vapour_pressure"] | None = None
    flag: str | None = Field(None, description="flag column; values whose flag is not in quality.good_flags")


class TableFile(Strict):
    path: str
    separator: str = ","
    comment: str | None = None


class TableFormat(Strict):
    """A delimited text file (or several sharing one time axis) described column by column."""

    files: list[TableFile] = Field(min_length=1)
    time_columns: dict[Literal["year", "month", "day", "hour", "minute", "timestamp"], str]
    timestamp_format: str | None = Field(None, description="strftime format of the 'timestamp' column")
    step_s: int = Field(gt=0, le=86400, description="time step of the rows [s]")
    missing: list[str | float] = Field(["NaN", -9999], description="missing-value codes")
    forcing: dict[str, TableColumn] = Field(description=f"columns of {', '.join(FORCING_NAMES)}")
    observations: dict[str, TableColumn] = Field({}, description="flux series by dam observation name")
    sensor_units: dict[Literal["soil_moisture", "soil_temperature"], str] = {}
    sensor_flags: dict[str, str] = Field({}, description="sensor column -> its flag column")

    @model_validator(mode="after")
    def _complete(self) -> TableFormat:
        missing = [k for k in FORCING_NAMES if k not in self.forcing]
        if missing:
            raise ValueError(f"forcing needs columns for {missing}")
        if "humidity" in self.forcing and self.forcing["humidity"].kind is None:
            raise ValueError("forcing.humidity needs kind (relative_humidity, vapour_pressure_deficit, ...)")
        return self


class SiteMetadata(Strict):
    """A user's description of one site (see docs/adding_a_site.md)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="site folder name")
    site_id: str = Field("", description="network ID, e.g. CN-HaM (checked against the file name)")
    title: str = Field("", description="one line: place, ecosystem, period")
    format: Literal["fluxnet", "ameriflux_base", "table"] | None = Field(None, description="default: detected")
    file: str | None = Field(None, description="data file inside the source folder (where several would fit)")
    latitude: float = Field(ge=-90, le=90, description="degrees north")
    longitude: float = Field(ge=-180, le=180, description="degrees east")
    elevation_m: float = Field(ge=-500, le=9000, description="m above sea level")
    time: TimeSpec
    reference_height: Heights
    vegetation: Vegetation
    soil: Soil
    sensors: Sensors = Sensors()
    licence: str = Field(min_length=1, description="data licence and attribution terms")
    citation: list[str] = Field([], description="references to cite with the data")
    source: str = Field("", description="where the file came from")
    notes: list[str] = Field([], description="free text carried into site.yaml")
    unreliable: list[Unreliable] = Field([], description="series to flag: {variable, depth_m, reason}")
    assumed: dict[str, str] = Field({}, description="dotted key -> why the value is a best guess")
    attributes: dict[str, str | float | int] = Field({}, description="static site attributes (information)")
    conversion: Conversion = Conversion()
    table: TableFormat | None = None

    @model_validator(mode="after")
    def _assumed_keys_exist(self) -> SiteMetadata:
        data = self.model_dump()
        for key in self.assumed:
            if not _resolves(data, key):
                raise ValueError(f"assumed: {key!r} names no value of this file")
        if self.format == "table" and self.table is None:
            raise ValueError("format 'table' needs a 'table' section")
        return self


def _resolves(data: Any, key: str) -> bool:
    """Whether a dotted key names a value: ``sensors.soil_moisture`` (all), ``sensors.soil_moisture.SWC_1``
    (one sensor by column), ``soil.colour`` ..."""
    node = data
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and any(isinstance(s, dict) and part in _as_list(s.get("column")) for s in node):
            node = next(s for s in node if part in _as_list(s.get("column")))
        else:
            return False
    return True


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def load_metadata(path: str | Path) -> SiteMetadata:
    """Read and validate a metadata YAML file.

    Raises
    ------
    ConfigError
        Naming the file and every bad key.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"metadata file {p} does not exist")
    try:
        data = yaml.safe_load(read_text(p))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML ({exc})") from None
    return validate(SiteMetadata, data, where=str(p))
