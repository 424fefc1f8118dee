"""Station sites: a folder format, validated forcing/observation Datasets, converters and sensor-to-layer mapping.

A site is a folder (see ``docs/site_format.md``)::

    <site>/site.yaml          metadata (location, time step, heights, soil/vegetation, licence, notes)
    <site>/forcing.nc         CF netCDF forcing, UTC, time stamp = END of each interval, no gaps
    <site>/observations.nc    optional CF netCDF soil/flux observations (NaN where missing)

:func:`load_site` returns a :class:`Site` (metadata, forcing Dataset, observations Dataset or ``None``) after
checking everything; any problem raises :class:`SiteError` naming the variable, key or file.

Canonical variables after loading (float64, SI units; dims ``time`` and, for soil series, a depth dimension):

==================  ================================================  ============  =============
name                standard_name                                      units         dims
==================  ================================================  ============  =============
T_air               air_temperature                                    K             time
q_air               specific_humidity                                  kg kg-1       time
p_sfc               surface_air_pressure                               Pa            time
wind                wind_speed                                         m s-1         time
sw_down             surface_downwelling_shortwave_flux_in_air          W m-2         time
lw_down             surface_downwelling_longwave_flux_in_air           W m-2         time
precip              precipitation_flux                                 kg m-2 s-1    time
soil_moisture       volume_fraction_of_condensed_water_in_soil         m3 m-3        time, sm_depth
soil_temperature    soil_temperature                                   K             time, st_depth
==================  ================================================  ============  =============

plus optional flux observations (:data:`OBSERVATION_VARIABLES`). Forcing values are means over the interval
that ends at the time stamp (as the Noah-MP/HRLDAS driver uses them: the record stamped t_k drives the step
(t_k - dt, t_k]); the bounds are stored in ``time_bnds``.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml

from .io_safety import write_netcdf, write_text

# The parts of a site live in their own modules; dam.sites re-exports them (one import for users).
from .meteo import (
    EPS_WATER,
    PAR_UMOL_PER_J_SW,
    SIGMA_SB,
    SOLAR_CONSTANT,
    daily_toa_shortwave,
    longwave_brutsaert_crawford_duchon,
    saturation_vapour_pressure,
    shortwave_from_par,
    specific_humidity_from_rh,
    specific_humidity_from_vapour_pressure,
    vapour_pressure_from_specific_humidity,
)
from .schema import ConfigError, read_text
from .sensors import SensorError as SensorError  # re-exported: the sensor mapping lives in dam.sensors
from .sensors import SensorMapping, map_sensors_to_layers, model_at_sensors
from .site_datasets import (
    make_forcing,
    make_observations,
    standardise_forcing,
    standardise_observations,
)
from .site_meta import (
    SiteConfigError,
    SiteMeta,
    UnreliableSeries,
    parse_site_yaml,
)
from .site_variables import (
    ALL_VARIABLES,
    DEFAULT_MAX_GAP,
    FORCING_VARIABLES,
    GAP_METHODS,
    MISSING_CODES,
    OBSERVATION_VARIABLES,
    SOIL_MOISTURE_MEASURES,
    SOIL_VARIABLES,
    SiteError,
    VarSpec,
    unit_conversion,
)

__all__ = [
    "ALL_VARIABLES",
    "DEFAULT_MAX_GAP",
    "EPS_WATER",
    "FORCING_VARIABLES",
    "GAP_METHODS",
    "MISSING_CODES",
    "OBSERVATION_VARIABLES",
    "PAR_UMOL_PER_J_SW",
    "SHIPPED_SITES_DIR",
    "SIGMA_SB",
    "SOIL_MOISTURE_MEASURES",
    "SOIL_VARIABLES",
    "SOLAR_CONSTANT",
    "SensorError",
    "SensorMapping",
    "Site",
    "SiteConfigError",
    "SiteError",
    "SiteMeta",
    "UnreliableSeries",
    "VarSpec",
    "check_site",
    "convert_site",
    "daily_toa_shortwave",
    "default_shared_data_dir",
    "load_site",
    "longwave_brutsaert_crawford_duchon",
    "make_forcing",
    "make_observations",
    "map_sensors_to_layers",
    "model_at_sensors",
    "parse_site_yaml",
    "saturation_vapour_pressure",
    "shipped_site_dir",
    "shipped_sites",
    "shortwave_from_par",
    "specific_humidity_from_rh",
    "specific_humidity_from_vapour_pressure",
    "standardise_forcing",
    "standardise_observations",
    "unit_conversion",
    "vapour_pressure_from_specific_humidity",
    "write_site",
]


@dataclass(frozen=True)
class Site:
    """A loaded, validated site: metadata, forcing Dataset, observation Dataset (or None), folder (or None)."""

    meta: SiteMeta
    forcing: xr.Dataset
    observations: xr.Dataset | None = None
    path: Path | None = None

    def sensor_mapping(
        self, variable: str, layer_bottoms_m: Sequence[float], depths_m: Sequence[float] | None = None, **kw
    ) -> SensorMapping:
        """How the sensors of ``variable`` (default all; or those at ``depths_m``) read the model layers, with
        their footprints from ``site.yaml`` (0 at a depth site.yaml does not list), see
        :func:`dam.sensors.map_sensors_to_layers` (``kw``: e.g. ``rule``)."""
        all_depths = self.meta.sensor_depths_m.get(variable, ())
        feet = self.meta.footprints(variable)
        if depths_m is None:
            depths_m = all_depths
        idx = [_sensor_index(all_depths, d) for d in depths_m]
        chosen = [0.0 if i is None else feet[i] for i in idx]
        return map_sensors_to_layers(depths_m, layer_bottoms_m, variable, footprint_m=chosen, **kw)

    def sees_liquid(self, variable: str = "soil_moisture", depths_m: Sequence[float] | None = None) -> np.ndarray:
        """(S,) True where a sensor of ``variable`` sees liquid water only (``soil_moisture_measures``); always
        False for other variables. A depth site.yaml does not list takes the kind all the site's sensors share."""
        all_depths = self.meta.sensor_depths_m.get(variable, ())
        if depths_m is None:
            depths_m = all_depths
        if variable != "soil_moisture":
            return np.zeros(len(depths_m), bool)
        kinds = self.meta.soil_moisture_kinds()
        out = []
        for d in depths_m:
            i = _sensor_index(all_depths, d)
            if i is None:
                if len(set(kinds)) > 1:
                    raise SiteError(f"{variable} at {float(d):g} m: not a sensor of site.yaml, and its sensors see "
                                    f"different water {kinds}: which does this one see?")  # fmt: skip
                out.append(bool(kinds) and kinds[0] == "liquid")
            else:
                out.append(kinds[i] == "liquid")
        return np.array(out, bool)

    def model_at_sensors(
        self,
        model: xr.Dataset,
        variable: str,
        layer_bottoms_m: Sequence[float],
        depths_m: Sequence[float] | None = None,
        **kw,
    ) -> tuple[SensorMapping, xr.DataArray]:
        """The model series each sensor of ``variable`` sees (dims ``(time, <depth dim>)``): soil moisture as
        total (``soil_moisture``) or liquid water (``soil_liquid_water``) sensor by sensor, read at the sensors'
        depths and footprints. ``model`` is a station-model output Dataset with a ``layer`` dimension."""
        spec = OBSERVATION_VARIABLES[variable]
        depths = self.meta.sensor_depths_m.get(variable, ()) if depths_m is None else tuple(depths_m)
        mapping = self.sensor_mapping(variable, layer_bottoms_m, depths, **kw)
        obs = xr.DataArray(np.zeros((1, len(depths))), dims=("time", spec.depth_dim), name=variable,
                           coords={spec.depth_dim: list(depths)})  # fmt: skip
        feet = mapping.footprint_m
        rule = mapping.rule
        _, total = model_at_sensors(model[variable], obs, layer_bottoms_m, footprint_m=feet, rule=rule)
        if variable != "soil_moisture":
            return mapping, total
        liquid = self.sees_liquid(variable, depths)
        if liquid.any():
            _, liq = model_at_sensors(model["soil_liquid_water"], obs, layer_bottoms_m, footprint_m=feet, rule=rule)
            dims = total.dims
            total = xr.where(xr.DataArray(liquid, dims=spec.depth_dim), liq, total, keep_attrs=True).transpose(*dims)
            total.name = variable
        return mapping, total.assign_coords(sees=(spec.depth_dim, np.where(liquid, "liquid", "total")))

    def unreliable_flag(self, variable: str, depth_m: float | None = None) -> str:
        """The reason a series is flagged unreliable in ``site.yaml``, or ``""``."""
        for u in self.meta.unreliable:
            if u.variable == variable and (u.depth_m is None or depth_m is None or np.isclose(u.depth_m, depth_m)):
                return u.reason
        return ""


def _sensor_index(depths: Sequence[float], depth: float) -> int | None:
    """Index of the sensor at ``depth`` (1 um tolerance), or None."""
    hits = np.flatnonzero(np.isclose(np.asarray(depths, float), float(depth), rtol=0, atol=1e-6))
    return int(hits[0]) if hits.size else None


def _check_initial_time(site: Site) -> None:
    """An initial state valid outside the forcing (a stale copy, a typo in the year) is refused, not used."""
    init = site.meta.initial_state
    if init is None or init.valid_at_utc is None:
        return
    at = np.datetime64(init.valid_at_utc.replace(tzinfo=None) - (init.valid_at_utc.utcoffset() or _dt.timedelta()))
    times = site.forcing["time"].values
    first = times[0] - np.timedelta64(int(site.meta.time_step_s), "s")
    if not first - np.timedelta64(1, "D") <= at.astype(times.dtype) <= times[-1]:
        raise SiteError(
            f"site.yaml: initial_state.valid_at_utc {at} lies outside the forcing ({first} to {times[-1]} UTC)"
        )


def check_site(site: Site) -> Site:
    """Cross-check metadata against the Datasets (time step, sensor depths); returns ``site``."""
    step = float(site.forcing.attrs["time_step_s"])
    if step != site.meta.time_step_s:
        raise SiteError(
            f"forcing.nc: time step {step:g} s differs from site.yaml time_step_s {site.meta.time_step_s:g}"
        )
    _check_initial_time(site)
    obs = site.observations
    for name in SOIL_VARIABLES:
        declared = site.meta.sensor_depths_m.get(name)
        present = obs is not None and name in obs
        if present:
            d = tuple(float(x) for x in obs[OBSERVATION_VARIABLES[name].depth_dim].values)
            if declared is None:
                raise SiteError(f"site.yaml: sensor_depths_m.{name} missing (observations.nc has depths {list(d)} m)")
            if len(d) != len(declared) or not np.allclose(d, declared, rtol=0, atol=1e-6):
                raise SiteError(
                    f"site.yaml: sensor_depths_m.{name} {list(declared)} differ from observations.nc depths {list(d)}"
                )
        elif declared:
            raise SiteError(f"site.yaml: sensor_depths_m.{name} given but observations.nc has no {name!r}")
    return site


def _open_nc(path: Path) -> xr.Dataset:
    try:
        with xr.open_dataset(path) as ds:
            return ds.load()
    except (OSError, ValueError) as exc:
        raise SiteError(f"{path}: cannot be read as netCDF ({exc})") from exc


def read_site_meta(path: str | os.PathLike) -> tuple[Path, SiteMeta]:
    """The folder and validated ``site.yaml`` of a site folder or shipped site, without reading its data.

    Raises
    ------
    SiteError
        Naming the missing folder or file, or the bad key.
    """
    p = Path(path)
    if not p.exists() and str(path) in shipped_sites():
        p = shipped_site_dir(str(path))
    if not p.is_dir():
        raise SiteError(f"site folder {str(path)!r} does not exist")
    yml = p / "site.yaml"
    if not yml.is_file():
        raise SiteError(f"{p}: missing site.yaml")
    try:
        raw = yaml.safe_load(read_text(yml))
    except yaml.YAMLError as exc:
        raise SiteError(f"{yml}: invalid YAML ({exc})") from exc
    except ConfigError as exc:  # not UTF-8
        raise SiteError(str(exc)) from None
    return p, parse_site_yaml(raw, where=str(yml))


def load_site(path: str | os.PathLike, *, gaps: str = "error", max_gap: int | None = DEFAULT_MAX_GAP) -> Site:
    """Read and validate a site folder (``site.yaml``, ``forcing.nc``, optional ``observations.nc``).

    ``path`` may also be the name of a shipped site (see :func:`shipped_sites`). ``gaps``/``max_gap`` apply to
    NaN in the forcing (see :func:`standardise_forcing`); observations are never filled.

    Raises
    ------
    SiteError
        Naming the missing file, the bad key or the bad variable.
    """
    p, meta = read_site_meta(path)
    fpath = p / "forcing.nc"
    if not fpath.is_file():
        raise SiteError(f"{p}: missing forcing.nc")
    try:
        forcing = standardise_forcing(
            _open_nc(fpath), step_s=meta.time_step_s, gaps=gaps, max_gap=max_gap, utc_offset_hours=meta.utc_offset_hours
        )
    except SiteError as exc:
        raise SiteError(f"{fpath}: {exc}") from None
    opath = p / "observations.nc"
    obs = None
    if opath.is_file():
        try:
            obs = standardise_observations(_open_nc(opath))
        except SiteError as exc:
            raise SiteError(f"{opath}: {exc}") from None
    return check_site(Site(meta, forcing, obs, p))


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for v in ds.data_vars:
        if v == "time_bnds":
            enc[v] = {
                "units": "seconds since 1970-01-01 00:00:00",
                "dtype": "int64",
                "calendar": "standard",
                "zlib": True,
                "complevel": 9,
            }
        elif np.issubdtype(ds[v].dtype, np.floating):
            enc[v] = {
                "dtype": "float32",
                "zlib": True,
                "complevel": 9,
                "shuffle": True,
                "_FillValue": np.float32(np.nan),
            }
    enc["time"] = {
        "units": "seconds since 1970-01-01 00:00:00",
        "dtype": "int64",
        "calendar": "standard",
        "zlib": True,
        "complevel": 9,
    }
    for c in ds.coords:
        if c != "time":
            enc[c] = {"dtype": "float64", "_FillValue": None}
    return enc


def write_site(site: Site, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a site folder (``site.yaml``, ``forcing.nc``, ``observations.nc``); floats are stored as float32
    with zlib level 9 (the converted source values have at most 4-5 significant digits)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SiteError(f"{out} exists and is not empty (pass overwrite=True)")
        for f in ("site.yaml", "forcing.nc", "observations.nc"):
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    check_site(site)
    # Each file atomically, site.yaml last: a folder left by a crash is never read as a complete site.
    write_netcdf(site.forcing, out / "forcing.nc", encoding=_encoding(site.forcing), engine="netcdf4")
    if site.observations is not None:
        obs = site.observations
        write_netcdf(obs, out / "observations.nc", encoding=_encoding(obs), engine="netcdf4")
    write_text(
        out / "site.yaml",
        "# dam site metadata (format: docs/site_format.md)\n"
        + yaml.safe_dump(site.meta.to_yaml_dict(), sort_keys=False, allow_unicode=True, width=110),
    )
    return out


# --------------------------------------------------------------------------------------------------------------
# Shipped sites and conversion of source data
# --------------------------------------------------------------------------------------------------------------

SHIPPED_SITES_DIR = Path(__file__).resolve().parent / "data" / "sites"


def default_shared_data_dir() -> Path:
    """``$DAM_SHARED_DATA`` if set, else ``<checkout>/../shared/data``."""
    env = os.environ.get("DAM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def shipped_sites() -> list[str]:
    """Names of the sites shipped under ``dam/data/sites``."""
    if not SHIPPED_SITES_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_SITES_DIR.iterdir() if (p / "site.yaml").is_file())


def shipped_site_dir(name: str) -> Path:
    """Folder of a shipped site (raises :class:`SiteError` listing the known names)."""
    p = SHIPPED_SITES_DIR / name
    if not (p / "site.yaml").is_file():
        raise SiteError(f"no shipped site {name!r} (shipped: {shipped_sites()})")
    return p


def convert_site(
    source_name_or_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    gaps: str = "error",
    max_gap: int | None = DEFAULT_MAX_GAP,
    overwrite: bool = False,
    converter: str | None = None,
    **options: Any,
) -> Path:
    """Convert a source data folder into a site folder and return its path.

    Parameters
    ----------
    source_name_or_dir
        A known source name (:data:`dam.site_readers.CONVERTERS`: ``bondville_1998``, ``bondville_1998_hrldas``,
        ``hyytiala_2000_2010``, ``tanggula_forcing_only``) looked up in :func:`default_shared_data_dir`, or a
        folder whose name is one of these or whose files identify the format.
    out_dir
        The site folder to write (created; must be empty unless ``overwrite``).
    gaps, max_gap
        Gap handling of the forcing (see :func:`standardise_forcing`); the default refuses to fill.
    converter
        Force a converter for a source folder (e.g. ``"bondville_1998_hrldas"`` for the Bondville folder).
    **options
        Passed to the converter (e.g. ``wind="u_bar"`` for Bondville).
    """
    from dam.site_readers import CONVERTERS, identify_source

    src = Path(source_name_or_dir)
    if not src.exists():
        name = str(source_name_or_dir)
        if name not in CONVERTERS:
            raise SiteError(f"unknown source {name!r}: not a folder and not one of {sorted(CONVERTERS)}")
        folder = default_shared_data_dir() / CONVERTERS[name].folder
        if not folder.is_dir():
            raise SiteError(f"source folder {folder} for {name!r} does not exist (set DAM_SHARED_DATA)")
        src, kind = folder, name
    else:
        kind = converter or identify_source(src)
        if kind not in CONVERTERS:
            raise SiteError(f"unknown converter {kind!r} (known: {sorted(CONVERTERS)})")
    site = CONVERTERS[kind].read(src, gaps=gaps, max_gap=max_gap, **options)
    out = write_site(site, out_dir, overwrite=overwrite)
    if (src / "SOURCE.md").is_file():
        shutil.copyfile(src / "SOURCE.md", out / "SOURCE.md")
    return out
