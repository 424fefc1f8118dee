"""Gradients of a cold year: the default derivative of every soil parameter against central finite differences.

Case: ``bondville_cold`` (Fortran Noah-MP v5.2's Bondville 1998 with the air 8 K colder: up to three snow layers
on 4,352 steps, frozen soil to layer 2; shipped in ``tests/data``). The station model runs the full year
(17,472 steps of 1800 s, float64, Fortran-exact CPU settings) from the reference's initial state.

Losses: the mean over days and the four layers of ``((T - T*) / 1 K)^2 + ((theta - theta*) / 0.02)^2`` for
daily means of soil temperature ``T`` and soil moisture ``theta``, either liquid water (what dielectric probes
read, the sensors' water in docs/site_format.md) or total water. The truth ``*`` is a synthetic run with every
soil parameter field scaled by a known factor (``TRUTH``: 5-20 % off, in both directions; ``tbot`` 0.3 %, 0.9 K),
so that each parameter moves the loss at first order, as in a calibration that starts from table values.

For each of the 14 soil parameter fields ``p`` (all layers scaled together by a multiplier ``m``), d loss /
d log m at ``m = 1`` by reverse mode (the default ``phase_change_gradient="implicit"``; the exact derivative
with ``--exact``) against central differences at relative steps 1e-3 and 1e-2, and the spread of the 1e-3
difference taken about ``m = 1`` and the nearby ``m = 1 + SHIFTS`` (about a straight line in the shift, so that
the loss's curvature is not counted): the roughness of the loss at that scale (all 168 perturbed years in one
vmapped forward run). Issue 13's target: at step 1e-3, the same sign and a magnitude within a factor of 2 for
>= 90 % of the parameters, and no gradient above 1e6. Also reported: the parameters that agree at 1e-3 or whose
derivative lies within twice that roughness of the 1e-3 difference (a difference is only as good as its scatter).

Writes ``benchmarks/results/cold_gradients.json`` and ``.png`` and prints the table. About 10 min on 2 CPU cores.

Usage::

    python benchmarks/cold_gradients.py [--json out.json] [--figure out.png] [--days N] [--exact]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine_info

from dam.io_safety import save_figure, write_text

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("smcmax", "smcref", "smcwlt", "bexp", "dksat", "dwsat", "psisat", "quartz", "csoil", "slope", "refkdt",
          "refdk", "frzk", "tbot")  # fmt: skip
# Truth multipliers: 5-20 % in both directions (tbot: +0.9 K); smcmax up, so the initial state stays valid.
TRUTH = {"smcmax": 1.05, "smcref": 0.9, "smcwlt": 1.1, "bexp": 0.85, "dksat": 1.2, "dwsat": 0.8, "psisat": 1.2,
         "quartz": 0.85, "csoil": 1.1, "slope": 0.8, "refkdt": 1.15, "refdk": 0.85, "frzk": 1.1,
         "tbot": 1.003}  # fmt: skip
STEPS_FD = (1e-3, 1e-2)
# The 1e-3 difference again about nearby multipliers 1 + shift: its scatter is the loss's roughness at that scale
SHIFTS = (-4e-3, -2e-3, 2e-3, 4e-3)
WATERS = ("liquid", "total")  # the moisture in the loss: liquid water (what dielectric probes read) or total
T_SCALE_K, SMC_SCALE = 1.0, 0.02


def agreement(ad: np.ndarray, fd: np.ndarray, factor: float = 2.0) -> np.ndarray:
    """Per parameter: the same sign and magnitudes within ``factor`` of each other."""
    ad, fd = np.asarray(ad, float), np.asarray(fd, float)
    same_sign = np.sign(ad) == np.sign(fd)
    ratio = np.abs(ad) / np.where(fd == 0, np.nan, np.abs(fd))
    return same_sign & (ratio <= factor) & (ratio >= 1.0 / factor)


def central(values: np.ndarray, first: int, k: int, h: float) -> np.ndarray:
    """Central differences in log m at relative step ``h`` of ``k`` parameters: losses at ``+h`` in the rows
    ``[first, first + k)`` and at ``-h`` in the next ``k`` rows."""
    return (values[first : first + k] - values[first + k : first + 2 * k]) / (np.log1p(h) - np.log1p(-h))


def roughness(shifts: np.ndarray, fds: np.ndarray) -> np.ndarray:
    """Scatter of finite differences ``fds`` (n_shifts, k) about a straight line in the multiplier shift: what
    remains once the loss's curvature (a smooth change of the derivative with m) is taken out, per parameter."""
    coef = np.polyfit(shifts, fds, 1)
    resid = fds - (coef[0][None] * shifts[:, None] + coef[1][None])
    return np.sqrt((resid**2).sum(axis=0) / (len(shifts) - 2))


def load_case(cache: Path, case: str = "bondville_cold"):
    """A full Fortran reference year (tests/reference_runs.Reference), rebuilt from tests/data into ``cache``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from reference_runs import Reference
    from shipped_data import materialise

    return Reference(materialise(f"noahmp_full/{case}", cache))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "cold_gradients.json"))
    parser.add_argument("--figure", default=str(ROOT / "benchmarks" / "results" / "cold_gradients.png"))
    parser.add_argument("--days", type=int, default=364, help="run only the first N days of the year")
    parser.add_argument("--exact", action="store_true", help="the exact derivative instead of the default")
    parser.add_argument("--cache", default=str(ROOT / ".pytest_cache" / "d" / "shipped_data"),
                        help="folder for the rebuilt reference files")  # fmt: skip
    args = parser.parse_args(argv)

    from dam.precision import enable_x64, fortran_exact_cpu

    fortran_exact_cpu()
    enable_x64()
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from dam.physics.station import run_station

    ref = load_case(Path(args.cache))
    n = 48 * args.days
    forcing = jax.tree_util.tree_map(lambda x: x[:n], ref.station_forcing())
    gradient = "exact" if args.exact else "implicit"
    soil_options = dataclasses.replace(ref.options.soil, phase_change_gradient=gradient)
    options = dataclasses.replace(ref.options, soil=soil_options)
    soil0 = ref.params.soil

    def with_soil(log_m):
        scaled = {f: getattr(soil0, f) * jnp.exp(log_m[i]) for i, f in enumerate(FIELDS)}
        return dataclasses.replace(ref.params, soil=dataclasses.replace(soil0, **scaled))

    def daily(log_m, opts, checkpoint_every=None):
        """Daily means of soil T (K), total and liquid moisture (m3 m-3), (days, 3, 4)."""
        _, out = run_station(ref.state0, forcing, with_soil(log_m), ref.grid, opts, checkpoint_every=checkpoint_every,
                             observe=lambda s, f: jnp.stack([s.soil.t, s.soil.smc, s.soil.sh2o]),
                             finite_check=False)  # fmt: skip
        return out.reshape(args.days, 48, *out.shape[1:]).mean(axis=1)

    t0 = time.perf_counter()
    truth = jax.jit(lambda lm: daily(lm, ref.options))(jnp.log(jnp.asarray([TRUTH[f] for f in FIELDS])))
    truth = jax.block_until_ready(truth)
    print(f"truth run {time.perf_counter() - t0:.0f} s", flush=True)
    scale = jnp.asarray([T_SCALE_K, SMC_SCALE, SMC_SCALE])[:, None]

    def losses(log_m, opts=options, checkpoint_every=None):
        """(liquid-water loss, total-water loss): soil T and the moisture of that water."""
        sq = ((daily(log_m, opts, checkpoint_every) - truth) / scale) ** 2
        return jnp.stack([jnp.mean(sq[:, (0, w)]) for w in (2, 1)])

    k = len(FIELDS)
    eye = np.eye(k)
    around = [np.log1p(b) * eye for b in SHIFTS]  # rows 4k on: the 1e-3 differences about 1 + shift
    points = np.concatenate(
        [np.log1p(s * sign * eye) for s in STEPS_FD for sign in (1.0, -1.0)]
        + [a + np.log1p(STEPS_FD[0] * sign) * eye for a in around for sign in (1.0, -1.0)]
    )
    t0 = time.perf_counter()
    values = np.asarray(jax.jit(jax.vmap(lambda lm: losses(lm, ref.options)))(jnp.asarray(points)))
    fd_s = time.perf_counter() - t0
    print(f"{len(points)} perturbed years {fd_s:.0f} s", flush=True)
    result = {"machine": machine_info(), "case": "tests/data/noahmp_full/bondville_cold", "days": args.days,
              "derivative": gradient, "truth": TRUTH, "fields": list(FIELDS), "losses": {}}  # fmt: skip
    for j, water in enumerate(WATERS):
        t0 = time.perf_counter()
        grad_fn = eqx.filter_jit(jax.value_and_grad(lambda lm, j=j: losses(lm, checkpoint_every=1)[j]))
        value, ad = jax.block_until_ready(grad_fn(jnp.zeros(k)))
        grad_s = time.perf_counter() - t0
        ad = np.asarray(ad)
        fd = {s: central(values[:, j], 2 * i * k, k, s) for i, s in enumerate(STEPS_FD)}
        ok = {s: agreement(ad, fd[s]) for s in STEPS_FD}
        h = STEPS_FD[0]
        nearby = [fd[h]] + [central(values[:, j], (4 + 2 * b) * k, k, h) for b in range(len(SHIFTS))]
        spread = roughness(np.r_[0.0, SHIFTS], np.stack(nearby))
        result["losses"][water] = {
            "loss": float(value), "ad": ad.tolist(), "finite_difference": {str(s): fd[s].tolist() for s in STEPS_FD},
            "agree": {str(s): ok[s].tolist() for s in STEPS_FD},
            "fraction_agreeing": {str(s): float(ok[s].mean()) for s in STEPS_FD},
            "fd_1e-3_nearby": np.stack(nearby).T.tolist(), "fd_1e-3_spread": spread.tolist(),
            "agree_1e-3_or_within_roughness": (ok[h] | (np.abs(ad - fd[h]) <= 2 * spread)).tolist(),
            "max_abs_gradient": float(np.max(np.abs(ad))), "gradient_seconds_with_compile": grad_s,
        }  # fmt: skip
        _report(result, water)
    result["finite_difference_seconds"] = fd_s
    write_text(args.json, json.dumps(result, indent=1) + "\n")
    _figure(result, args.figure)
    return result


def _report(result: dict, water: str) -> None:
    from tabulate import tabulate

    r = result["losses"][water]
    fd = r["finite_difference"]
    rows = [[f, r["ad"][i], *(fd[s][i] for s in fd), r["fd_1e-3_spread"][i],
             *("yes" if r["agree"][s][i] else "no" for s in fd)] for i, f in enumerate(result["fields"])]  # fmt: skip
    head = ["parameter", f"AD ({result['derivative']})", *(f"FD {s}" for s in fd), "FD 1e-3 spread",
            *(f"agree {s}" for s in fd)]  # fmt: skip
    print(f"\nloss on soil T and {water} water: {r['loss']:.4g}")
    print(tabulate(rows, head, floatfmt=".3e"))
    print("fraction agreeing (sign and factor 2):", r["fraction_agreeing"], "max |gradient|:", r["max_abs_gradient"])
    noisy = np.mean(r["agree_1e-3_or_within_roughness"])
    print(f"at 1e-3, agreeing or within twice the roughness of the differences: {noisy:.0%}")


def _figure(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(WATERS), 1, figsize=(9, 3.2 * len(WATERS)), sharex=True, constrained_layout=True)
    x = np.arange(len(result["fields"]))
    for ax, water in zip(axes, WATERS, strict=True):
        r = result["losses"][water]
        norm = np.abs(np.asarray(r["finite_difference"]["0.01"]))
        ax.bar(x - 0.25, np.asarray(r["ad"]) / norm, 0.25, label=f"AD ({result['derivative']})")
        for j, (s, v) in enumerate(r["finite_difference"].items()):
            err = np.asarray(r["fd_1e-3_spread"]) / norm if s == "0.001" else None  # its spread about m = 1
            ax.bar(x + 0.25 * j, np.asarray(v) / norm, 0.25, yerr=err, label=f"central FD, relative step {s}")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylim(-3, 3)
        ax.set_ylabel("d loss / d log m\n/ |FD at 1e-2|")
        ax.set_title(f"loss on soil T and {water} water", fontsize=9)
    axes[-1].set_xticks(x, result["fields"], rotation=45)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"bondville_cold, {result['days']} days: gradient of each soil parameter field")
    save_figure(fig, path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
