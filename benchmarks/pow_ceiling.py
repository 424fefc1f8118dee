"""How fast the soil column's forward could be on one core if its ``pow`` calls cost less, or nothing.

Noah-MP's soil physics evaluates ``x ** y`` dozens of times per column and step (Campbell hydraulics in every
water sub-step, the Johansen conductivity, supercooled water), and the Fortran match needs the libm ``pow``
value bit for bit: XLA:CPU calls the scalar libm routine, so these calls do not vectorise. This benchmark runs
the workload of the Fortran comparison (1e4 heterogeneous columns x 1,000 steps, float64) on one pinned core,
in fresh processes, with every ``jnp.power`` of the run replaced by

* ``libm``: nothing replaced (the model as it is);
* ``exp_log``: ``exp(y log x)``, vectorised by XLA, within about 1e-13 of ``pow`` but not bit for bit;
* ``free``: ``x`` (the ``pow`` costs nothing; values change, so this is a ceiling, not a model).

It also times one element of ``pow``, ``log``, ``exp`` and a multiply-add, and from these the cost per ``pow`` at
which the forward would reach the issue-17 target of 5x the Fortran per core, given dam's ratio to the Fortran
measured side by side on this machine kind (``--x-fortran``). The "x Fortran" column divides by the Fortran figure
of ``_common.FORTRAN_COLUMN_STEPS_PER_S``, measured on another day: trust the ratios of one run more.

    python benchmarks/pow_ceiling.py [--columns 10000] [--steps 1000] [--core 0] [--x-fortran 2.3]
                                     [--output benchmarks/results/pow_ceiling.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
from pathlib import Path

from _common import FORTRAN_COLUMN_STEPS_PER_S, machine_info

from dam.io_safety import write_text

HERE = Path(__file__).resolve().parent
VARIANTS = ("libm", "exp_log", "free")
TARGET = {"x_fortran_one_core": 5.0, "condition": "float64 forward >= 5x the Fortran per core (issue 17)"}


def _stand_in(variant: str):
    import jax.numpy as jnp

    return {"exp_log": lambda x, y: jnp.exp(y * jnp.log(x)), "free": lambda x, y: x + 0.0 * y}[variant]


def _element_costs(n: int = 4_000_000) -> dict:
    """Seconds per element of XLA:CPU's pow, log, exp and a multiply-add (saturation-like bases, Campbell-like
    exponents)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from _common import best_time

    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.uniform(0.05, 1.0, n)), jnp.asarray(rng.uniform(5.0, 25.0, n))
    ops = {
        "pow": lambda x, y: jnp.power(x, y),
        "log": lambda x, y: jnp.log(x) * y,
        "exp": lambda x, y: jnp.exp(-x * y),
        "multiply_add": lambda x, y: x * y + x,
    }
    return {k: best_time(jax.jit(f), x, y, repeats=7)[0] / n for k, f in ops.items()}


def _child(core: int, variant: str, args: dict, results) -> None:
    os.sched_setaffinity(0, [core])  # before JAX starts its threads: they inherit it
    import jax
    import jax.numpy as jnp
    import numpy as np
    from _common import best_time, make_columns

    jax.config.update("jax_enable_x64", True)
    from dam import physics

    if variant != "libm":
        jnp.power = _stand_in(variant)  # read at trace time by every pow of the physics
    params, state, forcing, grid = make_columns(args["columns"], args["steps"], jnp.float64)
    options = physics.SoilOptions(dt_s=1800.0)
    run = jax.jit(lambda p, s, f: physics.run(s, f, p, grid, options, observe=None, finite_check=False)[0])
    seconds = best_time(run, params, state, forcing, repeats=args["repeats"])[0]
    final = run(params, state, forcing)
    out = {"variant": variant, "seconds": seconds, "final_smc": np.asarray(final.smc).tolist()}
    if variant == "libm":
        out["element_seconds"] = _element_costs()
    results.put(out)


def measure(core: int, variant: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_child, args=(core, variant, args, results))
    proc.start()
    out = results.get()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"{variant}: the process failed with exit code {proc.exitcode}")
    return out


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--columns", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--core", type=int, default=0, help="the CPU core every run is pinned to")
    p.add_argument("--x-fortran", type=float, default=2.3,
                   help="dam's float64 forward over the Fortran's per core, measured side by side on this machine "
                   "kind (docs/performance.md, 'One process per core')")  # fmt: skip
    p.add_argument("--output", type=Path, default=HERE / "results" / "pow_ceiling.json")
    a = p.parse_args(argv)
    settings = {"columns": a.columns, "steps": a.steps, "repeats": a.repeats}
    raw = {v: measure(a.core, v, settings) for v in VARIANTS}
    fortran = FORTRAN_COLUMN_STEPS_PER_S["float64"]
    smc = {v: np.asarray(raw[v].pop("final_smc")) for v in VARIANTS}
    element = raw["libm"].pop("element_seconds")
    rows = []
    for v in VARIANTS:
        rate = a.columns * a.steps / raw[v]["seconds"]
        rows.append(raw[v] | {
            "column_steps_per_s": rate,
            "x_libm": raw["libm"]["seconds"] / raw[v]["seconds"],
            "x_fortran_one_core": rate / fortran,
            "final_smc_max_abs_diff": float(np.max(np.abs(smc[v] - smc["libm"]))),
        })  # fmt: skip
        r = rows[-1]
        print(f"{v:8s} {rate:10.3e} column-steps/s  {r['x_libm']:5.2f}x libm  {r['x_fortran_one_core']:5.2f}x "
              f"Fortran  final smc differs by {r['final_smc_max_abs_diff']:.1e} m3 m-3", flush=True)  # fmt: skip
    per_step = {v: raw[v]["seconds"] / (a.columns * a.steps) for v in VARIANTS}  # s per column-step
    pow_share = 1.0 - per_step["free"] / per_step["libm"]
    pows = (per_step["libm"] - per_step["free"]) / element["pow"]
    # The pow cost at which the forward would reach the target, scaling dam's side-by-side ratio to the Fortran.
    needed = TARGET["x_fortran_one_core"] / a.x_fortran
    allowed = (per_step["libm"] / needed - per_step["free"]) / pows
    print("ns per element: " + ", ".join(f"{k} {s * 1e9:.1f}" for k, s in element.items()))
    print(f"pow share of the forward: {pow_share:.0%} (about {pows:.0f} pow per column-step); "
          f"{TARGET['x_fortran_one_core']:g}x Fortran needs {needed:.2f}x this forward: "
          f"pow at {allowed * 1e9:.2f} ns or less")  # fmt: skip
    result = {
        "machine": machine_info() | {"affinity": [a.core]},
        "settings": vars(a) | {"output": str(a.output)},
        "rows": rows,
        "element_seconds": element,
        "pow_share_of_forward": pow_share,
        "pow_per_column_step": pows,
        "fortran_reference_column_steps_per_s": fortran,
        "target": TARGET | {"speedup_needed": needed, "pow_seconds_allowed": allowed},
    }
    write_text(a.output, json.dumps(result, indent=1))
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
