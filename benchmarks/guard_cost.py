"""Cost of the physical plausibility guards (dam.physics.guards) on the soil-column forward run.

Three variants of ``physics.run`` on the same heterogeneous columns, timed alternately (best of ``--repeats``
rounds, so a busy machine slows all alike): no checks (``finite_check=False``), the finiteness check that
``finite_check=True`` ran before the guards (one ``eqx.error_if`` on the state), and the guards (bounds on
temperature and moisture, the step/column locator). Prints the ratios to the finiteness check and writes JSON.

    python benchmarks/guard_cost.py [--columns 10000] [--steps 96] [--dtype float64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import machine_info, make_columns

from dam.io_safety import write_text


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--columns", type=int, default=10000, help="number of soil columns")
    ap.add_argument("--steps", type=int, default=96, help="time steps per run")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="floating-point type")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (each times every variant once)")
    ap.add_argument("--output", default=None, help="JSON file for the results (default: print only)")
    args = ap.parse_args(argv)

    from dam.precision import enable_x64

    if args.dtype == "float64":
        enable_x64()
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from dam import physics
    from dam.physics import column

    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    params, state, forcing, grid = make_columns(args.columns, args.steps, dtype)
    options = physics.SoilOptions(dt_s=1800.0)
    guard = column.guard_soil

    def variant(check):
        column.guard_soil = check  # read when the run is traced: each variant compiles with its own check
        fn = eqx.filter_jit(lambda p, s, f: physics.run(s, f, p, grid, options, observe=None)[0])
        jax.block_until_ready(fn(params, state, forcing))
        column.guard_soil = guard
        return fn

    fns = {
        "no checks": eqx.filter_jit(
            lambda p, s, f: physics.run(s, f, p, grid, options, observe=None, finite_check=False)[0]
        ),
        "finite check (before)": variant(lambda s, p, i: physics.check_finite(s)),
        "guards (now)": variant(guard),
    }
    jax.block_until_ready(fns["no checks"](params, state, forcing))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params, state, forcing))
            best[name] = min(best[name], time.perf_counter() - t0)
    base = best["finite check (before)"]
    rows = [{"variant": k, "seconds": v, "column_steps_per_s": args.columns * args.steps / v, "ratio": v / base}
            for k, v in best.items()]  # fmt: skip
    print(f"{args.columns} columns x {args.steps} steps, {args.dtype}, best of {args.repeats}:")
    for r in rows:
        print(f"  {r['variant']:24s} {r['seconds']:8.4f} s  {r['column_steps_per_s']:10.3g} col-steps/s  "
              f"x{r['ratio']:.3f} of the finite check")  # fmt: skip
    result = {"machine": machine_info(), "settings": vars(args), "rows": rows}
    if args.output:
        write_text(args.output, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
