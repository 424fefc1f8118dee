"""Memory and time of a one-year forward + reverse pass through the soil column, with and without
``checkpoint_every``.

For each configuration (number of columns x checkpoint segment length) a fresh subprocess compiles
``jax.grad`` of a scalar loss of the Bondville year (17,472 steps of 1800 s, float64) with respect to the
parameters, reads XLA's buffer assignment (``compiled.memory_analysis()``: temporaries, arguments,
outputs), runs the gradient and reports wall times and the process's peak resident memory
(:func:`dam.memory.peak_memory_gib`; one process per configuration, so peaks do not mix). Several columns are one
batch (per-column parameters with a spread in ``dksat`` and ``bexp``, the forcing broadcast to every
column). A configuration whose XLA temporaries would not fit in the available memory is compiled and
reported but not run.

Usage::

    python benchmarks/gradient_memory.py                       # 1 and 100 columns, plain vs 128
    python benchmarks/gradient_memory.py --columns 1 --checkpoint-every 0 64 128 256 --json out.json

Prints one JSON document (machine, configurations, results, and per column count the ratios
checkpointed / plain and the largest relative difference between their gradients).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from dam.io_safety import write_text

REFERENCE = Path(__file__).resolve().parents[1] / "dam" / "data" / "bondville_soil"  # the shipped copy


def _child(case_dir: str, n_columns: int, checkpoint_every: int, n_steps: int | None, memory_fraction: float):
    """One configuration; prints one JSON line."""
    from dam.precision import enable_x64, fortran_exact_cpu

    fortran_exact_cpu()
    enable_x64()
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import psutil

    from dam.cases import read_case
    from dam.memory import peak_memory_gib
    from dam.physics import run

    case = read_case(case_dir)
    params, state0, forcing = case.as_dtype(jnp.float64)
    if n_steps:
        forcing = jax.tree_util.tree_map(lambda x: x[:n_steps], forcing)
    steps = int(forcing.ghf_wm2.shape[0])
    if n_columns > 1:
        rng = np.random.default_rng(0)
        spread = jnp.asarray(rng.uniform(0.5, 2.0, (n_columns, 1)))

        def columns(x):
            return jnp.broadcast_to(x, (n_columns, *x.shape))

        params = jax.tree_util.tree_map(columns, params)
        params = eqx.tree_at(lambda p: (p.dksat, p.bexp), params, (params.dksat * spread, params.bexp * spread**0.1))
        state0 = jax.tree_util.tree_map(columns, state0)
        forcing = jax.tree_util.tree_map(
            lambda x: jnp.array(jnp.broadcast_to(x[:, None], (x.shape[0], n_columns, *x.shape[1:]))), forcing
        )
    ck = checkpoint_every or None

    def loss(p):
        final, (smc, runoff) = run(
            state0,
            forcing,
            p,
            case.grid,
            case.options,
            checkpoint_every=ck,
            observe=lambda s, f: (jnp.mean(s.smc, axis=-1), f.runoff_surface_mm + f.runoff_subsurface_mm),
        )
        return jnp.sum(jnp.mean(final.t, axis=-1) + 100.0 * jnp.mean(smc, axis=0) + 0.1 * jnp.sum(runoff, axis=0))

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    rss_setup = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    compiled = value_and_grad.lower(params).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    result = {
        "columns": n_columns,
        "checkpoint_every": ck,
        "steps": steps,
        "compile_s": round(compile_s, 2),
        "xla_temp_bytes": int(mem.temp_size_in_bytes),
        "xla_argument_bytes": int(mem.argument_size_in_bytes),
        "xla_output_bytes": int(mem.output_size_in_bytes),
        "xla_generated_code_bytes": int(mem.generated_code_size_in_bytes),
        "rss_after_setup_bytes": int(rss_setup),
        "peak_rss_after_compile_bytes": round(peak_memory_gib() * 2**30),
    }
    available = psutil.virtual_memory().available
    if mem.temp_size_in_bytes > memory_fraction * available:
        result["skipped"] = (
            f"XLA temporaries {mem.temp_size_in_bytes / 2**30:.1f} GiB exceed {memory_fraction:.0%} of the "
            f"available {available / 2**30:.1f} GiB"
        )
        print(json.dumps(result))
        return
    t0 = time.perf_counter()
    value, grad = jax.block_until_ready(compiled(params))
    result["first_run_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    value, grad = jax.block_until_ready(compiled(params))
    result["run_s"] = round(time.perf_counter() - t0, 3)
    result["peak_rss_bytes"] = round(peak_memory_gib() * 2**30)
    result["loss"] = float(value)
    result["grad"] = {f: np.asarray(getattr(grad, f)).ravel().tolist() for f in grad.__dataclass_fields__}
    result["finite"] = bool(all(np.all(np.isfinite(v)) for v in result["grad"].values()))
    print(json.dumps(result))


def _machine() -> dict:
    import jax
    import jaxlib
    import psutil

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "dtype": "float64",
    }


def _max_rel_diff(a: dict, b: dict) -> float:
    import numpy as np

    worst = 0.0
    for key, ref in a.items():
        ref, other = np.asarray(ref), np.asarray(b[key])
        scale = np.max(np.abs(ref))
        if scale > 0:
            worst = max(worst, float(np.max(np.abs(other - ref)) / scale))
    return worst


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default=str(REFERENCE), help="case folder (default: the shipped Bondville case)")
    parser.add_argument("--columns", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--checkpoint-every", type=int, nargs="+", default=[0, 128], help="0 = plain scan")
    parser.add_argument("--steps", type=int, default=None, help="first N steps only (default: all)")
    parser.add_argument(
        "--memory-fraction",
        type=float,
        default=0.6,
        help="run only if XLA temporaries fit in this fraction of the available memory",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        _child(args.case, args.columns[0], args.checkpoint_every[0], args.steps, args.memory_fraction)
        return {}

    from dam.precision import fortran_exact_cpu

    fortran_exact_cpu()  # the children inherit XLA_FLAGS
    results = []
    for n in args.columns:
        for ck in args.checkpoint_every:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--case",
                args.case,
                "--columns",
                str(n),
                "--checkpoint-every",
                str(ck),
                "--memory-fraction",
                str(args.memory_fraction),
            ]
            if args.steps:
                cmd += ["--steps", str(args.steps)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                results.append({"columns": n, "checkpoint_every": ck or None, "error": proc.stderr[-2000:]})
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["process_wall_s"] = round(wall, 2)
            results.append(res)
            print(f"columns={n} checkpoint_every={ck or None}: done in {wall:.0f} s", file=sys.stderr)

    comparisons = []
    for n in args.columns:
        plain = next((r for r in results if r["columns"] == n and r.get("checkpoint_every") is None), None)
        for r in results:
            if r["columns"] != n or r.get("checkpoint_every") is None or plain is None:
                continue
            entry = {"columns": n, "checkpoint_every": r["checkpoint_every"]}
            for key in ("xla_temp_bytes", "peak_rss_bytes", "run_s", "compile_s"):
                if key in r and key in plain and plain[key]:
                    entry[f"{key}_ratio"] = round(r[key] / plain[key], 4)
            if "grad" in r and "grad" in plain:
                entry["grad_max_rel_diff"] = _max_rel_diff(plain["grad"], r["grad"])
            comparisons.append(entry)
    for r in results:
        r.pop("grad", None)
    report = {
        "benchmark": "gradient_memory",
        "machine": _machine(),
        "results": results,
        "checkpoint_vs_plain": comparisons,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        write_text(args.json, text + "\n")
    return report


if __name__ == "__main__":
    main()
