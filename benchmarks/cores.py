"""Throughput of the soil column on one core, on all cores in one process, and in one pinned process per core.

The workload of the Fortran comparison (docs/performance.md): the heterogeneous columns of ``soil_throughput.py``,
10,000 columns x 1,000 half-hourly steps by default, the physics forward (``run(..., observe=None)``). Each
configuration runs in fresh child processes (``multiprocessing``, spawn) whose CPU affinity is set before JAX
starts, so every XLA thread stays on its cores:

* ``1 core``: one process pinned to one core, all columns; the baseline of every ratio;
* ``1 process``: one process on all cores (XLA's thread pool), all columns;
* ``N processes``: N processes, each pinned to its group of cores (``dam.local_processes.core_groups``, as
  ``dam grid-run --local-processes N`` pins them) with its share of the same columns.

The processes compile and run once, then wait at a barrier; each timed repeat starts at a barrier and lasts until
the last process is done (best of ``--repeats``). ``--isa`` runs each configuration with XLA's native instruction
set and with the CLI's Fortran-exact cap (``dam.precision.fortran_exact_cpu``: AVX, no fused multiply-adds).
``--grid`` adds the user's path end to end: ``dam grid-run`` on a synthetic grid (``dam make-grid``) with one
process and with ``--local-processes N``, wall time including start-up and compilation.

Writes JSON (machine, settings, rows, the target) and a PNG next to it::

    python benchmarks/cores.py                       # about 5 minutes on 2 CPU cores
    python benchmarks/cores.py --columns 2000 --steps 96 --repeats 1 --isa native --output /tmp/cores.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import FORTRAN_COLUMN_STEPS_PER_S, machine_info

from dam.io_safety import save_figure, write_text

HERE = Path(__file__).resolve().parent
TARGET = {"processes_over_one_core": 2.0, "condition": "dam on 2 cores >= 2x dam on 1 core (issue 17), float64"}


def _child(cores, share, args, barrier, results) -> None:
    """One process of a configuration: its columns ``share`` (start, stop) of the workload, pinned to ``cores``."""
    os.sched_setaffinity(0, cores)  # before JAX starts its threads: they inherit it
    if args["isa"] == "avx":
        from dam.precision import fortran_exact_cpu

        fortran_exact_cpu()
    import jax
    from _common import make_columns

    from dam import physics
    from dam.precision import resolve_dtype

    dtype = resolve_dtype(args["dtype"])
    params, state, forcing, grid = make_columns(args["columns"], args["steps"], dtype)
    a, b = share
    params, state = jax.tree_util.tree_map(lambda x: x[a:b], (params, state))
    forcing = jax.tree_util.tree_map(lambda x: x[:, a:b], forcing)
    options = physics.SoilOptions(dt_s=1800.0)
    run = jax.jit(lambda p, s, f: physics.run(s, f, p, grid, options, observe=None, finite_check=False)[0])
    jax.block_until_ready(run(params, state, forcing))  # compile and warm
    times = []
    for _ in range(args["repeats"]):
        barrier.wait()
        t0 = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes of the machine
        jax.block_until_ready(run(params, state, forcing))
        times.append((t0, time.monotonic()))
    results.put(times)


def measure(name: str, groups: list[list[int]], args: dict) -> dict:
    """Run the workload split over one process per core group; best repeat's throughput."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(groups)), ctx.Queue()
    bounds = np.linspace(0, args["columns"], len(groups) + 1).round().astype(int)
    procs = [
        ctx.Process(target=_child, args=(g, (int(a), int(b)), args, barrier, results))
        for g, a, b in zip(groups, bounds[:-1], bounds[1:], strict=True)
    ]
    for p in procs:
        p.start()
    out = [results.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"{name}: a process failed with exit code {p.exitcode}")
    repeats = [max(t[k][1] for t in out) - min(t[k][0] for t in out) for k in range(args["repeats"])]
    seconds = min(repeats)
    return {
        "config": name,
        "isa": args["isa"],
        "dtype": args["dtype"],
        "processes": len(groups),
        "cores": [list(g) for g in groups],
        "columns": args["columns"],
        "steps": args["steps"],
        "seconds": seconds,
        "repeats_s": repeats,
        "column_steps_per_s": args["columns"] * args["steps"] / seconds,
    }


def grid_runs(n: int, lat: int, lon: int, steps: int) -> list[dict]:
    """``dam grid-run`` with one process and with ``--local-processes n`` on the same synthetic grid."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DAM_COMPILE_CACHE": "off"}  # compile in every run, as a first run does
        for label, extra in (("grid-run, 1 process", []), (f"grid-run, --local-processes {n}", [str(n)])):
            folder = Path(tmp) / f"grid{len(rows)}"
            dam = [sys.executable, "-m", "dam.cli"]
            make = [*dam, "make-grid", str(folder), "--lat", str(lat), "--lon", str(lon), "--steps", str(steps)]
            subprocess.run(make, check=True, env=env, capture_output=True)
            cmd = [*dam, "grid-run", str(folder / "grid_run.yaml"), "--quiet"]
            t0 = time.monotonic()
            subprocess.run([*cmd, *(["--local-processes", *extra] if extra else [])], check=True, env=env,
                           capture_output=True)  # fmt: skip
            seconds = time.monotonic() - t0
            rows.append({"config": label, "processes": n if extra else 1, "grid": [lat, lon], "steps": steps,
                         "seconds": seconds})  # fmt: skip
    rows[1]["speedup"] = rows[0]["seconds"] / rows[1]["seconds"]
    return rows


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    rows = result["rows"]
    labels = [f"{r['config']}\n{r['isa']}" for r in rows]
    colors = ["tab:blue" if r["isa"] == "native" else "tab:orange" for r in rows]
    ax.barh(labels, [r["column_steps_per_s"] for r in rows], color=colors)
    for r, label in zip(rows, labels, strict=True):
        ax.text(r["column_steps_per_s"], label, f" {r['x_one_core']:.2f}x", va="center", fontsize=8)
    ax.axvline(FORTRAN_COLUMN_STEPS_PER_S[result["settings"]["dtype"]], color="k", ls=":", lw=1,
               label="Fortran Noah-MP, 1 core (benchmarks/_common.py)")  # fmt: skip
    ax.set_xlabel(f"column-steps/s ({result['settings']['dtype']}, {result['settings']['columns']} columns)")
    ax.set_title("soil column: ratios to 1 core of the same ISA and run")
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12 * max(r["column_steps_per_s"] for r in rows))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=120, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    from dam.local_processes import available_cores, core_groups

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--columns", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--isa", nargs="+", choices=["native", "avx"], default=["native", "avx"])
    p.add_argument("--grid", nargs=3, type=int, metavar=("LAT", "LON", "STEPS"), default=None,
                   help="also time dam grid-run on a synthetic grid of this size")  # fmt: skip
    p.add_argument("--output", type=Path, default=HERE / "results" / "cores.json")
    a = p.parse_args(argv)
    cores = available_cores()
    n = len(cores)
    configs = [("1 core", [cores[:1]]), ("1 process", [cores]), (f"{n} processes", core_groups(n))]
    rows = []
    for isa in a.isa:
        settings = {"columns": a.columns, "steps": a.steps, "dtype": a.dtype, "repeats": a.repeats, "isa": isa}
        for name, groups in configs:
            rows.append(measure(name, groups, settings))
        base = rows[-3]["column_steps_per_s"]
        for row in rows[-3:]:
            row["x_one_core"] = row["column_steps_per_s"] / base
        for row in rows[-3:]:
            print(f"{isa:6s} {row['config']:12s} {row['column_steps_per_s']:10.3e} column-steps/s "
                  f"{row['x_one_core']:5.2f}x 1 core", flush=True)  # fmt: skip
    ratios = {r["isa"]: r["x_one_core"] for r in rows if r["processes"] == n}  # one pinned process per core
    result = {
        "machine": machine_info() | {"affinity": cores},
        "settings": vars(a) | {"output": str(a.output)},
        "rows": rows,
        "target": TARGET
        | {"measured": ratios, "met": n >= 2 and min(ratios.values()) >= TARGET["processes_over_one_core"]},
        "fortran_reference_column_steps_per_s": FORTRAN_COLUMN_STEPS_PER_S,
    }
    if a.grid:
        result["grid_runs"] = grid_runs(n, *a.grid)
        for r in result["grid_runs"]:
            print(f"{r['config']:30s} {r['seconds']:7.1f} s" + (f"  {r['speedup']:.2f}x" if "speedup" in r else ""))
    write_text(a.output, json.dumps(result, indent=1))
    _plot(result, a.output.with_suffix(".png"))
    print(f"wrote {a.output} and {a.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
