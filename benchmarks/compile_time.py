"""Compile time of the soil column, the station model and the station model's gradient, with and without the
persistent compilation cache of the ``dam`` CLI (dam.compile_cache).

The programs are compiled as dam compiles them: the soil column as ``dam soil-column`` and the station forward
as ``dam run-station`` run them (with the plausibility guards of dam.physics.guards), the station gradient as
calibration and training take it (unguarded). Each program is compiled in a fresh Python process three times:
without a cache, then twice with one new, empty cache folder (the first fills it, the second is what a repeated
CLI command pays). Compile time is the wall time of ``jit(f).lower(...).compile()``; "cold / cached" says what
the cache saves.

    python benchmarks/compile_time.py [--steps 192] [--output benchmarks/results/compile_time.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info

from dam.io_safety import write_text

PROGRAMS = ("soil_column", "station_forward", "station_gradient")


def _program(name: str, steps: int):
    """(function, arguments) of one program at the shipped Bondville site (float64, Fortran-exact CPU)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from dam import physics
    from dam.physics.station import run_station
    from dam.site_run import setup_station
    from dam.sites import load_site

    if name == "soil_column":
        from dam.cases import read_case, shipped_case

        case = read_case(shipped_case("bondville_soil"))
        params, state0, forcing = case.as_dtype(jnp.float64)
        forcing = jax.tree.map(lambda x: x[:steps], forcing)
        f = lambda p: physics.run(state0, forcing, p, case.grid, case.options)[0].smc  # noqa: E731
        return f, (params,)
    setup = setup_station(load_site("bondville_1998"), start="1998-05-01")
    frc = jax.tree.map(lambda x: x[:steps], setup.forcing)

    def mean_top_moisture(dksat_scale):
        params = eqx.tree_at(lambda p: p.soil.dksat, setup.params, setup.params.soil.dksat * dksat_scale)
        states = run_station(setup.state0, frc, params, setup.grid, setup.options, checkpoint_every=48,
                             finite_check=guarded)[1][0]  # fmt: skip
        return jnp.mean(states.soil.smc[:, 0])

    guarded = name == "station_forward"  # as run-station runs it; calibration and training run unguarded
    return (mean_top_moisture if guarded else jax.grad(mean_top_moisture)), (jnp.float64(1.0),)


def _child(name: str, steps: int, cache: str) -> None:
    from dam.precision import enable_x64, fortran_exact_cpu

    fortran_exact_cpu()
    enable_x64()
    if cache:
        from dam.compile_cache import enable_compile_cache

        enable_compile_cache(Path(cache), min_compile_s=0.0)
    import jax

    f, args = _program(name, steps)
    lowered = jax.jit(f).lower(*args)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    print(json.dumps({"compile_s": compile_s}))


def _measure(name: str, steps: int, cache: str) -> float:
    env = {**os.environ, "DAM_COMPILE_CACHE": "off"}
    cmd = [sys.executable, __file__, "--child", name, "--steps", str(steps), "--cache", cache]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["compile_s"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=192, help="time steps of each program (scan length)")
    ap.add_argument("--output", default=None, help="JSON file for the results (default: print only)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.steps, args.cache)
        return {}
    rows = {}
    for name in PROGRAMS:
        with tempfile.TemporaryDirectory() as cache:
            cold = _measure(name, args.steps, "")
            fill = _measure(name, args.steps, cache)
            cached = _measure(name, args.steps, cache)
        rows[name] = {"cold_s": cold, "first_with_cache_s": fill, "cached_s": cached, "cold_over_cached": cold / cached}
        print(f"{name:18s} cold {cold:7.1f} s  first with cache {fill:7.1f} s  cached {cached:6.2f} s  "
              f"({cold / cached:.0f}x)", flush=True)  # fmt: skip
    result = {"steps": args.steps, "programs": rows, "machine": machine_info()}
    if args.output:
        write_text(args.output, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
