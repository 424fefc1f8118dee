"""The reference cases and station files the tests need, shipped compactly under ``tests/data``.

The workspace originals (Fortran Noah-MP runs and station files) are large CSV and text files. They ship here
losslessly in two forms, and :func:`materialise` rebuilds each folder with the original file names, so the tests
read exactly the bytes they would read from the originals:

- a CSV file is stored as a netCDF file (zlib, shuffle; one variable per column) whose attributes say how each
  column's text is written back: integers, ISO time stamps, float64 ``repr``, float32 numbers written as their
  float64 ``repr`` (the forcing: float32 inputs promoted to float64) or as their shortest float32 string (a
  float32 history file). A column equal to an earlier one, or to an earlier one moved by one row (a start
  state = previous end state), is stored as that reference. :func:`pack_csv` chooses each column's storage and
  refuses to write a file it cannot rebuild byte for byte;
- a text file is stored xz-compressed (``*.xz``); any other file is copied as it is.

Run ``python tests/shipped_data.py pack`` in the workspace (next to ``../shared``) to rebuild ``tests/data`` from
the originals; it also writes ``tests/data/ORIGINALS.sha256``, the sha256 of every original's content (a gzip
file's decompressed content), so that ``tests/test_shipped_data.py`` checks in any clone that every rebuilt file
equals its original byte for byte, and where the originals exist also that the manifest matches them.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SHARED = Path(os.environ.get("DAM_SHARED", ROOT.parent / "shared"))  # the workspace originals
PACKAGE_DATA = ROOT / "dam" / "data"
MANIFEST = DATA / "ORIGINALS.sha256"  # "<sha256>  <tree>/<file>" per original, sha256sum's format

# Shipped folder (under tests/data) -> its original (under ../shared) and the files of it that ship.
TREES = {
    "noahmp_soil": ("reference/noahmp_soil", [
        "bondville/params.json", "bondville/params.nml", "bondville/full_model_steps.csv.gz",
        "koren_freeze/params.json", "koren_freeze/params.nml", "koren_freeze/forcing.csv", "koren_freeze/output.csv",
    ]),
    "noahmp_full/bondville": ("reference/noahmp_full/bondville", ["setup.json", "forcing.csv", "output.csv.gz"]),
    "noahmp_full/bondville_cold": ("reference/noahmp_full/bondville_cold",
                                   ["setup.json", "forcing.csv", "output.csv.gz"]),
    "stations": ("data", [
        "bondville_1998/SOURCE.md", "bondville_1998/forcing98_with_validation.dat",
        "bondville_1998/hrldas_bondville.dat", "hyytiala_2000_2010/SOURCE.md",
        "hyytiala_2000_2010/HydeDaily2000-2010.txt", "hyytiala_2000_2010/HydeDaily_readme.txt",
        "tanggula_forcing_only/SOURCE.md", "tanggula_forcing_only/forcing.txt",
    ]),
}  # fmt: skip
# Files the package already ships (dam/data): materialised from there (gunzipped) instead of twice in git. (Its
# params.json differs from the original by a "start_utc" key, so the original ships here.)
FROM_PACKAGE = {
    "noahmp_soil": {
        "bondville/forcing.csv": "bondville_soil/forcing.csv.gz",
        "bondville/output.csv": "bondville_soil/output.csv.gz",
    }
}
TEXT_SUFFIXES = (".dat", ".txt")  # shipped xz-compressed
ISO_TIME = "%Y-%m-%dT%H:%M:%SZ"
_INT = re.compile(r"-?\d+")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


# ----------------------------------------------------------------------------------------------- column codecs


def _float_texts(values: np.ndarray, codec: str, nan: str) -> list[str]:
    """The CSV text of a float column stored with ``codec``."""
    if codec == "float32_shortest":
        texts = values.astype(np.float32).astype(str).tolist()  # numpy's shortest round-trip float32 strings
    else:
        texts = [repr(x) for x in values.astype(np.float64).tolist()]
    bad = np.flatnonzero(np.isnan(values))
    for i in bad.tolist():
        texts[i] = nan
    return texts


def _column_texts(var: xr.DataArray) -> list[str]:
    codec = var.attrs["csv_codec"]
    values = var.values
    if codec == "int":
        return [str(x) for x in values.tolist()]
    if codec == "time":
        return [t + "Z" for t in np.datetime_as_string(values.astype("datetime64[s]"), unit="s").tolist()]
    return _float_texts(values, codec, var.attrs.get("csv_nan", "nan"))


def _encode_column(texts: list[str]) -> tuple[np.ndarray, dict]:
    """Storage array and attributes that write ``texts`` back exactly (ValueError if no codec does)."""
    if all(_INT.fullmatch(t) for t in texts):
        values = np.array([int(t) for t in texts], dtype=np.int64)
        small = values.min(initial=0) >= -(2**31) and values.max(initial=0) < 2**31
        values = values.astype(np.int32) if small else values
        if [str(x) for x in values.tolist()] == texts:
            return values, {"csv_codec": "int"}
    if all(_TIME.fullmatch(t) for t in texts):
        values = np.array([t[:-1] for t in texts], dtype="datetime64[s]")
        return values, {"csv_codec": "time"}
    try:
        values = np.array([float(t) for t in texts], dtype=np.float64)
    except ValueError:
        raise ValueError(f"column is neither integer, ISO time nor float: {texts[:3]}") from None
    nans = {t for t, v in zip(texts, values.tolist(), strict=True) if v != v}
    if len(nans) > 1:
        raise ValueError(f"column spells NaN in more than one way: {sorted(nans)}")
    attrs = {"csv_nan": nans.pop()} if nans else {}
    with np.errstate(over="ignore"):
        as32 = values.astype(np.float32)  # beyond float32's range: inf, caught by the comparison below
    for codec, stored in (("float32_as_float64", as32), ("float32_shortest", as32), ("float64", values)):
        if _float_texts(stored, codec, attrs.get("csv_nan", "nan")) == texts:
            return stored, {"csv_codec": codec, **attrs}
    raise ValueError(f"no codec writes the column back exactly: {texts[:3]}")


def _bitwise_equal(a: np.ndarray, b: np.ndarray, skip: int = 0) -> bool:
    """Same dtype and bits (-0.0 is not 0.0), ignoring the first (skip=1) or last (skip=-1) element."""
    keep = slice(1, None) if skip == 1 else slice(None, -1) if skip == -1 else slice(None)
    return a.dtype == b.dtype and a.shape == b.shape and a[keep].tobytes() == b[keep].tobytes()


def _read_text(path: Path) -> str:
    return (gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()).decode()


def pack_csv(src: Path, dst: Path) -> None:
    """Store CSV file ``src`` (plain or gzipped) as netCDF ``dst``; check that it writes back byte for byte."""
    text = _read_text(src)
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.split(newline)
    if lines[-1] != "" or "\r" in text.replace("\r\n", "") or '"' in text:
        raise ValueError(f"{src}: not a plain comma-separated file with one kind of line ending and a final one")
    header = lines[0].split(",")
    columns = list(zip(*(line.split(",") for line in lines[1:-1]), strict=True))
    ds = xr.Dataset(attrs={"csv_name": src.name, "csv_columns": ",".join(header), "csv_newline": newline})
    stored: dict[str, np.ndarray] = {}  # columns stored in full
    for name, texts in zip(header, columns, strict=True):
        values, attrs = _encode_column(list(texts))
        like = {k: v for k, v in stored.items() if ds[k].attrs["csv_codec"] == attrs["csv_codec"]}
        if (same := next((k for k, v in like.items() if _bitwise_equal(v, values)), None)) is not None:
            ds.attrs[f"csv_same_{name}"] = same
            continue
        # a start-of-step state is the previous step's end state: one column moved by one row
        for shift, extra in ((1, values[0]), (-1, values[-1])):
            moved = next((k for k, v in like.items() if _bitwise_equal(np.roll(v, shift), values, skip=shift)), None)
            if moved is not None and values.dtype.kind != "M":
                ds[name] = xr.DataArray(extra, attrs={**attrs, "csv_shift_of": moved, "csv_shift": shift})
                break
        else:
            stored[name] = values
            ds[name] = xr.DataArray(values, dims="row", attrs=attrs)
    encoding = {v: {"zlib": True, "shuffle": True, "complevel": 9, "_FillValue": None} for v in ds.data_vars}
    for v in ds.data_vars:
        if ds[v].dtype.kind == "M":
            encoding[v] |= {"units": "seconds since 1970-01-01T00:00:00", "calendar": "proleptic_gregorian",
                            "dtype": "int64"}  # fmt: skip
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(dst, encoding=encoding)
    if csv_text(dst) != text:
        dst.unlink()
        raise ValueError(f"{src}: the packed copy does not write back byte for byte")


def csv_text(nc: Path) -> str:
    """The CSV text stored in netCDF file ``nc`` (see :func:`pack_csv`)."""
    with xr.open_dataset(nc, decode_times=True) as ds:
        ds.load()
    header = ds.attrs["csv_columns"].split(",")
    texts: dict[str, list[str]] = {}
    for name in header:
        if (same := ds.attrs.get(f"csv_same_{name}")) is not None:
            texts[name] = texts[same]
            continue
        var = ds[name]
        if (ref := var.attrs.get("csv_shift_of")) is not None:  # the row that moved out is stored
            moved = np.roll(ds[ref].values, var.attrs["csv_shift"])
            moved[0 if var.attrs["csv_shift"] == 1 else -1] = var.values
            var = ds[ref].copy(data=moved)
        texts[name] = _column_texts(var)
    rows = zip(*(texts[name] for name in header), strict=True)
    newline = ds.attrs["csv_newline"]
    return ",".join(header) + newline + "".join(",".join(row) + newline for row in rows)


# ----------------------------------------------------------------------------------------------- materialise


def _shipped_name(name: str) -> str:
    if name.endswith((".csv", ".csv.gz")):
        return name.removesuffix(".gz").removesuffix(".csv") + ".nc"
    return name + ".xz" if name.endswith(TEXT_SUFFIXES) else name


def source_files(tree: str) -> list[Path]:
    """The files of ``tests/data/<tree>`` and the package files it uses, sorted."""
    files = sorted(p for p in (DATA / tree).rglob("*") if p.is_file())
    return files + [PACKAGE_DATA / rel for rel in FROM_PACKAGE.get(tree, {}).values()]


def fingerprint(tree: str) -> str:
    """sha256 over the shipped files of ``tree`` and this module (a materialised copy is valid while equal)."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for p in source_files(tree):
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _write_tree(tree: str, dest: Path) -> None:
    """Write the original files of ``tests/data/<tree>`` into the empty folder ``dest``."""
    for p in sorted((DATA / tree).rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(DATA / tree)
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".nc":
            with xr.open_dataset(p) as ds:
                name = ds.attrs["csv_name"]
            data = csv_text(p).encode()
            out = out.with_name(name)
            out.write_bytes(gzip.compress(data, compresslevel=1, mtime=0) if name.endswith(".gz") else data)
        elif p.suffix == ".xz":
            out.with_suffix("").write_bytes(lzma.decompress(p.read_bytes()))
        else:
            shutil.copyfile(p, out)
    for rel, src in FROM_PACKAGE.get(tree, {}).items():
        data = (PACKAGE_DATA / src).read_bytes()
        (dest / rel).write_bytes(gzip.decompress(data) if src.endswith(".gz") and not rel.endswith(".gz") else data)


def materialise(tree: str, cache: Path) -> Path:
    """The folder ``cache/<tree>`` holding the original files of ``tests/data/<tree>``, rebuilt when stale."""
    dest = cache / tree
    stamp = dest / ".fingerprint"
    key = fingerprint(tree)
    if stamp.is_file() and stamp.read_text() == key:
        return dest
    tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_tree(tree, tmp)
    (tmp / ".fingerprint").write_text(key)
    shutil.rmtree(dest, ignore_errors=True)
    try:
        tmp.rename(dest)
    except OSError:  # another test run finished the same copy first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (stamp.is_file() and stamp.read_text() == key):
            raise
    return dest


# ----------------------------------------------------------------------------------------------- provenance


def content_sha256(path: Path) -> str:
    """sha256 of a file's content (of the decompressed content for a ``.gz`` file)."""
    data = path.read_bytes()
    return hashlib.sha256(gzip.decompress(data) if path.suffix == ".gz" else data).hexdigest()


def original_files(tree: str) -> list[str]:
    """The original files of ``tree`` (paths relative to its folder), the package-shipped ones included."""
    return [*TREES[tree][1], *FROM_PACKAGE.get(tree, {})]


def read_manifest() -> dict[str, str]:
    """``{"<tree>/<file>": sha256}`` of :data:`MANIFEST`."""
    pairs = (line.split(maxsplit=1) for line in MANIFEST.read_text().splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def write_manifest() -> None:
    """Write :data:`MANIFEST` from the originals in :data:`SHARED`."""
    lines = [f"{content_sha256(SHARED / TREES[tree][0] / rel)}  {tree}/{rel}\n"
             for tree in TREES for rel in original_files(tree)]  # fmt: skip
    MANIFEST.write_text("".join(lines))


# ----------------------------------------------------------------------------------------------- pack


def pack(tree: str) -> None:
    """Rebuild ``tests/data/<tree>`` from its original in ``../shared`` (READMEs are kept: they are ours)."""
    shared_rel, files = TREES[tree]
    for rel in files:
        src = SHARED / shared_rel / rel
        dst = DATA / tree / Path(rel).parent / _shipped_name(Path(rel).name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.suffix == ".nc":
            pack_csv(src, dst)
        elif dst.suffix == ".xz":
            dst.write_bytes(lzma.compress(src.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
        else:
            shutil.copyfile(src, dst)
        print(f"{dst.relative_to(ROOT)}: {dst.stat().st_size / 1e6:.3f} MB (from {src.stat().st_size / 1e6:.3f} MB)")


if __name__ == "__main__":
    if sys.argv[1:2] != ["pack"]:
        sys.exit("usage: python tests/shipped_data.py pack [TREE ...]")
    for t in sys.argv[2:] or TREES:
        pack(t)
    write_manifest()
