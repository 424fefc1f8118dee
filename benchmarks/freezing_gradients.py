"""Gradients through soil freezing: the default (implicit) derivative against the exact one and finite
differences, and what the default costs.

On the shipped Bondville soil case (17,472 steps of 1800 s from 2 January 1998, float64; a frozen top layer
in January-March and December) for the README loss, total soil water at the end of a window of ``L`` steps
from the start:

1. d loss / d log(p) for ``bexp`` and ``dksat`` against ``L``: the exact derivative and the default one by
   forward mode (one pass gives every ``L``), central finite differences at relative steps 1e-3 and 1e-2.
2. The cost of ``jax.grad`` of the year's loss (``checkpoint_every=128``, the README snippet) with either
   derivative: compile time and the best of three runs, and their ratio.

Writes ``benchmarks/results/freezing_gradients.json`` and ``benchmarks/results/freezing_gradients.png`` (paths
can be changed) and prints a table. About 10 min on 2 CPU cores.

Usage::

    python benchmarks/freezing_gradients.py [--json out.json] [--figure out.png] [--steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from _common import machine_info

from dam.io_safety import save_figure, write_text
from dam.precision import enable_x64, fortran_exact_cpu

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "dam" / "data" / "bondville_soil"
FIELDS = ("bexp", "dksat")
STEPS_FD = (1e-3, 1e-2)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "freezing_gradients.json"))
    parser.add_argument("--figure", default=str(ROOT / "benchmarks" / "results" / "freezing_gradients.png"))
    parser.add_argument("--steps", type=int, default=None, help="run only the first N steps of the year")
    args = parser.parse_args(argv)

    fortran_exact_cpu()
    enable_x64()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dam import physics
    from dam.cases import read_case

    case = read_case(CASE)
    params, state0, forcing = case.as_dtype(jnp.float64)
    if args.steps:
        forcing = jax.tree_util.tree_map(lambda x: x[: args.steps], forcing)
    n = int(forcing.ghf_wm2.shape[0])
    windows = np.unique(np.r_[np.geomspace(48, n, 12).astype(int), n])
    options = {g: dataclasses.replace(case.options, phase_change_gradient=g) for g in ("implicit", "exact")}

    def scaled(m):  # m (B, len(FIELDS)): multipliers of the (per-layer) fields, one column each
        b = m.shape[0]
        fields = {f: getattr(params, f) * m[:, i, None] for i, f in enumerate(FIELDS)}
        others = {f.name: getattr(params, f.name) for f in dataclasses.fields(params) if f.name not in FIELDS}
        others = {k: jnp.broadcast_to(v, (b, *jnp.shape(v))) for k, v in others.items()}
        return type(params)(**fields, **others)

    def losses(m, opts):
        """Total soil water (m3 m-3 summed over layers) at the end of each window, (B, windows)."""
        b = m.shape[0]
        s0 = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (b, *x.shape)), state0)
        frc = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], b, *x.shape[1:])), forcing)
        _, smc = physics.run(s0, frc, scaled(m), case.grid, opts, observe=lambda s, f: s.smc)
        return jnp.swapaxes(jnp.sum(smc[jnp.asarray(windows) - 1], axis=-1), 0, 1)

    m0 = jnp.ones((1, len(FIELDS)))
    result = {"machine": machine_info(), "case": str(CASE.relative_to(ROOT)), "windows": windows.tolist(),
              "fields": list(FIELDS), "derivative": {}, "finite_difference": {}, "cost": {}}  # fmt: skip
    for g, opts in options.items():  # forward mode: one pass per field gives every window
        jvp = jax.jit(lambda m, v, opts=opts: jax.jvp(lambda x: losses(x, opts), (m,), (v,))[1])
        result["derivative"][g] = {f: np.asarray(jvp(m0, jnp.eye(len(FIELDS))[i : i + 1]))[0].tolist()
                                   for i, f in enumerate(FIELDS)}  # fmt: skip
    batch = np.concatenate([1.0 + h * np.vstack([np.eye(len(FIELDS)), -np.eye(len(FIELDS))]) for h in STEPS_FD])
    values = np.asarray(jax.jit(lambda ms: losses(ms, options["exact"]))(jnp.asarray(batch)))
    values = values.reshape(len(STEPS_FD), 2, len(FIELDS), len(windows))
    for k, h in enumerate(STEPS_FD):
        fd = (values[k, 0] - values[k, 1]) / (2 * h)
        result["finite_difference"][f"{h:g}"] = {f: fd[i].tolist() for i, f in enumerate(FIELDS)}

    def year_loss(m, opts):  # the README snippet's loss
        p = dataclasses.replace(params, **{f: getattr(params, f) * m[i] for i, f in enumerate(FIELDS)})
        return physics.run(state0, forcing, p, case.grid, opts, checkpoint_every=128)[0].smc.sum()

    for g, opts in options.items():
        grad = jax.jit(jax.grad(lambda m, opts=opts: year_loss(m, opts)))
        t0 = time.perf_counter()
        compiled = grad.lower(m0[0]).compile()
        compile_s = time.perf_counter() - t0
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            value = jax.block_until_ready(compiled(m0[0]))
            runs.append(time.perf_counter() - t0)
        result["cost"][g] = {"compile_s": compile_s, "run_s": min(runs), "gradient": np.asarray(value).tolist()}
    result["cost"]["implicit_over_exact"] = {
        k: result["cost"]["implicit"][k] / result["cost"]["exact"][k] for k in ("compile_s", "run_s")
    }
    _report(result)
    write_text(args.json, json.dumps(result, indent=1))
    _figure(result, Path(args.figure))
    return result


def _report(r: dict) -> None:
    print(f"d (total soil water at the end of the window) / d log(p), {r['case']}")
    for f in r["fields"]:
        print(f"\n{f}:\n{'steps':>6s} {'exact':>11s} {'default':>11s} " + " ".join(f"{'FD ' + h:>11s}"
                                                                          for h in r["finite_difference"]))  # fmt: skip
        for j, w in enumerate(r["windows"]):
            fd = " ".join(f"{v[f][j]: 11.3e}" for v in r["finite_difference"].values())
            print(f"{w:6d} {r['derivative']['exact'][f][j]: 11.3e} {r['derivative']['implicit'][f][j]: 11.3e} {fd}")
    c = r["cost"]
    print("\njax.grad of the year (checkpoint_every=128): compile / run s")
    for g in ("implicit", "exact"):
        print(f"  {g:8s} {c[g]['compile_s']:7.1f} {c[g]['run_s']:7.1f}")
    print(f"  ratio    {c['implicit_over_exact']['compile_s']:7.2f} {c['implicit_over_exact']['run_s']:7.2f}")


def _figure(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    w = np.asarray(r["windows"]) / 48.0
    fig, axes = plt.subplots(1, len(r["fields"]), figsize=(5.2 * len(r["fields"]), 4.0), sharey=True)
    for ax, f in zip(np.atleast_1d(axes), r["fields"], strict=True):
        styles = [("exact", r["derivative"]["exact"][f], "C3", "o-"), ("default (implicit)",
                  r["derivative"]["implicit"][f], "C0", "s-")]  # fmt: skip
        styles += [(f"finite difference, step {h}", v[f], c, "x--")
                   for (h, v), c in zip(r["finite_difference"].items(), ("k", "0.5"), strict=True)]  # fmt: skip
        for label, y, color, style in styles:
            y = np.abs(np.asarray(y, float))
            y = np.where(np.isfinite(y) & (y > 0), y, np.nan)
            ax.plot(w, y, style, color=color, label=label, ms=4)
        ax.set(
            xscale="log", yscale="log", xlabel="window length (days from 2 Jan)", title=f"|d total water / d log {f}|"
        )
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("Gradients through soil freezing (shipped Bondville soil case)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
