"""Site metadata: :class:`SiteMeta` (``site.yaml``, format 2, validated by :mod:`dam.site_schema`) and its
parsing from and writing to YAML."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .schema import ConfigError, validate
from .sensors import SensorError as SensorError  # re-exported: the sensor mapping lives in dam.sensors
from .site_schema import FORMAT_VERSION, InitialState, SiteYaml, SoilColumn, migrate_v1
from .site_variables import SOIL_VARIABLES, SiteError

# --------------------------------------------------------------------------------------------------------------
# Site metadata and folder format
# --------------------------------------------------------------------------------------------------------------


class SiteConfigError(SiteError, ConfigError):
    """``site.yaml`` (or a :class:`SiteMeta` built in code) breaks the schema: the message names the key."""


@dataclass(frozen=True)
class UnreliableSeries:
    """An observation series to flag or down-weight: ``variable``, optional sensor ``depth_m``, ``reason``."""

    variable: str
    reason: str
    depth_m: float | None = None


@dataclass(frozen=True)
class SiteMeta:
    """Metadata and model set-up of a site (``site.yaml``, format 2). Units: degrees, metres, seconds, hours.

    Every instance is validated by the ``site.yaml`` schema (:class:`dam.site_schema.SiteYaml`) when it is made,
    so a site built in code obeys the same rules as one read from a file; a violation is a
    :class:`SiteConfigError` naming the key.

    Attributes
    ----------
    name : short identifier (letters, digits, ``.``, ``_``, ``-``; used in file names).
    latitude, longitude : degrees north / east.
    elevation_m : m above sea level.
    utc_offset_hours : local standard time of the site = UTC + offset (the files are in UTC).
    time_zone : free text, e.g. ``"US Central Standard Time (UTC-6, no DST)"``.
    time_step_s : forcing time step [s].
    reference_height_temperature_m, reference_height_wind_m : measurement heights above ground [m].
    vegetation_type_igbp : MODIS IGBP class 1..20 (Noah-MP ``MODIFIED_IGBP_MODIS_NOAH`` table row).
    soil_type_stas : STAS soil class 1..19 (Noah-MP table row), one for all layers or a tuple with one per layer
        of the soil column; or None with ``soil_texture``.
    soil_texture : ``{"sand": f, "clay": f}`` fractions (0..1); gives the STAS class (USDA texture triangle)
        when ``soil_type_stas`` is None.
    soil_colour : Noah-MP soil colour index 1..8.
    max_vegetation_fraction : SHDMAX (0..1), optional (the station model's default is 0.8).
    sensor_depths_m : ``{"soil_moisture": (...), "soil_temperature": (...)}`` [m, positive down].
    sensor_footprint_m : ``{variable: footprint or (one per sensor)}``, the vertical extent each probe averages
        over [m]; default 0 (a point). See :mod:`dam.sensors`.
    licence, citation, source, title : provenance.
    notes : free-text notes (data quality, approximations made by the converter).
    unreliable : series to flag (see :class:`UnreliableSeries`).
    soil_moisture_measures : what each soil moisture sensor sees, one value for all or a tuple with one per
        sensor: ``"total"`` water (liquid + ice; gravimetric samples, neutron probes, cosmic-ray sensors) or
        ``"liquid"`` water only (dielectric sensors: TDR, reflectometers, capacitance probes read frozen soil as
        dry). Models are compared with the same quantity, sensor by sensor.
    soil_column : :class:`dam.site_schema.SoilColumn` (layer thicknesses, deep boundary depth and temperature),
        or None for Noah-MP's default column (0.1/0.3/0.6/1.0 m, ZBOT 8 m, TBOT the mean air temperature).
    parameters : overrides of Noah-MP table values, ``{section: {TABLE_NAME: value}}`` (:mod:`dam.tables`).
    initial_state : :class:`dam.site_schema.InitialState` or None (a mapping is validated into one).
    assumed : dotted metadata key -> reason, for every value that is a best guess rather than a documented fact
        (e.g. ``{"sensor_depths_m.soil_moisture": "FLUXNET gives no depths ..."}``); results should carry that
        caveat.
    attributes : static site attributes for information and multi-site models (e.g. ``site_id``, ``igbp``,
        ``canopy_height_m``).
    """

    name: str
    latitude: float
    longitude: float
    elevation_m: float
    utc_offset_hours: float
    time_step_s: float
    reference_height_temperature_m: float
    reference_height_wind_m: float
    vegetation_type_igbp: int
    soil_colour: int
    licence: str
    citation: tuple[str, ...]
    soil_type_stas: int | tuple[int, ...] | None = None
    soil_texture: Mapping[str, float] | None = None
    max_vegetation_fraction: float | None = None
    time_zone: str = ""
    title: str = ""
    source: str = ""
    sensor_depths_m: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    unreliable: tuple[UnreliableSeries, ...] = ()
    soil_moisture_measures: str | tuple[str, ...] = "total"
    initial_state: InitialState | None = None
    sensor_footprint_m: Mapping[str, float | tuple[float, ...]] = field(default_factory=dict)
    soil_column: SoilColumn | None = None
    parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    assumed: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        model = _validate_site_yaml(self.to_yaml_dict())
        object.__setattr__(self, "initial_state", model.initial_state)
        if self.soil_column is not None:
            object.__setattr__(self, "soil_column", model.soil_column)
        object.__setattr__(self, "_model", model)

    @property
    def schema(self) -> SiteYaml:
        """The validated ``site.yaml`` model (defaults filled in)."""
        return self._model  # type: ignore[attr-defined]

    def soil_moisture_kinds(self) -> tuple[str, ...]:
        """``"total"`` or ``"liquid"`` for each soil moisture sensor (order of ``sensor_depths_m``)."""
        n = len(self.sensor_depths_m.get("soil_moisture", ()))
        m = self.soil_moisture_measures
        return tuple(m) if isinstance(m, tuple | list) else (m,) * n

    def footprints(self, variable: str) -> tuple[float, ...]:
        """The vertical footprint of each sensor of ``variable`` [m]."""
        n = len(self.sensor_depths_m.get(variable, ()))
        f = self.sensor_footprint_m.get(variable, 0.0)
        return tuple(float(x) for x in f) if isinstance(f, tuple | list) else (float(f),) * n

    def to_yaml_dict(self) -> dict[str, Any]:
        """The nested ``site.yaml`` mapping (format 2)."""
        d: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "title": self.title,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "elevation_m": self.elevation_m,
            "time_zone": self.time_zone,
            "utc_offset_hours": self.utc_offset_hours,
            "time_step_s": self.time_step_s,
            "reference_height": {
                "temperature_m": self.reference_height_temperature_m,
                "wind_m": self.reference_height_wind_m,
            },
            "sensor_depths_m": {k: [float(x) for x in v] for k, v in self.sensor_depths_m.items()},
            "soil": {"stas_type": _plain(self.soil_type_stas), "colour": self.soil_colour},
            "vegetation": {"igbp_type": self.vegetation_type_igbp},
            "licence": self.licence,
            "citation": list(self.citation),
            "source": self.source,
            "notes": list(self.notes),
            "unreliable": [{k: v for k, v in dataclasses.asdict(u).items() if v is not None} for u in self.unreliable],
            "soil_moisture_measures": _plain(self.soil_moisture_measures),
        }
        if self.sensor_footprint_m:
            d["sensor_footprint_m"] = {k: _plain(v) for k, v in self.sensor_footprint_m.items()}
        if self.soil_texture is not None:
            d["soil"]["texture"] = dict(self.soil_texture)
        if self.max_vegetation_fraction is not None:
            d["vegetation"]["max_fraction"] = self.max_vegetation_fraction
        if self.soil_column is not None:
            d["soil_column"] = _dump(self.soil_column, compact=False)
        if self.parameters:
            d["parameters"] = {k: {n: _plain(v) for n, v in sec.items()} for k, sec in self.parameters.items()}
        if self.initial_state is not None:
            d["initial_state"] = _dump(self.initial_state)
        if self.assumed:
            d["assumed"] = {str(k): str(v) for k, v in self.assumed.items()}
        if self.attributes:
            d["attributes"] = dict(self.attributes)
        return d


def _plain(x: Any) -> Any:
    """Tuples as lists (YAML), everything else unchanged."""
    return [_plain(v) for v in x] if isinstance(x, tuple | list) else x


def _dump(x: Any, *, compact: bool = True) -> dict[str, Any]:
    """A mapping or pydantic model as plain YAML data (``compact``: without the keys left at their defaults)."""
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    return x.model_dump(mode="json", exclude_none=True, exclude_defaults=compact)


def _validate_site_yaml(d: Mapping[str, Any], where: str = "site.yaml") -> SiteYaml:
    try:
        return validate(SiteYaml, d, where)
    except ConfigError as exc:
        msg = str(exc).replace("(top level): ", "").replace("Value error, ", "")
        raise SiteConfigError(msg) from None


def parse_site_yaml(d: Mapping[str, Any], where: str = "site.yaml") -> SiteMeta:
    """Validate a ``site.yaml`` mapping (format 2, or format 1 migrated) and return :class:`SiteMeta`.

    Raises
    ------
    SiteConfigError
        Naming the key, the value and what is allowed (unknown keys with the nearest valid name).
    """
    if not isinstance(d, Mapping):
        raise SiteConfigError(f"{where}: top level must be a mapping of keys to values")
    version = d.get("format_version", FORMAT_VERSION)
    if version == 1:
        d = migrate_v1(d, where)
    elif version != FORMAT_VERSION:
        raise SiteConfigError(f"{where}: format_version {version!r} is not supported (1 or {FORMAT_VERSION})")
    m = _validate_site_yaml(d, where)
    depths = {k: tuple(getattr(m.sensor_depths_m, k)) for k in SOIL_VARIABLES if getattr(m.sensor_depths_m, k)}
    feet = {k: getattr(m.sensor_footprint_m, k) for k in SOIL_VARIABLES}
    feet = {k: tuple(v) if isinstance(v, list) else v for k, v in feet.items() if v != 0.0}
    raw = d.get("soil_column")
    return SiteMeta(
        name=m.name,
        title=m.title,
        latitude=m.latitude,
        longitude=m.longitude,
        elevation_m=m.elevation_m,
        time_zone=m.time_zone,
        utc_offset_hours=m.utc_offset_hours,
        time_step_s=m.time_step_s,
        reference_height_temperature_m=m.reference_height.temperature_m,
        reference_height_wind_m=m.reference_height.wind_m,
        vegetation_type_igbp=m.vegetation.igbp_type,
        max_vegetation_fraction=m.vegetation.max_fraction,
        soil_type_stas=tuple(m.soil.stas_type) if isinstance(m.soil.stas_type, list) else m.soil.stas_type,
        soil_texture=None if m.soil.texture is None else m.soil.texture.model_dump(),
        soil_colour=m.soil.colour,
        licence=m.licence,
        citation=(m.citation,) if isinstance(m.citation, str) else tuple(m.citation),
        source=m.source,
        sensor_depths_m=depths,
        sensor_footprint_m=feet,
        notes=tuple(m.notes),
        unreliable=tuple(UnreliableSeries(u.variable, u.reason, u.depth_m) for u in m.unreliable),
        soil_moisture_measures=tuple(m.soil_moisture_measures)
        if isinstance(m.soil_moisture_measures, list)
        else m.soil_moisture_measures,
        soil_column=None if raw is None else m.soil_column,
        parameters={k: dict(v) for k, v in m.parameters.items()},
        initial_state=m.initial_state,
        assumed=dict(m.assumed),
        attributes=dict(m.attributes),
    )
