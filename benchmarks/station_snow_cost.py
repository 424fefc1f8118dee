"""What snow layers cost: the station model's forward year with few and with many snow-layer steps.

Two Fortran Noah-MP v5.2 reference years of the same site (shipped in ``tests/data``): ``bondville`` (Bondville
1998: 111 steps with snow layers) and ``bondville_cold`` (the air 8 K colder: 4,352 steps with up to three snow
layers, frozen soil). Both run the same compiled program (the snow layers live in fixed slots, so a step costs
the same with or without them unless the while loops of phase change and water sub-steps run longer); the
benchmark measures what that means: seconds per year and column-steps per second for 1 and ``--columns``
identical columns, float64, Fortran-exact CPU settings, best of ``--repeat`` runs after compilation, and the
ratio cold / bondville measured in the same run.

Writes ``benchmarks/results/station_snow_cost.json`` and prints the table. About 3 min on 2 CPU cores.

Usage::

    python benchmarks/station_snow_cost.py [--json out.json] [--columns 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import machine_info
from cold_gradients import ROOT, load_case

from dam.io_safety import write_text


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "station_snow_cost.json"))
    parser.add_argument("--columns", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", default=str(ROOT / ".pytest_cache" / "d" / "shipped_data"))
    args = parser.parse_args(argv)

    from dam.precision import enable_x64, fortran_exact_cpu

    fortran_exact_cpu()
    enable_x64()
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    from tabulate import tabulate

    from dam.physics.station import run_station

    run = eqx.filter_jit(lambda s, f, p, g, o: run_station(s, f, p, g, o, observe=None, finite_check=False)[0])
    rows = []
    for case in ("bondville", "bondville_cold"):
        ref = load_case(Path(args.cache), case)
        forcing = ref.station_forcing()
        n = len(ref.forcing)
        for cols in (1, args.columns):
            state = jax.tree_util.tree_map(lambda x, c=cols: jnp.broadcast_to(x, (c, *jnp.shape(x))), ref.state0)
            frc = jax.tree_util.tree_map(lambda x, c=cols: jnp.broadcast_to(x[:, None], (x.shape[0], c)), forcing)
            jax.block_until_ready(run(state, frc, ref.params, ref.grid, ref.options))  # compile
            best = np.inf
            for _ in range(args.repeat):
                t = time.perf_counter()
                jax.block_until_ready(run(state, frc, ref.params, ref.grid, ref.options))
                best = min(best, time.perf_counter() - t)
            snow_steps = int((ref.output["n_snow_layers"] > 0).sum())
            rows.append({"case": case, "columns": cols, "steps": n, "snow_layer_steps": snow_steps,
                         "seconds": best, "column_steps_per_s": cols * n / best})  # fmt: skip
    by = {(r["case"], r["columns"]): r["seconds"] for r in rows}
    ratio = {str(c): by[("bondville_cold", c)] / by[("bondville", c)] for c in (1, args.columns)}
    result = {"machine": machine_info(), "rows": rows, "cold_over_bondville": ratio}
    print(tabulate(rows, headers="keys", floatfmt=".3g"))
    print("seconds, bondville_cold / bondville:", {k: round(v, 2) for k, v in ratio.items()})
    write_text(args.json, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
