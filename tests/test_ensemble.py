"""Perturbed-parameter ensembles: Latin-hypercube sampling, member 0 is the default run, the vmapped members equal
one run per member, the Dataset round-trips through netCDF and zarr."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from dam.coupling.ensemble import (
    DEFAULT_FACTOR_RANGES,
    ParameterRange,
    apply_factors,
    perturbed_ensemble,
    sample_factors,
    save_ensemble,
)
from dam.physics.station import run_station
from dam.site_run import setup_station
from dam.sites import load_site, shipped_site_dir

_run = eqx.filter_jit(run_station)
STEPS = slice(0, 96)
SPECS = {"bexp": (0.7, 1.3), "dksat": {"low": 0.1, "high": 10.0, "log": True}, "stomata_slope": (0.7, 1.3),
         "refkdt": ParameterRange(1.0, 6.0, mode="value")}  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    return setup_station(load_site(shipped_site_dir("bondville_1998")), start="1998-06-01", end="1998-06-10")


@pytest.fixture(scope="module")
def ensemble(setup):
    return perturbed_ensemble(setup, 3, SPECS, seed=1, steps=STEPS, chunk_size=2)


def test_latin_hypercube_has_one_sample_per_stratum():
    ranges = {k: DEFAULT_FACTOR_RANGES[k] for k in ("bexp", "dksat")}
    x = sample_factors(ranges, 20, seed=3)
    u_b = (x[:, 0] - 0.7) / 0.6
    u_k = (np.log(x[:, 1]) - np.log(0.1)) / (np.log(10.0) - np.log(0.1))
    for u in (u_b, u_k):
        assert sorted(np.floor(u * 20).astype(int)) == list(range(20))


def test_members_differ_and_member0_is_the_default_run(setup, ensemble):
    ds = ensemble
    assert ds.sizes == {"member": 3, "time": 96, "layer": 4}
    np.testing.assert_array_equal(ds["bexp"].values[0], 1.0)
    assert ds["refkdt_value"].values[0] == float(setup.params.soil.refkdt)
    assert 1.0 <= ds["refkdt_value"].values[1:].min() and ds["refkdt_value"].values[1:].max() <= 6.0
    sm = ds["soil_moisture"].values
    assert np.abs(sm[1] - sm[0]).max() > 1e-3 and np.abs(sm[2] - sm[1]).max() > 1e-3
    assert np.abs(ds["latent_heat_flux"].values[1] - ds["latent_heat_flux"].values[0]).max() > 1.0
    frc = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)[STEPS]), setup.forcing)
    _, (states, fluxes) = _run(setup.state0, frc, setup.params, setup.grid, setup.options)
    np.testing.assert_allclose(sm[0], np.asarray(states.soil.smc), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ds["latent_heat_flux"].values[0], np.asarray(fluxes.energy.lh), rtol=1e-9, atol=1e-9)


def test_vmapped_members_equal_one_run_per_member(setup, ensemble):
    ds = ensemble
    names = list(SPECS)
    modes = ["factor", "factor", "factor", "value"]
    frc = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)[STEPS]), setup.forcing)
    for m in (1, 2):
        sample = jnp.asarray([float(ds[n].values[m]) for n in names])
        params = apply_factors(setup.params, names, sample, modes)
        np.testing.assert_allclose(ds["dksat_value"].values[m], np.asarray(params.soil.dksat), rtol=1e-15)
        _, (states, _) = _run(setup.state0, frc, params, setup.grid, setup.options)
        np.testing.assert_allclose(ds["soil_moisture"].values[m], np.asarray(states.soil.smc), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ds["soil_temperature"].values[m], np.asarray(states.soil.t), rtol=1e-12)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_file_round_trip(ensemble, tmp_path, suffix):
    path = save_ensemble(ensemble, tmp_path / f"ens{suffix}")
    back = xr.open_zarr(path) if suffix == ".zarr" else xr.open_dataset(path)
    xr.testing.assert_identical(back.load(), ensemble)
    assert back["soil_moisture"].attrs["units"] == "m3 m-3"
    back.close()


def test_bad_specs_are_refused(setup):
    with pytest.raises(ValueError, match="unknown parameter"):
        perturbed_ensemble(setup, 2, {"not_a_parameter": (0.5, 2.0)}, steps=STEPS)
    with pytest.raises(ValueError, match="low < high"):
        ParameterRange(2.0, 1.0)
