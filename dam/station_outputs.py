"""Outputs of a station run: the CF netCDF Dataset of states and fluxes, its file, and plots against the
site's observations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from . import io_safety
from .sites import SOIL_VARIABLES, Site

if TYPE_CHECKING:
    from .site_run import StationSetup


# (name, standard_name, units, long name, getter(states, fluxes)) of the CF output; names shared with the
# observation catalogue of dam.sites so that model and observations compare by name.
_SERIES = (
    ("sensible_heat_flux", "surface_upward_sensible_heat_flux", "W m-2", "sensible heat flux, + up",
     lambda s, f: f.energy.sh),
    ("latent_heat_flux", "surface_upward_latent_heat_flux", "W m-2", "latent heat flux, + up",
     lambda s, f: f.energy.lh),
    ("ground_heat_flux", "downward_heat_flux_in_soil", "W m-2", "ground heat flux into soil/snow, + down",
     lambda s, f: f.energy.g),
    ("net_radiation", "surface_net_downward_radiative_flux", "W m-2", "net radiation, + down",
     lambda s, f: f.sw_abs_wm2 - f.energy.lw_net),
    ("sw_absorbed", "surface_net_downward_shortwave_flux", "W m-2", "absorbed shortwave", lambda s, f: f.sw_abs_wm2),
    ("lw_net_up", "surface_net_upward_longwave_flux", "W m-2", "net longwave, + up", lambda s, f: f.energy.lw_net),
    ("surface_temperature", "surface_temperature", "K", "radiative skin temperature", lambda s, f: f.energy.t_rad),
    ("canopy_temperature", "canopy_temperature", "K", "leaf temperature", lambda s, f: s.energy.t_veg),
    ("evapotranspiration", "water_evapotranspiration_flux", "kg m-2 s-1", "evapotranspiration, + up",
     lambda s, f: f.evap_canopy_mmps + f.transpiration_mmps + f.evap_ground_mmps),
    ("transpiration", "transpiration_flux", "kg m-2 s-1", "transpiration", lambda s, f: f.transpiration_mmps),
    ("precipitation", "precipitation_flux", "kg m-2 s-1", "rain + snowfall",
     lambda s, f: f.rain_mmps + f.snowfall_mmps),
    ("surface_runoff", "surface_runoff_amount", "kg m-2", "surface runoff per step", lambda s, f: f.runoff_surface_mm),
    ("subsurface_runoff", "subsurface_runoff_amount", "kg m-2", "drainage per step",
     lambda s, f: f.runoff_subsurface_mm),
    ("snow_water_equivalent", "surface_snow_amount", "kg m-2", "snow water equivalent", lambda s, f: s.snow.swe_mm),
    ("snow_depth", "surface_snow_thickness", "m", "snow depth", lambda s, f: s.snow.depth_m),
    ("canopy_water", "canopy_water_amount", "kg m-2", "intercepted water (liquid + ice)",
     lambda s, f: s.canopy.liq_mm + s.canopy.ice_mm),
    ("albedo", "surface_albedo", "1", "surface albedo (0 without sun)", lambda s, f: f.albedo),
    ("leaf_area_index", "leaf_area_index", "1", "effective leaf area index", lambda s, f: f.lai_eff),
    ("btran", "", "1", "soil-water stress factor of transpiration", lambda s, f: f.btran),
)  # fmt: skip
_LAYERED = (
    ("soil_temperature", "soil_temperature", "K", "soil layer temperature", lambda s: s.soil.t),
    ("soil_moisture", "volume_fraction_of_condensed_water_in_soil", "m3 m-3", "total soil moisture (liquid + ice)",
     lambda s: s.soil.smc),
    ("soil_liquid_water", "volume_fraction_of_liquid_water_in_soil", "m3 m-3", "liquid soil moisture",
     lambda s: s.soil.sh2o),
)  # fmt: skip


def output_dataset(setup: StationSetup, states, fluxes, attrs: dict | None = None) -> xr.Dataset:
    """CF Dataset of a run (time = step ends, UTC; layer with depth bounds in m, positive down)."""
    bottoms = setup.layer_bottoms_m
    tops = np.r_[0.0, bottoms[:-1]]
    coords = {
        "time": ("time", setup.times.values, {"standard_name": "time", "long_name": "end of the model step (UTC)"}),
        "layer": ("layer", np.arange(1, len(bottoms) + 1), {"long_name": "soil layer (1 = top)"}),
        "depth": ("layer", 0.5 * (tops + bottoms), {"standard_name": "depth", "units": "m", "positive": "down",
                                                   "bounds": "depth_bnds"}),
        "depth_bnds": (("layer", "nv"), np.stack([tops, bottoms], axis=1), {"units": "m"}),
    }  # fmt: skip
    data = {}
    for name, std, units, long, get in _LAYERED:
        data[name] = (
            ("time", "layer"),
            np.asarray(get(states)),
            {"standard_name": std, "units": units, "long_name": long},
        )
    for name, std, units, long, get in _SERIES:
        meta = {"units": units, "long_name": long} | ({"standard_name": std} if std else {})
        data[name] = ("time", np.asarray(get(states, fluxes)), meta)
    meta = setup.site.meta
    ds = xr.Dataset(data, coords=coords)
    ds.attrs = {
        "title": f"dam station model (Noah-MP v5.2 surface + soil physics in JAX) at {meta.name}",
        "Conventions": "CF-1.10",
        "site": meta.name,
        "latitude": meta.latitude,
        "longitude": meta.longitude,
        "time_step_s": float(setup.options.dt_s),
        "vegetation_type_igbp": int(meta.vegetation_type_igbp),
        "soil_type_stas": int(meta.soil_type_stas or -1),
        "source": "dam run-station",
    } | (attrs or {})
    return ds


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Compressed netCDF, written atomically."""
    encoding = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars}
    return io_safety.write_netcdf(ds, path, encoding=encoding)


def plot_against_observations(
    model: xr.Dataset,
    observations: xr.Dataset | None,
    out_dir: Path,
    layer_bottoms_m: Sequence[float],
    site: Site | None = None,
) -> list[Path]:
    """One PNG per observed variable: model (read at each sensor's depth, :mod:`dam.sensors`; the water each
    sensor sees with ``site``) against the observations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import break_gaps
    from .sites import model_at_sensors

    paths = []
    if observations is None:
        return paths
    for name in observations.data_vars:
        if name not in model:
            continue
        obs = observations[name]
        var = name
        if name in SOIL_VARIABLES:
            depth_dim = obs.dims[1]
            depths = obs[depth_dim].values
            if site is not None:
                _, at = site.model_at_sensors(model, name, layer_bottoms_m, depths)
            else:
                _, at = model_at_sensors(model[name], obs, layer_bottoms_m)
        else:
            at, depths, depth_dim = model[var], [None], None
        fig, axes = plt.subplots(len(depths), 1, figsize=(11, 2.3 * len(depths) + 0.6), sharex=True, squeeze=False)
        for ax, d in zip(axes[:, 0], depths, strict=True):
            o = obs if d is None else obs.sel({depth_dim: d})
            m = at if d is None else at.sel({depth_dim: d})
            for series, style in ((m, {"color": "C0", "label": "model"}), (o, {"color": "k", "label": "observed"})):
                t, v = break_gaps(pd.DatetimeIndex(series["time"].values), series.values)  # no line across gaps
                ax.plot(t, v, lw=0.7, alpha=0.8, **style)
            ax.set_ylabel(obs.attrs.get("units", ""))
            flag = site.unreliable_flag(name, None if d is None else float(d)) if site is not None else ""
            seen = f" ({m['sees'].item()} water)" if "sees" in m.coords else ""
            where = "" if d is None else f" at {float(d):g} m"
            title = f"{var}{seen}{where}" + (f" (flagged unreliable: {flag})" if flag else "")
            ax.set_title(title, fontsize=9, loc="left")
            if flag:
                ax.set_facecolor("#fff4e6")
        axes[0, 0].legend(loc="upper right", fontsize=8)
        if site is not None:
            fig.suptitle(f"{site.meta.name} ({site.meta.title})" if site.meta.title else site.meta.name, fontsize=10)
        fig.tight_layout()
        path = io_safety.save_figure(fig, out_dir / f"{name}.png", dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def site_outputs(output: str | Path) -> tuple[list[Path], Path]:
    """The files :func:`run_site` writes for ``output`` (the netCDF and its metrics tables) and its figures
    folder."""
    output = Path(output)
    tables = [output.with_suffix(".metrics.csv"), output.with_suffix(".metrics.md")]
    return [output, *tables], output.parent / f"{output.stem}_figures"
