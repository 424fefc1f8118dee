"""Outputs carry CF time coordinates as dates: the soil-column netCDF of a case with a start date, and the
synthetic grid's forcing (which a grid run copies to its output)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from dam.cases import read_case, shipped_case
from dam.soil_column import trajectory_dataset
from dam.synthetic_grid import make_grid


def test_case_output_time_is_dates(tmp_path):
    case = read_case(shipped_case("bondville_soil"))
    assert case.start == np.datetime64("1998-01-02T00:00")
    trajectory_dataset(case.reference.iloc[:49], case.grid, start=case.start).to_netcdf(tmp_path / "out.nc")
    with xr.open_dataset(tmp_path / "out.nc") as ds:
        t = pd.DatetimeIndex(ds["time"].values)
        assert t[0] == pd.Timestamp("1998-01-02T00:00") and t[-1] == pd.Timestamp("1998-01-03T00:00")
        assert ds["time"].encoding["units"].startswith("seconds since 1998-01-02")
    raw = xr.open_dataset(tmp_path / "out.nc", decode_times=False)
    assert raw["time"].attrs["standard_name"] == "time" and raw["time"].values[1] == 1800.0
    raw.close()


def test_grid_forcing_time_is_dates(tmp_path):
    _, forcing = make_grid(2, 3, 4)
    forcing.to_netcdf(tmp_path / "forcing.nc")
    with xr.open_dataset(tmp_path / "forcing.nc") as ds:
        assert pd.DatetimeIndex(ds["time"].values)[0] == pd.Timestamp("2000-01-01T00:30")
        assert ds["time"].encoding["units"] == "seconds since 2000-01-01"
