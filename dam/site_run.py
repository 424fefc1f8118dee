"""Run the physics-only station model at a site: set-up from a site folder, spin-up, a blocked run with a
progress bar, CF netCDF output, plots against observations and a metrics table.

The driver around the pure model :mod:`dam.physics.station` (``run_station``: arrays in, arrays out, for gradients
and hybrids). Public entry points (also as ``dam.<name>``): :func:`run_site` (a run to files), and
:func:`setup_station`, :func:`spin_up`, :func:`run_blocks` (the same run in memory).

The set-up rules (documented in docs/station_model.md and docs/site_format.md):

* Soil grid: ``site.yaml`` ``soil_column`` (any number of layers, the depth ZBOT of the deep temperature
  boundary), else Noah-MP's four layers (0.1, 0.3, 0.6, 1.0 m) and ZBOT = 8 m.
* Parameters: Noah-MP table rows of the site's vegetation type (MODIS IGBP), STAS soil class per layer and soil
  colour, with ``site.yaml`` ``parameters`` overrides (:mod:`dam.tables`, :mod:`dam.parameters`); SHDMAX from
  ``site.yaml`` (default 0.8); the reference height is the wind height.
* Deep soil temperature (TBOT, at ZBOT): ``soil_column.bottom_temperature_K`` if given, else the mean air
  temperature of the record.
* Solar geometry: HRLDAS's cos(zenith) at the end of each step for steps up to one hour (bit-exact with the
  Fortran driver); for longer steps (daily forcing) the shortwave-weighted mean over the step.
* Initial state: ``site.yaml``'s ``initial_state`` where given (profiles averaged onto the model layers), else a
  uniform column at TBOT and field capacity, Noah-MP's initialisation for the rest (:func:`initial_state`); the
  snowpack from the given snow layers or Noah-MP's initial layering of the SWE and depth (:func:`initial_snow`);
  then ``spinup_cycles`` passes over the first year.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from . import io_safety
from . import parameters as P
from .physics.energy_balance import SurfaceEnergyState
from .physics.guards import raise_located
from .physics.snow_types import N_SNOW_LAYERS, SnowpackOptions
from .physics.station import (
    CanopyWater,
    SnowState,
    StationForcing,
    StationOptions,
    StationParams,
    StationState,
    run_station,
)
from .physics.types import SoilGrid, SoilOptions, SoilState
from .sharding import pad_axis
from .site_schema import NOAHMP_LAYER_THICKNESS_M, InitialState, check_initial_state
from .site_variables import ZERO_C
from .sites import SOIL_VARIABLES, Site, SiteError
from .solar import cos_zenith, julian_day
from .station_outputs import output_dataset, plot_against_observations, site_outputs, write_netcdf

NOAHMP_LAYER_BOTTOMS_M = (0.1, 0.4, 1.0, 2.0)  # Noah-MP's default soil column (layer bottoms, m)
DEFAULT_VEG_FRAC_MAX = 0.8
MAX_SNOW_LAYER_STEP_S = 10800.0  # longer steps keep the snowpack without layers (SnowpackOptions.layers)


@dataclasses.dataclass(frozen=True)
class StationSetup:
    """Everything a station run needs; ``forcing`` has a leading time axis matching ``times`` (step ends, UTC)."""

    site: Site
    grid: SoilGrid
    options: StationOptions
    params: StationParams
    state0: StationState
    forcing: StationForcing
    times: pd.DatetimeIndex

    @property
    def layer_bottoms_m(self) -> np.ndarray:
        return -np.asarray(self.grid.zsoil)

    def with_phase_change_gradient(self, kind: str) -> StationSetup:
        """This set-up with gradients through soil freezing taken by the ``kind`` derivative (``"implicit"`` or
        ``"exact"``, :class:`~dam.physics.SoilOptions`); the run's values do not change."""
        soil = dataclasses.replace(self.options.soil, phase_change_gradient=kind)
        return dataclasses.replace(self, options=dataclasses.replace(self.options, soil=soil))


def _f64(x) -> jnp.ndarray:
    return jnp.asarray(np.asarray(x, dtype=np.float64))


def step_cos_zenith(times: pd.DatetimeIndex, dt_s: float, lat: float, lon: float, samples: int = 48) -> np.ndarray:
    """cos(zenith) per step: the driver's end-of-step value for dt <= 1 h, else the shortwave-weighted mean
    ``sum(mu^2) / sum(mu)`` of the sun's height over the step (0 when the sun stays down)."""
    if dt_s <= 3600.0:
        return cos_zenith(times, lat, lon)
    offsets = pd.to_timedelta(-dt_s * (np.arange(samples) + 0.5) / samples, unit="s")
    instants = (times.values[:, None] + offsets.values[None, :]).ravel()
    mu = np.maximum(cos_zenith(instants, lat, lon), 0.0).reshape(len(times), samples)
    total = mu.sum(axis=1)
    return np.where(total > 0.0, (mu**2).sum(axis=1) / np.where(total > 0.0, total, 1.0), 0.0)


def station_forcing(site: Site, times: pd.DatetimeIndex | None = None) -> tuple[StationForcing, pd.DatetimeIndex]:
    """The site's CF forcing Dataset as a :class:`StationForcing` (float64 numpy leaves)."""
    ds = site.forcing if times is None else site.forcing.sel(time=times)
    t = pd.DatetimeIndex(ds["time"].values)
    dt = float(site.meta.time_step_s)
    lon = float(np.float32(site.meta.longitude))  # HRLDAS reads the location as float32
    mid = t - pd.to_timedelta(dt / 2.0, unit="s") if dt > 3600.0 else t
    v = {
        k: np.asarray(ds[k].values, np.float64)
        for k in ("T_air", "q_air", "p_sfc", "wind", "sw_down", "lw_down", "precip")
    }
    forcing = StationForcing(
        t_air_k=v["T_air"], q_air_kgkg=v["q_air"], p_sfc_pa=v["p_sfc"], u_ms=v["wind"], v_ms=np.zeros_like(v["wind"]),
        sw_down_wm2=v["sw_down"], lw_down_wm2=v["lw_down"], precip_mmps=v["precip"],
        cos_zenith=step_cos_zenith(t, dt, float(np.float32(site.meta.latitude)), lon), julian_day=julian_day(mid),
    )  # fmt: skip
    return forcing, t


def site_grid(site: Site, layer_bottoms_m: Sequence[float] | None = None) -> SoilGrid:
    """The soil grid of a site: ``soil_column`` of ``site.yaml`` (or Noah-MP's default), or the layer bottoms
    given (m, positive down) with the site's ZBOT; every soil sensor must lie within it."""
    column = site.meta.schema.soil_column
    bottoms = column.bottoms_m if layer_bottoms_m is None else np.asarray(layer_bottoms_m, float)
    if bottoms.ndim != 1 or bottoms.size < 2 or (bottoms <= 0).any() or (np.diff(bottoms) <= 0).any():
        raise ValueError(f"site {site.meta.name}: layer bottoms {bottoms.tolist()} must be >= 2 positive, increasing "
                         "depths (m)")  # fmt: skip
    if column.zbot_m <= bottoms[-1]:
        raise ValueError(f"site {site.meta.name}: the deep temperature boundary (soil_column.bottom_depth_m = "
                         f"{column.zbot_m:g} m) must lie below the soil column ({bottoms[-1]:g} m deep)")  # fmt: skip
    for variable in SOIL_VARIABLES:
        if site.meta.sensor_depths_m.get(variable):
            site.sensor_mapping(variable, bottoms)  # raises if a sensor lies below the column
    return SoilGrid(zsoil=-bottoms, zbot=-column.zbot_m)


def initial_state(
    site: Site, grid: SoilGrid, params: StationParams, forcing: StationForcing, *, snow_layers: bool = True
) -> StationState:
    """The state entering step 1, from ``site.yaml`` ``initial_state`` (:class:`dam.site_schema.InitialState`)
    where given, else as Noah-MP's initialisation (``NoahmpInitMain``) and the HRLDAS driver's first-step guesses:

    * soil: profiles averaged onto the model layers; temperature TBOT and moisture at field capacity where absent;
      liquid water (where not given) the supercooled-water limit in frozen layers, the total elsewhere;
    * vegetation and ground temperatures: the skin temperature (or the top soil layer's), 273.15 K under snow
      when the skin is warmer;
    * canopy air temperature and vapour pressure: those of the first step's air; drag coefficients 0.1 m s-1;
    * canopy water, snow water, snow depth and snow age: 0; the snowpack: :func:`initial_snow`.
    """
    bottoms = -np.asarray(grid.zsoil)
    init = site.meta.initial_state or InitialState()
    check_initial_state(init, bottoms, np.broadcast_to(np.asarray(params.soil.smcmax, float), bottoms.shape))
    smcref = np.asarray(params.soil.smcref, float) * np.ones(len(bottoms))
    t_soil = init.profile_on("soil_temperature_K", bottoms)
    t_soil = np.full(len(bottoms), float(params.soil.tbot)) if t_soil is None else t_soil
    smc = init.profile_on("soil_moisture", bottoms)
    smc = smcref if smc is None else smc
    sh2o = init.profile_on("soil_liquid", bottoms)
    if sh2o is None:  # frozen layers start with the supercooled liquid limit, as Noah-MP's initialisation does
        from .physics.phase_change import supercooled_niu06

        const = SoilOptions().const
        liq_limit = np.asarray(supercooled_niu06(_f64(t_soil), params.soil, const))
        sh2o = np.where(t_soil < const.tfrz, np.minimum(liq_limit, smc), smc)
    t_skin = float(init.skin_temperature_K if init.skin_temperature_K is not None else t_soil[0])
    if init.swe_mm > 0.0 and t_skin > ZERO_C:  # NoahmpInitMain: no warm surface under snow (273.15, not TFRZ)
        t_skin = ZERO_C
    t_veg = t_skin if init.vegetation_temperature_K is None else init.vegetation_temperature_K
    t_grd = t_skin if init.ground_temperature_K is None else init.ground_temperature_K
    t_air0 = float(forcing.t_air_k[0]) if init.canopy_air_temperature_K is None else init.canopy_air_temperature_K
    if init.canopy_vapour_pressure_Pa is None:
        q0 = float(forcing.q_air_kgkg[0])
        w0 = q0 / (1.0 - q0)
        e0 = float(forcing.p_sfc_pa[0]) * w0 / (0.622 + w0)
    else:
        e0 = init.canopy_vapour_pressure_Pa
    return StationState(
        soil=SoilState(t=_f64(t_soil), smc=_f64(smc), sh2o=_f64(sh2o)),
        energy=SurfaceEnergyState(t_veg=_f64(t_veg), t_grd=_f64(t_grd), t_canair=_f64(t_air0), e_canair=_f64(e0),
                                  cm=_f64(0.1), ch=_f64(0.1)),
        canopy=CanopyWater(liq_mm=_f64(init.canopy_liquid_mm), ice_mm=_f64(init.canopy_ice_mm)),
        snow=initial_snow(init, t_grd, layers=snow_layers),
    )  # fmt: skip


def initial_snow(init: InitialState, t_ground_k: float, *, layers: bool = True) -> SnowState:
    """The snowpack entering step 1: the snow layers of ``init`` (top first, at most 3), else the layers Noah-MP's
    initialisation builds from its SWE and depth at the ground temperature (:meth:`SnowState.initial`). Without
    ``layers`` (``SnowpackOptions.layers="none"``) the pack has no layers, with the same SWE and depth."""
    if not layers:
        return SnowState.without_layers(_f64(init.swe_mm), _f64(init.depth_m), _f64(init.snow_age))
    layers = init.snow_layers
    if layers is None:
        return SnowState.initial(_f64(init.swe_mm), _f64(init.depth_m), _f64(t_ground_k), age=_f64(init.snow_age))
    n = len(layers.thickness_m)
    if n > N_SNOW_LAYERS:
        raise ValueError(f"initial_state.snow_layers: {n} layers, Noah-MP has at most {N_SNOW_LAYERS}")
    pad = lambda v: np.r_[np.zeros(N_SNOW_LAYERS - n), np.asarray(v, float)]  # noqa: E731  (slots -2..0, bottom last)
    dz, t, ice, liq = (pad(v) for v in (layers.thickness_m, layers.temperature_K, layers.ice_mm, layers.liquid_mm))
    return SnowState(
        swe_mm=_f64(ice.sum() + liq.sum()), depth_m=_f64(dz.sum()), age=_f64(init.snow_age), swe_prev_mm=_f64(0.0),
        n_layers=jnp.asarray(n, jnp.int32), t_k=_f64(t), ice_mm=_f64(ice), liq_mm=_f64(liq), dz_m=_f64(dz),
    )  # fmt: skip


#: ISO 8601 dates and date-times (``1998-03-01``, ``1998-03-01T12:00``, ``...Z``/``+05:00``): pandas also reads
#: ``01/03/1998`` (as 3 January), ``NaN`` and an empty string (as no time), which a user rarely means.
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?")


def select_period(site: Site, start: str | None, end: str | None) -> xr.Dataset:
    """The site's forcing from ``start`` to ``end`` (dates or date-times, UTC; a date-only ``end`` includes that
    day), refusing dates that cannot be parsed or lie outside the forcing instead of clipping them."""
    times = pd.DatetimeIndex(site.forcing["time"].values)
    dt = pd.to_timedelta(float(site.meta.time_step_s), unit="s")
    first, last = (times[0] - dt).floor("D"), times[-1]
    period = f"the forcing of {site.meta.name} covers {times[0] - dt:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"
    parsed, keys = {}, {}  # keys: what selects the steps (a date-only end keeps its whole day)
    for name, value in (("start", start), ("end", end)):
        if value is None:
            continue
        try:
            if not ISO_DATE.fullmatch(str(value).strip()):
                raise ValueError(value)
            parsed[name] = keys[name] = pd.Timestamp(str(value).strip())
        except (ValueError, TypeError):
            raise SiteError(f"{name} {value!r} is not a date (use e.g. 1998-03-01 or 1998-03-01T12:00)") from None
        if parsed[name].tzinfo is not None:  # the forcing is naive UTC: compare and select in UTC
            parsed[name] = keys[name] = parsed[name].tz_convert("UTC").tz_localize(None)
        else:
            keys[name] = str(value).strip()
        if not first <= parsed[name] <= last:
            raise SiteError(f"{name} {value} lies outside the forcing: {period}")
    if "start" in parsed and "end" in parsed and parsed["start"] > parsed["end"]:
        raise SiteError(f"start {start} is after end {end}")
    selected = site.forcing.sel(time=slice(keys.get("start"), keys.get("end")))
    if selected.sizes["time"] == 0:
        raise SiteError(f"no forcing step ends between start={start} and end={end}: {period}")
    return selected


def site_description(site: Site, grid: SoilGrid) -> P.SiteDescription:
    """What the site's parameters depend on, for the layers of ``grid`` (:class:`dam.parameters.SiteDescription`)."""
    meta = site.meta
    column = meta.schema.soil_column
    tbot = column.bottom_temperature_K
    if tbot is None:
        tbot = float(np.mean(site.forcing["T_air"].values))
    return P.SiteDescription(
        vegetation_type=int(meta.vegetation_type_igbp),
        soil_types=meta.schema.soil.classes(grid.n_layers),
        soil_colour=int(meta.soil_colour),
        veg_frac_max=float(meta.max_vegetation_fraction or DEFAULT_VEG_FRAC_MAX),
        ref_height_m=float(meta.reference_height_wind_m),
        tbot_k=float(tbot),
        latitude_deg=float(np.float32(meta.latitude)),
        overrides=meta.parameters,
    )


def _warn_root_zone(site: Site, grid: SoilGrid, n_root: int) -> None:
    """Noah-MP counts root layers (NROOT), so on another grid the same count reaches another depth: say so."""
    bottoms = -np.asarray(grid.zsoil, float)
    standard = np.cumsum(NOAHMP_LAYER_THICKNESS_M)
    if "NROOT" in site.meta.parameters.get("vegetation", {}) or np.array_equal(bottoms, standard):
        return
    table = min(n_root, len(standard))
    if not np.isclose(bottoms[n_root - 1], standard[table - 1]):
        warnings.warn(
            f"site {site.meta.name}: roots fill the top {n_root} layers (table NROOT), {bottoms[n_root - 1]:g} m of "
            f"this soil column, where Noah-MP's 4-layer column reaches {standard[table - 1]:g} m; set "
            "site.yaml parameters.vegetation.NROOT to choose the number of root layers",
            UserWarning,
            stacklevel=3,
        )


def setup_station(
    site: Site,
    *,
    start: str | None = None,
    end: str | None = None,
    layer_bottoms_m: Sequence[float] | None = None,
) -> StationSetup:
    """Build grid, options, parameters, initial state and forcing for ``site`` over [start, end] (UTC).

    ``layer_bottoms_m`` replaces the site's soil layers (m, positive down; default ``site.yaml`` ``soil_column``
    or Noah-MP's four layers). Everything is checked before any computation: a bad grid, a sensor below the
    column, table overrides or an initial state that do not fit the grid raise a ValueError naming the key.
    """
    meta = site.meta
    forcing_ds = select_period(site, start, end)
    grid = site_grid(site, layer_bottoms_m)
    desc = site_description(site, grid)
    params = P.station_params(desc)
    forcing, times = station_forcing(site, pd.DatetimeIndex(forcing_ds["time"].values))
    dt = float(meta.time_step_s)
    _warn_root_zone(site, grid, int(params.roots.n_root))
    snow = SnowpackOptions(layers="noahmp" if dt <= MAX_SNOW_LAYER_STEP_S else "none")
    options = StationOptions(soil=SoilOptions(dt_s=dt), snow=snow)
    state0 = initial_state(site, grid, params, forcing, snow_layers=snow.layers == "noahmp")
    return StationSetup(site, grid, options, params, state0, forcing, times)


_run = eqx.filter_jit(run_station)


def _slice(forcing: StationForcing, i0: int, i1: int, pad_to: int | None = None) -> StationForcing:
    part = jax.tree_util.tree_map(lambda x: _f64(x[i0:i1]), forcing)
    if pad_to is not None and i1 - i0 < pad_to:
        part = pad_axis(part, i1 - i0, pad_to, axis=0)
    return part


def spin_up(setup: StationSetup, cycles: int = 1, steps: int | None = None) -> StationSetup:
    """Run the first ``steps`` (default: one year) ``cycles`` times and start from the final state."""
    if int(cycles) != cycles or cycles < 0:
        raise ValueError(f"spin-up cycles must be a whole number >= 0, got {cycles!r}")
    if cycles == 0:
        return setup
    n = len(setup.times)
    steps = min(n, steps or int(round(365 * 86400 / setup.options.dt_s)))
    state = setup.state0
    frc = _slice(setup.forcing, 0, steps)
    for cycle in range(cycles):
        try:
            state, _ = _run(state, frc, setup.params, setup.grid, setup.options, observe=None)
        except (RuntimeError, ValueError) as err:
            raise_located(err, when=lambda k, c=cycle: f"{setup.times[k]:%Y-%m-%d %H:%M} UTC, spin-up pass {c + 1}")
            raise
    return dataclasses.replace(setup, state0=state)


def run_blocks(setup: StationSetup, *, block_steps: int = 4096, steps: int | None = None, progress: bool = True):
    """Run the whole record (or its first ``steps``) in blocks of ``block_steps`` (or of the record, if shorter:
    one compilation for the site, whatever ``steps``; the last block padded), returning the stacked (states,
    fluxes) as numpy pytrees."""
    block = min(block_steps, len(setup.times))
    n = len(setup.times) if steps is None else int(steps)
    if not 0 < n <= len(setup.times):
        raise ValueError(f"steps={steps} is not within the record's {len(setup.times)} steps")
    state = setup.state0
    outs = []
    bar = tqdm(total=n, unit="step", desc=f"{setup.site.meta.name}", disable=not progress)
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        frc = _slice(setup.forcing, i0, i1, pad_to=block)
        try:
            new_state, out = _run(state, frc, setup.params, setup.grid, setup.options)
        except (RuntimeError, ValueError) as err:  # a plausibility guard: name the step's time
            raise_located(err, i0, lambda k: f"{setup.times[min(k, n - 1)]:%Y-%m-%d %H:%M} UTC")
            raise
        real = i1 - i0
        if real < block:  # the padded tail: keep the state after the last real step
            new_state = jax.tree_util.tree_map(lambda x, k=real: x[k - 1], out[0])
        state = new_state
        outs.append(jax.tree_util.tree_map(lambda x, k=real: np.asarray(x)[:k], out))
        bar.update(i1 - i0)
    bar.close()
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outs)


def astype(setup: StationSetup, dtype) -> StationSetup:
    """The set-up with every floating array (parameters, state, forcing, grid) cast to ``dtype``."""

    def cast(tree):
        return jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, tree
        )

    return dataclasses.replace(
        setup, params=cast(setup.params), state0=cast(setup.state0), forcing=cast(setup.forcing),
        grid=setup.grid.astype(dtype),
    )  # fmt: skip


def check_sensors(site: Site, layer_bottoms_m: Sequence[float]) -> None:
    """Every soil sensor of the observations lies within the model column (before a run, not after)."""
    from .sites import SOIL_VARIABLES, map_sensors_to_layers

    obs = site.observations
    for name in SOIL_VARIABLES:
        if obs is not None and name in obs:
            depths = np.asarray(obs[obs[name].dims[1]].values, float)
            map_sensors_to_layers(depths, layer_bottoms_m, variable=name)


def run_site(
    site: Site,
    output: str | Path,
    *,
    start: str | None = None,
    end: str | None = None,
    spinup_cycles: int = 1,
    dtype: str = "float64",
    progress: bool = True,
    overwrite: bool = False,
) -> tuple[xr.Dataset, pd.DataFrame | None]:
    """Physics-only run at ``site``: netCDF to ``output``, one PNG per observed variable and a metrics table
    (CSV and Markdown) beside it. Returns the output Dataset and the metrics table (None without observations).

    Everything that can be refused is refused before the run: an output that is not ``.nc``, that is one of the
    site's files, that exists (unless ``overwrite``) or cannot be written; dates outside the forcing; a sensor
    below the model column. Every file is written atomically.
    """
    from .metrics import metrics_table

    output = Path(output)
    files, figures = site_outputs(output)
    inputs = [site.path / f for f in ("site.yaml", "forcing.nc", "observations.nc")] if site.path else []
    io_safety.check_outputs(files, inputs=inputs, overwrite=overwrite, suffixes=(".nc",), folders=[figures])
    setup = setup_station(site, start=start, end=end)
    check_sensors(site, setup.layer_bottoms_m)
    if dtype != "float64":
        setup = astype(setup, jnp.dtype(dtype))
    setup = spin_up(setup, cycles=spinup_cycles)
    states, fluxes = run_blocks(setup, progress=progress)
    ds = output_dataset(setup, states, fluxes, {"spinup_cycles": spinup_cycles, "dtype": dtype})
    write_netcdf(ds, output)
    figures.mkdir(parents=True, exist_ok=True)
    obs = site.observations
    if obs is not None:
        obs = obs.sel(time=slice(setup.times[0], setup.times[-1]))
    plot_against_observations(ds, obs, figures, setup.layer_bottoms_m, site=site)
    if obs is None:
        return ds, None
    table = metrics_table(ds, obs, setup.layer_bottoms_m, site=site)
    io_safety.write_csv(table, files[1])
    io_safety.write_text(files[2], table.to_markdown(index=False, floatfmt=".3g") + "\n")
    return ds, table
