"""Validate the daily-to-hourly disaggregation (dam.disaggregate) where the truth is known: Bondville 1998.

The half-hourly forcing of the shipped ``bondville_1998_hrldas`` site is aggregated to the daily values a
FLUXNET DD file holds (local standard-time days: means, daytime and night-time mean temperature, VPD, daily
precipitation sums), disaggregated again, and the station physics (``dam.site_run``) is run on each forcing
from the same initial state (site.yaml, no spin-up). Each run is compared with the run on the original
half-hourly forcing: soil moisture (total and liquid) and temperature RMSE per layer at the run's own time
stamps, and RMSE of the sensible, latent and ground heat fluxes (step values and daily means). A run at a
daily step on the daily means shows why daily files are disaggregated.

    python benchmarks/disaggregation_bondville.py                 # full year: JSON + figure in results/
    python benchmarks/disaggregation_bondville.py --days 30 --output /tmp/d.json

Targets (issue 14): soil moisture RMSE <= 0.01 m3 m-3, soil temperature RMSE <= 1 K.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dam.io_safety import save_figure, write_text

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"soil_moisture": 0.01, "soil_liquid_water": 0.01, "soil_temperature": 1.0}
# name -> Disaggregation options (None: the truth; "daily": the daily means at a daily step)
CONFIGS: dict[str, dict | str | None] = {
    "truth_1800s": None,
    "disaggregated_1800s": {"step_s": 1800},
    "disaggregated_3600s": {"step_s": 3600},  # the default of converted daily sites (rain over 3 h from 14:00)
    "disaggregated_3600s_rain_6h": {"step_s": 3600, "precip_hours": 6, "precip_start_hour": 12},
    "disaggregated_3600s_rain_24h": {"step_s": 3600, "precip_hours": 24, "precip_start_hour": 0},
    "daily_step": "daily",
}
LAYERED = ("soil_moisture", "soil_liquid_water", "soil_temperature")
FLUXES = ("sensible_heat_flux", "latent_heat_flux", "ground_heat_flux")


def _site_with_forcing(site, forcing, step_s: float):
    from dam.sites import Site

    meta = dataclasses.replace(site.meta, time_step_s=float(step_s))
    return Site(meta, forcing, site.observations, site.path)


def forcings(days: int | None = None, configs: dict | None = None, start_day: int = 0) -> dict:
    """``{name: Site}`` for each configuration over the same local days (``days`` from ``start_day``)."""
    from dam.disaggregate import Disaggregation, daily_means_from_subdaily, disaggregate
    from dam.sites import load_site, make_forcing, specific_humidity_from_vapour_pressure
    from dam.sites import saturation_vapour_pressure as es

    site = load_site("bondville_1998_hrldas")
    m = site.meta
    f = site.forcing
    names = ("T_air", "q_air", "p_sfc", "wind", "sw_down", "lw_down", "precip")
    times = pd.DatetimeIndex(f["time"].values)
    values = {k: f[k].values for k in names}
    daily = daily_means_from_subdaily(times, values, m.latitude, m.longitude, m.utc_offset_hours)
    if days is not None or start_day:
        sl = slice(start_day, None if days is None else start_day + days)
        daily = dataclasses.replace(daily, **{k: v[sl] for k, v in vars(daily).items() if v is not None})
    first = daily.days[0] - pd.Timedelta(hours=m.utc_offset_hours)
    last = daily.days[-1] + pd.Timedelta(days=1) - pd.Timedelta(hours=m.utc_offset_hours)
    out = {}
    for name, cfg in (configs or CONFIGS).items():
        if cfg is None:
            window = f.sel(time=slice(first + pd.Timedelta(minutes=30), last))
            out[name] = _site_with_forcing(site, window, 1800.0)
        elif cfg == "daily":
            e = es(daily.t_mean_k) - daily.vpd_pa  # what a user of the daily means would compute
            values = {
                "T_air": daily.t_mean_k,
                "q_air": specific_humidity_from_vapour_pressure(np.maximum(e, 1.0), daily.p_pa),
                "p_sfc": daily.p_pa,
                "wind": daily.wind_ms,
                "sw_down": daily.sw_wm2,
                "lw_down": daily.lw_wm2,
                "precip": daily.precip_mm / 86400.0,
            }
            ends = daily.days + pd.Timedelta(days=1) - pd.Timedelta(hours=m.utc_offset_hours)
            out[name] = _site_with_forcing(site, make_forcing(ends, 86400.0, values), 86400.0)
        else:
            opt = Disaggregation(**cfg)
            t, values, attrs = disaggregate(daily, m.latitude, m.longitude, m.utc_offset_hours, opt)
            out[name] = _site_with_forcing(site, make_forcing(t, float(opt.step_s), values, attrs=attrs), opt.step_s)
    return out


def temperature_methods() -> dict:
    """Hourly air-temperature RMSE [K] against the measured hourly means over 1998 for dam's three temperature
    methods (day_night needs what FLUXNET DD gives; min_max gets the measured daily extremes) and, where the
    optional GPL package is installed, MELODIST ``sine_min_max`` with the measured extremes."""
    from dam.disaggregate import Disaggregation, daily_means_from_subdaily, disaggregate
    from dam.sites import load_site

    site = load_site("bondville_1998_hrldas")
    m, f = site.meta, site.forcing
    names = ("T_air", "q_air", "p_sfc", "wind", "sw_down", "lw_down", "precip")
    t = pd.DatetimeIndex(f["time"].values)
    daily = daily_means_from_subdaily(t, {k: f[k].values for k in names}, m.latitude, m.longitude, m.utc_offset_hours)
    out = {}
    for label, opt in {
        "dam_day_night": Disaggregation(),
        "dam_min_max_measured_extremes": Disaggregation(temperature="min_max"),
        "dam_mean_range_9K": Disaggregation(temperature="mean_range", temperature_range_K=9.0),
    }.items():
        times, v, _ = disaggregate(daily, m.latitude, m.longitude, m.utc_offset_hours, opt)
        truth = f["T_air"].sel(time=slice(times[0] - pd.Timedelta(minutes=30), times[-1])).values
        truth = truth.reshape(-1, 2).mean(axis=1)
        out[label] = _rmse(v["T_air"], truth)
    try:
        import melodist  # optional, GPL-3.0: only measured here, never imported by dam
    except ImportError:
        return out
    daily_frame = pd.DataFrame({"tmin": daily.t_min_k, "tmax": daily.t_max_k, "temp": daily.t_mean_k}, index=daily.days)
    station = melodist.Station(
        lon=m.longitude, lat=m.latitude, timezone=int(m.utc_offset_hours), data_daily=daily_frame
    )
    station.disaggregate_temperature(method="sine_min_max", min_max_time="sun_loc")
    hourly = station.data_disagg["temp"].to_numpy()[: len(truth)]  # value at each local hour 00..23
    out["melodist_sine_min_max_measured_extremes"] = _rmse(hourly[:-1], truth[: len(hourly) - 1])
    out["melodist_version"] = getattr(melodist, "__version__", "?")
    return out


def run(site):
    """Station run without spin-up from the site's initial state; returns the CF output Dataset."""
    from dam.site_run import output_dataset, run_blocks, setup_station

    setup = setup_station(site)
    states, fluxes = run_blocks(setup, progress=False)
    return output_dataset(setup, states, fluxes)


def _water_balance(ds) -> dict:
    """Totals over the run [mm]: precipitation, evapotranspiration, transpiration, surface and subsurface runoff."""
    dt = float(ds.attrs["time_step_s"])
    flux = {k: float(ds[k].sum()) * dt for k in ("precipitation", "evapotranspiration", "transpiration")}
    return flux | {k: float(ds[k].sum()) for k in ("surface_runoff", "subsurface_runoff")}


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean((np.asarray(a) - np.asarray(b)) ** 2)))


def _daily(ds, utc_offset: float):
    local = ds.assign_coords(time=ds["time"].values - pd.Timedelta(seconds=1) + pd.Timedelta(hours=utc_offset))
    return local.resample(time="1D").mean()


def compare(truth, other, utc_offset: float) -> dict:
    """RMSE of ``other`` against ``truth`` per layer (state at ``other``'s stamps) and for fluxes (step values on
    ``other``'s steps, the truth averaged over them; and daily means)."""
    res: dict[str, object] = {}
    t_other = pd.DatetimeIndex(other["time"].values)
    at = truth.sel(time=t_other)
    for v in LAYERED:
        res[v] = [_rmse(other[v][:, k], at[v][:, k]) for k in range(other.sizes["layer"])]
    step = (t_other[1] - t_other[0]).total_seconds()
    ends = pd.DatetimeIndex(truth["time"].values)
    bins = np.searchsorted(t_other.values, ends.values, side="left")  # the other run's step holding each truth step
    dt, dd = _daily(truth, utc_offset), _daily(other, utc_offset)
    for v in FLUXES:
        mean = pd.Series(truth[v].values).groupby(bins).mean()
        mean = mean[mean.index < len(t_other)]
        res[v] = _rmse(other[v].values[mean.index.to_numpy()], mean.to_numpy())
        res[v + "_daily"] = _rmse(dd[v].values, dt[v].sel(time=dd["time"]).values)
    res["step_s"] = step
    return res


def validate(days: int | None = None, configs: dict | None = None, start_day: int = 0) -> dict:
    """Run every configuration and compare it with the truth; returns the results mapping."""
    sites = forcings(days, configs, start_day)
    t0 = time.perf_counter()
    outputs, failed = {}, {}
    for name, s in sites.items():
        try:
            outputs[name] = run(s)
        except Exception as exc:  # the daily-step model may blow up: a result, not a crash of the benchmark
            if name == "truth_1800s":
                raise
            failed[name] = {"failed": str(exc).splitlines()[0][:300], "within_targets": False}
    truth = outputs["truth_1800s"]
    offset = sites["truth_1800s"].meta.utc_offset_hours
    results = {name: compare(truth, ds, offset) for name, ds in outputs.items() if name != "truth_1800s"}
    for r in results.values():
        r["within_targets"] = bool(all(max(r[k]) <= lim for k, lim in TARGETS.items()))
    results |= failed
    forcing_err = {}
    for name, s in sites.items():
        if name == "truth_1800s" or s.meta.time_step_s >= 86400:
            continue
        fr = sites["truth_1800s"].forcing
        ds = s.forcing
        if s.meta.time_step_s != 1800:
            fr = fr.coarsen(time=int(s.meta.time_step_s // 1800), boundary="trim").mean()
            fr = fr.assign_coords(time=ds["time"].values[: fr.sizes["time"]])
        forcing_err[name] = {
            k: _rmse(ds[k].values[: fr.sizes["time"]], fr[k].values)
            for k in ("T_air", "q_air", "sw_down", "lw_down", "precip")
        }
    days_run = int(round(truth.sizes["time"] * 1800 / 86400))
    water = {name: _water_balance(ds) for name, ds in outputs.items()}
    return {
        "site": "bondville_1998_hrldas",
        "water_balance_mm": water,
        "days": days_run,
        "period_local": [str(sites["truth_1800s"].forcing["time"].values[0]), str(truth["time"].values[-1])],
        "targets": TARGETS,
        "runs": results,
        "forcing_rmse_vs_truth": forcing_err,
        "disaggregation": {
            n: s.forcing.attrs.get("disaggregation", "") for n, s in sites.items() if "disaggregated" in n
        },
        "run_seconds": time.perf_counter() - t0,
        "_outputs": outputs,
    }


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outs = result["_outputs"]
    truth = outs["truth_1800s"]
    dis = outs["disaggregated_3600s"]
    fig, axes = plt.subplots(5, 1, figsize=(11, 12))
    week = slice("1998-07-10", "1998-07-17")
    panels = (("sensible_heat_flux", "H [W m-2]"), ("latent_heat_flux", "LE [W m-2]"))
    for ax, (v, label) in zip(axes[:2], panels, strict=True):
        ax.plot(truth["time"].sel(time=week), truth[v].sel(time=week), "k", lw=0.8, label="original 30 min forcing")
        ax.plot(dis["time"].sel(time=week), dis[v].sel(time=week), "C0", lw=0.8, label="disaggregated daily, 1 h")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8, loc="upper right")
    for ax, (v, unit) in zip(axes[2:4], (("soil_liquid_water", "m3 m-3"), ("soil_temperature", "K")), strict=True):
        for k in range(truth.sizes["layer"]):
            ax.plot(truth["time"], truth[v][:, k], "k", lw=0.6)
            ax.plot(dis["time"], dis[v][:, k], f"C{k}", lw=0.6, label=f"layer {k + 1}")
        ax.set_ylabel(f"{v} [{unit}]")
    axes[2].legend(fontsize=8, ncol=4, loc="lower left")
    names = [n for n, r in result["runs"].items() if "failed" not in r]
    x = np.arange(4)
    for i, n in enumerate(names):
        axes[4].bar(x + i * 0.2 - 0.3, result["runs"][n]["soil_liquid_water"], 0.2, label=n)
    axes[4].axhline(TARGETS["soil_moisture"], color="r", lw=0.8)
    axes[4].set_xticks(x, [f"layer {k + 1}" for k in x])
    axes[4].set_ylabel("RMSE liquid SM vs truth")
    axes[4].legend(fontsize=7)
    fig.suptitle("Bondville 1998: station physics on disaggregated daily forcing vs the original half-hourly forcing")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=None, help="first N local days only (default: the year)")
    parser.add_argument("--output", type=Path, default=RESULTS / "disaggregation_bondville.json")
    parser.add_argument("--no-figure", action="store_true")
    args = parser.parse_args(argv)
    from dam.precision import enable_x64, fortran_exact_cpu

    fortran_exact_cpu()
    enable_x64()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine_info

    temperature = temperature_methods()
    print("hourly T RMSE [K] by method:", json.dumps(temperature))
    result = validate(args.days)
    result["temperature_rmse_K_by_method"] = temperature
    outputs = result.pop("_outputs")
    result["machine"] = machine_info()
    write_text(args.output, json.dumps(result, indent=1))
    if not args.no_figure:
        figure({**result, "_outputs": outputs}, args.output.with_suffix(".png"))
    hdr = f"{'run':32s} " + " ".join(f"{v[:9]}{k + 1:>2}" for v in ("SM", "SMliq", "ST") for k in range(4))
    print(hdr + "   H      LE     G   (daily H/LE/G)")
    for name, r in result["runs"].items():
        if "failed" in r:
            print(f"{name:32s} FAILED: {r['failed']}")
            continue
        cells = [f"{x:11.4f}" for v in LAYERED for x in r[v]]
        fl = " ".join(f"{r[v]:6.1f}" for v in FLUXES) + "  (" + " ".join(f"{r[v + '_daily']:.1f}" for v in FLUXES)
        print(f"{name:32s} " + " ".join(cells) + f" {fl})" + ("" if r["within_targets"] else "  MISSES TARGET"))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
