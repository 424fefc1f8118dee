"""AmeriFlux BASE files (FP-Standard names and units; measured, **not** gap-filled), half-hourly or hourly,
as ``AMF_<ID>_BASE_HH_<ver>.csv`` or inside the ``AMF_<ID>_BASE-BADM_<ver>.zip`` bundle.

Forcing: ``TA`` degC, ``RH`` % (else ``VPD`` hPa), ``PA`` kPa, ``WS`` m s-1, ``SW_IN``, ``LW_IN`` W m-2, ``P``
mm per step. A variable may carry AmeriFlux's qualifiers: position ``_H_V_R`` (horizontal, vertical, replicate;
e.g. ``TA_1_1_1``), ``_H_V_A`` (average of the replicates), ``_N`` (layer index) and ``_PI``/``_PI_F`` (the PI's
version, gap-filled by the PI; alone or before a position): the plain name is used if present, else the only
qualified column; where several exist the metadata must choose (``conversion.forcing_columns``). Raw shortwave is
not clipped at the source: negative ``SW_IN`` down to -20 W m-2 (a pyranometer's night-time thermal offset) is set
to 0 and counted (``clipped_count``); lower values are refused. Gaps (-9999) follow the gap policy
(``conversion.gaps``, ``max_gap``). Observations: ``SWC*`` (%) and ``TS*`` (degC) sensors, with the same
qualifiers, at the metadata's depths (columns with different H but the same V are horizontal replicates: list them
together under one sensor), ``H``, ``LE``, ``G`` (plates averaged), ``NETRAD``. Times: ``TIMESTAMP_END``, local
standard time.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from dam.readers.common import SW_CLIP_LOWEST, Columns, Source, Table, build_site, read_csv, time_steps
from dam.readers.metadata import SiteMetadata
from dam.sites import Site, SiteError

FILE_PATTERN = re.compile(r"^AMF_([A-Z]{2}-[A-Za-z0-9]{3})_BASE(?:-BADM)?_(?:(HH|HR)_)?.*\.(csv|zip)$")
FORCING = {
    "T_air": (("TA",), "degC"),
    "humidity": (("RH", "VPD"), None),
    "p_sfc": (("PA",), "kPa"),
    "wind": (("WS",), "m s-1"),
    "sw_down": (("SW_IN",), "W m-2"),
    "lw_down": (("LW_IN",), "W m-2"),
    "precip": (("P",), "mm per step"),
}
FLUXES = {"sensible_heat_flux": "H", "latent_heat_flux": "LE", "ground_heat_flux": "G", "net_radiation": "NETRAD"}
QUALIFIER = r"(?:_\d+_\d+_(?:\d+|A)|_\d+)?"  # _H_V_R, _H_V_A (replicate average), _N (layer index)
PI_QUALIFIER = rf"(?:_PI|_PI_F)?{QUALIFIER}"  # the PI's version (_F: gap-filled by the PI), possibly with a position
SOIL = {"soil_moisture": (rf"SWC{PI_QUALIFIER}", "%"), "soil_temperature": (rf"TS{PI_QUALIFIER}", "degC")}
MISSING = [-9999, "-9999", "-9999.0"]


def is_ameriflux_file(path: Path) -> bool:
    return FILE_PATTERN.match(path.name) is not None


def _open(path: Path) -> tuple[pd.DataFrame, str]:
    """The BASE table (from the zip where needed) and the name of the CSV read."""
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if re.search(r"_BASE_(HH|HR)_.*\.csv$", n)]
                if len(names) != 1:
                    raise SiteError(f"{path.name}: expected one *_BASE_HH/HR_*.csv inside, found {names}")
                data = zf.read(names[0])
        except zipfile.BadZipFile as exc:
            raise SiteError(f"{path.name}: not a readable zip ({exc})") from None
        # Bytes, not decoded text: pandas then reads the member exactly as it reads the plain file (comment lines
        # are skipped undecoded; a bad byte in the data is a SiteError of read_csv, not a traceback).
        frame = read_csv(io.BytesIO(data), MISSING, names[0], comment="#", dtype={"TIMESTAMP_END": str})
        return frame, names[0]
    return read_csv(path, MISSING, comment="#", dtype={"TIMESTAMP_END": str}), path.name


def read_table(path: Path) -> Table:
    frame, name = _open(path)
    if "TIMESTAMP_END" not in frame:
        raise SiteError(
            f"{name}: unknown time-stamp convention (rule: AmeriFlux BASE files have TIMESTAMP_START and "
            "TIMESTAMP_END, YYYYMMDDHHMM local standard time)"
        )
    ends = pd.DatetimeIndex(pd.to_datetime(frame["TIMESTAMP_END"], format="%Y%m%d%H%M", errors="coerce"))
    if ends.isna().any():
        raise SiteError(f"{name}: invalid TIMESTAMP_END in data row {int(np.argmax(ends.isna())) + 1}")
    steps = time_steps(name, ends, frame["TIMESTAMP_END"])
    if len(steps) != 1 or int(steps[0]) not in (1800, 3600):
        raise SiteError(f"{name}: rows are not a regular 30 or 60 min series (steps {steps[:5].tolist()} s)")
    return Table(Path(name) if path.suffix == ".zip" else path, frame, ends, int(steps[0]), "AmeriFlux BASE")


def _resolve(table: Table, bases: tuple[str, ...], name: str, chosen: str | None) -> str:
    """The file column of one forcing variable: the metadata's choice, the plain name, else the only column with
    AmeriFlux qualifiers (several: the metadata must choose, as a guess could take the wrong height)."""
    if chosen is not None:
        return chosen
    for base in bases:
        if base in table.frame:
            return base
        qualified = [c for c in table.frame.columns if re.fullmatch(rf"{base}{PI_QUALIFIER}", c)]
        if len(qualified) == 1:
            return qualified[0]
        if len(qualified) > 1:
            raise table.fail(
                f"several columns for {name}: {qualified} (rule: choose one with conversion.forcing_columns.{name})"
            )
    raise table.fail(
        f"missing required forcing column {'/'.join(bases)} ({name}; rule: BASE forcing needs it, plain or with one "
        f"AmeriFlux qualifier such as {bases[0]}_1_1_1 or {bases[0]}_PI_F; choose a column of another name with "
        f"conversion.forcing_columns: {{{name}: <column>}})"
    )


def columns(table: Table, meta: SiteMetadata) -> Columns:
    chosen = meta.conversion.forcing_columns
    forcing = {}
    for name, (bases, units) in FORCING.items():
        col = _resolve(table, bases, name, chosen.get(name))
        if name == "humidity":
            units = "%" if col.startswith("RH") else "hPa"
        forcing[name] = Source([col], units)
    kind = "relative_humidity" if forcing["humidity"].columns[0].startswith("RH") else "vapour_pressure_deficit"
    obs = {}
    for name, base in FLUXES.items():
        cols = [base] if base in table.frame else [c for c in table.frame if re.fullmatch(rf"{base}_\d+_\d+_\d+", c)]
        if cols:
            obs[name] = Source(cols, "W m-2")
    return Columns(
        forcing=forcing,
        humidity_kind=kind,
        observations=obs,
        soil_pattern={k: p for k, (p, _) in SOIL.items()},
        soil_units={k: u for k, (_, u) in SOIL.items()},
        clip_negative={"sw_down": SW_CLIP_LOWEST},
    )


def read_ameriflux_base(path: str | Path, meta: SiteMetadata, meta_path: str = "the metadata file") -> Site:
    """Convert an AmeriFlux BASE file (or BASE-BADM zip) with its metadata into a validated Site."""
    path = Path(path)
    m = FILE_PATTERN.match(path.name)
    if m and meta.site_id and m.group(1) != meta.site_id:
        raise SiteError(f"{path.name}: the file is site {m.group(1)} but {meta_path} says site_id {meta.site_id}")
    table = read_table(path)
    return build_site(table, columns(table, meta), meta, meta_path)
