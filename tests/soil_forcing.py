"""Synthetic soil-column forcing for tests that need storms, sinks and heat flux on many columns."""

import jax.numpy as jnp
import numpy as np

from dam.physics.types import SoilForcing


def synthetic_soil_forcing(n_steps: int, n_cols: int, n_layers: int, seed: int = 0) -> SoilForcing:
    """Rain bursts up to 100 mm/h, evaporation and transpiration up to 1 mm/h, ground heat flux +-100 W m-2."""
    rng = np.random.default_rng(seed)
    rain = np.where(rng.random((n_steps, n_cols)) < 0.1, rng.random((n_steps, n_cols)) * 100.0 / 3.6e6, 0.0)
    return SoilForcing(
        ghf_wm2=jnp.asarray(rng.normal(0.0, 100.0, (n_steps, n_cols))),
        qinsurf_mps=jnp.asarray(rain),
        evap_mps=jnp.asarray(rng.random((n_steps, n_cols)) * 1.0 / 3.6e6),
        etran_mps=jnp.asarray(rng.random((n_steps, n_cols, n_layers)) * 0.25 / 3.6e6),
        frozen_ground=jnp.zeros((n_steps, n_cols)),
        frz_top_ice_flux_mmps=jnp.zeros((n_steps, n_cols)),
    )
