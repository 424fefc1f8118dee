"""Where a soil-column gradient spends its time: a ``jax.profiler`` trace of XLA:CPU's kernels, grouped.

The workload of ``gradient_cost.py`` (heterogeneous columns, steps of 1800 s): its forward, and its value and
gradient with per-step checkpoints (``--derivative-pow``: the step's own derivative or its ``exp(y log x)`` twin).
For each, the kernels launched per step and their time, grouped by pass (``forward``: traced under ``jvp``, the
forward pass of the gradient; ``backward``: under ``transpose``, including what the backward pass recomputes) and by
the JAX primitive and the source line that the compiled HLO's metadata records. The profiler adds its own overhead
to every kernel, so compare groups and kernel counts, not absolute times against ``gradient_cost.py``. Source lines
stop at a ``custom_jvp`` boundary: a twin's lines show as ``tangents.py``.

Usage::

    python benchmarks/gradient_profile.py                                # 1e4 columns x 24 steps, float64
    python benchmarks/gradient_profile.py --derivative-pow libm --top 30 --json profile.json
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from _common import machine_info, make_columns

from dam import physics
from dam.io_safety import write_text

jax.config.update("jax_enable_x64", True)
CONTAINERS = ("while", "conditional", "call")  # kernels that only wrap other kernels
KERNEL = re.compile(r"[a-z][\w\-]*(\.\d+)?")  # an HLO instruction's name (host-side events have other names)


def hlo_sources(hlo: str) -> dict[str, tuple[str, str, str]]:
    """Instruction name -> (pass, primitive, ``file:function:line``) from a compiled module's text."""

    def table(name: str, nxt: str) -> str:
        return hlo.split(f"\n{name}\n", 1)[1].split(f"\n{nxt}\n", 1)[0] if f"\n{name}\n" in hlo else ""

    files = dict(re.findall(r'^(\d+) "([^"]+)"', table("FileNames", "FunctionNames"), re.M))
    funcs = dict(re.findall(r'^(\d+) "([^"]+)"', table("FunctionNames", "FileLocations"), re.M))
    locs = re.findall(r"^(\d+) \{file_name_id=(\d+) function_name_id=(\d+) line=(\d+)", hlo, re.M)
    where = {i: f"{Path(files.get(f, '?')).name}:{funcs.get(fn, '?')}:{line}" for i, f, fn, line in locs}
    # parent_frame_id is printed one above the parent's id (0: none)
    frame_rows = re.findall(r"^(\d+) \{file_location_id=(\d+) parent_frame_id=(\d+)", hlo, re.M)
    frames = {i: (loc, str(int(parent) - 1)) for i, loc, parent in frame_rows}

    def caller(frame: str) -> str:  # the innermost line outside the arithmetic helpers of dam.physics._safe
        line = "?"
        while frame in frames:
            loc, frame = frames[frame]
            line = where.get(loc, "?")
            if not line.startswith("_safe.py"):
                break
        return line

    out = {}
    for name, op, frame in re.findall(r'^\s*%?([\w.\-]+) = .*?op_name="([^"]*)"(?: stack_frame_id=(\d+))?', hlo, re.M):
        kind = "backward" if "transpose(" in op else "forward" if "jvp(" in op else "primal"
        out[name] = (kind, op.rsplit("/", 1)[-1], caller(frame))
    return out


def kernel_times(compiled, args, runs: int) -> tuple[collections.Counter, int]:
    """Summed duration (ns) per kernel name over ``runs`` calls, from a profiler trace, and the kernels launched."""
    from jax.profiler import ProfileData

    jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        for _ in range(runs):
            jax.block_until_ready(compiled(*args))
        jax.profiler.stop_trace()
        trace = ProfileData.from_file(str(next(Path(folder).rglob("*.xplane.pb"))))
    totals, launched = collections.Counter(), 0
    for plane in trace.planes:
        for line in plane.lines:
            for event in line.events:
                if KERNEL.fullmatch(event.name) and not event.name.startswith(CONTAINERS):
                    totals[event.name] += event.duration_ns
                    launched += 1
    return totals, launched


def profile(compiled, args, n_steps: int, runs: int, top: int) -> dict:
    """Kernels per step, kernel milliseconds per run by pass, and the ``top`` groups by primitive and by line."""
    sources = hlo_sources(compiled.as_text())
    totals, launched = kernel_times(compiled, args, runs)
    by_pass, by_primitive, by_line = collections.Counter(), collections.Counter(), collections.Counter()
    for name, ns in totals.items():
        kind, primitive, line = sources.get(name, ("unattributed", re.sub(r"[.\d]+$", "", name), "?"))
        ms = ns / 1e6 / runs
        by_pass[kind] += ms
        by_primitive[f"{kind} {primitive}"] += ms
        by_line[f"{kind} {line}"] += ms
    return {
        "kernels_per_step": launched / runs / n_steps,
        "kernel_ms_per_run": sum(by_pass.values()),
        "by_pass_ms": dict(by_pass.most_common()),
        "by_primitive_ms": dict(by_primitive.most_common(top)),
        "by_line_ms": dict(by_line.most_common(top)),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--columns", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=24, help="steps of 1800 s")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--derivative-pow", choices=("exp_log", "libm"), default="exp_log")
    p.add_argument("--runs", type=int, default=3, help="profiled calls of each function")
    p.add_argument("--top", type=int, default=20, help="groups listed per table")
    p.add_argument("--json", help="write the machine and the profiles here")
    a = p.parse_args(argv)
    params, state, forcing, grid = make_columns(a.columns, a.steps, getattr(jnp, a.dtype))
    options = physics.SoilOptions(dt_s=1800.0, derivative_pow=a.derivative_pow)

    def forward(p, s, f, every=None):
        return physics.run(s, f, p, grid, options, observe=None, finite_check=False, checkpoint_every=every)[0]

    def loss(p, s, f):
        out = forward(p, s, f, every=1)
        return jnp.sum(out.smc) + 1e-3 * jnp.sum(out.t)

    functions = {"forward": forward, "gradient": jax.value_and_grad(loss, (0, 1))}
    result = {"machine": machine_info(), "settings": vars(a), "profiles": {}}
    for name, fn in functions.items():
        compiled = jax.jit(fn).lower(params, state, forcing).compile()
        prof = profile(compiled, (params, state, forcing), a.steps, a.runs, a.top)
        result["profiles"][name] = prof
        print(f"\n{name}: {prof['kernels_per_step']:.0f} kernels per step, {prof['kernel_ms_per_run']:.1f} ms of "
              f"kernels per run (with the profiler's overhead); by pass: "
              + ", ".join(f"{k} {v:.1f} ms" for k, v in prof["by_pass_ms"].items()))  # fmt: skip
        for table in ("by_primitive_ms", "by_line_ms"):
            for key, ms in prof[table].items():
                print(f"  {ms:9.2f} ms  {key}")
    if a.json:
        write_text(a.json, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
