"""Scaling of the soil column: throughput against columns and devices, memory per column, experiment time.

Four parts, each printed as a table with its ratios to a baseline measured in the same run, and written to one
JSON file (machine info, all rows, the targets and whether they are met) with a PNG plot next to it:

1. Column sweep: forward and forward+gradient column-steps/s for 1 ... 1e6 heterogeneous columns (the columns
   of ``soil_throughput.py``), per dtype, with the gradient/forward time ratio. Baselines: the smallest column
   count of the same sweep, and the Fortran single-core figure. The gradient (20-40 s to compile on 2 CPU
   cores) is skipped, with the reason recorded, at sizes not in ``--grad-columns`` and where XLA's buffer
   assignment says it would not fit in memory. Above ``--column-chunk`` columns the forward is also timed
   with ``run(..., column_chunk=N)`` (columns in cache-sized chunks, one after another), against the plain
   forward of the same size.
2. Memory per column: XLA's compiled memory analysis (argument, output and temporary bytes) of every compiled
   sweep function divided by the column count; flat once per-call constants are amortised.
3. Device scaling: the forward over a column mesh (``dam.sharding``) on D = 1, 2, 4, 8 devices, weak (fixed
   columns per device) and strong (fixed total columns), efficiency relative to D = 1 of the same run. With
   more than one accelerator JAX's real devices are used; otherwise each D runs in a child process with
   ``XLA_FLAGS=--xla_force_host_platform_device_count=D``: emulated devices share the host's cores, so the
   efficiency then measures sharding overhead, not hardware scaling.
4. End-to-end experiment time (opt-in, minutes): ``dam experiment CONFIG`` into a temporary folder, or the
   ``timings.json`` of an existing run folder; total and per-stage seconds.

Gradient: ``jax.value_and_grad`` of a scalar of the final state with respect to all parameters and the initial
state, through ``run(..., checkpoint_every=max(8, sqrt(T)))`` (segments: memory for long runs, one extra forward),
as in ``soil_throughput.py``; and through ``checkpoint_every=1`` (every step rematerialised: memory grows with T
states and the water sub-steps' carries). Timings are the best of ``--repeats`` calls after compilation and one
untimed call (fewer once ``--time-budget`` is spent).

The JSON is rewritten after every column-sweep row (marked ``partial`` until the run ends), so a killed run keeps
its finished rows; stopped by SIGINT (Ctrl-C, ``timeout -s INT``), it also prints the tables and draws the plot
of what it finished, marked ``interrupted``.

Usage::

    python benchmarks/scaling.py                          # full sweep (tens of minutes on 2 CPU cores)
    python benchmarks/scaling.py --quick                  # smoke test, about a minute on 2 CPU cores
    python benchmarks/scaling.py --columns 1 100 10000 1000000 --dtypes float32 --steps 24 \\
        --grad-columns 1 100 10000 --devices 1 2 4 8 --experiment-run runs/quick
    python benchmarks/scaling.py --experiment dam/data/experiments/quick.yaml   # adds ~7 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import FORTRAN_COLUMN_STEPS_PER_S, best_time, machine_info, make_columns

from dam.io_safety import save_figure, write_text

HERE = Path(__file__).resolve().parent
EMULATED_NOTE = "emulated: efficiency here measures sharding overhead, not hardware scaling"
CHILD_MARK = "SCALING_JSON "
MIN_TIME_S = 0.5  # short calls are repeated until this much time is spent (best of many)
MEMORY_FRACTION = 0.6  # run a configuration only if its new XLA buffers take at most this share of free memory
TARGETS = {
    "forward_float32_1e6_columns_column_steps_per_s": {"target": 1e9, "condition": "one H100, float32, 1e6 columns"},
    "weak_scaling_efficiency": {"target": 0.8, "condition": "largest device count, real devices"},
    "gradient_over_forward": {
        "target": 4.0,
        "condition": "largest column count with both, every dtype, checkpoint segments of max(8, sqrt(T)) steps",
    },
}
QUICK = {
    "columns": [1, 16],
    "dtypes": ["float32"],
    "steps": 8,
    "grad_columns": [1],
    "devices": [1, 2],
    "weak_columns": 16,
    "strong_columns": 32,
    "repeats": 2,
    "column_chunk": 8,
}


# ------------------------------------------------------------------------------------------ helpers
def _dtype(name: str):
    import jax.numpy as jnp

    return {"float32": jnp.float32, "float64": jnp.float64}[name]


def _soil_functions(grid, n_steps: int, column_chunk: int | None = None) -> dict:
    """Functions of (params, state, forcing) by row kind: the forward (final state), the forward in column
    chunks, and the value-and-gradient of a scalar of the final state with segment and per-step checkpoints."""
    import jax
    import jax.numpy as jnp

    from dam import physics

    options = physics.SoilOptions(dt_s=1800.0)
    checkpoint = max(8, int(np.sqrt(n_steps)))

    def forward(params, state, forcing, **kwargs):
        return physics.run(state, forcing, params, grid, options, observe=None, finite_check=False, **kwargs)[0]

    def loss(params, state, forcing, checkpoint_every):
        final = forward(params, state, forcing, checkpoint_every=checkpoint_every)
        return jnp.sum(final.smc) + jnp.sum(final.t) * 1e-3

    grad = jax.value_and_grad(loss, argnums=(0, 1))
    return {
        "forward": forward,
        "forward_chunked": lambda p, s, f: forward(p, s, f, column_chunk=column_chunk),
        "gradient": lambda p, s, f: grad(p, s, f, checkpoint),
        "gradient_per_step": lambda p, s, f: grad(p, s, f, 1),
    }


def _memory(compiled, n_columns: int) -> dict | None:
    """XLA's buffer assignment of a compiled function, in bytes and bytes per column."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias")}
    out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    out.update({f"{k}_per_column": v / n_columns for k, v in list(out.items())})
    return out


def _free_bytes() -> int:
    """Free memory of the default device (accelerator memory, or host memory for the CPU)."""
    import jax
    import psutil

    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return int(psutil.virtual_memory().available)


def _with_cpu_share(fn, *args, **kwargs) -> tuple:
    """``fn(*args, **kwargs)`` and this process's CPU seconds per wall second meanwhile (all threads): well
    below the core count on an idle machine means other processes took the cores (a shared machine's load)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.process_time() - c0) / (time.perf_counter() - t0)


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


# ------------------------------------------------------------------------------------------ 1-2: column sweep
def _measure(kind: str, fn, data, n: int, steps: int, dtype: str, args, per_column: dict) -> dict:
    """Compile ``fn`` (AOT, for the memory analysis), check that it fits, time it; one row."""
    import jax

    row = {"kind": kind, "dtype": dtype, "columns": n, "steps": steps, "seconds": None, "skipped": None}
    key = (kind, dtype)
    free = _free_bytes()
    if kind.startswith("gradient") and args.grad_columns is not None and n not in args.grad_columns:
        row["skipped"] = "not in --grad-columns (time budget)"
        return row
    if key in per_column and per_column[key] * n > MEMORY_FRACTION * free:  # skip the compile too
        row["skipped"] = (
            f"predicted {_gib(per_column[key] * n)} of output and temporary buffers (from smaller runs) > "
            f"{MEMORY_FRACTION:.0%} of {_gib(free)} free"
        )
        return row
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*data).compile()
    row["compile_s"] = time.perf_counter() - t0
    row["memory"] = _memory(compiled, n)
    if row["memory"] is not None:  # the arguments are already allocated: outputs and temporaries must fit
        needed = row["memory"]["output"] + row["memory"]["temp"]
        per_column[key] = needed / n
        if needed > MEMORY_FRACTION * free:
            row["skipped"] = f"output and temporary buffers {_gib(needed)} > {MEMORY_FRACTION:.0%} of {_gib(free)} free"
            return row
    timing = {"repeats": args.repeats, "budget_s": args.time_budget, "min_time_s": MIN_TIME_S}
    (seconds, calls), row["cpu_cores_busy"] = _with_cpu_share(best_time, compiled, *data, **timing)
    row.update(seconds=seconds, timed_calls=calls, column_steps_per_s=n * steps / seconds)
    row["x_fortran"] = row["column_steps_per_s"] / FORTRAN_COLUMN_STEPS_PER_S[dtype]
    return row


def column_sweep(args, rows: list[dict], on_row: Callable[[], None] = lambda: None) -> list[dict]:
    """Forward and gradient rows for every dtype x column count, appended to ``rows`` as each is measured (an
    interrupted sweep keeps the finished ones; ``on_row`` is called after each), with their ratios to the
    forward of the same size."""
    from tqdm import tqdm

    per_column = {}
    configs = [(d, n) for d in args.dtypes for n in sorted(args.columns)]
    bar = tqdm(configs, desc="column sweep", disable=args.no_progress, file=sys.stderr)
    for dtype, n in bar:
        bar.set_postfix_str(f"{dtype} {n} columns")
        params, state, forcing, grid = make_columns(n, args.steps, _dtype(dtype))
        functions = _soil_functions(grid, args.steps, args.column_chunk or None)
        if not args.column_chunk or n <= args.column_chunk:
            del functions["forward_chunked"]
        data = (params, state, forcing)
        fwd = None  # the forward is measured first
        for kind, fn in functions.items():
            row = _measure(kind, fn, data, n, args.steps, dtype, args, per_column)
            fwd = fwd or row
            if fwd["seconds"] and row["seconds"] and kind.startswith("gradient"):
                row["gradient_over_forward"] = row["seconds"] / fwd["seconds"]
            if fwd["seconds"] and row["seconds"] and kind == "forward_chunked":
                row.update(column_chunk=args.column_chunk, x_unchunked=fwd["seconds"] / row["seconds"])
            rows.append(row)
            on_row()
        del params, state, forcing, data
    return rows


def add_baselines(rows: list[dict]) -> None:
    """Each row's throughput relative to the smallest column count of the same kind and dtype."""
    for row in rows:
        same = (r for r in rows if r["kind"] == row["kind"] and r["dtype"] == row["dtype"] and r["seconds"])
        base = next(same, None)
        if row["seconds"]:
            row["x_smallest"] = row["column_steps_per_s"] / base["column_steps_per_s"]
            row["baseline_columns"] = base["columns"]


# ------------------------------------------------------------------------------------------ 3: device scaling
def _sharded_forward(devices: list, n_columns: int, args) -> dict:
    """Time the forward with ``n_columns`` sharded over ``devices``: :func:`dam.sharding.run_sharded` end to
    end (padding and placement included), and the same compiled computation on already placed columns."""
    import equinox as eqx

    from dam import physics
    from dam.sharding import column_mesh, pad_axis, padded_size, run_sharded, shard

    mesh = column_mesh(devices)
    params, state, forcing, grid = make_columns(n_columns, args.steps, _dtype(args.scaling_dtype))
    options = physics.SoilOptions(dt_s=1800.0)
    kw = {"observe": None, "finite_check": False}
    timing = {"repeats": args.repeats, "budget_s": args.time_budget, "min_time_s": MIN_TIME_S}
    end_to_end = lambda: run_sharded(physics.run, state, forcing, params, grid, options, mesh=mesh, **kw)[0]  # noqa: E731
    run_sharded_s, _ = best_time(end_to_end, **timing)  # its first call compiles
    target = padded_size(n_columns, mesh)
    placed = (
        shard(pad_axis(state, n_columns, target), mesh),
        shard(pad_axis(forcing, n_columns, target, axis=1), mesh, axis=1),
        shard(pad_axis(params, n_columns, target), mesh),
    )
    compute = eqx.filter_jit(physics.run)  # finds run_sharded's compiled computation in JAX's cache
    (compute_s, calls), busy = _with_cpu_share(best_time, lambda: compute(*placed, grid, options, **kw)[0], **timing)
    return {
        "devices": len(devices),
        "columns": n_columns,
        "padded_columns": target,
        "columns_per_device": target // len(devices),
        "steps": args.steps,
        "dtype": args.scaling_dtype,
        "seconds": compute_s,
        "timed_calls": calls,
        "column_steps_per_s": n_columns * args.steps / compute_s,
        "run_sharded_s": run_sharded_s,
        "cpu_cores_busy": busy,
        "device_kind": str(devices[0].device_kind),
    }


def _scaling_point(d: int, args, devices: list | None) -> list[dict]:
    """Weak and strong rows for ``d`` devices: real ``devices[:d]``, or a child with ``d`` emulated devices."""
    if devices is not None:
        weak = _sharded_forward(devices[:d], args.weak_columns * d, args)
        same = args.strong_columns == args.weak_columns * d  # one measurement serves both
        strong = weak if same else _sharded_forward(devices[:d], args.strong_columns, args)
        return [{"mode": "weak", **weak}, {"mode": "strong", **strong}]
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    env = {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={d}".strip()}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-devices", str(d), "--steps", str(args.steps)]
    cmd += ["--scaling-dtype", args.scaling_dtype, "--weak-columns", str(args.weak_columns)]
    cmd += ["--strong-columns", str(args.strong_columns), "--repeats", str(args.repeats)]
    cmd += ["--time-budget", str(args.time_budget)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(CHILD_MARK)]
    if proc.returncode or not lines:
        raise RuntimeError(f"device-scaling child (D={d}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(CHILD_MARK) :])


def _child(args) -> int:
    """Entry of a device-scaling child: measure weak and strong on all (emulated) devices, print JSON."""
    import jax

    if args.scaling_dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    devices = jax.devices()
    if len(devices) != args.child_devices:
        raise RuntimeError(f"expected {args.child_devices} devices, JAX has {len(devices)}")
    print(CHILD_MARK + json.dumps(_scaling_point(len(devices), args, devices)), flush=True)
    return 0


def device_scaling(args) -> dict:
    """Weak and strong scaling rows for ``args.devices``, efficiency relative to D = 1 of the same run."""
    import jax
    from tqdm import tqdm

    accelerators = [d for d in jax.devices() if d.platform != "cpu"]
    real = len(accelerators) > 1
    counts = sorted(d for d in args.devices if not real or d <= len(accelerators))
    rows = []
    for d in tqdm(counts, desc="device scaling", disable=args.no_progress, file=sys.stderr):
        rows += _scaling_point(d, args, accelerators if real else None)
    for mode in ("weak", "strong"):
        base = next(r for r in rows if r["mode"] == mode and r["devices"] == min(counts))
        for r in (r for r in rows if r["mode"] == mode):
            speedup = base["seconds"] / r["seconds"] * (r["columns"] / base["columns"])
            r["speedup"] = speedup  # throughput relative to the smallest device count
            r["efficiency"] = speedup * base["devices"] / r["devices"]
            r["run_sharded_over_compute"] = r["run_sharded_s"] / r["seconds"]
    note = "real devices" if real else f"{EMULATED_NOTE} ({os.cpu_count()} host cores shared by all devices)"
    return {"emulated": not real, "note": note, "rows": rows}


# ------------------------------------------------------------------------------------------ 4: experiment time
def experiment_timings(config: str | None = None, run_dir: str | None = None) -> dict:
    """Run ``dam experiment CONFIG`` into a temporary folder (or read ``run_dir``); its timings.json, summed."""
    from dam.experiment import load_config

    wall = None
    if config is not None:
        name = load_config(config).name  # validates the config before minutes of work
        with tempfile.TemporaryDirectory(prefix="dam_experiment_") as tmp:
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "dam.cli", "experiment", str(config), "--output-dir", tmp, "--quiet"]
            subprocess.run(cmd, check=True)
            wall = time.perf_counter() - t0
            timings = json.loads((Path(tmp) / "timings.json").read_text())
        source = f"dam experiment {config}"
    else:
        timings = json.loads((Path(run_dir) / "timings.json").read_text())
        import yaml

        cfg_path = Path(run_dir) / "config.yaml"
        name = (yaml.safe_load(cfg_path.read_text()) or {}).get("name") if cfg_path.is_file() else None
        source = f"existing run folder {run_dir}"
    stages = timings["stages"]
    per_model: dict[str, float] = {}
    for key, seconds in stages.items():
        model = key.split("/", 1)[-1]
        per_model[model] = per_model.get(model, 0.0) + seconds
    stage_sum = sum(stages.values())
    return {
        "source": source,
        "config_name": name,
        "total_seconds": timings["total_seconds"],
        "wall_seconds": wall,
        "sum_of_stage_seconds": stage_sum,
        # Stages loaded from an earlier (resumed) run keep their first timing but do not count in the total.
        "resumed": stage_sum > 1.01 * timings["total_seconds"],
        "stages": stages,
        "per_model_seconds": per_model,
    }


# ------------------------------------------------------------------------------------------ targets, output
def check_targets(sweep: list[dict], scaling: dict | None) -> dict:
    """Each target's measured value and whether it is met (None where this run cannot tell)."""
    import jax

    out = {k: {**v, "value": None, "met": None, "note": ""} for k, v in TARGETS.items()}
    t = out["forward_float32_1e6_columns_column_steps_per_s"]
    row = next((r for r in sweep if (r["kind"], r["dtype"], r["columns"]) == ("forward", "float32", 10**6)), None)
    if row and row["seconds"]:
        kinds = {str(d.device_kind) for d in jax.devices()}
        t["value"] = row["column_steps_per_s"]
        t["note"] = f"measured on {', '.join(sorted(kinds))} ({jax.default_backend()})"
        if jax.default_backend() == "gpu":  # the target is for one H100-class GPU: a CPU figure cannot tell
            t["met"] = row["column_steps_per_s"] >= t["target"]
        else:
            t["note"] += "; not applicable: the target is for a GPU"
    else:
        t["note"] = "1e6 float32 columns not in this run"
    t = out["weak_scaling_efficiency"]
    weak = [r for r in (scaling or {}).get("rows", []) if r["mode"] == "weak"]
    if len(weak) > 1:
        top = max(weak, key=lambda r: r["devices"])
        t.update(value=top["efficiency"], devices=top["devices"])
        if scaling["emulated"]:
            t["note"] = f"not applicable: {EMULATED_NOTE}"
        else:
            t["met"] = top["efficiency"] >= t["target"]
    t = out["gradient_over_forward"]
    ratios = {}
    for dtype in sorted({r["dtype"] for r in sweep}):
        both = [r for r in sweep if r["dtype"] == dtype and r["kind"] == "gradient" and r.get("gradient_over_forward")]
        if both:
            top = max(both, key=lambda r: r["columns"])
            ratios[dtype] = {"columns": top["columns"], "ratio": top["gradient_over_forward"]}
            per_step = [r for r in sweep if r["kind"] == "gradient_per_step" and r["dtype"] == dtype]
            per_step = [r for r in per_step if r["columns"] == top["columns"] and r.get("gradient_over_forward")]
            if per_step:
                ratios[dtype]["ratio_per_step_checkpoints"] = per_step[0]["gradient_over_forward"]
    if ratios:
        t.update(value=max(v["ratio"] for v in ratios.values()), per_dtype=ratios)
        t["met"] = t["value"] <= t["target"]
    return out


def _table(headers: list[str], rows: list[list]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", floatfmt=".3g", missingval="-")


def print_tables(result: dict) -> None:
    """The sweep, memory, scaling, experiment and target tables (GitHub Markdown)."""
    sweep = result["column_sweep"]
    by_kind = {k: {(r["dtype"], r["columns"]): r for r in sweep if r["kind"] == k} for k in {r["kind"] for r in sweep}}
    fwd, grad = by_kind.get("forward", {}), by_kind.get("gradient", {})
    chunked, per_step = by_kind.get("forward_chunked", {}), by_kind.get("gradient_per_step", {})
    lines = []
    for key, f in fwd.items():
        g, c, s = grad.get(key, {}), chunked.get(key, {}), per_step.get(key, {})
        lines.append(
            [key[0], f"{key[1]:,}", f.get("column_steps_per_s"), f.get("x_smallest"), f.get("x_fortran"),
             c.get("column_steps_per_s"), c.get("x_unchunked"), g.get("column_steps_per_s"), g.get("x_smallest"),
             g.get("gradient_over_forward"), s.get("gradient_over_forward"), f.get("cpu_cores_busy"),
             g.get("cpu_cores_busy"), g.get("skipped") or ""]
        )  # fmt: skip
    print(
        "\nColumn sweep (column-steps/s; x smallest = ratio to the smallest column count of the same sweep; "
        "chunked = column_chunk; grad / fwd with checkpoint segments, and per step; "
        "CPU busy = this process's CPU s per wall s while timing)"
    )
    print(_table(["dtype", "columns", "forward", "x smallest", "x Fortran 1 core", "chunked", "x unchunked",
                  "fwd+grad", "x smallest", "grad / fwd", "per step", "CPU busy fwd", "CPU busy grad",
                  "gradient skipped"], lines))  # fmt: skip
    lines = []
    for key, f in fwd.items():
        fm, gm = f.get("memory") or {}, grad.get(key, {}).get("memory") or {}
        lines.append([key[0], f"{key[1]:,}", fm.get("total_per_column"), fm.get("temp_per_column"),
                      gm.get("total_per_column"), gm.get("temp_per_column")])  # fmt: skip
    steps = sweep[0]["steps"] if sweep else None
    print(f"\nMemory per column, bytes (XLA buffer assignment, {steps} steps of forcing per column)")
    print(_table(["dtype", "columns", "forward total", "forward temp", "gradient total", "gradient temp"], lines))
    if result.get("device_scaling"):
        sc = result["device_scaling"]
        print(f"\nDevice scaling, forward ({sc['note']})")
        lines = [[r["mode"], r["devices"], f"{r['columns']:,}", r["column_steps_per_s"], r["speedup"], r["efficiency"],
                  r["run_sharded_over_compute"], r.get("cpu_cores_busy")] for r in sc["rows"]]  # fmt: skip
        print(_table(["mode", "devices", "columns", "column-steps/s", "x 1 device", "efficiency",
                      "run_sharded / compute", "CPU busy"], lines))  # fmt: skip
    if result.get("experiment"):
        ex = result["experiment"]
        print(f"\nExperiment time ({ex['source']}): total {ex['total_seconds']:.0f} s" + (
            f", stage sum {ex['sum_of_stage_seconds']:.0f} s (resumed run)" if ex["resumed"] else ""))  # fmt: skip
        total = ex["sum_of_stage_seconds"]
        print(_table(["model", "seconds", "share"], [[m, s, s / total] for m, s in ex["per_model_seconds"].items()]))
    print("\nTargets")
    lines = [[k, t["target"], t["value"], {True: "yes", False: "no", None: "n/a"}[t["met"]], t["note"]]
             for k, t in result["targets"].items()]  # fmt: skip
    print(_table(["target", "goal", "measured", "met", "note"], lines))


def plot(result: dict, path: Path) -> None:
    """Throughput and memory per column against columns, gradient/forward ratio, scaling efficiency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = result["column_sweep"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    colors = {"float32": "C0", "float64": "C1"}
    for dtype in sorted({r["dtype"] for r in sweep}):
        c = colors.get(dtype, "C2")
        for kind, style in (("forward", "-o"), ("forward_chunked", ":^"), ("gradient", "--s")):
            rs = [r for r in sweep if r["dtype"] == dtype and r["kind"] == kind and r["seconds"]]
            axes[0, 0].plot([r["columns"] for r in rs], [r["column_steps_per_s"] for r in rs], style, color=c,
                            label=f"{kind} {dtype}")  # fmt: skip
            rm = [r for r in sweep if r["dtype"] == dtype and r["kind"] == kind and r.get("memory")]
            axes[1, 0].plot([r["columns"] for r in rm], [r["memory"]["total_per_column"] for r in rm], style,
                            color=c, label=f"{kind} {dtype}")  # fmt: skip
        axes[0, 0].axhline(FORTRAN_COLUMN_STEPS_PER_S[dtype], color=c, lw=0.8, ls=":", label=f"Fortran 1 core {dtype}")
        for kind, style in (("gradient", "-o"), ("gradient_per_step", "--s")):
            rg = [r for r in sweep if r["dtype"] == dtype and r["kind"] == kind and r.get("gradient_over_forward")]
            label = dtype + ("" if kind == "gradient" else ", per-step checkpoints")
            axes[0, 1].plot([r["columns"] for r in rg], [r["gradient_over_forward"] for r in rg], style, color=c,
                            label=label)  # fmt: skip
    axes[0, 1].axhline(TARGETS["gradient_over_forward"]["target"], color="k", lw=0.8, ls=":", label="target")
    for ax, title, ylabel, yscale, key in (
        (axes[0, 0], "Throughput", "column-steps / s", "log", "seconds"),
        (axes[0, 1], "Forward+gradient time / forward time", "ratio", "linear", "gradient_over_forward"),
        (axes[1, 0], "XLA buffers per column", "bytes per column", "log", "memory"),
    ):
        ax.set(xlabel="columns", ylabel=ylabel, title=title)
        if any(r.get(key) for r in sweep):  # no log axes of nothing (a run interrupted early)
            ax.set(xscale="log", yscale=yscale)
            ax.legend(fontsize=7)
    axes[0, 1].set_ylim(bottom=0)
    ax = axes[1, 1]
    sc = result.get("device_scaling")
    if sc:
        for mode, style in (("weak", "-o"), ("strong", "--s")):
            rs = [r for r in sc["rows"] if r["mode"] == mode]
            ax.plot([r["devices"] for r in rs], [r["efficiency"] for r in rs], style, label=mode)
        ax.axhline(TARGETS["weak_scaling_efficiency"]["target"], color="k", lw=0.8, ls=":", label="weak target")
        ax.set(xlabel="devices", ylabel="efficiency", title="Scaling efficiency (forward)", ylim=(0, 1.2))
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["devices"] for r in sc["rows"] if r["mode"] == "weak"], minor=False)
        ax.set_xticklabels([str(r["devices"]) for r in sc["rows"] if r["mode"] == "weak"])
        ax.minorticks_off()
        if sc["emulated"]:
            ax.text(0.02, 0.02, EMULATED_NOTE, transform=ax.transAxes, fontsize=7)
        ax.legend(fontsize=7)
    else:
        ax.axis("off")
    machine = result["machine"]
    where = machine.get("cpu_model", "") if machine["backend"] == "cpu" else machine.get("device_kind", "")
    fig.suptitle(f"Soil column scaling, {where} / {machine['backend']}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smoke-test preset: {QUICK}")
    p.add_argument("--columns", type=int, nargs="+", default=[10**k for k in range(7)])
    p.add_argument("--dtypes", nargs="+", choices=("float32", "float64"), default=["float32", "float64"])
    p.add_argument("--steps", type=int, default=48, help="steps of 1800 s per run (48: 1e6 float32 columns ~2 GiB)")
    p.add_argument("--grad-columns", type=int, nargs="+", default=None, help="gradient only here (default: all)")
    p.add_argument("--column-chunk", type=int, default=10_000, help="also time column_chunk above this (0: never)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (best is kept)")
    p.add_argument("--time-budget", type=float, default=30.0, help="stop repeating once this many s are spent")
    p.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4, 8], help="device counts (none: skip)")
    p.add_argument("--weak-columns", type=int, default=10_000, help="columns per device, weak scaling")
    p.add_argument("--strong-columns", type=int, default=80_000, help="total columns, strong scaling")
    p.add_argument("--scaling-dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--experiment", metavar="CONFIG", help="also run `dam experiment CONFIG` (minutes) and time it")
    p.add_argument("--experiment-run", metavar="DIR", help="read an existing experiment run folder's timings.json")
    p.add_argument("--output", default=str(HERE / "results" / "scaling.json"), help="JSON; the PNG goes next to it")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--child-devices", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if p.get_default(key) == getattr(args, key):  # explicit options win over the preset
                setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_devices is not None:
        return _child(args)
    import jax

    if "float64" in args.dtypes:
        jax.config.update("jax_enable_x64", True)
    t0 = time.perf_counter()
    result = {"machine": machine_info(), "command": " ".join(["python benchmarks/scaling.py", *(argv or sys.argv[1:])])}
    result["load_average_start"] = os.getloadavg()
    result["settings"] = {k: v for k, v in vars(args).items() if k != "child_devices"}
    result["fortran_baseline_column_steps_per_s"] = FORTRAN_COLUMN_STEPS_PER_S
    result["column_sweep"], result["device_scaling"] = [], None
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(partial: str | None = None) -> None:
        add_baselines(result["column_sweep"])
        result["targets"] = check_targets(result["column_sweep"], result["device_scaling"])
        result["load_average_end"] = os.getloadavg()
        result["benchmark_seconds"] = time.perf_counter() - t0
        result.pop("partial", None)
        if partial:
            result["partial"] = partial
        write_text(out, json.dumps(result, indent=1, default=_json_default))

    try:
        # Written after every row, so that even a hard kill (mid-compile, where SIGINT waits) keeps finished rows.
        column_sweep(args, result["column_sweep"], on_row=lambda: write("running: written after the last row"))
        result["device_scaling"] = device_scaling(args) if args.devices else None
        if args.experiment or args.experiment_run:
            result["experiment"] = experiment_timings(args.experiment, args.experiment_run)
    except KeyboardInterrupt:  # Ctrl-C or `timeout -s INT`: keep what is finished
        result["interrupted"] = "SIGINT: parts and column-sweep rows after the last finished one are missing"
        print(f"\ninterrupted; writing the finished part of the run ({len(result['column_sweep'])} rows)")
    write()
    print_tables(result)
    plot(result, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')} ({result['benchmark_seconds']:.0f} s)")
    return 0


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


if __name__ == "__main__":
    sys.exit(main())
