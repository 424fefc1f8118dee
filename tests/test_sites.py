"""Site format, readers of the raw station files (shipped in tests/data/stations), unit conversions, gap handling,
bad-input errors and the sensor-to-layer mapping (dam.sites, dam.site_readers)."""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from dam import site_readers as R
from dam.sites import (
    FORCING_VARIABLES,
    SensorError,
    Site,
    SiteError,
    SiteMeta,
    convert_site,
    load_site,
    make_forcing,
    make_observations,
    map_sensors_to_layers,
    model_at_sensors,
    shipped_sites,
    standardise_forcing,
    unit_conversion,
    write_site,
)

SHIPPED = ("bondville_1998", "bondville_1998_hrldas", "hyytiala_2000_2010", "tanggula_forcing_only")


def _svp(t_k: float) -> float:  # hand formula (Bolton 1980 / HRLDAS)
    return 611.2 * math.exp(17.67 * (t_k - 273.15) / (t_k - 29.65))


def _q(e: float, p: float) -> float:
    return 0.622 * e / (p - 0.378 * e)


# ---------------------------------------------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def bondville(shared_data_dir: Path) -> Site:
    return R.read_bondville_1998(shared_data_dir / "bondville_1998", gaps="interpolate", max_gap=6)


def test_bondville_main(bondville: Site, shared_data_dir: Path) -> None:
    f, o = bondville.forcing, bondville.observations
    t = pd.DatetimeIndex(f.time.values)
    assert len(t) == 17520
    # first record: 1998-01-01 00:30 LST (end of the half hour) = 06:30 UTC; last 1999-01-01 00:00 LST.
    assert t[0] == pd.Timestamp("1998-01-01T06:30") and t[-1] == pd.Timestamp("1999-01-01T06:00")
    assert pd.Timestamp(f.time_bnds.values[0, 0]) == pd.Timestamp("1998-01-01T06:00")
    # row 0 by hand: Ta -9.2 degC, RH 86.1 %, 1002 hPa, wind 6.80, rain 0, LW 281
    t_k = -9.2 + 273.15
    assert f.T_air.values[0] == pytest.approx(t_k, rel=1e-12)
    assert f.p_sfc.values[0] == 100200.0
    assert f.q_air.values[0] == pytest.approx(_q(0.861 * _svp(t_k), 100200.0), rel=1e-12)
    assert f.wind.values[0] == 6.8 and f.lw_down.values[0] == 281.0
    # rain: inches per 30 min -> kg m-2 s-1; yearly total 925.8 mm (SOURCE.md)
    assert float(f.precip.sum()) * 1800.0 == pytest.approx(925.8, abs=0.05)
    assert f.wind.attrs["clipped_count"] == 2 and float(f.wind.min()) == 0.0
    assert f.q_air.attrs["clipped_count"] == 480  # RH > 100 % clipped
    # SW gap (2 steps, 1998-07-26 10:00-10:30 LST) linearly interpolated between 403 and 589 W m-2
    i = int(np.flatnonzero(t == pd.Timestamp("1998-07-26T16:00"))[0])
    np.testing.assert_allclose(f.sw_down.values[i - 1 : i + 3], [403.0, 465.0, 527.0, 589.0])
    assert f.attrs["gap_fill"] == "interpolate (max_gap=6 steps): sw_down 2" and f.sw_down.attrs["gap_fill_count"] == 2
    # observations: depths, degC -> K, -6999 -> NaN (kept, counted)
    assert o.sm_depth.values.tolist() == [0.05, 0.2, 0.6]
    assert o.st_depth.values.tolist() == [0.02, 0.04, 0.08, 0.16, 0.32, 0.64]
    assert o.soil_temperature.values[0, 0] == pytest.approx(-8.05 + 273.15)
    assert o.soil_moisture.values[0].tolist() == [0.36, 0.39, 0.38]
    assert o.surface_temperature.attrs["n_missing"] == 825 and o.soil_moisture.attrs["n_missing"] == 0
    assert bondville.unreliable_flag("soil_moisture", 0.2) and not bondville.unreliable_flag("soil_moisture", 0.05)
    # the sensors see liquid water only: the 5 cm reading halves within two days when the soil freezes (12-14 Jan, LST)
    assert bondville.meta.soil_moisture_measures == "liquid"
    lst = pd.DatetimeIndex(o.time.values) - pd.Timedelta(hours=6, minutes=15)
    daily = pd.Series(o.soil_moisture.values[:, 0], index=lst).resample("D").mean()
    assert daily["1998-01-12"] > 0.35 and daily["1998-01-14"] < 0.19


def test_bondville_sw_gap_refused_by_default(shared_data_dir: Path) -> None:
    with pytest.raises(SiteError, match=r"'sw_down' has 2 missing value\(s\) in 1 gap"):
        R.read_bondville_1998(shared_data_dir / "bondville_1998")
    with pytest.raises(SiteError, match="'wind'.*1526 missing"):
        R.read_bondville_1998(shared_data_dir / "bondville_1998", wind="u_bar", gaps="interpolate")


def test_bondville_utc_alignment_against_hrldas_file(bondville: Site, shared_data_dir: Path) -> None:
    """The HRLDAS file carries UTC stamps: the main file shifted by +6 h must line up with it."""
    h = R.read_bondville_1998_hrldas(shared_data_dir / "bondville_1998")
    common = np.intersect1d(bondville.forcing.time.values, h.forcing.time.values)
    assert common.size == 17473
    a, b = bondville.forcing.sel(time=common), h.forcing.sel(time=common)
    for v in ("p_sfc", "lw_down"):
        np.testing.assert_allclose(a[v].values, b[v].values, rtol=1e-6)
    # HRLDAS uses 0.014111 for 25.4 / 1800 = 0.0141111 (7.9e-6 relative)
    np.testing.assert_allclose(a.precip.values, b.precip.values, rtol=8e-6)
    np.testing.assert_allclose(a.T_air.values, b.T_air.values, atol=0.051)  # the HRLDAS file rounds some T
    # and shifted by one step the match breaks
    assert np.abs(a.lw_down.values[1:] - b.lw_down.values[:-1]).max() > 10


def test_bondville_hrldas_equals_reference_forcing(shared_data_dir: Path, full_reference_dir: Path) -> None:
    """The float32 HRLDAS conversion reproduces the forcing the Fortran reference run read (shipped copy too)."""
    ref = pd.read_csv(full_reference_dir / "forcing.csv")
    pairs = {
        "T_air": "T_air_K",
        "p_sfc": "p_sfc_Pa",
        "wind": "u_ms",
        "sw_down": "sw_down_Wm2",
        "lw_down": "lw_down_Wm2",
        "precip": "precip_total_kg_m2_s",
    }
    for site in (R.read_bondville_1998_hrldas(shared_data_dir / "bondville_1998"), load_site("bondville_1998_hrldas")):
        f = site.forcing.isel(time=slice(1, None))  # the 00:00 record is read but never used by the model
        assert (pd.DatetimeIndex(f.time.values) == pd.to_datetime(ref.time_utc).dt.tz_localize(None)).all()
        for ours, theirs in pairs.items():
            np.testing.assert_array_equal(f[ours].values, ref[theirs].values, err_msg=ours)
        # q: float32 exp/ordering of gfortran vs numpy differ by a few float32 ulps
        np.testing.assert_allclose(f.q_air.values, ref.q_air_kgkg.values, rtol=1e-6, atol=0)


def test_hyytiala(shared_data_dir: Path) -> None:
    s = R.read_hyytiala_2000_2010(shared_data_dir / "hyytiala_2000_2010")
    f, o = s.forcing, s.observations
    t = pd.DatetimeIndex(f.time.values)
    assert len(t) == 4018 and f.attrs["time_step_s"] == 86400.0
    assert t[0] == pd.Timestamp("2000-01-01T22:00")  # end of the UTC+2 day 2000-01-01
    # row 0 by hand: PAR 4.573, Tair -9.328 degC, VPD 0.010 kPa, P 999.387 hPa, Precip_FMI 0.7 mm/d, doy 1
    t_k, p = -9.328 + 273.15, 99938.7
    e = _svp(t_k) - 10.0
    assert f.T_air.values[0] == pytest.approx(t_k, rel=1e-12)
    assert f.p_sfc.values[0] == pytest.approx(p, rel=1e-12)
    assert f.q_air.values[0] == pytest.approx(_q(e, p), rel=1e-12)
    assert f.sw_down.values[0] == pytest.approx(4.573 / 2.1, rel=1e-12)
    assert f.precip.values[0] == pytest.approx(0.7 / 86400.0, rel=1e-12)
    # LW by hand: FAO-56 TOA for lat 61.85, doy 1; clear SW = (0.75 + 2e-5 * 181) TOA; Crawford-Duchon cloudiness
    phi = math.radians(61.85)
    ang = 2 * math.pi / 365
    decl = 0.409 * math.sin(ang - 1.39)
    ws = math.acos(-math.tan(phi) * math.tan(decl))
    toa = (
        1367
        / math.pi
        * (1 + 0.033 * math.cos(ang))
        * (ws * math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.sin(ws))
    )
    c = min(max(1 - (4.573 / 2.1) / ((0.75 + 2e-5 * 181) * toa), 0.0), 1.0)
    eps = c + (1 - c) * 1.24 * (e / 100 / t_k) ** (1 / 7)
    assert f.lw_down.values[0] == pytest.approx(eps * 5.67e-8 * t_k**4, rel=1e-12)
    assert "Brutsaert" in f.attrs["lw_down_method"] and "PAR" in f.attrs["sw_down_method"]
    assert 270 < float(f.lw_down.mean()) < 320  # plausible boreal annual mean
    assert o.soil_moisture.shape == (4018, 4) and o.soil_temperature.attrs["n_missing"] == 0
    assert o.evapotranspiration.values[0] == pytest.approx(-0.056 / 86400.0)  # ET column, mm/d


def test_tanggula(shared_data_dir: Path) -> None:
    s = R.read_noahpy_forcing(shared_data_dir / "tanggula_forcing_only")
    f = s.forcing
    assert f.sizes["time"] == 1371 and s.observations is None
    assert pd.Timestamp(f.time.values[0]) == pd.Timestamp("2007-04-02T00:00")  # end of the day 2007-04-01
    t_k, p = 271.2412439391, 54822.0
    assert f.T_air.values[0] == pytest.approx(t_k, rel=1e-12)
    assert f.p_sfc.values[0] == pytest.approx(p, rel=1e-12)
    assert f.q_air.values[0] == pytest.approx(_q(0.259113713626 * _svp(t_k), p), rel=1e-10)
    assert f.precip.values[0] == pytest.approx(3.104409e-10, rel=1e-6)
    assert s.meta.reference_height_temperature_m == 2.0 and s.meta.reference_height_wind_m == 10.0
    assert len(s.meta.initial_state.soil_layer_thickness_m) == 20
    noahpy, column = s.meta.initial_state.soil_layer_thickness_m, s.meta.soil_column.layer_thickness_m
    assert column[1:] == noahpy[R.TANGGULA_MERGED_TOP :]  # NoahPy's column with its three thin top layers merged
    assert column[0] == pytest.approx(sum(noahpy[: R.TANGGULA_MERGED_TOP])) and sum(column) == pytest.approx(15.2)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sites_load_and_match_fresh_conversion(name: str, shared_data_dir: Path, tmp_path: Path) -> None:
    assert name in shipped_sites()
    shipped = load_site(name)
    kwargs = {"gaps": "interpolate"} if name == "bondville_1998" else {}
    source = shared_data_dir / R.CONVERTERS[name].folder
    fresh = load_site(convert_site(source, tmp_path / name, converter=name, **kwargs))
    assert (Path(shipped.path) / "SOURCE.md").is_file()
    for v in FORCING_VARIABLES:
        np.testing.assert_allclose(shipped.forcing[v].values, fresh.forcing[v].values, rtol=2e-7)
    assert shipped.meta == fresh.meta
    assert (shipped.observations is None) == (fresh.observations is None)
    size = sum(p.stat().st_size for p in Path(shipped.path).iterdir())
    assert size < 2_000_000


# ---------------------------------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("units", "canonical", "value", "expected"),
    [
        ("degC", "K", 20.0, 293.15),
        ("K", "K", 293.15, 293.15),
        ("hPa", "Pa", 1013.25, 101325.0),
        ("kPa", "Pa", 101.325, 101325.0),
        ("mm/day", "kg m-2 s-1", 86.4, 1e-3),
        ("mm h-1", "kg m-2 s-1", 3.6, 1e-3),
        ("g/kg", "kg kg-1", 5.0, 5e-3),
        ("%", "m3 m-3", 25.0, 0.25),
        ("km/h", "m s-1", 36.0, 10.0),
        ("W m**-2", "W m-2", 10.0, 10.0),
    ],
)
def test_unit_conversion(units: str, canonical: str, value: float, expected: float) -> None:
    scale, offset = unit_conversion(units, canonical, "x")
    assert value * scale + offset == pytest.approx(expected, rel=1e-12)


def test_humidity_and_rain_conversions_by_hand() -> None:
    from dam.sites import specific_humidity_from_rh, vapour_pressure_from_specific_humidity

    # 20 degC, 50 %, 1000 hPa: es = 611.2 exp(17.67*20/263.5) = 2336.9 Pa -> q = 7.29e-3
    q = specific_humidity_from_rh(np.array(293.15), np.array(50.0), np.array(1e5))
    assert float(q) == pytest.approx(0.622 * 1168.47 / (1e5 - 0.378 * 1168.47), rel=1e-4)
    assert float(vapour_pressure_from_specific_humidity(q, 1e5)) == pytest.approx(0.5 * _svp(293.15), rel=1e-12)
    assert 0.5 * 25.4 / 1800.0 == pytest.approx(0.00705556, rel=1e-6)  # 0.5 inch per 30 min in kg m-2 s-1


# ---------------------------------------------------------------------------------------------------- site format


def _toy_values(n: int = 48) -> dict[str, np.ndarray]:
    k = np.arange(n)
    return {
        "T_air": 280.0 + 5 * np.sin(k / 8),
        "q_air": np.full(n, 0.005),
        "p_sfc": np.full(n, 1e5),
        "wind": np.full(n, 3.0),
        "sw_down": np.maximum(0.0, 500 * np.sin(k / 8)),
        "lw_down": np.full(n, 300.0),
        "precip": np.where(k % 10 == 0, 1e-4, 0.0),
    }


def _toy_site(tmp_path: Path, n: int = 48) -> Path:
    times = pd.date_range("2001-01-01T00:30", periods=n, freq="30min")
    forcing = make_forcing(times, 1800.0, _toy_values(n), attrs={"title": "toy"})
    obs = make_observations(
        times,
        {"soil_moisture": np.full((n, 2), 0.3), "soil_temperature": np.full((n, 1), 280.0)},
        depths={"soil_moisture": [0.05, 0.5], "soil_temperature": [0.1]},
    )
    meta = SiteMeta(
        name="toy",
        latitude=10.0,
        longitude=20.0,
        elevation_m=100.0,
        utc_offset_hours=0.0,
        time_step_s=1800.0,
        reference_height_temperature_m=2.0,
        reference_height_wind_m=10.0,
        vegetation_type_igbp=10,
        soil_colour=4,
        licence="CC0",
        citation=("nobody",),
        soil_type_stas=3,
        sensor_depths_m={"soil_moisture": (0.05, 0.5), "soil_temperature": (0.1,)},
    )
    return write_site(Site(meta, forcing, obs), tmp_path / "toy")


def test_roundtrip_and_cf_attributes(tmp_path: Path) -> None:
    path = _toy_site(tmp_path)
    site = load_site(path)
    assert site.meta.name == "toy" and site.observations is not None
    with xr.open_dataset(path / "forcing.nc") as raw:
        assert raw.T_air.attrs["standard_name"] == "air_temperature" and raw.T_air.attrs["units"] == "K"
        assert raw.precip.attrs["standard_name"] == "precipitation_flux"
        assert raw.time.attrs["bounds"] == "time_bnds"
    with xr.open_dataset(path / "observations.nc") as raw:
        assert raw.soil_moisture.attrs["standard_name"] == "volume_fraction_of_condensed_water_in_soil"
        assert raw.st_depth.attrs["positive"] == "down"
    np.testing.assert_allclose(site.forcing.T_air.values, _toy_values()["T_air"], rtol=1e-7)


def test_new_site_needs_no_code(tmp_path: Path) -> None:
    """A hand-made folder: other variable names (found by standard_name), degC, hPa, mm/h, depth in cm."""
    n = 24
    times = pd.date_range("2001-01-01T01:00", periods=n, freq="h")
    v = _toy_values(n)
    ds = xr.Dataset(
        {
            "ta": ("time", v["T_air"] - 273.15, {"standard_name": "air_temperature", "units": "degC"}),
            "hus": ("time", v["q_air"] * 1000, {"standard_name": "specific_humidity", "units": "g/kg"}),
            "ps": ("time", v["p_sfc"] / 100, {"standard_name": "surface_air_pressure", "units": "hPa"}),
            "ws": ("time", v["wind"], {"standard_name": "wind_speed", "units": "m/s"}),
            "rsds": (
                "time",
                v["sw_down"],
                {"standard_name": "surface_downwelling_shortwave_flux_in_air", "units": "W m-2"},
            ),
            "rlds": (
                "time",
                v["lw_down"],
                {"standard_name": "surface_downwelling_longwave_flux_in_air", "units": "W/m2"},
            ),
            "pr": ("time", v["precip"] * 3600, {"standard_name": "precipitation_flux", "units": "mm/h"}),
        },
        coords={"time": times},
    )
    obs = xr.Dataset(
        {
            "swc": (
                ("time", "z"),
                np.full((n, 1), 30.0),
                {"standard_name": "volume_fraction_of_condensed_water_in_soil", "units": "%"},
            )
        },
        coords={"time": times, "z": ("z", [-10.0], {"units": "cm", "positive": "up"})},
    )
    folder = tmp_path / "handmade"
    folder.mkdir()
    ds.to_netcdf(folder / "forcing.nc")
    obs.to_netcdf(folder / "observations.nc")
    meta = {
        "name": "handmade",
        "latitude": 0,
        "longitude": 0,
        "elevation_m": 0,
        "utc_offset_hours": 0,
        "time_step_s": 3600,
        "reference_height": {"temperature_m": 2, "wind_m": 10},
        "sensor_depths_m": {"soil_moisture": [0.1]},
        "soil": {"texture": {"sand": 0.4, "clay": 0.2}, "colour": 4},
        "vegetation": {"igbp_type": 10},
        "licence": "CC0",
    }
    (folder / "site.yaml").write_text(yaml.safe_dump(meta))
    site = load_site(folder)
    np.testing.assert_allclose(site.forcing.T_air.values, v["T_air"], rtol=1e-12)
    np.testing.assert_allclose(site.forcing.precip.values, v["precip"], rtol=1e-12)
    np.testing.assert_allclose(site.forcing.p_sfc.values, v["p_sfc"], rtol=1e-12)
    assert site.observations.sm_depth.values.tolist() == [0.1]
    assert site.observations.soil_moisture.values[0, 0] == pytest.approx(0.3)
    assert site.forcing.T_air.attrs["converted_from_units"] == "degC"


def _rewrite_forcing(path: Path, fn) -> None:
    with xr.open_dataset(path / "forcing.nc") as ds:
        ds = ds.load()
    ds = fn(ds)
    (path / "forcing.nc").unlink()
    ds.to_netcdf(path / "forcing.nc")


def _set(var: str, index: int, value: float, units: str | None = None):
    def fn(ds):
        a = ds[var].values.copy()
        a[index] = value
        ds[var] = ds[var].copy(data=a)
        if units is not None:
            ds[var].attrs["units"] = units
        return ds

    return fn


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda ds: ds.drop_vars("lw_down"), "missing variable 'lw_down'"),
        (lambda ds: ds.assign(T_air=ds.T_air - 273.15), r"'T_air': units say 'K' but the values .* look like degC"),
        (lambda ds: ds.assign(T_air=ds.T_air.assign_attrs(units="furlong")), "'T_air': units 'furlong' cannot be"),
        (lambda ds: ds.assign(q_air=ds.q_air.assign_attrs(units=None)), "'q_air'"),
        (_set("precip", 3, -1e-5), r"'precip': 1 value\(s\) negative"),
        (_set("sw_down", 3, -5.0), r"'sw_down': 1 value\(s\) negative"),
        (_set("sw_down", 3, 1500.0), r"'sw_down': 1 value\(s\) out of range \[0, 1400\]"),
        (_set("lw_down", 3, 40.0), r"'lw_down': 1 value\(s\) out of range \[50, 700\]"),
        (_set("lw_down", 3, 750.0), r"'lw_down'.*out of range"),
        (_set("wind", 3, np.nan), r"'wind' has 1 missing value"),
        (_set("wind", 3, -9999.0), r"'wind' has 1 missing value"),
        (lambda ds: ds.isel(time=[0, 2, 1, *range(3, ds.sizes["time"])]), "not monotonic"),
        (lambda ds: ds.isel(time=[0, 1, 1, *range(2, ds.sizes["time"])]), "duplicated time"),
        (lambda ds: ds.isel(time=[0, 1, *range(3, ds.sizes["time"])]), "not regular 1800 s"),
    ],
)
def test_bad_forcing_errors(tmp_path: Path, fn, match: str) -> None:
    path = _toy_site(tmp_path)
    if "q_air" in match:  # drop the units attribute
        _rewrite_forcing(path, lambda ds: ds.assign(q_air=ds.q_air.copy().assign_attrs({})).pipe(_drop_units))
        match = "'q_air': no units attribute"
    else:
        _rewrite_forcing(path, fn)
    with pytest.raises(SiteError, match=match):
        load_site(path)


def _drop_units(ds):
    ds["q_air"].attrs.pop("units", None)
    return ds


def test_bad_site_yaml_and_files(tmp_path: Path) -> None:
    path = _toy_site(tmp_path)
    meta = yaml.safe_load((path / "site.yaml").read_text())

    def broken(change) -> Path:
        p = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        shutil.copytree(path, p)
        m = yaml.safe_load((p / "site.yaml").read_text())
        change(m)
        (p / "site.yaml").write_text(yaml.safe_dump(m))
        return p

    with pytest.raises(SiteError, match="missing required key 'latitude'"):
        load_site(broken(lambda m: m.pop("latitude")))
    with pytest.raises(SiteError, match=r"vegetation.igbp_type: Input should be less than or equal to 20 \(got 25\)"):
        load_site(broken(lambda m: m["vegetation"].update(igbp_type=25)))
    with pytest.raises(SiteError, match="time step 1800 s differs|not regular 3600 s"):
        load_site(broken(lambda m: m.update(time_step_s=3600)))
    with pytest.raises(SiteError, match="sensor_depths_m.soil_moisture .* differ"):
        load_site(broken(lambda m: m["sensor_depths_m"].update(soil_moisture=[0.05, 0.4])))
    with pytest.raises(SiteError, match="soil_moisture_measures.*'total' or 'liquid'.*got 'wet'"):
        load_site(broken(lambda m: m.update(soil_moisture_measures="wet")))
    with pytest.raises(SiteError, match="soil needs 'stas_type'"):
        load_site(broken(lambda m: m["soil"].pop("stas_type")))
    p = broken(lambda m: None)
    (p / "forcing.nc").unlink()
    with pytest.raises(SiteError, match="missing forcing.nc"):
        load_site(p)
    (p / "site.yaml").unlink()
    with pytest.raises(SiteError, match="missing site.yaml"):
        load_site(p)
    with pytest.raises(SiteError, match="does not exist"):
        load_site(tmp_path / "nope")
    assert meta["name"] == "toy"


def test_bad_observations(tmp_path: Path) -> None:
    times = pd.date_range("2001-01-01", periods=10, freq="D")
    with pytest.raises(SiteError, match=r"'soil_moisture': 1 value\(s\) out of range"):
        make_observations(
            times, {"soil_moisture": np.r_[np.full(9, 0.3), 1.5][:, None]}, depths={"soil_moisture": [0.1]}
        )
    with pytest.raises(SiteError, match="sensor depths .* increasing"):
        make_observations(times, {"soil_temperature": np.full((10, 2), 280.0)}, depths={"soil_temperature": [0.5, 0.1]})
    obs = make_observations(
        times, {"soil_moisture": np.r_[np.full(8, 0.3), np.nan, -9999.0][:, None]}, depths={"soil_moisture": [0.1]}
    )
    assert obs.soil_moisture.attrs["n_missing"] == 2  # observations are never filled


# ---------------------------------------------------------------------------------------------------- gaps


def _gappy(gap: slice, n: int = 48) -> xr.Dataset:
    times = pd.date_range("2001-01-01T00:30", periods=n, freq="30min")
    v = _toy_values(n)
    v["T_air"] = v["T_air"].copy()
    v["T_air"][gap] = np.nan
    return xr.Dataset(
        {k: ("time", a, {"units": FORCING_VARIABLES[k].units}) for k, a in v.items()}, coords={"time": times}
    )


def test_implausible_annual_precipitation_warns_naming_the_units() -> None:
    """mm s-1 data labelled mm h-1 is within every per-value range but totals ~0.1 mm per year."""
    n = 48 * 366
    times = pd.date_range("2001-01-01T00:30", periods=n, freq="30min")
    values = _toy_values(n)
    ds = xr.Dataset({k: ("time", a, {"units": FORCING_VARIABLES[k].units}) for k, a in values.items()},
                    coords={"time": times})  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        standardise_forcing(ds)  # 1e-4 kg m-2 s-1 every 10th step: ~315 mm per year
    ds["precip"].attrs["units"] = "mm h-1"
    with pytest.warns(UserWarning, match=r"'precip': 0\.0\d+ mm per year .*given as 'mm h-1'"):
        standardise_forcing(ds)
    standardise_forcing(ds.isel(time=slice(0, 48 * 300)))  # shorter than a year: a dry season, not checked


def test_gap_methods() -> None:
    ds = _gappy(slice(10, 13))
    truth = _toy_values()["T_air"]
    with pytest.raises(SiteError, match=r"'T_air' has 3 missing value\(s\) in 1 gap\(s\) \(longest 3 steps"):
        standardise_forcing(ds)
    out = standardise_forcing(ds, gaps="interpolate", max_gap=3)
    np.testing.assert_allclose(out.T_air.values[10:13], np.interp([10, 11, 12], [9, 13], truth[[9, 13]]))
    assert out.attrs["gap_fill"] == "interpolate (max_gap=3 steps): T_air 3" and out.attrs["gap_fill_total"] == 3
    with pytest.raises(SiteError, match="longer than max_gap=2"):
        standardise_forcing(ds, gaps="interpolate", max_gap=2)
    prev = standardise_forcing(ds, gaps="previous")
    np.testing.assert_array_equal(prev.T_air.values[10:13], truth[9])
    clim = standardise_forcing(_gappy(slice(10, 11), n=24 * 2 * 3), gaps="climatology")
    x = _toy_values(144)["T_air"]
    same_tod = [k for k in range(144) if k % 48 == 10 and k != 10]
    assert clim.T_air.values[10] == pytest.approx(x[same_tod].mean())
    assert clim.T_air.attrs["gap_fill_method"] == "climatology"
    # months in local standard time: 20:00 UTC on 31 January is 04:00 on 1 February at UTC+8
    month_end = _gappy(slice(0, 0), n=48 * 5).assign_coords(time=pd.date_range("2001-01-29T00:30", periods=240,
                                                                                freq="30min"))  # fmt: skip
    month_end["T_air"] = month_end["T_air"] + np.arange(240) // 48  # a different day, a different value
    at = int(np.flatnonzero(month_end.time.values == np.datetime64("2001-01-31T20:00"))[0])
    month_end["T_air"][at] = np.nan
    same = month_end["T_air"].values[[at - 96, at - 48, at + 48, at + 96]]  # 20:00 UTC of Jan 29, 30, Feb 1, 2
    utc = standardise_forcing(month_end, gaps="climatology")
    local = standardise_forcing(month_end, gaps="climatology", utc_offset_hours=8)
    assert utc.T_air.values[at] == pytest.approx(same[:2].mean())
    assert local.T_air.values[at] == pytest.approx(same[2:].mean())
    with pytest.raises(SiteError, match="start or end"):
        standardise_forcing(_gappy(slice(0, 2)), gaps="interpolate")
    with pytest.raises(SiteError, match="gaps must be one of"):
        standardise_forcing(ds, gaps="zero")


# ---------------------------------------------------------------------------------------------------- mapping


def test_sensor_to_layer_mapping() -> None:
    bottoms = [0.1, 0.4, 1.0, 2.0]
    m = map_sensors_to_layers([0.0, 0.05, 0.1, 0.2, 0.6, 2.0], bottoms, "soil_moisture")
    assert m.layer_index == (0, 0, 0, 1, 2, 3)  # the containing layer: an interface belongs to the layer above
    assert m.layer_top_m[3] == 0.1 and m.layer_bottom_m[3] == 0.4
    # interpolation between the layer nodes 0.05/0.25/0.7/1.5 m, constant above the first and below the last
    np.testing.assert_allclose(m.weights[[0, 1, 5]], np.eye(4)[[0, 0, 3]], atol=0)
    np.testing.assert_allclose(m.weights[2], [0.75, 0.25, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(m.weights[3], [0.25, 0.75, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(m.weights[4], [0, 0.1 / 0.45, 0.35 / 0.45, 0], rtol=1e-12)
    old = map_sensors_to_layers([0.0, 0.05, 0.1, 0.2, 0.6, 2.0], bottoms, rule="layer")
    np.testing.assert_array_equal(old.weights, np.eye(4)[[0, 0, 0, 1, 2, 3]])
    assert list(m.to_frame().columns) == ["variable", "sensor_depth_m", "layer", "layer_top_m", "layer_bottom_m",
                                          "footprint_m", "rule", "weights"]  # fmt: skip
    with pytest.raises(SensorError, match=r"soil_temperature sensor at depth 2.5 m lies below the soil column"):
        map_sensors_to_layers([0.5, 2.5], bottoms, "soil_temperature")
    with pytest.raises(SensorError, match="positive and increasing"):
        map_sensors_to_layers([0.5], [0.4, 0.1])
    times = pd.date_range("2001-01-01", periods=3, freq="D")
    model = xr.DataArray(
        np.arange(12.0).reshape(3, 4), dims=("time", "layer"), coords={"time": times}, name="soil_moisture"
    )
    obs = xr.DataArray(
        np.zeros((3, 3)),
        dims=("time", "sm_depth"),
        coords={"time": times, "sm_depth": [0.05, 0.2, 0.6]},
        name="soil_moisture",
    )
    mapping, sel = model_at_sensors(model, obs, bottoms, rule="layer")
    assert sel.dims == ("time", "sm_depth") and sel.model_layer.values.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(sel.values, model.values[:, [0, 1, 2]])
    mapping, sel = model_at_sensors(model, obs, bottoms)
    assert sel.dims == ("time", "sm_depth") and sel.model_layer.values.tolist() == [0, 1, 2]
    np.testing.assert_allclose(sel.values, model.values @ mapping.weights.T, rtol=1e-15)
    obs_deep = obs.assign_coords(sm_depth=[0.05, 0.2, 2.6])
    with pytest.raises(SensorError, match="2.6 m lies below"):
        model_at_sensors(model, obs_deep, bottoms)


def test_hyytiala_and_bondville_sensors_fit_the_noahmp_column() -> None:
    bottoms = [0.1, 0.4, 1.0, 2.0]
    assert map_sensors_to_layers(R.BONDVILLE_ST_DEPTHS, bottoms).layer_index == (0, 0, 0, 1, 1, 2)
    assert map_sensors_to_layers(R.BONDVILLE_SM_DEPTHS, bottoms).layer_index == (0, 1, 2)
    assert map_sensors_to_layers(R.HYDE_DEPTHS, bottoms).layer_index == (0, 0, 1, 2)


def test_convert_site_errors(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match="unknown source 'atlantis'"):
        convert_site("atlantis", tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SiteError, match="no known source format"):
        convert_site(tmp_path / "empty", tmp_path / "x")
