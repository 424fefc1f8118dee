"""Issue 17: can the synthetic-truth problems of ``benchmarks/calibration.py`` be recovered at all?

For each site and seed, the calibration benchmark's synthetic truth (its parameters drawn per seed, every layer
observed at its centre over the training window) is examined with :func:`dam.identifiability.identifiability`:
for each calibrated value, the RMSE of the readings when it alone is off by 5 %, and the least RMSE when every
other value is refitted to hide that error (the linearised profile). A value whose profile RMSE lies below the
training RMSE that an optimiser reaches cannot be recovered to 5 % by that optimiser, and one whose profile RMSE is
0 by none: the observations do not depend on it.

    python benchmarks/identifiability.py --sites hyytiala_2000_2010 bondville_1998 --params 16 --seeds 5
    python benchmarks/identifiability.py --seeds 1 --lbfgs-steps 60 \
        --output benchmarks/results/identifiability_16_lbfgs.json

``--lbfgs-steps`` also calibrates each truth (L-BFGS from the table values, as the calibration benchmark does) and
records the training RMSE it reaches and each value's relative error: the check that the values it misses are those
whose profile RMSE lies below that fit.

Writes ``benchmarks/results/identifiability_<params>.json`` (every value of every seed) and ``.png`` (profile and
alone RMSE per value, one panel per site).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import machine_info

HERE = Path(__file__).resolve().parent


def site_rows(site: str, n_params: int, seeds, relative_error: float, lbfgs_steps: int = 0, log=print) -> list[dict]:
    """One row per calibrated value and seed of a site's synthetic problems (values at the truth). With
    ``lbfgs_steps``, each seed's problem is also calibrated as the calibration benchmark's gradient does it (L-BFGS
    from the table values): its lowest training RMSE (``fit_rmse``) and each value's relative error
    (``fit_relative_error``)."""
    from calibration import _setup, _synthetic, run_gradient

    from dam.coupling.calibration import apply_parameters
    from dam.identifiability import identifiability

    setup, specs, train_end = _setup(site, n_params)
    rows = []
    for seed in seeds:
        obs, truth = _synthetic(setup, specs, seed)
        t = time.perf_counter()
        table = identifiability(setup, specs, apply_parameters(setup.params, specs, truth), obs, end=train_end,
                                relative_error=relative_error)  # fmt: skip
        log(f"{site} {n_params} parameters, seed {seed}: {time.perf_counter() - t:.1f} s")
        fit = [{}] * len(table)
        if lbfgs_steps:
            trace, values, evaluations = run_gradient(setup, obs, specs, train_end, lbfgs_steps, 0.1, optimizer="lbfgs")
            errors = np.concatenate([np.ravel(values[s.name] / truth[s.name] - 1.0) for s in specs])
            fit = [{"fit_rmse": min(trace.losses), "fit_evaluations": evaluations, "fit_seconds": trace.seconds[-1],
                    "fit_relative_error": e} for e in errors]  # fmt: skip
            log(f"  L-BFGS: training RMSE {min(trace.losses):.2e}, {evaluations} evaluations")
        base = {"site": Path(site).name, "n_params": n_params, "seed": seed, "relative_error": relative_error,
                "n": table.attrs["n"]}  # fmt: skip
        rows += [{**base, "parameter": name, **row, **f} for (name, row), f in zip(table.iterrows(), fit, strict=True)]
    return rows


def summary(rows: list[dict], thresholds=(1e-4, 1e-3)) -> dict:
    """Per site: the median over seeds of each value's profile RMSE, and how many values (per seed, median) have a
    profile RMSE below each threshold (m3 m-3): those that a fit to within it cannot pin down to the error."""
    import pandas as pd

    df = pd.DataFrame(rows)
    out = {}
    for site, g in df.groupby("site"):
        med = g.groupby("parameter", sort=False)["rmse_profile"].median()
        below = {f"{t:g}": float(g.groupby("seed")["rmse_profile"].apply(lambda s, t=t: (s < t).sum()).median())
                 for t in thresholds}  # fmt: skip
        out[site] = {"median_profile_rmse": med.to_dict(), "values_below": below, "values": int(med.size)}
        if "fit_rmse" in g:  # did the values L-BFGS missed hide below the fit it reached?
            missed = g[np.abs(g.fit_relative_error) > g.relative_error]
            out[site]["lbfgs"] = {"fit_rmse": g.groupby("seed")["fit_rmse"].first().to_dict(),
                                  "values_missed": int(len(missed)),
                                  "missed_with_profile_below_fit": int((missed.rmse_profile < missed.fit_rmse).sum()),
                                  "largest_error": float(np.abs(g.fit_relative_error).max())}  # fmt: skip
    return out


def plot(rows: list[dict], path: Path, relative_error: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from dam.io_safety import save_figure

    df = pd.DataFrame(rows)
    sites = list(dict.fromkeys(df.site))
    fig, axes = plt.subplots(len(sites), 1, figsize=(11, 3.6 * len(sites)), squeeze=False)
    floor = 1e-9  # a value the readings do not depend on (profile 0) is drawn here
    for ax, site in zip(axes[:, 0], sites, strict=True):
        g = df[df.site == site]
        names = list(dict.fromkeys(g.parameter))
        x = {n: i for i, n in enumerate(names)}
        for col, marker, label in (("rmse_alone", "o", "alone"), ("rmse_profile", "x", "others refitted")):
            ax.scatter([x[n] for n in g.parameter], np.maximum(g[col], floor), marker=marker, label=label,
                       facecolors="none" if marker == "o" else None, edgecolors="C0" if marker == "o" else None,
                       color=None if marker == "o" else "C3")  # fmt: skip
        if "fit_rmse" in g:  # the fit L-BFGS reached, and the values it missed by more than the examined error
            for seed, fit in g.groupby("seed")["fit_rmse"].first().items():
                ax.axhline(fit, color="0.4", ls="--", lw=1, label=f"L-BFGS fit, seed {seed}")
            missed = g[np.abs(g.fit_relative_error) > g.relative_error]
            label = f"missed by L-BFGS (> {relative_error:.0%})"
            ax.scatter([x[n] for n in missed.parameter], np.maximum(missed.rmse_profile, floor), s=120,
                       facecolors="none", edgecolors="k", label=label)  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
        truths = g.seed.nunique()
        title = f"{site}: a {relative_error:.0%} error in one value, at {truths} synthetic truth{'s' * (truths > 1)}"
        ax.set(yscale="log", ylabel="RMSE of the readings (m3 m-3; 0 at 1e-9)", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", nargs="+", default=["hyytiala_2000_2010", "bondville_1998"])
    ap.add_argument("--params", type=int, default=16, choices=[4, 16, 64])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--relative-error", type=float, default=0.05)
    ap.add_argument("--lbfgs-steps", type=int, default=0, help="also calibrate each seed's truth (L-BFGS steps)")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()

    from dam.io_safety import write_text
    from dam.precision import enable_x64

    enable_x64()
    out = args.output or HERE / "results" / f"identifiability_{args.params}.json"
    t0 = time.perf_counter()
    log = lambda m: print(m, flush=True)  # noqa: E731
    seeds = range(args.seeds)
    rows = [r for s in args.sites for r in site_rows(s, args.params, seeds, args.relative_error, args.lbfgs_steps, log)]
    result = {"machine": machine_info(), "settings": {k: str(v) for k, v in vars(args).items()},
              "seconds": time.perf_counter() - t0, "summary": summary(rows), "rows": rows}  # fmt: skip
    write_text(out, json.dumps(result, indent=1, default=float))
    plot(rows, out.with_suffix(".png"), args.relative_error)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
