"""Grid runs: packing land columns, sharding, incremental zarr output and resume after a kill."""

import dataclasses

import numpy as np
import pytest
import xarray as xr
import yaml

from dam.grid_run import GridRunConfig, GridRunError, grid_run
from dam.synthetic_grid import make_grid


@pytest.fixture(scope="module")
def grid_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    static, forcing = make_grid(5, 7, 60, seed=3)  # an odd number of land columns over 8 devices
    static.to_netcdf(root / "static.nc")
    forcing.to_netcdf(root / "forcing.nc")
    return root, static


def test_synthetic_grid_is_varied_and_deterministic():
    a, fa = make_grid(8, 10, 20, seed=5)
    b, fb = make_grid(8, 10, 20, seed=5)
    xr.testing.assert_identical(a, b)
    xr.testing.assert_identical(fa, fb)
    land = a["land_mask"].values.astype(bool)
    assert 0.2 < land.mean() < 0.9
    assert np.unique(a["bexp"].values[0][land]).size > 3
    assert float(a["tbot"].max() - a["tbot"].min()) > 20  # climates from cold to warm


def test_resume_after_kill_equals_uninterrupted(grid_files, grid_config):
    root, static = grid_files
    summary = grid_run(grid_config(root, "full"), progress=False)
    assert summary["finished"] and summary["land_columns"] == int(static["land_mask"].sum())
    assert summary["land_columns"] % 8 != 0
    killed = grid_config(root, "resumed")
    first = grid_run(killed, progress=False, stop_after_blocks=2)
    assert not first["finished"]
    # The resume runs the columns in chunks: a speed setting that neither changes results nor blocks the resume.
    second = grid_run(dataclasses.replace(killed, column_chunk=5), progress=False)
    assert second["resumed_from_block"] == 2 and second["finished"]
    full = xr.open_zarr(root / "full.zarr").load()
    resumed = xr.open_zarr(root / "resumed.zarr").load()
    for name in full.data_vars:
        np.testing.assert_array_equal(full[name].values, resumed[name].values)
    land = static["land_mask"].values.astype(bool)
    t = full["soil_temperature"].values
    assert np.all(np.isfinite(t[:, :, land])) and np.all(np.isnan(t[:, :, ~land]))
    assert full["soil_temperature"].attrs["standard_name"] == "soil_temperature"


def test_grid_matches_column_runs(grid_files):
    """A grid run equals running the packed columns directly with dam.physics.run."""
    import jax
    import jax.numpy as jnp

    from dam import physics
    from dam.grid_run import _forcing_block, load_columns

    root, static = grid_files
    out = xr.open_zarr(root / "full.zarr").load()
    land, grid, params, state = load_columns(static)
    forcing = xr.open_dataset(root / "forcing.nc")
    frc = _forcing_block(forcing, land, 0, forcing.sizes["time"])
    cast = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)  # noqa: E731
    final, _ = physics.run(cast(state), cast(frc), cast(params), grid, physics.SoilOptions(dt_s=1800.0))
    t_last = out["soil_temperature"].values[-1].reshape(4, -1)[:, land].T
    np.testing.assert_allclose(t_last, np.asarray(final.t), rtol=0, atol=1e-10)


def test_bad_config_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"static": "s.nc", "forcing": "f.nc", "output": "o.zarr", "colour": 1}))
    with pytest.raises(GridRunError, match="colour"):
        GridRunConfig.from_yaml(path)
    path.write_text(yaml.safe_dump({"static": "s.nc", "forcing": "f.nc", "output": "o.zarr", "checkpoint_dir": "c"}))
    with pytest.raises(GridRunError, match="missing file"):
        grid_run(GridRunConfig.from_yaml(path), progress=False)
    with pytest.raises(GridRunError, match="column_chunk"):
        GridRunConfig(static="s.nc", forcing="f.nc", output="o.zarr", checkpoint_dir="c", column_chunk=0)


def test_checkpoint_of_another_run_is_refused(grid_files, grid_config):
    root, _ = grid_files
    other = grid_config(root, "full", dtype="float32")  # same output and checkpoints, different configuration
    with pytest.raises(GridRunError, match="another run"):
        grid_run(other, progress=False)
