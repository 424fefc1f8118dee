"""The soil column on the accelerator against the host CPU: the same columns on both, differences and speed.

The CPU run is the one the Fortran-match tests check, so agreement here carries that check over to the
accelerator. Each dtype runs the heterogeneous columns of ``scaling.py`` (final state and the gradient of a scalar
of it with respect to the parameters) on ``jax.devices()[0]`` and on ``jax.devices("cpu")[0]``, and prints the
largest absolute difference per variable with the forward time on each backend and their ratio (the host CPU is
the baseline measured in the same run). The differences come from the libm functions (``pow``, ``exp``, ``log``),
which differ by an ulp or so between backends, amplified through the steps: float64 should agree to about
1e-10, far inside the 1e-6 of the Fortran-match tests.

Usage::

    python benchmarks/backend_agreement.py                       # 10000 columns, 48 steps, both dtypes
    python benchmarks/backend_agreement.py --columns 100000 --output results/agreement.json

Without an accelerator it compares the CPU with itself (every difference 0), which is what the tests run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
from _common import best_time, machine_info, make_columns
from scaling import _dtype, _soil_functions

from dam.io_safety import write_text


def compare(n_columns: int, n_steps: int, dtype: str, repeats: int = 3) -> dict:
    """Largest differences accelerator - CPU of the final state and the parameter gradient; both forward times."""
    import jax

    devices = {"accelerator": jax.devices()[0], "cpu": jax.devices("cpu")[0]}
    params, state, forcing, grid = make_columns(n_columns, n_steps, _dtype(dtype))
    functions = _soil_functions(grid, n_steps)
    forward, gradient = jax.jit(functions["forward"]), jax.jit(functions["gradient"])
    out, seconds = {}, {}
    for name, device in devices.items():
        data = jax.device_put((params, state, forcing), device)
        final = forward(*data)
        seconds[name] = best_time(forward, *data, repeats=repeats, min_time_s=0.5, warm=False)[0]
        (_, (d_params, _)) = gradient(*data)
        out[name] = {f"final_{k}": np.asarray(getattr(final, k)) for k in ("t", "smc", "sh2o")}
        fields = (f.name for f in dataclasses.fields(d_params))
        out[name].update({f"grad_{k}": np.asarray(getattr(d_params, k)) for k in fields})
    acc, cpu = out["accelerator"], out["cpu"]
    diffs = {k: float(np.max(np.abs(acc[k] - cpu[k]))) for k in acc}
    scales = {k: float(np.max(np.abs(cpu[k]))) for k in cpu}
    finite = all(np.isfinite(v).all() for v in acc.values())
    return {
        "dtype": dtype,
        "columns": n_columns,
        "steps": n_steps,
        "accelerator": str(devices["accelerator"].device_kind),
        "all_finite_on_accelerator": finite,
        "max_abs_difference": diffs,
        "max_relative_difference": {k: diffs[k] / scales[k] if scales[k] else 0.0 for k in diffs},
        "forward_seconds": seconds,
        "accelerator_speedup_over_cpu": seconds["cpu"] / seconds["accelerator"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--columns", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=48, help="steps of 1800 s")
    p.add_argument("--dtypes", nargs="+", choices=("float32", "float64"), default=["float64", "float32"])
    p.add_argument("--output", default=None, help="also write the rows and machine info as JSON here")
    args = p.parse_args(argv)
    import jax
    from tabulate import tabulate

    jax.config.update("jax_enable_x64", True)
    if jax.default_backend() == "cpu":
        print("no accelerator: comparing the CPU with itself")
    rows = []
    for dtype in args.dtypes:
        rows.append(compare(args.columns, args.steps, dtype))
        if args.output:  # after each dtype, so that a run stopped by a time limit keeps the finished ones
            write_text(args.output, json.dumps({"machine": machine_info(), "rows": rows}, indent=1))
        r = rows[-1]
        print(f"\n{r['dtype']}, {r['columns']:,} columns x {r['steps']} steps on {r['accelerator']} against the CPU:")
        print(f"forward {r['forward_seconds']['accelerator']:.4g} s against {r['forward_seconds']['cpu']:.4g} s "
              f"(x{r['accelerator_speedup_over_cpu']:.3g}); all finite: {r['all_finite_on_accelerator']}")  # fmt: skip
        table = [[k, v, r["max_relative_difference"][k]] for k, v in r["max_abs_difference"].items()]
        print(tabulate(table, headers=["variable", "max |acc - cpu|", "relative"], floatfmt=".3g", tablefmt="github"))
    if args.output:
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
