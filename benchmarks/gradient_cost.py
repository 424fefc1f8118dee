"""Gradient cost of the soil column by rematerialisation setting, as ratios to the forward measured in the same run.

The value and gradient (parameters and initial state) of a scalar of the final state, with every intermediate
stored (``checkpoint_every=None``), with per-step checkpoints (1) and with segments (8), over the forward alone:
whether recomputation is what keeps the gradient above 3x the forward (issue 17). Also XLA's temporaries. These
rows differentiate the step itself (``derivative_pow="libm"``); the ``_twin`` rows take the derivatives from its
``exp(y log x)`` twin (the default, :mod:`dam.physics.tangents`).

Then the parts of one step (thermal properties, heat conduction, heat with phase change, the water step, the whole
step), each compiled alone: its value and gradient over its forward, with nothing rematerialised around it. With
per-step checkpoints a run's gradient measured about one such step value and gradient per step, so a run within 3x
needs a step, and a costliest part, within about 3x here.

Usage::

    python benchmarks/gradient_cost.py                          # 1e4 columns x 24 steps, float64 and float32
    python benchmarks/gradient_cost.py --columns 1000 --steps 48 --dtypes float32 --json out.json
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
from _common import best_time, machine_info, make_columns

from dam import physics
from dam.io_safety import write_text

jax.config.update("jax_enable_x64", True)
# row name: (checkpoint_every, derivative_pow)
SETTINGS = {
    "stored": (None, "libm"),
    "per_step": (1, "libm"),
    "segments_8": (8, "libm"),
    "per_step_twin": (1, "exp_log"),
    "segments_8_twin": (8, "exp_log"),
}


def measure(n_columns: int, n_steps: int, dtype: str) -> list[dict]:
    """One row per function: seconds, ratio to the forward and XLA temporaries (MiB)."""
    params, state, forcing, grid = make_columns(n_columns, n_steps, getattr(jnp, dtype))

    def final(p, s, f, every=None, derivative="libm"):
        options = physics.SoilOptions(dt_s=1800.0, derivative_pow=derivative)
        return physics.run(s, f, p, grid, options, observe=None, finite_check=False, checkpoint_every=every)[0]

    def loss(p, s, f, every, derivative):
        out = final(p, s, f, every, derivative)
        return jnp.sum(out.smc) + 1e-3 * jnp.sum(out.t)

    functions = {"forward": final}
    grad = jax.value_and_grad(loss, (0, 1))
    for name, (every, derivative) in SETTINGS.items():
        functions[f"gradient_{name}"] = lambda p, s, f, e=every, d=derivative: grad(p, s, f, e, d)
    rows, forward_s = [], None
    for name, fn in functions.items():
        compiled = jax.jit(fn).lower(params, state, forcing).compile()
        seconds, _ = best_time(compiled, params, state, forcing, repeats=5, budget_s=20.0, min_time_s=0.2)
        forward_s = forward_s or seconds
        temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
        rows.append({"function": name, "dtype": dtype, "columns": n_columns, "steps": n_steps, "seconds": seconds,
                     "over_forward": seconds / forward_s, "temp_mib": temp})  # fmt: skip
        print(f"{dtype} {n_columns} x {n_steps}: {name:22s} {seconds:.4f} s  x{seconds / forward_s:.2f}  "
              f"temporaries {temp:.0f} MiB", flush=True)  # fmt: skip
    return rows


def measure_parts(n_columns: int, dtype: str) -> list[dict]:
    """One row per part of the first step: seconds of its forward and of its value and gradient (parameters and
    state, of the sum of its outputs), and their ratio."""
    from dam.physics.column import soil_heat, soil_step
    from dam.physics.soil_temperature import heat_diffusion
    from dam.physics.soil_thermal_properties import soil_thermal_properties
    from dam.physics.soil_water import soil_water

    params, state, forcing, grid = make_columns(n_columns, 1, getattr(jnp, dtype))
    f0 = jax.tree_util.tree_map(lambda x: x[0], forcing)
    options = physics.SoilOptions(dt_s=1800.0, derivative_pow="libm")
    twin_options = physics.SoilOptions(dt_s=1800.0, derivative_pow="exp_log")  # soil_step leaves "auto" to the runners
    g, c = grid.astype(getattr(jnp, dtype)), options.const

    def properties(s, p):
        return soil_thermal_properties(s, p, g, c, options.dt_s)

    def conduction(s, p):
        capacity, conductivity, _ = properties(s, p)
        return heat_diffusion(s.t, capacity, conductivity, f0.ghf_wm2, p, g, options)

    parts = {
        "thermal properties": properties,
        "heat conduction (with properties)": conduction,
        "heat with phase change": lambda s, p: soil_heat(s, f0.ghf_wm2, p, g, options)[0],
        "water (3 or 6 sub-steps)": lambda s, p: soil_water(s.smc, s.sh2o, f0, p, g, options)[:2],
        "whole step": lambda s, p: soil_step(s, f0, p, g, options)[0],
        "whole step, exp_log twin": lambda s, p: soil_step(s, f0, p, g, twin_options)[0],
    }
    rows = []
    for name, fn in parts.items():
        total = lambda s, p, fn=fn: sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(fn(s, p)))  # noqa: E731
        forward = jax.jit(fn).lower(state, params).compile()
        gradient = jax.jit(jax.value_and_grad(total, (0, 1))).lower(state, params).compile()
        t_f, _ = best_time(forward, state, params, repeats=7, budget_s=10.0, min_time_s=0.1)
        t_g, _ = best_time(gradient, state, params, repeats=7, budget_s=10.0, min_time_s=0.1)
        rows.append({"part": name, "dtype": dtype, "columns": n_columns, "forward_s": t_f, "gradient_s": t_g,
                     "over_forward": t_g / t_f})  # fmt: skip
        print(f"{dtype} {n_columns} columns: {name:34s} forward {t_f * 1e3:.2f} ms, value and gradient "
              f"{t_g * 1e3:.2f} ms  x{t_g / t_f:.2f}", flush=True)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--columns", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=24, help="steps of 1800 s")
    p.add_argument("--dtypes", nargs="+", choices=("float64", "float32"), default=["float64", "float32"])
    p.add_argument("--json", help="write the machine and the rows here")
    args = p.parse_args(argv)
    rows = [r for d in args.dtypes for r in measure(args.columns, args.steps, d)]
    parts = [r for d in args.dtypes for r in measure_parts(args.columns, d)]
    if args.json:
        write_text(args.json, json.dumps({"machine": machine_info(), "rows": rows, "parts": parts}, indent=1))


if __name__ == "__main__":
    main()
