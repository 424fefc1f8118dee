"""The multi-site run's summaries: skill pooled over sites and the Markdown report (``multisite.md``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import metrics as M
from .experiment_config import MODELS, MULTISITE_MODELS, ExperimentConfig
from .experiment_data import SiteData
from .multisite import LAYERS, layer_weights
from .predictions import Prediction
from .scoring import summary, with_units

POOLED = ("r", "rmse", "ubrmse", "kge")


def pooled_metrics(sites: dict[str, SiteData], preds: dict[str, dict[str, Prediction]]) -> pd.DataFrame:
    """Skill over the test days of all sites pooled (reliable sensors), per model: over all sensors and per
    standard layer of the sensor (where its weight is largest)."""
    rows = []
    models = list(dict.fromkeys(m for p in preds.values() for m in p))
    for model in models:
        sims: dict[str, list] = {}
        obs: dict[str, list] = {}
        for n, data in sites.items():
            if model not in preds[n]:
                continue
            layer = np.argmax(layer_weights(data), axis=1)
            for s in np.flatnonzero(data.reliable):
                top = 0.0 if layer[s] == 0 else LAYERS[layer[s] - 1]
                for group in ("all", f"{top:g}-{LAYERS[layer[s]]:g} m"):
                    sims.setdefault(group, []).append(preds[n][model].daily[data.test, s])
                    obs.setdefault(group, []).append(data.observed[data.test, s])
        for group in sorted(sims, key=lambda g: -1.0 if g == "all" else float(g.split("-")[0])):
            sim, ob = np.concatenate(sims[group]), np.concatenate(obs[group])
            # no test observation in a group: NaN beside n_days 0, not a warning
            m = M.all_metrics(jnp.asarray(sim), jnp.asarray(ob), warn=False)
            rows.append({"model": model, "sensors": group, "n_days": int(np.sum(np.isfinite(ob))),
                         **{k: float(m[k]) for k in POOLED}})  # fmt: skip
    return pd.DataFrame(rows)


def _against_single_site(cfg: ExperimentConfig, summ: pd.DataFrame) -> list[str]:
    """Under the chronological split: at how many sites each multi-site network's mean r is at least each
    single-site network's (the sites where both were scored)."""
    singles = [m for m in cfg.models if m in MODELS and not m.startswith("physics_")]
    multis = [m for m in cfg.models if m in MULTISITE_MODELS]
    if cfg.split != "chronological" or not singles or not multis:
        return []
    r = summ.pivot(index="site", columns="model", values="r")
    rows = []
    for m in multis:
        both = {s: r[m].notna() & r[s].notna() for s in singles}
        rows.append(
            {
                "multi-site network": m,
                **{f"r >= {s}": f"{int((r[m] >= r[s])[both[s]].sum())} of {int(both[s].sum())} sites" for s in singles},
            }
        )
    return ["Multi-site against single-site networks (per site: mean r over reliable sensors, test days):", "",
            pd.DataFrame(rows).to_markdown(index=False), ""]  # fmt: skip


def report(
    cfg: ExperimentConfig,
    table: pd.DataFrame,
    pooled: pd.DataFrame,
    folds: pd.DataFrame,
    seconds: float,
    failures: list[dict] = (),
    plausible: pd.DataFrame | None = None,
    peaks: dict[str, float | None] | None = None,
) -> str:
    """The Markdown report of a multi-site run: split, folds, per-site skill (mean over reliable sensors),
    medians, pooled skill, how often each model beats physics_default in RMSE (and, chronological, the single-site
    networks in r) and the networks' physical plausibility (``plausible``, :func:`dam.scoring.plausibility` rows);
    ``peaks``: the process's peak memory (GiB) after reading the sites and after each model's stage."""
    summ = summary(table)
    per_site = summ.pivot(index="site", columns="model", values=["r", "rmse"])
    per_site.columns = [f"{metric} {model}" for metric, model in per_site.columns]
    med = summ.groupby("model", sort=False)[["r", "rmse", "ubrmse", "kge"]].median().reset_index()
    how = (f" ({cfg.folds} folds over sites; every site tested once, on its test days, by networks that never saw "
           "it)" if cfg.split == "leave_sites_out" else " (every site's last days test)")  # fmt: skip
    lines = [f"# Multi-site experiment `{cfg.name}`", "",
             f"Split: **{cfg.split}**{how}; {len(folds)} sites; {seconds:.0f} s.", ""]  # fmt: skip
    if peaks and None not in peaks.values():
        lines += ["Peak memory of this process (resident, GiB) after reading the sites and after each stage: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()) + ".", ""]  # fmt: skip
    if cfg.split == "leave_sites_out":
        lines += [
            "Folds:",
            "",
            folds.groupby("fold")["site"].apply(", ".join).reset_index().to_markdown(index=False),
            "",
        ]
    if failures:
        lines += ["Stages that failed at a site (a physics guard, no observations to fit; scored as missing, retried "
                  "when the run is resumed):", "",
                  pd.DataFrame(list(failures)).to_markdown(index=False), ""]  # fmt: skip
    lines += ["Median over sites (per site: mean over reliable sensors):", "",
              with_units(med).to_markdown(index=False, floatfmt=".3f"), ""]  # fmt: skip
    if "physics_default" in summ["model"].values:
        ref = summ[summ["model"] == "physics_default"].set_index("site")["rmse"]
        beat = []
        for model, g in summ.groupby("model", sort=False):
            if model != "physics_default":
                diff = g.set_index("site")["rmse"] - ref.reindex(g["site"]).values
                beat.append({"model": model, "sites with lower RMSE than physics_default": int((diff < 0).sum()),
                             "sites": int(diff.notna().sum())})  # fmt: skip
        if beat:
            lines += ["RMSE against physics_default:", "", pd.DataFrame(beat).to_markdown(index=False), ""]
    lines += _against_single_site(cfg, summ)
    if plausible is not None:
        total = plausible.groupby("model", sort=False)[["bound_violations", "water_created_mm"]].sum().reset_index()
        lines += ["Physical plausibility of the networks on the test days, summed over sites (sensor-days outside the "
                  "bounds; water gained by the top sensor's layer beyond the day's precipitation, mm):", "",
                  total.to_markdown(index=False, floatfmt=".1f"), ""]  # fmt: skip
    lines += ["Pooled over all sites' test days (reliable sensors; by the standard layer of the sensor):", "",
              with_units(pooled).to_markdown(index=False, floatfmt=".3f"), "",
              "Per site, r and RMSE (m3 m-3), mean over reliable sensors:", "",
              per_site.round(3).to_markdown(), "",
              "![per-site skill, sorted](figures/skill_by_site.png)", ""]  # fmt: skip
    return "\n".join(lines)
