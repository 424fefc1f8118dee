"""Helpers shared by the benchmark scripts: machine info, heterogeneous test columns, best-of-N timing.

The scripts are run as files (``python benchmarks/<script>.py``), which puts this folder on ``sys.path``;
``from _common import ...`` works there and in tests that insert the folder.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

# Soil-only Noah-MP v5.2 Fortran (gfortran -O2), one core of the 2-core AMD EPYC development machine, 1e4
# heterogeneous columns x 1,000 steps, measured side by side with dam (tests/data/noahmp_soil/README.md).
FORTRAN_COLUMN_STEPS_PER_S = {"float64": 5.5e5, "float32": 6.6e5}
_FIELDS = ("bexp", "smcmax", "smcref", "smcwlt", "psisat", "dksat", "dwsat", "quartz")


def machine_info() -> dict:
    import jax

    info = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return info


def make_columns(n_columns: int, n_steps: int, dtype, seed: int = 0):
    """Heterogeneous columns: parameters, initial states and forcing (T, columns, ...)."""
    import jax
    import jax.numpy as jnp

    from dam import physics
    from dam.soil_table import stas_parameters

    rng = np.random.default_rng(seed)
    table = {k: [stas_parameters(k)[f] for f in _FIELDS] for k in range(1, 13)}
    soil = np.array([table[k] for k in rng.integers(1, 13, n_columns)])
    per_layer = lambda j: np.repeat(soil[:, j : j + 1], 4, axis=1)  # noqa: E731
    params = physics.SoilParams(
        bexp=per_layer(0),
        smcmax=per_layer(1),
        smcref=per_layer(2),
        smcwlt=per_layer(3),
        psisat=per_layer(4),
        dksat=per_layer(5),
        dwsat=per_layer(6),
        quartz=per_layer(7),
        csoil=np.full(n_columns, 2.0e6),
        slope=np.full(n_columns, 0.1),
        refkdt=np.full(n_columns, 3.0),
        refdk=np.full(n_columns, 2.0e-6),
        frzk=np.full(n_columns, 0.15),
        tbot=rng.uniform(272.0, 295.0, n_columns),
    )
    frac = rng.uniform(0.3, 0.95, (n_columns, 4))
    smc = frac * soil[:, 1:2]
    t = rng.uniform(268.0, 300.0, (n_columns, 1)) + np.linspace(0, 3, 4)
    liquid = np.where(t < 273.16, 0.5 * smc, smc)
    state = physics.SoilState(t=t, smc=smc, sh2o=liquid)
    hours = np.arange(n_steps) * 0.5
    diurnal = np.sin(2 * np.pi * (hours[:, None] / 24.0 + rng.uniform(0, 1, n_columns)))
    rain = (rng.uniform(0, 1, (n_steps, n_columns)) < 0.05) * rng.exponential(3e-6, (n_steps, n_columns))
    forcing = physics.SoilForcing(
        ghf_wm2=60.0 * diurnal + rng.normal(0, 10, (n_steps, n_columns)),
        qinsurf_mps=rain,
        evap_mps=np.maximum(0, 2e-8 * (1 + diurnal)),
        etran_mps=np.maximum(0, 1e-8 * (1 + diurnal))[..., None] * np.array([0.4, 0.3, 0.2, 0.1]),
        frozen_ground=np.zeros((n_steps, n_columns)),
        frz_top_ice_flux_mmps=np.zeros((n_steps, n_columns)),
    )
    cast = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)  # noqa: E731
    return cast(params), cast(state), cast(forcing), physics.SoilGrid(zsoil=np.array([-0.1, -0.4, -1.0, -2.0]))


def best_time(
    fn, *args, repeats: int = 3, budget_s: float = float("inf"), min_time_s: float = 0.0, warm: bool = True
) -> tuple[float, int]:
    """Best wall time of ``fn(*args)`` over ``repeats`` calls, ``(seconds, calls timed)``.

    The first call compiles and is not timed (``warm=False`` skips it for an already compiled ``fn``). Timing
    stops early once ``budget_s`` seconds have been spent (after at least one timed call), and goes on past
    ``repeats`` (up to 1000 calls) until ``min_time_s`` seconds have been spent, so that short calls are
    timed often enough for their best to be meaningful.
    """
    import jax

    if warm:
        jax.block_until_ready(fn(*args))
    best, spent, n = np.inf, 0.0, 0
    while n == 0 or (n < repeats and spent < budget_s) or (spent < min_time_s and n < 1000):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        dt = time.perf_counter() - t0
        best, spent, n = min(best, dt), spent + dt, n + 1
    return best, n
