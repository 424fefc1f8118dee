"""Soil-column throughput: column-steps per second, forward and forward+gradient.

Columns are heterogeneous (STAS soil classes 1-12, perturbed initial states and forcing from the Bondville
case), as in the Fortran baseline of ``tests/data/noahmp_soil/README.md``. Prints a table with the
ratio to the Fortran single-core figures and to the forward time, and writes JSON with machine info.

    python benchmarks/soil_throughput.py [--columns 1 100 10000 100000] [--dtypes float64 float32]
                                         [--steps 96] [--output benchmarks/results/soil_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from _common import FORTRAN_COLUMN_STEPS_PER_S, machine_info, make_columns
from _common import best_time as _best_time

from dam.io_safety import write_text


def _time(fn, *args, repeats: int = 3) -> float:
    return _best_time(fn, *args, repeats=repeats)[0]


def bench(n_columns: int, n_steps: int, dtype_name: str) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from dam import physics

    dtype = jnp.float64 if dtype_name == "float64" else jnp.float32
    params, state, forcing, grid = make_columns(n_columns, n_steps, dtype)
    options = physics.SoilOptions(dt_s=1800.0)

    @eqx.filter_jit
    def forward(params, state, forcing):
        return physics.run(state, forcing, params, grid, options, observe=None, finite_check=False)[0]

    def loss(params, state, forcing):
        final = physics.run(
            state,
            forcing,
            params,
            grid,
            options,
            observe=None,
            finite_check=False,
            checkpoint_every=max(8, int(np.sqrt(n_steps))),
        )[0]
        return jnp.sum(final.smc) + jnp.sum(final.t) * 1e-3

    grad = eqx.filter_jit(jax.value_and_grad(loss, argnums=(0, 1)))
    t_fwd = _time(forward, params, state, forcing)
    t_grad = _time(grad, params, state, forcing)
    cs = n_columns * n_steps
    return {
        "columns": n_columns,
        "steps": n_steps,
        "dtype": dtype_name,
        "forward_s": t_fwd,
        "forward_column_steps_per_s": cs / t_fwd,
        "gradient_s": t_grad,
        "gradient_column_steps_per_s": cs / t_grad,
        "gradient_over_forward": t_grad / t_fwd,
        "forward_over_fortran": cs / t_fwd / FORTRAN_COLUMN_STEPS_PER_S[dtype_name],
    }


def bench_tridiagonal(n_columns: int = 100_000, dtype_name: str = "float64") -> dict:
    """Our vectorised Thomas solve against jax.lax.linalg.tridiagonal_solve (same systems)."""
    import jax
    import jax.numpy as jnp

    from dam.physics import tridiagonal_solve

    dtype = jnp.float64 if dtype_name == "float64" else jnp.float32
    rng = np.random.default_rng(1)
    a, c = (jnp.asarray(rng.uniform(-1, 0, (n_columns, 4)), dtype) for _ in range(2))
    b = jnp.asarray(rng.uniform(2.5, 3, (n_columns, 4)), dtype)
    d = jnp.asarray(rng.normal(size=(n_columns, 4)), dtype)
    a, c = a.at[:, 0].set(0), c.at[:, -1].set(0)
    ours = jax.jit(tridiagonal_solve)
    lax_solve = jax.jit(lambda a, b, c, d: jax.lax.linalg.tridiagonal_solve(a, b, c, d[..., None])[..., 0])
    t_ours, t_lax = _time(ours, a, b, c, d, repeats=5), _time(lax_solve, a, b, c, d, repeats=5)
    err = float(jnp.max(jnp.abs(ours(a, b, c, d) - lax_solve(a, b, c, d))))
    return {
        "columns": n_columns,
        "dtype": dtype_name,
        "thomas_s": t_ours,
        "lax_tridiagonal_solve_s": t_lax,
        "lax_over_thomas": t_lax / t_ours,
        "max_abs_difference": err,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--columns", type=int, nargs="+", default=[1, 100, 10_000, 100_000])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--steps", type=int, default=96, help="steps per run (1 column runs 20x more)")
    parser.add_argument("--output", default="benchmarks/results/soil_throughput.json")
    args = parser.parse_args(argv)

    import jax

    if "float64" in args.dtypes:
        jax.config.update("jax_enable_x64", True)
    results = []
    print(
        f"{'dtype':8s} {'columns':>8s} {'steps':>6s} {'fwd col-steps/s':>16s} {'x Fortran':>10s} "
        f"{'grad col-steps/s':>17s} {'grad/fwd':>9s}"
    )
    for dtype in args.dtypes:
        for n in args.columns:
            steps = args.steps * 20 if n == 1 else args.steps
            r = bench(n, steps, dtype)
            results.append(r)
            print(
                f"{dtype:8s} {n:8d} {steps:6d} {r['forward_column_steps_per_s']:16.3e} "
                f"{r['forward_over_fortran']:10.2f} {r['gradient_column_steps_per_s']:17.3e} "
                f"{r['gradient_over_forward']:9.2f}",
                flush=True,
            )
    tri = bench_tridiagonal(min(max(args.columns), 100_000), args.dtypes[0])
    print(
        f"tridiagonal, {tri['columns']} systems of 4: Thomas {tri['thomas_s'] * 1e3:.2f} ms, "
        f"lax.linalg.tridiagonal_solve {tri['lax_tridiagonal_solve_s'] * 1e3:.2f} ms "
        f"(ratio {tri['lax_over_thomas']:.2f}), max |difference| {tri['max_abs_difference']:.1e}"
    )
    out = {
        "machine": machine_info(),
        "fortran_baseline_column_steps_per_s": FORTRAN_COLUMN_STEPS_PER_S,
        "results": results,
        "tridiagonal": tri,
    }
    write_text(args.output, json.dumps(out, indent=1))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
