"""Flux-tower readers (dam.readers) on real slices shipped in tests/data/readers: what they convert, and the bad
input they refuse (file, variable and rule named; nothing written)."""

from __future__ import annotations

import re
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from dam.readers import convert, load_metadata, read
from dam.readers.catalogue import SHIPPED_METADATA_DIR, shared_metadata, site_table
from dam.readers.common import stas_from_texture
from dam.schema import ConfigError
from dam.sites import SiteError, load_site

DATA = Path(__file__).resolve().parent / "data" / "readers"
META = SHIPPED_METADATA_DIR
DD = DATA / "fluxnet_dd" / "FLX_CN-HaM_FLUXNET2015_FULLSET_DD_2002-2004_1-4.csv"
HH = DATA / "fluxnet_hh" / "FLX_US-CRT_FLUXNET2015_FULLSET_HH_2011-2011_1-4.csv"
BASE = DATA / "ameriflux_base" / "AMF_US-CRT_BASE_HH_2-5.csv"


def _raw(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, na_values=[-9999], comment="#")


# --------------------------------------------------------------------------------------------------------------
# What the readers make
# --------------------------------------------------------------------------------------------------------------


def test_fluxnet_daily_conserves_every_daily_value(tmp_path: Path) -> None:
    out = convert(DD.parent, META / "CN-HaM.yaml", tmp_path / "site")
    site = load_site(out)
    raw = _raw(DD)
    f = site.forcing
    assert site.meta.time_step_s == 3600 and f.attrs["source_time_step_s"] == 86400
    # Local days of UTC+8: the first hour ends 01:00 local = 17:00 UTC the day before.
    assert pd.Timestamp(f["time"].values[0]) == pd.Timestamp("2002-01-31T17:00")
    days = f.coarsen(time=24).mean()  # (forcing.nc stores float32)
    np.testing.assert_allclose(days["T_air"].values, raw["TA_F"] + 273.15, rtol=1e-7)
    np.testing.assert_allclose(days["sw_down"].values, raw["SW_IN_F"], rtol=1e-6)
    np.testing.assert_allclose(days["lw_down"].values, raw["LW_IN_F"], rtol=1e-6)
    np.testing.assert_allclose(days["p_sfc"].values, raw["PA_F"] * 1000.0, rtol=1e-7)
    np.testing.assert_allclose(f["precip"].coarsen(time=24).sum().values * 3600.0, raw["P_F"], rtol=1e-6, atol=1e-9)
    assert "Parton & Logan" in f.attrs["disaggregation"]
    # Observations: daily, stamped at the end of the local day, % -> m3 m-3, degC -> K, QC < 0.5 -> NaN.
    obs = site.observations
    assert pd.Timestamp(obs["time"].values[0]) == pd.Timestamp("2002-02-01T16:00")
    sm = obs["soil_moisture"].sel(sm_depth=0.05).values
    keep = raw["SWC_F_MDS_1_QC"] >= 0.5
    np.testing.assert_allclose(sm[keep], raw["SWC_F_MDS_1"][keep] / 100.0)
    assert np.isnan(sm[~keep]).all()
    np.testing.assert_allclose(obs["soil_temperature"].values[keep, 0], raw["TS_F_MDS_1"][keep] + 273.15)
    assert obs["sensible_heat_flux_corrected"].attrs["units"] == "W m-2"
    text = yaml.safe_load((out / "site.yaml").read_text())
    assert "sensor_depths_m.soil_moisture" in text["assumed"] and text["attributes"]["site_id"] == "CN-HaM"
    assert text["vegetation"]["igbp_type"] == 10 and text["soil_moisture_measures"] == "liquid"
    assert (out / "metadata.yaml").is_file() and not list(tmp_path.glob(".*tmp"))


def test_fluxnet_halfhourly_values_and_time(tmp_path: Path) -> None:
    meta = load_metadata(DATA / "fluxnet_hh" / "metadata.yaml")
    site = read(HH, meta)
    raw = _raw(HH)
    ends = pd.to_datetime(raw["TIMESTAMP_END"].astype(str), format="%Y%m%d%H%M") + pd.Timedelta(hours=5)
    assert (pd.DatetimeIndex(site.forcing["time"].values) == ends).all()
    np.testing.assert_allclose(site.forcing["T_air"].values, raw["TA_F"] + 273.15)
    np.testing.assert_allclose(site.forcing["precip"].values, raw["P_F"] / 1800.0)
    assert site.meta.soil_type_stas == 11  # silty clay from the texture (USDA triangle)
    assert site.observations["soil_temperature"].sizes["st_depth"] == 2
    # QC 3 (poor gap-fill) of H is NaN by the default observation rule (max flag 1)
    h = site.observations["sensible_heat_flux"].values
    assert np.isnan(h[raw["H_F_MDS_QC"].to_numpy() > 1]).all()


def test_ameriflux_base_gap_policy_per_variable_and_zip(tmp_path: Path) -> None:
    meta = load_metadata(META / "US-CRT_BASE.yaml")
    site = read(BASE, meta)
    raw = _raw(BASE)
    pa = site.forcing["p_sfc"]
    assert pa.attrs["gap_fill_method"] == "climatology" and pa.attrs["gap_fill_count"] == int(raw["PA"].isna().sum())
    good = raw["PA"].notna().to_numpy()
    np.testing.assert_allclose(pa.values[good], raw["PA"][good] * 1000.0)
    g = site.observations["ground_heat_flux"].values
    np.testing.assert_allclose(g, raw[["G_1_1_1", "G_2_1_1"]].mean(axis=1), equal_nan=True)
    # the same file inside a BASE-BADM zip
    z = tmp_path / "AMF_US-CRT_BASE-BADM_2-5.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(BASE, BASE.name)
    np.testing.assert_array_equal(read(z, meta).forcing["T_air"].values, site.forcing["T_air"].values)


def test_table_reader_flags_and_stamp(tmp_path: Path) -> None:
    meta = load_metadata(META / "SE-Svb.yaml")
    site = read(DATA / "table", meta)
    raw = pd.read_csv(DATA / "table" / "Svartberget_meteo_2019.csv", sep=";")
    stamps = pd.to_datetime(raw[["year", "month", "day", "hour", "minute"]]) - pd.Timedelta(hours=1)
    assert (pd.DatetimeIndex(site.forcing["time"].values) == stamps).all()  # 'end' stamps, UTC+1 -> UTC
    sm = site.observations["soil_moisture"].values[:, 0]
    interpolated = raw["Wliq_flag"].to_numpy() == 1
    assert interpolated.sum() > 100 and np.isnan(sm[interpolated]).all() and not np.isnan(sm[~interpolated]).any()


@pytest.mark.parametrize(
    ("sand", "clay", "stas"),
    [(0.92, 0.03, 1), (0.82, 0.06, 2), (0.65, 0.10, 3), (0.20, 0.15, 4), (0.05, 0.05, 5), (0.40, 0.20, 6),
     (0.60, 0.25, 7), (0.10, 0.35, 8), (0.30, 0.33, 9), (0.50, 0.40, 10), (0.05, 0.45, 11), (0.20, 0.60, 12)],
)  # fmt: skip
def test_texture_class(sand: float, clay: float, stas: int) -> None:
    assert stas_from_texture(sand, clay) == stas


def test_every_shipped_metadata_file_validates_and_marks_its_guesses() -> None:
    names = shared_metadata()
    assert len(names) == 17  # 16 shared sites + the US-CRT BASE file
    for name, path in names.items():
        meta = load_metadata(path)
        assert meta.licence and meta.citation, name
        if meta.format != "table":  # FLUXNET/AmeriFlux give no depths: all assumed, with reasons
            assert "sensors.soil_moisture" in meta.assumed, name


def test_sites_listing_shows_shipped_and_converted(tmp_path: Path) -> None:
    convert(DD.parent, META / "CN-HaM.yaml", tmp_path / "CN-HaM")
    table = site_table([tmp_path])
    assert {"bondville_1998", "hyytiala_2000_2010", "CN-HaM"} <= set(table["site"])
    row = table.set_index("site").loc["CN-HaM"]
    assert row["step_s"] == 3600 and row["forcing"] == "disaggregated daily"
    assert "sensor_depths_m.soil_moisture" in row["assumed"]
    with xr.open_dataset(tmp_path / "CN-HaM" / "observations.nc") as obs:
        seen = np.isfinite(obs["soil_moisture"].values).any(axis=1)
        t = pd.DatetimeIndex(obs["time"].values)[seen]
    assert row["SM record"] == f"{t[0]:%Y-%m-%d} .. {t[-1]:%Y-%m-%d}, {100 * seen.mean():.0f} %"
    assert table.set_index("site").loc["tanggula_forcing_only", "SM record"] == ""  # no soil moisture observed


def test_cli_convert_and_sites(tmp_path: Path, capsys) -> None:
    from dam.cli import main

    out = tmp_path / "s" / "CN-HaM"
    assert main(["convert-site", str(DD), "--metadata", str(META / "CN-HaM.yaml"), "--output", str(out)]) == 0
    assert main(["sites", str(tmp_path / "s")]) == 0
    assert "CN-HaM" in capsys.readouterr().out
    assert main(["convert-site", str(DD), "--metadata", str(META / "CN-HaM.yaml"), "--output", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# Bad input: a clear error naming file, variable and rule; nothing written
# --------------------------------------------------------------------------------------------------------------


def _edit_csv(path: Path, fn) -> None:
    lines = path.read_text().splitlines(keepends=True)
    head = [ln for ln in lines if ln.startswith("#")]
    df = pd.read_csv(path, dtype=str, comment="#", keep_default_na=False)
    df = fn(df) if fn(df) is not None else df
    with open(path, "w") as fh:
        fh.writelines(head)
        df.to_csv(fh, index=False)


def _drop(col):
    return lambda df: df.drop(columns=[col])


def _set(col, value, rows=slice(None)):
    def fn(df):
        df.loc[df.index[rows], col] = value
        return df

    return fn


def _rename(old, new):
    return lambda df: df.rename(columns={old: new})


def _meta(edit):
    def fn(m: dict) -> None:
        edit(m)

    return fn


def _del_sensors(m):
    m["sensors"] = {}


def _no_depth(m):
    del m["sensors"]["soil_moisture"][0]["depth_m"]


def _typo(m):
    m["refrence_height"] = m.pop("reference_height")


def _qc_rule(m):
    m["conversion"] = {"gaps": "interpolate", "max_gap": 6, "quality": {"forcing_max_flag": 1}}


def _no_day_night(m):
    m["conversion"] = {"disaggregation": {"temperature": "day_night"}}


# (case, data file, metadata, csv edit, metadata edit, error type, regex: file + variable + rule)
CASES = [
    ("missing forcing variable", DD, "CN-HaM.yaml", _drop("LW_IN_F"), None, SiteError,
     r"FLX_CN-HaM.*missing required forcing column.*LW_IN_F.*rule: FLUXNET forcing needs"),
    ("all-missing soil moisture", DD, "CN-HaM.yaml", _set("SWC_F_MDS_1", "-9999"), None, SiteError,
     r"FLX_CN-HaM.*soil_moisture column SWC_F_MDS_1.*all 89 values are missing.*rule: every listed sensor"),
    ("soil moisture fails QC everywhere", DD, "CN-HaM.yaml", _set("SWC_F_MDS_1_QC", "0.1"), None, SiteError,
     r"SWC_F_MDS_1: no value passes the quality rule conversion.quality.observations_min_fraction=0.5"),
    ("QC-flagged gap beyond the gap policy", HH, "fluxnet_hh/metadata.yaml", _set("TA_F_QC", "2", slice(100, 120)),
     _qc_rule, SiteError, r"FLX_US-CRT.*column TA_F.*20 missing.*longer than max_gap=6.*20 of them set missing by "
     r"the rule conversion.quality.forcing_max_flag=1.*conversion.gaps='interpolate'"),
    ("unknown time-stamp convention", HH, "fluxnet_hh/metadata.yaml", _rename("TIMESTAMP_END", "TIME_END"), None,
     SiteError, r"FLX_US-CRT.*unknown time-stamp convention \(rule: FLUXNET files have TIMESTAMP_START"),
    ("BASE gap without a fill policy", BASE, "US-CRT.yaml", None,
     lambda m: m.update(format="ameriflux_base", file=None), SiteError,
     r"AMF_US-CRT_BASE_HH.*column PA: forcing variable 'p_sfc' has \d+ missing.*gap policy: conversion.gaps='error'"),
    ("metadata without sensor depths", DD, "CN-HaM.yaml", None, _del_sensors, SiteError,
     r"FLX_CN-HaM.*soil_moisture column\(s\) \['SWC_F_MDS_1'\] have no depth in .*rule: FLUXNET DD files give no "
     r"sensor depths"),
    ("sensor without depth_m", DD, "CN-HaM.yaml", None, _no_depth, ConfigError,
     r"meta.yaml: missing required key 'sensors.soil_moisture.0.depth_m'"),
    ("misspelt key", DD, "CN-HaM.yaml", None, _typo, ConfigError, r"unknown key 'refrence_height'; did you mean"),
    ("daily file without day/night temperature", DD, "CN-HaM.yaml", _drop("TA_F_NIGHT"), _no_day_night, SiteError,
     r"no column for T_air_night \(rule: conversion.disaggregation.temperature='day_night' needs it"),
    ("wrong site", DD, "US-Me5.yaml", None, lambda m: m.pop("file", None), SiteError,
     r"the file is site CN-HaM but .* says site_id US-Me5"),
    # Gap and range messages label their (UTC) times and say how to find the file's stamp; row 28 is the local day
    # 2002-03-01 (UTC+8), which starts at 2002-02-28 16:00 UTC.
    ("gap time labelled UTC", DD, "CN-HaM.yaml", _set("VPD_F", "-9999", slice(28, 29)), None, SiteError,
     r"FLX_CN-HaM.*column VPD_F.*first at 2002-02-28 16:00 UTC\).*times in UTC; the file's stamps are local "
     r"standard time UTC\+8"),
    ("BASE shortwave below the clipped offset", BASE, "US-CRT_BASE.yaml", _set("SW_IN", "-25", slice(0, 1)), None,
     SiteError, r"AMF_US-CRT_BASE_HH_2-5.csv: variable 'sw_down': 1 value\(s\) negative \[0, 1400\] W m-2 \(e.g. -25\) "
     r"first at 2011-07-01 05:30 UTC \(column SW_IN\); times in UTC; the file's stamps are local standard time UTC-5"),
    ("BASE forcing column of another name", BASE, "US-CRT_BASE.yaml", _rename("TA", "TA_MEAN"), None, SiteError,
     r"AMF_US-CRT.*missing required forcing column TA \(T_air; rule: BASE forcing needs it.*TA_1_1_1 or TA_PI_F; "
     r"choose a column of another name with conversion.forcing_columns: \{T_air: <column>\}"),
    ("BASE replicate-average soil column unlisted", BASE, "US-CRT_BASE.yaml",
     lambda df: df.assign(SWC_1_1_A=df["SWC"], TS_1_1_A=df["TS_1_1_1"]), None, SiteError,
     r"AMF_US-CRT.*soil_moisture column\(s\) \['SWC_1_1_A'\] have no depth in .*rule: AmeriFlux BASE files give no"),
    ("one data row", HH, "fluxnet_hh/metadata.yaml", lambda df: df.iloc[:1], None, SiteError,
     r"FLX_US-CRT.*: only 1 data row; the file is too short \(at least two rows are needed"),
    ("one data row BASE", BASE, "US-CRT_BASE.yaml", lambda df: df.iloc[:1], None, SiteError,
     r"AMF_US-CRT_BASE_HH_2-5.csv: only 1 data row; the file is too short"),
    ("unsorted daily rows", DD, "CN-HaM.yaml", lambda df: df.iloc[[0, 2, 1, *range(3, len(df))]], None, SiteError,
     r"FLX_CN-HaM.*data row 3 \(TIMESTAMP 20020202\) does not follow row 2 \(TIMESTAMP 20020203\)"),
    ("duplicated BASE row", BASE, "US-CRT_BASE.yaml", lambda df: df.iloc[[0, 1, 1, *range(2, len(df))]], None,
     SiteError, r"AMF_US-CRT_BASE_HH_2-5.csv: time stamps must increase; data row 3 \(TIMESTAMP_END \d{12}\) does "
     r"not follow row 2"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "data", "meta", "edit", "meta_edit", "error", "match"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input(tmp_path: Path, case, data, meta, edit, meta_edit, error, match) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(data, src / data.name)
    if edit is not None:
        _edit_csv(src / data.name, edit)
    meta_path = META / meta if (META / meta).is_file() else DATA / meta
    m = yaml.safe_load(meta_path.read_text())
    if meta_edit is not None:
        meta_edit(m)
    (tmp_path / "meta.yaml").write_text(yaml.safe_dump(m))
    out = tmp_path / "site"
    with pytest.raises(error, match=match):
        convert(src / data.name, tmp_path / "meta.yaml", out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_overwrite_keeps_the_old_site(tmp_path: Path) -> None:
    out = convert(DD, META / "CN-HaM.yaml", tmp_path / "site")
    before = (out / "forcing.nc").read_bytes()
    m = yaml.safe_load((META / "CN-HaM.yaml").read_text())
    m["sensors"] = {}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(m))
    with pytest.raises(SiteError, match="have no depth"):
        convert(DD, tmp_path / "bad.yaml", out, overwrite=True)
    assert (out / "forcing.nc").read_bytes() == before


def test_coarse_fluxnet_files_refused(tmp_path: Path) -> None:
    ww = tmp_path / DD.name.replace("_DD_", "_WW_")
    shutil.copy(DD, ww)
    with pytest.raises(SiteError, match=re.escape(f"{ww.name}: WW files are too coarse")):
        read(ww, load_metadata(META / "CN-HaM.yaml"))


# --------------------------------------------------------------------------------------------------------------
# Robustness: replicate QC, encodings, local time, raw shortwave, names and short or empty inputs
# --------------------------------------------------------------------------------------------------------------


def _copy(tmp_path: Path, data: Path, edit=None, name: str | None = None) -> Path:
    """A copy of a test slice (edited with :func:`_edit_csv`) alone in a fresh folder."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    path = src / (name or data.name)
    shutil.copy(data, path)
    if edit is not None:
        _edit_csv(path, edit)
    return path


def _meta_file(tmp_path: Path, meta: Path, edit) -> Path:
    m = yaml.safe_load(meta.read_text())
    edit(m)
    out = tmp_path / "meta.yaml"
    out.write_text(yaml.safe_dump(m))
    return out


def test_replicate_soil_sensors_apply_each_columns_qc(tmp_path: Path) -> None:
    """Two replicates listed as one sensor: each column's own QC applies before the mean (a failing replicate is
    missing, the other carries the day; NaN only where none passes), and qc_dropped counts both columns' drops."""

    def replicate(df):
        s1 = df["SWC_F_MDS_1"].astype(float)
        df["SWC_F_MDS_2"] = np.where(s1 == -9999, -9999.0, s1 + 2.0).astype(str)
        df["SWC_F_MDS_2_QC"] = "1.0"
        df.loc[df.index[40:45], "SWC_F_MDS_1_QC"] = "0.2"  # _1 fails: _2 alone
        df.loc[df.index[50:55], "SWC_F_MDS_2_QC"] = "0.1"  # _2 fails with absurd values: _1 alone
        df.loc[df.index[50:55], "SWC_F_MDS_2"] = "90"
        df.loc[df.index[60:62], ["SWC_F_MDS_1_QC", "SWC_F_MDS_2_QC"]] = "0.1"  # both fail: NaN
        return df

    path = _copy(tmp_path, DD, replicate)
    meta = _meta_file(
        tmp_path,
        META / "CN-HaM.yaml",
        lambda m: m["sensors"].update(soil_moisture=[{"column": ["SWC_F_MDS_1", "SWC_F_MDS_2"], "depth_m": 0.05}]),
    )
    site = read(path, load_metadata(meta))
    raw = _raw(path)
    v1 = raw["SWC_F_MDS_1"].where(raw["SWC_F_MDS_1_QC"] >= 0.5)
    v2 = raw["SWC_F_MDS_2"].where(raw["SWC_F_MDS_2_QC"] >= 0.5)
    sm = site.observations["soil_moisture"]
    np.testing.assert_allclose(sm.values[:, 0], pd.concat([v1, v2], axis=1).mean(axis=1) / 100.0, rtol=1e-12)
    np.testing.assert_allclose(sm.values[40:45, 0], raw["SWC_F_MDS_2"][40:45] / 100.0)
    np.testing.assert_allclose(sm.values[50:55, 0], raw["SWC_F_MDS_1"][50:55] / 100.0)
    assert np.isnan(sm.values[60:62, 0]).all() and not np.isnan(sm.values[40:55, 0]).any()
    dropped = int((v1.isna() & raw["SWC_F_MDS_1"].notna()).sum() + (v2.isna() & raw["SWC_F_MDS_2"].notna()).sum())
    assert sm.attrs["qc_dropped"] == str(dropped) and dropped >= 5 + 5 + 2 * 2


def test_table_replicates_apply_each_columns_flag(tmp_path: Path) -> None:
    """The table reader goes the same way: a second moisture column with its own flag column carries the
    half-hours that the first one's flag drops."""
    src = tmp_path / "table"
    shutil.copytree(DATA / "table", src)
    meteo = src / "Svartberget_meteo_2019.csv"
    df = pd.read_csv(meteo, sep=";", dtype=str, keep_default_na=False)
    df["Wliq2"] = (df["Wliq"].astype(float) + 1.0).astype(str)
    df["Wliq2_flag"] = "0"
    df.to_csv(meteo, sep=";", index=False)

    def edit(m):
        m["sensors"]["soil_moisture"] = [{"column": ["Wliq", "Wliq2"], "depth_m": 0.05}]
        m["table"]["sensor_flags"]["Wliq2"] = "Wliq2_flag"

    sm = read(src, load_metadata(_meta_file(tmp_path, META / "SE-Svb.yaml", edit))).observations["soil_moisture"]
    raw = pd.read_csv(meteo, sep=";")
    interpolated = raw["Wliq_flag"].to_numpy() == 1
    np.testing.assert_allclose(sm.values[interpolated, 0], raw["Wliq2"][interpolated] / 100.0)
    np.testing.assert_allclose(sm.values[~interpolated, 0], (raw["Wliq"] + 0.5)[~interpolated] / 100.0)
    assert sm.attrs["qc_dropped"] == str(int(interpolated.sum()))


def test_base_zip_member_not_utf8_reads_like_the_plain_file(tmp_path: Path) -> None:
    """A Latin-1 byte in a comment line of the zipped CSV: read as the plain file is, not a UnicodeDecodeError;
    a bad byte among the data is a SiteError naming the file."""
    meta = load_metadata(META / "US-CRT_BASE.yaml")
    data = BASE.read_bytes().replace(b"# Site: US-CRT", b"# Site: Curtice, \xe9t\xe9 2011")
    z = tmp_path / "AMF_US-CRT_BASE-BADM_2-5.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(BASE.name, data)
    np.testing.assert_array_equal(read(z, meta).forcing["T_air"].values, read(BASE, meta).forcing["T_air"].values)
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(BASE.name, data.replace(b",19.33521,", b",19.3\xe9,", 1))
    with pytest.raises(SiteError, match=f"{BASE.name}: cannot be read as a table"):
        read(z, meta)


def test_climatology_fills_from_the_local_month(tmp_path: Path) -> None:
    """PA_F missing on the local day 2002-03-01 of a UTC+8 daily file: filled with the mean of the local March
    days (that day starts on 2002-02-28 in UTC; a UTC month would take February's mean)."""
    path = _copy(tmp_path, DD, _set("PA_F", "-9999", slice(28, 29)))
    meta = _meta_file(tmp_path, META / "CN-HaM.yaml", lambda m: m.update(conversion={"gaps": "climatology"}))
    site = read(path, load_metadata(meta))
    raw = _raw(DD)
    march = raw["TIMESTAMP"].astype(str).str[:6].eq("200203").to_numpy().copy()
    march[28] = False
    p = site.forcing["p_sfc"]
    assert p.attrs["gap_fill_method"] == "climatology" and p.attrs["gap_fill_count"] == 1
    day = p.values[28 * 24 : 29 * 24]  # hourly, constant through the day
    np.testing.assert_allclose(day, raw["PA_F"][march].mean() * 1000.0, rtol=1e-12)
    utc_february = raw["PA_F"][1:28].mean() * 1000.0  # the local days 02-02 .. 02-28 (and the gap) in UTC
    assert abs(day[0] - utc_february) > 2.0  # Pa (the check above is to 1e-12)


@pytest.mark.parametrize(
    ("data", "meta_file", "column"),
    [(BASE, META / "US-CRT_BASE.yaml", "SW_IN"), (HH, DATA / "fluxnet_hh" / "metadata.yaml", "SW_IN_F")],
)
def test_small_negative_shortwave_clipped_and_counted(tmp_path: Path, data: Path, meta_file: Path, column: str):
    """Shortwave with a night-time offset (-1.3 and -19.5 W m-2; raw BASE SW_IN, or an ICOS/ONEFlux SW_IN_F) becomes
    0, counted in the attributes."""

    def offset(df):
        night = df[column].astype(float).eq(0.0)
        df.loc[night, column] = "-1.3"
        df.loc[df.index[night.to_numpy()][:2], column] = "-19.5"
        return df

    path = _copy(tmp_path, data, offset)
    meta = load_metadata(meta_file)
    sw = read(path, meta).forcing["sw_down"]
    raw = _raw(path)
    n = int((raw[column] < 0).sum())
    assert n > 100 and sw.attrs["clipped_count"] == n
    assert sw.attrs["comment"] == f"negative values down to -20 W m-2 set to 0: {n}"
    assert float(sw.min()) == 0.0 and (sw.values[(raw[column] < 0).to_numpy()] == 0.0).all()
    np.testing.assert_array_equal(sw.values, read(data, meta).forcing["sw_down"].values)  # the file had 0 there


def test_small_negative_daily_shortwave_clipped_before_disaggregation(tmp_path: Path) -> None:
    """A daily SW_IN_F of -0.5 W m-2 (a polar-night offset) is a day without sunlight, not a refused file."""
    path = _copy(tmp_path, DD, lambda df: df.assign(SW_IN_F=df["SW_IN_F"].where(df.index != 5, "-0.5")))
    sw = read(path, load_metadata(META / "CN-HaM.yaml")).forcing["sw_down"]
    assert sw.attrs["clipped_count"] == 1 and float(sw.min()) == 0.0


def test_ameriflux_fluxnet_product_name_and_unrecognised_files(tmp_path: Path) -> None:
    """AmeriFlux's ONEFlux product is a FLUXNET file (found in a folder too); a folder with no recognised name
    lists its CSV files."""
    name = "AMF_US-CRT_FLUXNET_FULLSET_HH_2011-2011_3-5.csv"
    path = _copy(tmp_path, HH, name=name)
    meta = load_metadata(DATA / "fluxnet_hh" / "metadata.yaml")
    site = read(path.parent, meta)
    assert site.forcing.attrs["source_format"] == "FLUXNET HH" and site.forcing.attrs["source_files"] == name
    np.testing.assert_array_equal(site.forcing["T_air"].values, read(HH, meta).forcing["T_air"].values)
    path.rename(path.with_name("US-CRT_halfhourly.csv"))
    with pytest.raises(SiteError, match=r"0 candidate data files \(none; not a FLUXNET or AmeriFlux BASE file name: "
                       r"US-CRT_halfhourly.csv \(known: .*AMF_<ID>_FLUXNET_FULLSET_"):  # fmt: skip
        read(path.parent, meta)


@pytest.mark.parametrize(
    ("columns", "chosen"),
    [(["TA_PI_F"], "TA_PI_F"), (["TA_1_1_A"], "TA_1_1_A"), (["TA_1"], "TA_1"), (["TA_1_1_1", "TA_1_1_A"], None)],
)
def test_base_qualified_forcing_columns(tmp_path: Path, columns: list[str], chosen: str | None) -> None:
    """A forcing column with AmeriFlux qualifiers is taken where it is the only one; several need a choice."""
    path = _copy(tmp_path, BASE, lambda df: df.drop(columns=["TA"]).assign(**{c: df["TA"] for c in columns}))
    meta = load_metadata(META / "US-CRT_BASE.yaml")
    if chosen is None:
        with pytest.raises(SiteError, match=r"several columns for T_air: \['TA_1_1_1', 'TA_1_1_A'\]"):
            read(path, meta)
        return
    t = read(path, meta).forcing["T_air"]
    assert t.attrs["source_column"] == chosen
    np.testing.assert_array_equal(t.values, read(BASE, meta).forcing["T_air"].values)


def test_daily_day_temperature_all_missing_names_the_column(tmp_path: Path) -> None:
    """TA_F_DAY without any value on days with a sunrise: the file and column are named, no numpy warning."""
    path = _copy(tmp_path, DD, _set("TA_F_DAY", "-9999"))
    meta = load_metadata(META / "CN-HaM.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(SiteError, match=rf"{DD.name}: column TA_F_DAY \(T_air_day\) has no values \(rule: "
                           r"conversion.disaggregation.temperature='day_night' .*mean_range"):  # fmt: skip
            read(path, meta)
