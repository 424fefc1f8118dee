"""The shipped metadata of the shared sites, their conversion in one go, and the list of available sites.

* ``dam/data/site_metadata/<name>.yaml``: the metadata of every site in ``../shared/data`` (the data stay there;
  only the small YAML files ship). :func:`convert_shared` converts them all into a sites folder.
* Converted sites live in a sites folder: ``$DAM_SITES`` if set, else ``./sites`` (:func:`default_sites_dir`).
* :func:`site_table` summarises the shipped sites and those of any folders without loading the data (the time
  axis and variable names come from the netCDF headers).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from dam.readers.metadata import IGBP_CODES, load_metadata
from dam.schema import ConfigError, read_text
from dam.sites import SHIPPED_SITES_DIR, SiteError, default_shared_data_dir

SHIPPED_METADATA_DIR = Path(__file__).resolve().parents[1] / "data" / "site_metadata"
_IGBP_NAMES = {v: k for k, v in IGBP_CODES.items()}


def default_sites_dir() -> Path:
    """``$DAM_SITES`` if set, else ``./sites``."""
    return Path(os.environ.get("DAM_SITES", "sites"))


def shared_metadata() -> dict[str, Path]:
    """Name -> metadata file of every shipped shared-site description."""
    return {p.stem: p for p in sorted(SHIPPED_METADATA_DIR.glob("*.yaml"))}


def shared_source(name: str, data_dir: Path | None = None) -> Path:
    """The folder in the shared data that holds the site ``name`` (its ``site_id`` followed by ``_``)."""
    meta = load_metadata(shared_metadata()[name])
    root = Path(data_dir) if data_dir is not None else default_shared_data_dir()
    hits = sorted(p for p in root.glob(f"{meta.site_id}_*") if p.is_dir()) if root.is_dir() else []
    if len(hits) != 1:
        raise SiteError(f"no single folder {meta.site_id}_* for {name} in {root} (found {[p.name for p in hits]})")
    return hits[0]


def convert_shared(
    output_dir: str | Path,
    names: Sequence[str] | None = None,
    *,
    data_dir: Path | None = None,
    overwrite: bool = False,
    report: Callable[[str, Path | None, str], None] | None = None,
) -> dict[str, Path | str]:
    """Convert the shared sites (all, or ``names``) into ``output_dir/<name>``; returns name -> folder, or the
    error message of a site that failed (the others are still converted)."""
    from dam.readers import convert

    known = shared_metadata()
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise SiteError(f"unknown shared site(s) {unknown} (known: {', '.join(known)})")
    results: dict[str, Path | str] = {}
    for name in names or list(known):
        try:
            out = convert(shared_source(name, data_dir), known[name], Path(output_dir) / name, overwrite=overwrite)
            results[name] = out
        except (SiteError, ValueError) as exc:
            results[name] = str(exc)
        if report is not None:
            r = results[name]
            report(name, r if isinstance(r, Path) else None, "" if isinstance(r, Path) else str(r))
    return results


def site_folders(dirs: Iterable[str | Path] = ()) -> list[tuple[str, Path]]:
    """``(origin, folder)`` of the shipped sites and of every site folder inside ``dirs``."""
    found = [("shipped", p) for p in sorted(SHIPPED_SITES_DIR.iterdir()) if (p / "site.yaml").is_file()]
    for d in dirs:
        d = Path(d)
        if (d / "site.yaml").is_file():
            found.append((str(d.parent), d))
        elif d.is_dir():
            found += [(str(d), p) for p in sorted(d.iterdir()) if (p / "site.yaml").is_file()]
        else:  # a typo would otherwise list the shipped sites alone, as if the folder held none
            raise SiteError(f"sites folder {d} does not exist" if not d.exists() else f"{d} is a file, not a folder")
    return found


def _depths(v: Any) -> str:
    return ", ".join(f"{float(x):g}" for x in v) if v else ""


def _record(sm: xr.DataArray) -> str:
    """First and last time with a soil moisture value, and the share of the observation times that have one (a
    record that stops before the forcing does shows here: calibration and training need observations)."""
    seen = sm.notnull().any([d for d in sm.dims if d != "time"]).values
    if not seen.any():
        return "none"
    t = pd.DatetimeIndex(sm["time"].values)[seen]
    return f"{t[0]:%Y-%m-%d} .. {t[-1]:%Y-%m-%d}, {100 * seen.mean():.0f} %"


def site_summary(folder: Path) -> dict[str, Any]:
    """One row of :func:`site_table` from the folder's site.yaml and netCDF headers."""
    try:
        meta = yaml.safe_load(read_text(folder / "site.yaml")) or {}
    except (yaml.YAMLError, ConfigError) as exc:
        raise SiteError(
            f"{folder / 'site.yaml'}: invalid YAML or not UTF-8 ({' '.join(str(exc).split())[:200]})"
        ) from None
    if not isinstance(meta, dict):
        raise SiteError(f"{folder / 'site.yaml'}: top level must be a mapping of keys to values")
    row: dict[str, Any] = {"site": meta.get("name", folder.name)}
    try:
        with xr.open_dataset(folder / "forcing.nc") as f:
            t = pd.DatetimeIndex(f["time"].values)
            row["period (UTC)"] = f"{t[0]:%Y-%m-%d} .. {t[-1]:%Y-%m-%d}"
            row["step_s"] = int(float(meta.get("time_step_s", np.nan)))
            source_step = f.attrs.get("source_time_step_s")
            row["forcing"] = "disaggregated daily" if source_step else "as measured"
    except (OSError, ValueError, KeyError) as exc:
        row["period (UTC)"] = f"unreadable forcing.nc ({type(exc).__name__})"
    obs, record = [], ""
    if (folder / "observations.nc").is_file():
        with xr.open_dataset(folder / "observations.nc") as o:
            obs = [str(v) for v in o.data_vars]
            if "soil_moisture" in o:
                record = _record(o["soil_moisture"])
    short = {"soil_moisture": "SM", "soil_temperature": "ST", "sensible_heat_flux": "H", "latent_heat_flux": "LE",
             "ground_heat_flux": "G", "net_radiation": "Rn"}  # fmt: skip
    row["observations"] = " ".join(short.get(v, v) for v in obs if v in short) + (
        " +" + str(len([v for v in obs if v not in short])) if any(v not in short for v in obs) else ""
    )
    depths = meta.get("sensor_depths_m") or {}
    row["SM depths m"] = _depths(depths.get("soil_moisture"))
    row["SM record"] = record
    row["ST depths m"] = _depths(depths.get("soil_temperature"))
    igbp = (meta.get("vegetation") or {}).get("igbp_type")
    row["veg"] = f"{igbp} {_IGBP_NAMES.get(igbp, '')}".strip()
    soil = meta.get("soil") or {}
    row["soil"] = soil.get("stas_type") or "texture"
    row["sensors see"] = meta.get("soil_moisture_measures", "total")
    row["assumed"] = ", ".join(sorted(meta.get("assumed") or {}))
    return row


def site_table(dirs: Iterable[str | Path] = ()) -> pd.DataFrame:
    """The shipped and converted sites with what each holds (one row per site)."""
    rows = []
    for origin, folder in site_folders(dirs):
        rows.append({**site_summary(folder), "where": origin})
    return pd.DataFrame(rows)
