"""Figures of the experiment: time series (whole record and a test-period zoom), scatter grids and metric bars.

Conventions of every figure: the site's name and title in the figure title, units on every axis, a line
broken (not joined) across missing days, and the series a site flags as unreliable marked as such.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .io_safety import save_figure
from .run_folder import inside

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .experiment_data import SiteData

SM_UNITS = "m³ m⁻³"
METRIC_LABELS = {"r": "Pearson r (-)", "bias": f"bias ({SM_UNITS})", "rmse": f"RMSE ({SM_UNITS})",
                 "ubrmse": f"ubRMSE ({SM_UNITS})", "nse": "NSE (-)", "kge": "KGE (-)"}  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Write a figure (the one place figures are written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)  # atomic: a killed run leaves no half figure
    _pyplot().close(fig)


def break_gaps(times: pd.DatetimeIndex, values: np.ndarray) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Insert a NaN row wherever the time step exceeds 1.5 times the usual one, so a line plot breaks there
    instead of joining the two sides of a gap (NaN values break the line already)."""
    if len(times) < 3:
        return times, values
    step = np.diff(times.values)
    usual = np.median(step)
    gaps = np.flatnonzero(step > 1.5 * usual)
    if not len(gaps):
        return times, values
    new_times = times.append(pd.DatetimeIndex(times[gaps] + usual)).sort_values()  # a NaN just after each gap start
    out = pd.DataFrame(values, index=times).reindex(new_times)
    return new_times, out.to_numpy()


def _site_title(data: SiteData) -> str:
    title = data.site.meta.title
    return f"{data.name} ({title})" if title else data.name


def _sensor_label(data: SiteData, s: int) -> str:
    flag = "" if data.reliable[s] else ", flagged unreliable"
    return f"{data.sensor_depths_m[s]:g} m{flag}"


def _series(ax: Axes, days: pd.DatetimeIndex, values: np.ndarray, **kw) -> None:
    t, v = break_gaps(days, np.asarray(values, float))
    ax.plot(t, v, **kw)


def _timeseries(path: Path, data: SiteData, preds: dict, days: slice, title: str) -> None:
    plt = _pyplot()
    t = data.days[days]
    fig, axes = plt.subplots(data.n_sensors, 1, figsize=(12, 2.3 * data.n_sensors + 1.0), sharex=True, squeeze=False)
    for s, ax in enumerate(axes[:, 0]):
        for i, (model, pred) in enumerate(preds.items()):
            _series(ax, t, pred.daily[days, s], lw=0.9, color=f"C{i}", label=model)
        obs = data.observed[days, s]
        _series(ax, t, obs, color="k", lw=1.3, label="observed")
        ax.plot(t, obs, "k.", ms=1.5)  # isolated observed days between gaps stay visible
        if days.start is None or days.start < data.test.start:
            ax.axvspan(data.days[data.test.start], data.days[-1], color="0.92", zorder=0)
        if not data.reliable[s]:
            ax.set_facecolor("#fff4e6")
        ax.set_title(f"soil moisture at {_sensor_label(data, s)}", fontsize=9, loc="left")
        ax.set_ylabel(SM_UNITS)
    axes[0, 0].legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    _save(fig, path)


def plot_site(out_dir: Path, data: SiteData, preds: dict) -> None:
    """``<site>_timeseries.png`` (the whole record, test period shaded), ``<site>_test_period.png`` (the test
    period only) and ``<site>_scatter.png`` (observed against predicted on the test days, one panel per model)."""
    what = f"as the sensors see it: {data.describe_seen()}"
    test = f"{data.days[data.test.start]:%Y-%m-%d} to {data.days[-1]:%Y-%m-%d}"
    _timeseries(
        inside(out_dir, f"{data.name}_timeseries.png"), data, preds, slice(None),
        f"{_site_title(data)}\ndaily soil moisture ({what}); grey = test period {test}; "
        "orange panels = sensors flagged unreliable",
    )  # fmt: skip
    _timeseries(
        inside(out_dir, f"{data.name}_test_period.png"), data, preds, data.test,
        f"{_site_title(data)}\ntest period {test}: daily soil moisture ({what})",
    )  # fmt: skip
    plot_scatter(inside(out_dir, f"{data.name}_scatter.png"), data, preds)


def plot_scatter(path: Path, data: SiteData, preds: dict) -> None:
    """Observed against predicted daily soil moisture on the test days: a grid of panels, one per model, with a
    shared 1:1 line and limits; unreliable sensors as open markers; RMSE over reliable sensors in each title."""
    plt = _pyplot()
    n = len(preds)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols + 1.6, 3.0 * nrows + 0.6), squeeze=False)
    obs = data.observed[data.test]
    sims = {m: p.daily[data.test] for m, p in preds.items()}
    both = np.concatenate([obs.ravel(), *(v.ravel() for v in sims.values())])
    lo, hi = np.nanmin(both), np.nanmax(both)
    lim = (lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.set_visible(False)
            continue
        model, sim = list(sims.items())[k]
        for s in range(data.n_sensors):
            style = {"color": f"C{s}"} if data.reliable[s] else {"facecolors": "none", "edgecolors": f"C{s}"}
            ax.scatter(obs[:, s], sim[:, s], s=5, lw=0.6, label=_sensor_label(data, s), **style)
        ok = data.reliable & np.any(np.isfinite(obs), axis=0)
        err = (sim[:, ok] - obs[:, ok]).ravel()
        rmse = math.sqrt(np.nanmean(err**2)) if np.isfinite(err).any() else math.nan
        ax.plot(lim, lim, "k--", lw=0.7)
        ax.set(xlim=lim, ylim=lim, aspect="equal")
        ax.set_title(f"{model}\nRMSE {rmse:.3f} {SM_UNITS}", fontsize=8)
        if k % ncols == 0:
            ax.set_ylabel(f"predicted ({SM_UNITS})", fontsize=8)
        if k >= n - ncols:
            ax.set_xlabel(f"observed ({SM_UNITS})", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, title="sensor depth", fontsize=7, title_fontsize=7, loc="upper right", frameon=False)
    test = f"{data.days[data.test.start]:%Y-%m-%d} to {data.days[-1]:%Y-%m-%d}"
    fig.suptitle(f"{_site_title(data)}\ndaily soil moisture, test period {test}", fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (3.1 * ncols + 1.6), 1))
    _save(fig, path)


def plot_metric_bars(path: Path, summary: pd.DataFrame, order: tuple[str, ...]) -> None:
    """Test-period r and RMSE per model (rows of ``summary``: site, model, metrics), one bar per site."""
    plt = _pyplot()
    sites = list(dict.fromkeys(summary["site"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, metric in zip(axes, ("r", "rmse"), strict=True):
        piv = summary.pivot(index="model", columns="site", values=metric)
        piv = piv.reindex([m for m in order if m in piv.index])
        piv[sites].plot.bar(ax=ax, rot=30)
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.set_xlabel("")
        ax.set_title(f"test period, mean over reliable sensors: {METRIC_LABELS[metric]}", fontsize=9)
        ax.legend(title="site", fontsize=7, title_fontsize=7)
    fig.tight_layout()
    _save(fig, path)
