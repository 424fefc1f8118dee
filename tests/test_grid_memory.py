"""Grid runs in bounded memory: the peak memory of `dam grid-run` does not grow with the length of the forcing,
and spatial blocks (`column_block`) give the same output as one block of all columns, also after a resume."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from dam.grid_run import grid_run
from dam.synthetic_grid import make_grid, write_grid

# Runs a grid run in a fresh process and prints its peak resident memory (VmHWM, kB) as JSON.
CHILD = """
import json, sys
from dam.grid_run import GridRunConfig, grid_run
summary = grid_run(GridRunConfig(**json.loads(sys.argv[1])), progress=False)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"peak_mb": peak / 1024, **summary}))
"""


def _store_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _peak_rss_mb(root: Path, **config) -> dict:
    """Peak RSS of a grid run over the forcing in ``root``, measured in a child process."""
    config = {
        "static": str(root / "static.nc"),
        "forcing": str(root / "forcing.zarr"),
        "output": str(root / "output.zarr"),
        "checkpoint_dir": str(root / "checkpoints"),
        "dtype": "float32",
        "outputs": ["surface_runoff_amount"],
        **config,
    }
    # glibc gives each reading/writing thread its own malloc arena, which keeps freed block buffers for a while
    # (tens of MB, varying from run to run); two arenas make the measured peak that of the data the run holds.
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config)], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory_does_not_grow_with_length(tmp_path: Path, n_lat: int, n_lon: int, steps: int, block: int) -> None:
    # Mostly sea (land is skipped), stored uncompressed: large forcing files, cheap runs.
    grid = {"n_lat": n_lat, "n_lon": n_lon, "block_steps": block, "land_fraction": 0.15, "compressed": False}
    peaks, sizes = {}, {}
    for n in (steps, 8 * steps):
        root = tmp_path / f"steps{n}"
        write_grid(root, n_steps=n, seed=1, **grid)
        sizes[n] = _store_mb(root / "forcing.zarr")
        run = _peak_rss_mb(root, time_block=block)
        assert run["finished"] and run["steps"] == n
        out = xr.open_zarr(root / "output.zarr")
        assert out.sizes["time"] == n and np.isfinite(out["surface_runoff_amount"][-1].values).sum() > 0
        peaks[n] = run["peak_mb"]
    margin = 100.0  # MB
    print(f"forcing {sizes} MB on disk, peak RSS {peaks} MB")
    assert sizes[8 * steps] > 4 * margin  # the forcing is much larger than the allowed growth
    assert peaks[8 * steps] < peaks[steps] + margin
    assert peaks[8 * steps] < 1.25 * peaks[steps]


@pytest.mark.slow  # two grid-run processes measured for peak memory (~40 s)
def test_memory_does_not_grow_with_forcing_length(tmp_path):
    """57 MB vs 450 MB of forcing (uncompressed zarr), 25-step blocks: the same peak memory."""
    _memory_does_not_grow_with_length(tmp_path, 64, 128, steps=100, block=25)


@pytest.mark.slow
def test_column_blocks_bound_memory(tmp_path):
    """With a long time block over a wide grid (940 MB of forcing per time block), spatial blocks lower the peak
    memory (the forcing is stored in chunks of 8 latitude rows, so a block reads only its rows); measured on
    2 cores: 1807 MB in one spatial block, 1268 MB in 10."""
    write_grid(tmp_path, 128, 256, 400, block_steps=400, land_fraction=0.3, seed=2, compressed=False, lat_chunk=8)
    whole = _peak_rss_mb(tmp_path, time_block=400, output=str(tmp_path / "whole.zarr"))
    banded = _peak_rss_mb(
        tmp_path,
        time_block=400,
        column_block=1000,
        output=str(tmp_path / "banded.zarr"),
        checkpoint_dir=str(tmp_path / "banded_ckpt"),
    )
    print(
        f"peak RSS: one spatial block {whole['peak_mb']:.0f} MB, {banded['spatial_blocks']} blocks "
        f"{banded['peak_mb']:.0f} MB"
    )
    assert banded["spatial_blocks"] > 4
    assert banded["peak_mb"] < whole["peak_mb"] - 100
    a, b = xr.open_zarr(tmp_path / "whole.zarr"), xr.open_zarr(tmp_path / "banded.zarr")
    np.testing.assert_array_equal(a["surface_runoff_amount"].values, b["surface_runoff_amount"].values)


def test_column_blocks_equal_one_block_and_resume(tmp_path, grid_config):
    """Bands of latitude rows (some all sea, a short last band) give the unblocked output bit for bit, and a
    banded run killed after a time block resumes to the same result."""
    static, forcing = make_grid(14, 7, 40, land_fraction=0.25, seed=3)
    static.to_netcdf(tmp_path / "static.nc")
    forcing.to_netcdf(tmp_path / "forcing.nc")

    config = functools.partial(grid_config, tmp_path)
    assert grid_run(config("whole"), progress=False)["spatial_blocks"] == 1
    banded = config("banded", column_block=6)
    first = grid_run(banded, progress=False, stop_after_blocks=1)
    assert not first["finished"] and first["spatial_blocks"] > 3
    assert grid_run(banded, progress=False)["resumed_from_block"] == 1
    rows = grid_run(config("rows", column_block=1), progress=False)  # one row per block: all-sea rows skipped
    land = static["land_mask"].values.astype(bool)
    assert rows["spatial_blocks"] == int(land.any(axis=1).sum()) < land.shape[0]
    whole = xr.open_zarr(tmp_path / "whole.zarr").load()
    for name in ("banded", "rows"):
        other = xr.open_zarr(tmp_path / f"{name}.zarr").load()
        for var in whole.data_vars:
            np.testing.assert_array_equal(whole[var].values, other[var].values)
    assert whole["soil_temperature"].encoding["chunks"][2] == land.shape[0]
    assert other["soil_temperature"].encoding["chunks"][2] == 1  # output chunks follow the spatial blocks
