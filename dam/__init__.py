"""dam: differentiable hybrid land-surface modelling in JAX (Noah-MP v5.2 soil and surface physics, networks,
physics-constrained losses, calibration).

The public API, one way to do each job (README "Public API" lists them with their modules)::

    import dam

    dam.enable_x64()                                         # float64 (the Fortran match) before any JAX work
    case = dam.read_case(dam.shipped_case("bondville_soil"))  # a soil-column case folder
    table = dam.run_case(case)                               # run it: a trajectory table
    site = dam.load_site(dam.shipped_site_dir("bondville_1998"))  # a station site folder
    ds, metrics = dam.run_site(site, "runs/bondville.nc")    # physics-only run: netCDF, figures, metrics
    setup = dam.spin_up(dam.setup_station(site))             # in memory: the station set-up (arrays) ...
    states, fluxes = dam.run_blocks(setup)                   # ... run over the record
    result = dam.calibrate(setup, site.observations)         # gradient calibration of parameters
    table = dam.run_experiment(dam.load_experiment_config("quick"))  # the hybrid-model experiment
    trained, history = dam.fit(model, loss_fn, data)         # the training engine (optax, orbax)

The pure, differentiable models are in :mod:`dam.physics` (``run``, ``run_station``), networks in
:mod:`dam.surrogates`, physics-constrained losses and calibration objectives in :mod:`dam.coupling`.
Names are imported on first use, so ``import dam`` stays light (no JAX until a name needs it).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> (module, attribute) it comes from.
_EXPORTS: dict[str, tuple[str, str]] = {
    # numerics
    "enable_x64": ("dam.precision", "enable_x64"),
    # the soil column
    "read_case": ("dam.cases", "read_case"),
    "shipped_case": ("dam.cases", "shipped_case"),
    "run_case": ("dam.soil_column", "run_case"),
    # sites
    "Site": ("dam.sites", "Site"),
    "SiteMeta": ("dam.sites", "SiteMeta"),
    "load_site": ("dam.sites", "load_site"),
    "shipped_site_dir": ("dam.sites", "shipped_site_dir"),
    "shipped_sites": ("dam.sites", "shipped_sites"),
    "convert_site": ("dam.sites", "convert_site"),
    # the station model at a site
    "setup_station": ("dam.site_run", "setup_station"),
    "spin_up": ("dam.site_run", "spin_up"),
    "run_blocks": ("dam.site_run", "run_blocks"),
    "run_site": ("dam.site_run", "run_site"),
    # calibration and training
    "calibrate": ("dam.calibration", "calibrate"),
    "evaluate": ("dam.calibration", "evaluate"),
    "fit": ("dam.training", "fit"),
    # the experiment
    "ExperimentConfig": ("dam.experiment_config", "ExperimentConfig"),
    "load_experiment_config": ("dam.experiment_config", "load_config"),
    "run_experiment": ("dam.experiment", "run_experiment"),
    # grids
    "GridRunConfig": ("dam.grid_run", "GridRunConfig"),
    "run_grid": ("dam.grid_run", "grid_run"),  # not "grid_run": that is the module dam.grid_run
}
_SUBPACKAGES = ("physics", "surrogates", "coupling")

__all__ = sorted([*_EXPORTS, *_SUBPACKAGES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"dam.{name}")
    elif name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("dam")
        except PackageNotFoundError:  # run from a source tree that is not installed
            value = "unknown"
    else:
        raise AttributeError(f"module 'dam' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
