"""Delimited text files described column by column in the metadata (``format: table``): station compilations
such as the ICOS Svartberget files of pyAPES, or any logger export.

The ``table`` section of the metadata names the file(s) (several files must share the time axis row for row),
the time columns, the step, the missing-value codes, the column and units of each forcing variable (humidity
with its kind: relative humidity, VPD, specific humidity or vapour pressure), flux observations and optional
flag columns (values whose flag is not in ``conversion.quality.good_flags`` are dropped). The time-stamp
convention is not guessed: ``time.stamp`` must say whether a stamp marks the start, middle or end of its interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dam.readers.common import Columns, Source, Table, build_site, read_csv, time_steps
from dam.readers.metadata import SiteMetadata, TableColumn
from dam.sites import Site, SiteError


def _time(frame: pd.DataFrame, spec, name: str) -> pd.DatetimeIndex:
    cols = spec.time_columns
    try:
        if "timestamp" in cols:
            stamps = pd.to_datetime(frame[cols["timestamp"]].astype(str), format=spec.timestamp_format)
        else:
            parts = {k: frame[v] for k, v in cols.items()}
            stamps = pd.to_datetime(pd.DataFrame(parts))
    except KeyError as exc:
        raise SiteError(f"{name}: time column {exc} not in the file (metadata table.time_columns)") from None
    except (ValueError, TypeError) as exc:
        raise SiteError(f"{name}: time columns {list(cols.values())} do not form dates ({exc})") from None
    return pd.DatetimeIndex(stamps)


def read_table(folder: Path, meta: SiteMetadata, meta_path: str) -> Table:
    spec = meta.table
    if meta.time.stamp is None:
        raise SiteError(
            f"{meta_path}: unknown time-stamp convention (rule: table files need time.stamp: start, middle or end "
            "of the averaging interval)"
        )
    frames, times = [], None
    for f in spec.files:
        path = folder / f.path
        if not path.is_file():
            raise SiteError(f"{path}: no such file (metadata table.files)")
        frame = read_csv(path, spec.missing, sep=f.separator, comment=f.comment)
        t = _time(frame, spec, path.name)
        if times is not None and (len(t) != len(times) or (t != times).any()):
            raise SiteError(f"{path.name}: its time axis differs from {spec.files[0].path} (rule: one time axis)")
        frames.append(frame.drop(columns=list(spec.time_columns.values())))
        times = t
    steps = time_steps(spec.files[0].path, times)
    if len(steps) != 1 or int(steps[0]) != spec.step_s:
        raise SiteError(f"{spec.files[0].path}: rows are not a regular {spec.step_s} s series (steps {steps[:5]})")
    shift = {"start": spec.step_s, "middle": spec.step_s / 2, "end": 0}[meta.time.stamp]
    ends = times + pd.Timedelta(seconds=shift)
    frame = pd.concat(frames, axis=1)
    dup = frame.columns[frame.columns.duplicated()].tolist()
    if dup:
        raise SiteError(f"{spec.files[0].path}: column(s) {dup} appear in several files")
    return Table(folder / spec.files[0].path, frame, pd.DatetimeIndex(ends), spec.step_s, "table")


def _source(c: TableColumn, good: list[int]) -> Source:
    rule = (f"conversion.quality.good_flags={good}", lambda f: ~np.isin(f, good)) if c.flag else None
    return Source([c.column], c.units, c.flag, rule)


def read_table_site(folder: str | Path, meta: SiteMetadata, meta_path: str = "the metadata file") -> Site:
    """Convert the table files in ``folder`` described by ``meta.table``."""
    table = read_table(Path(folder), meta, meta_path)
    spec = meta.table
    good = meta.conversion.quality.good_flags
    forcing = {name: _source(c, good) for name, c in spec.forcing.items()}
    for name, src in forcing.items():
        if src.columns[0] not in table.frame:
            raise table.fail(f"missing required column {src.columns[0]!r} ({name}; rule: metadata table.forcing)")
    sensor_flags = spec.sensor_flags
    rule = (f"conversion.quality.good_flags={good}", lambda f: ~np.isin(f, good))
    cols = Columns(
        forcing=forcing,
        humidity_kind=str(spec.forcing["humidity"].kind),
        observations={name: _source(c, good) for name, c in spec.observations.items()},
        soil_pattern={k: "|".join(c for s in getattr(meta.sensors, k) for c in s.columns) for k in spec.sensor_units},
        soil_units=dict(spec.sensor_units),
        soil_qc=lambda col: Source([col], "", sensor_flags[col], rule) if col in sensor_flags else None,
    )
    for kind in ("soil_moisture", "soil_temperature"):
        if getattr(meta.sensors, kind) and kind not in spec.sensor_units:
            raise SiteError(f"{meta_path}: table.sensor_units.{kind} is required with {kind} sensors")
    return build_site(table, cols, meta, meta_path)
