"""The test data shipped in tests/data: its storage writes every file back byte for byte, and every rebuilt file
equals its original (by the sha256 manifest in a clone; also against the originals in ../shared where they
exist)."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import shipped_data as S

from dam.cases import read_exact_csv


def test_csv_storage_writes_back_byte_for_byte(tmp_path):
    """Every column codec, NaN spelling, CRLF line ends, a duplicate and a moved column round-trip exactly."""
    f32 = np.array([24.503439, -9.092354e-06, 0.1, 1.0e8, 3.0e-39], dtype=np.float32)  # last one subnormal
    rows = [
        ["1998-01-02T00:30:00Z", "1998-12-31T23:30:00Z", "1999-01-01T00:00:00Z", "2000-02-29T12:00:00Z",
         "2001-01-01T00:00:00Z"],
        ["1", "-2", "30", "2147483647", "0"],
        [repr(float(x)) for x in f32],  # float32 promoted, written as float64
        [str(x) for x in f32[:4]] + ["NaN"],  # float32 history values, NaN where a layer is absent
        ["0.1", "-0.0", "5e-324", "1.7976931348623157e+308", "0.30000000000000004"],  # float64
        ["0.1", "-0.0", "5e-324", "1.7976931348623157e+308", "0.30000000000000004"],  # a duplicate
        ["7.0", "0.1", "-0.0", "5e-324", "1.7976931348623157e+308"],  # the float64 column moved down one row
    ]  # fmt: skip
    header = "time_utc,step,t_air_K,swe_mm,flux,flux_copy,flux_start"
    for newline in ("\n", "\r\n"):
        text = header + newline + "".join(",".join(r) + newline for r in zip(*rows, strict=True))
        src = tmp_path / "table.csv.gz"
        src.write_bytes(gzip.compress(text.encode()))
        S.pack_csv(src, tmp_path / "table.nc")
        assert S.csv_text(tmp_path / "table.nc") == text
    import xarray as xr

    with xr.open_dataset(tmp_path / "table.nc") as ds:
        assert ds.t_air_K.dtype == np.float32 and ds.swe_mm.dtype == np.float32 and ds.flux.dtype == np.float64
        assert "flux_copy" not in ds and ds.flux_start.ndim == 0  # stored as references


def test_csv_storage_refuses_what_it_cannot_write_back(tmp_path):
    src = tmp_path / "odd.csv"
    src.write_text("a,b\n1.50,2\n")  # "1.50" is no float's shortest form
    with pytest.raises(ValueError, match="no codec"):
        S.pack_csv(src, tmp_path / "odd.nc")


def test_shipped_test_data_stays_small():
    size = sum(p.stat().st_size for p in S.DATA.rglob("*") if p.is_file())
    assert size < 15e6, f"tests/data holds {size / 1e6:.1f} MB"


@pytest.mark.parametrize("tree", sorted(S.TREES))
def test_shipped_copies_equal_the_originals(tree, shipped_data):
    """Each rebuilt file's content (a gzip file's: decompressed) has the sha256 its original had when it was
    packed (tests/data/ORIGINALS.sha256), so a clone checks its copies byte for byte. Where the originals exist
    (the workspace), the manifest must match them and every CSV column must parse to the same numbers
    (np.array_equal, NaN equal to NaN)."""
    manifest = S.read_manifest()
    rebuilt = shipped_data(tree)
    for rel in S.original_files(tree):
        copy = rebuilt / rel
        assert S.content_sha256(copy) == manifest[f"{tree}/{rel}"], f"{copy} differs from its original"
    if not S.SHARED.is_dir():
        return  # a clone: the manifest is the record of the originals
    for rel in S.original_files(tree):
        original = S.SHARED / S.TREES[tree][0] / rel
        assert S.content_sha256(original) == manifest[f"{tree}/{rel}"], f"manifest is stale for {original}"
        copy = rebuilt / rel
        if ".csv" in original.suffixes:
            a, b = read_exact_csv(copy), read_exact_csv(original)
            assert list(a.columns) == list(b.columns)
            for col in a.columns:
                x, y = a[col].to_numpy(), b[col].to_numpy()
                same = np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else (x == y).all()
                assert same, f"{original.name}: column {col}"
                assert pd.api.types.is_dtype_equal(x.dtype, y.dtype)


def test_manifest_names_every_shipped_original():
    assert sorted(S.read_manifest()) == sorted(f"{t}/{rel}" for t in S.TREES for rel in S.original_files(t))
