"""Observations of a flux-tower file: the soil sensors the metadata lists (each replicate column's own quality rule
applied before they are averaged) and the surface fluxes, as the observations Dataset of a site folder."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from dam.readers.common import Columns, Source, Table, _history, mean_present, to_units, values
from dam.readers.metadata import SiteMetadata
from dam.sites import make_observations


def _replicate_mean(
    table: Table, cols: Columns, columns: list[str], units: str, kind: str
) -> tuple[np.ndarray, int, list[str]]:
    """The mean of one sensor's replicate columns, each column's own QC rule applied first: a replicate that fails
    counts as missing and the others carry the mean (a single QC for all would drop good replicates or average bad
    ones in). Also the number of values QC dropped and the rules used."""
    parts, n_qc, rules = [], 0, []
    for c in columns:
        qc = cols.soil_qc(c) if cols.soil_qc else None
        src = Source([c], units) if qc is None else Source([c], units, qc.qc, qc.qc_rule)
        x, n = values(table, src, kind, "")
        parts.append(x)
        n_qc += n
        if src.qc_rule and src.qc_rule[0] not in rules:
            rules.append(src.qc_rule[0])
    return mean_present(np.stack(parts)), n_qc, rules


def soil_series(table: Table, cols: Columns, meta: SiteMetadata, kind: str, meta_path: str):
    """``(values (time, sensor), depths, attrs)`` of one soil variable, or None; every file column of that kind
    must be listed in the metadata (FLUXNET files give no depths) or excluded."""
    sensors = sorted(getattr(meta.sensors, kind), key=lambda s: s.depth_m)
    pattern = cols.soil_pattern.get(kind)
    in_file = [c for c in table.frame.columns if pattern and re.fullmatch(pattern, c)]
    listed = {c for s in sensors for c in s.columns}
    absent = sorted(c for c in listed if c not in table.frame.columns)
    if absent:  # a typo in the metadata: say so before complaining about the file's real columns
        raise table.fail(f"{kind} column(s) {absent} of {meta_path} are not in the file ({kind} columns: {in_file})")
    unlisted = [c for c in in_file if c not in listed and c not in meta.sensors.exclude]
    if unlisted:
        raise table.fail(
            f"{kind} column(s) {unlisted} have no depth in {meta_path} (rule: {table.format} files give no sensor "
            f"depths, so every sensor needs sensors.{kind}: [{{column: {unlisted[0]}, depth_m: ...}}] or an entry "
            "in sensors.exclude with the reason)"
        )
    if not sensors:
        return None
    units = cols.soil_units[kind]
    canonical = "m3 m-3" if kind == "soil_moisture" else "K"
    series, n_qc = [], []
    for s in sensors:
        x, n, rules = _replicate_mean(table, cols, s.columns, units, kind)
        if np.isnan(x).all() and n == 0:  # nothing was there for QC to drop
            raise table.fail(
                f"{kind} column {'+'.join(s.columns)} (sensor at {s.depth_m:g} m): all {x.size} values are "
                f"missing (rule: every listed sensor needs data; remove it or move it to sensors.exclude)"
            )
        if np.isnan(x).all():
            raise table.fail(
                f"{kind} column {'+'.join(s.columns)}: no value passes the quality rule "
                f"{', '.join(rules)} (conversion.quality; {n} values dropped)"
            )
        series.append(to_units(x, units, canonical, kind, 1))
        n_qc.append(n)
    attrs = {
        "source_columns": ", ".join("+".join(s.columns) for s in sensors),
        "instruments": ", ".join(s.instrument or "?" for s in sensors),
        "qc_dropped": ", ".join(str(n) for n in n_qc),
    }
    return np.stack(series, axis=-1), [s.depth_m for s in sensors], attrs


def observations(table: Table, cols: Columns, meta: SiteMetadata, times: pd.DatetimeIndex, meta_path: str):
    obs: dict[str, np.ndarray] = {}
    depths: dict[str, list[float]] = {}
    attrs: dict[str, dict[str, Any]] = {}
    for kind in ("soil_moisture", "soil_temperature"):
        res = soil_series(table, cols, meta, kind, meta_path)
        if res is not None:
            obs[kind], depths[kind], attrs[kind] = res
    canonical = {
        "sensible_heat_flux": "W m-2", "latent_heat_flux": "W m-2", "ground_heat_flux": "W m-2",
        "net_radiation": "W m-2", "evapotranspiration": "kg m-2 s-1",
    }  # fmt: skip
    for name, src in cols.observations.items():
        if not all(c in table.frame for c in src.columns):
            continue
        x, n = values(table, src, name, "")
        if np.isnan(x).all():
            continue
        obs[name] = to_units(x, src.units, canonical.get(name, src.units), name, table.step_s)
        attrs[name] = {"source_column": "+".join(src.columns), "qc_dropped": n}
    if not obs:
        return None
    ds = make_observations(
        times, obs, depths=depths, attrs={"title": f"{meta.name} observations", **_history(table)}, var_attrs=attrs
    )
    for name, (src, a) in cols.extra_series.items():
        if all(c in table.frame for c in src.columns):
            x, _ = values(table, src, name, "")
            ds[name] = ("time", x, {**a, "source_column": "+".join(src.columns)})
    return ds
