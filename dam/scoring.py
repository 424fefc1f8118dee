"""Scoring of the experiment: test-period metrics per sensor, their summary, physical plausibility, and the
tables (CSV and Markdown with units) of the run folder."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import io_safety
from . import metrics as M
from .coupling import constraints
from .experiment_data import SiteData
from .physics_in_ai import sensor_target
from .predictions import Prediction

DRY_FACTOR = 0.3  # precipitation factor of the dry test scenario of the physics-guided networks


def plausibility(data: SiteData, daily: np.ndarray, precip_mm: np.ndarray, ice_free: np.ndarray) -> dict:
    """Physical plausibility on the test days: bound violations (sensor-days outside the bounds of
    :func:`~dam.physics_in_ai.physics_constraint`) and water created in the top layer (mm, as there), from the
    daily moisture ``daily`` (D, S), precipitation ``precip_mm`` (D,) and ``ice_free`` (D,) days."""
    target = sensor_target(data, precip_mm, ice_free)
    t = data.test
    return constraints.plausibility(daily[t], target._replace(precip_mm=precip_mm[t], ice_free=ice_free[t]))


# ------------------------------------------------------------------------------------------ scoring
def score(data: SiteData, preds: dict[str, Prediction]) -> pd.DataFrame:
    rows = []
    obs = data.observed[data.test]
    for model, pred in preds.items():
        sim = pred.daily[data.test]
        for s in range(data.n_sensors):
            # an undefined metric is NaN with its reason in "note", not a warning
            m = M.all_metrics(jnp.asarray(sim[:, s]), jnp.asarray(obs[:, s]), warn=False)
            rows.append(
                {
                    "site": data.name,
                    "model": model,
                    "depth_m": float(data.sensor_depths_m[s]),
                    "reliable": bool(data.reliable[s]),
                    **{k: float(v) for k, v in m.items()},
                    "note": M.why_undefined(sim[:, s], obs[:, s]),
                }
            )
    return pd.DataFrame(rows)


#: Column headings with units, for tables people read (the CSV files keep the plain names).
UNITS = {"depth_m": "depth (m)", "r": "r (-)", "bias": "bias (m3 m-3)", "rmse": "RMSE (m3 m-3)",
         "ubrmse": "ubRMSE (m3 m-3)", "nse": "NSE (-)", "kge": "KGE (-)", "seconds": "time (s)",
         "bound_violations": "bound violations (sensor-days)", "water_created_mm": "water created (mm)",
         "factor": "weight factor (-)", "bounds": "bounds weight ((m3 m-3)-2)", "water": "water weight (mm-2)",
         "dry_bound_violations": "dry: bound violations (sensor-days)",
         "dry_water_created_mm": "dry: water created (mm)"}  # fmt: skip


def with_units(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the headings of :data:`UNITS`."""
    return table.rename(columns=UNITS)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over the reliable sensors of each site and model."""
    rel = table[table["reliable"]]
    return (
        rel.groupby(["site", "model"], sort=False)[["r", "bias", "rmse", "ubrmse", "nse", "kge"]].mean().reset_index()
    )


def write_tables(
    run_dir: Path, table: pd.DataFrame, plausible: pd.DataFrame | None = None, sweep: pd.DataFrame | None = None
) -> None:
    io_safety.write_csv(table, run_dir / "metrics.csv")
    summ = summary(table)
    io_safety.write_csv(summ, run_dir / "summary.csv")
    md = [
        "# Test-period metrics",
        "",
        "Per sensor:",
        "",
        with_units(table).to_markdown(index=False, floatfmt=".3f"),
        "",
        "Mean over reliable sensors:",
        "",
        with_units(summ).to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    extras = (
        (plausible, "plausibility.csv", "Physical plausibility of the networks on the test days (sensor-days outside "
         "the bounds; water gained by the top layer beyond the day's precipitation, mm)"),
        (sweep, "constraint_sweep.csv", "Constraint-weight study of `hlstm_constrained` (both weights times "
         "`factor`; 0 = no constraint terms): mean r and RMSE over reliable sensors, plausibility on the test days"),
    )  # fmt: skip
    for frame, name, caption in extras:
        if frame is not None and len(frame):
            io_safety.write_csv(frame, run_dir / name)
            md += [f"{caption}, as observed and with precipitation x {DRY_FACTOR:g}:", "",
                   with_units(frame).to_markdown(index=False, floatfmt=".3g"), ""]  # fmt: skip
    io_safety.write_text(run_dir / "metrics.md", "\n".join(md))
