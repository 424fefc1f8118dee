"""Can the physics' level at a site never seen be told from the site's attributes? (issue 14, leave-sites-out)

At a site a model never saw, its RMSE splits exactly into the level error (bias) and the rest:
``RMSE^2 = bias^2 + ubRMSE^2``. This script reads a finished multi-site run folder (``metrics.csv``: each reliable
sensor's bias and ubRMSE on the test days) and the run's site folders, and measures two ceilings:

* **Level from attributes.** Leaving one site out at a time, a linear regression (ridge 1 on standardised
  attributes, intercept free) of ``physics_default``'s per-site mean bias on k of the attributes below (every
  subset of 1 to 3) predicts the left-out site's bias; the physics run shifted by it has, per sensor, the RMSE
  ``sqrt(ubRMSE^2 + (bias - predicted)^2)``. Reported: the sites where that is below the physics' own RMSE, for the
  mean shift (k = 0), every attribute together and the best subset (chosen with hindsight, so optimistic).
* **Timing with the physics' level.** A model that keeps the physics' level and brings its own day-to-day
  variation (its ubRMSE) beats the physics' RMSE at a sensor exactly where its ubRMSE is lower: counted per site
  (mean over its sensors) for every model of the run.
* **Both.** Each model's timing (its ubRMSE) on the physics' level corrected by the best attribute subset above.

Attributes per site: absolute latitude, elevation, the top soil class's SMCMAX and BEXP (Noah-MP table), and the
record's means of precipitation (mm d-1), air temperature, shortwave and specific humidity, and their ratio
shortwave / precipitation (a dryness index).

    python benchmarks/sensor_level.py RUN_FOLDER [--root DIR] [--output benchmarks/results/sensor_level.json]

``--root`` is the folder the run was started from (its site paths are relative to it; default: the current one).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dam.io_safety import write_text

HERE = Path(__file__).resolve().parent
ATTRIBUTES = ("abs_latitude", "elevation_m", "smcmax", "bexp", "precip_mm_d", "t_air_k", "sw_down_wm2", "q_air",
              "sw_over_precip")  # fmt: skip
BASELINE = "physics_default"


def site_attributes(path: str) -> dict[str, float]:
    """The :data:`ATTRIBUTES` of one site folder (or shipped site name), from its files alone (the networks' own
    attributes, :func:`dam.multisite_inputs.site_attributes`, need the prepared site of an experiment)."""
    from dam.sites import load_site
    from dam.soil_table import stas_parameters

    site = load_site(path)
    m, f = site.meta, site.forcing
    stas = m.soil_type_stas[0] if isinstance(m.soil_type_stas, tuple) else m.soil_type_stas
    table = stas_parameters(stas) if stas is not None else {"smcmax": np.nan, "bexp": np.nan}
    precip = float(f["precip"].mean()) * 86400.0
    sw = float(f["sw_down"].mean())
    values = (abs(m.latitude), m.elevation_m, table["smcmax"], table["bexp"], precip, float(f["T_air"].mean()), sw,
              float(f["q_air"].mean()), sw / max(precip, 0.1))  # fmt: skip
    return dict(zip(ATTRIBUTES, map(float, values), strict=True))


def loo_predictions(bias: np.ndarray, x: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Each site's bias predicted by a ridge regression on the other sites (x: (sites, k), k may be 0)."""
    pred = np.empty_like(bias)
    for i in range(len(bias)):
        train = np.arange(len(bias)) != i
        xt = x[train]
        mu, sd = xt.mean(0), xt.std(0) + 1e-12
        design = np.c_[np.ones(train.sum()), (xt - mu) / sd]
        penalty = ridge * np.eye(design.shape[1])
        penalty[0, 0] = 0.0  # the intercept (the mean shift) is not shrunk
        w = np.linalg.solve(design.T @ design + penalty, design.T @ bias[train])
        pred[i] = np.r_[1.0, (x[i] - mu) / sd] @ w
    return pred


def shifted_rmse(sensors: pd.DataFrame, shift: pd.Series, ubrmse: pd.Series | None = None) -> pd.Series:
    """Per-site mean over sensors of the RMSE after subtracting the site's ``shift`` from the simulation's bias
    (with ``ubrmse``, per row of ``sensors``, in place of the sensors' own: another model's timing)."""
    b = sensors["bias"] - sensors["site"].map(shift)
    ub = sensors["ubrmse"] if ubrmse is None else ubrmse
    return np.sqrt(ub**2 + b**2).groupby(sensors["site"]).mean()


def analyse(run: Path, root: Path) -> dict:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    metrics = pd.read_csv(run / "metrics.csv")
    metrics = metrics[metrics["reliable"] & metrics["rmse"].notna()]
    phys = metrics[metrics["model"] == BASELINE]
    names = sorted(phys["site"].unique())
    folders = {Path(s).name: (str(root / s) if (root / s).exists() else s) for s in cfg["sites"]}
    attrs = pd.DataFrame({n: site_attributes(folders[n]) for n in names}).T
    bias = phys.groupby("site")["bias"].mean().loc[names].to_numpy()
    # the physics' own RMSE by the same formula as every shifted one: an unchanged model compares equal, not lower
    no_shift = pd.Series(0.0, index=names)
    rmse = shifted_rmse(phys, no_shift).loc[names]

    def shift(cols) -> pd.Series:
        x = attrs.loc[names, list(cols)].to_numpy() if cols else np.zeros((len(names), 0))
        return pd.Series(loo_predictions(bias, x), index=names)

    def counted(new: pd.Series, **extra) -> dict:
        new = new.loc[names]
        return {**extra, "sites_lower": int((new < rmse).sum()), "sites": len(names),
                "median_rmse": float(new.median()), "per_site_rmse": new.round(5).to_dict()}  # fmt: skip

    def level_row(cols: tuple[str, ...]) -> dict:
        return counted(shifted_rmse(phys, shift(cols)), attributes=list(cols))

    subsets = [c for k in (1, 2, 3) for c in itertools.combinations(ATTRIBUTES, k)]
    best = max((level_row(c) for c in subsets), key=lambda r: (r["sites_lower"], -r["median_rmse"]))
    by_sensor = metrics.set_index(["model", "site", "depth_m"])["ubrmse"]
    sensors = pd.MultiIndex.from_frame(phys[["site", "depth_m"]])

    def with_timing(model: str, level: pd.Series) -> int:  # the model's ubRMSE at each of the physics' sensors
        return counted(shifted_rmse(phys, level, by_sensor.loc[model].reindex(sensors).to_numpy()))["sites_lower"]

    models = [m for m in metrics["model"].unique() if m != BASELINE]
    best_level = shift(tuple(best["attributes"]))  # one leave-one-out fit, shared by every model
    timing = {m: with_timing(m, no_shift) for m in models}
    both = {m: with_timing(m, best_level) for m in models}
    return {
        "run": str(run),
        "sites": names,
        "physics": {"median_rmse": float(rmse.median()), "bias": dict(zip(names, bias.round(5).tolist(), strict=True))},
        "attributes": attrs.round(5).to_dict(orient="index"),
        "level_mean_shift": level_row(()),
        "level_all_attributes": level_row(ATTRIBUTES),
        "level_best_subset": best,
        "subsets_tried": len(subsets),
        "timing_with_physics_level": timing,
        "timing_with_best_level": both,
    }


def report(r: dict) -> str:
    n = len(r["sites"])
    lines = [f"Physics ({BASELINE}) median RMSE {r['physics']['median_rmse']:.4f} m3 m-3 over {n} sites.", "",
             "| level error predicted from | sites with lower RMSE | median RMSE (m3 m-3) |",
             "|---|---:|---:|"]  # fmt: skip
    for key, label in (("level_mean_shift", "the other sites' mean (k = 0)"),
                       ("level_all_attributes", "all attributes"),
                       ("level_best_subset", "best subset of 1-3 (hindsight)")):  # fmt: skip
        row = r[key]
        cols = f" ({', '.join(row['attributes'])})" if key == "level_best_subset" else ""
        lines.append(f"| {label}{cols} | {row['sites_lower']} of {n} | {row['median_rmse']:.4f} |")
    lines += ["", "| model's timing | sites with lower RMSE, on the physics' level | on the level "
              "of the best subset |", "|---|---:|---:|"]  # fmt: skip
    both = r["timing_with_best_level"]
    lines += [
        f"| {m} | {k} of {n} | {both[m]} of {n} |"
        for m, k in sorted(r["timing_with_physics_level"].items(), key=lambda t: (-t[1], -both[t[0]]))
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished leave-sites-out run folder (dam experiment)")
    ap.add_argument("--root", type=Path, default=Path.cwd(), help="the folder the run was started from")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "sensor_level.json")
    args = ap.parse_args(argv)
    result = analyse(args.run, args.root)
    write_text(args.output, json.dumps(result, indent=1) + "\n")
    print(report(result))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
