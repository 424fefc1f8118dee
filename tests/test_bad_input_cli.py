"""The bad-input suite of the command line (issue 16): every user error ends in exit code 2 with exactly one
stderr line ``dam: error: ...`` naming the problem, no traceback, and no file created, changed or deleted.

Each row of :data:`CASES` builds its inputs in a fresh folder (copies of a small soil case, of a shipped site and
of a small synthetic grid) and gives the command line and the words the error must contain.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from dam import stress
from dam.cli import main
from dam.sites import shipped_site_dir
from dam.synthetic_grid import make_grid


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Originals copied into each test's folder: a 48-step soil case, a small grid."""
    root = tmp_path_factory.mktemp("sources")
    case = stress.write_case("summer_stc1", root, days=1)
    static, forcing = make_grid(3, 4, 10, seed=1)
    (root / "grid").mkdir()
    static.to_netcdf(root / "grid" / "static.nc")
    forcing.to_netcdf(root / "grid" / "forcing.nc")
    return {"case": case, "grid": root / "grid"}


class Env:
    """The test's folder: ``case``, ``site`` (Bondville 1998) and ``grid`` are created on first use."""

    def __init__(self, root: Path, sources: dict[str, Path]):
        self.root, self._sources = root, sources

    def _copy(self, name: str, src: Path) -> Path:
        dst = self.root / name
        if not dst.exists():
            shutil.copytree(src, dst)
        return dst

    @property
    def case(self) -> Path:
        return self._copy("case", self._sources["case"])

    @property
    def site(self) -> Path:
        return self._copy("site", shipped_site_dir("bondville_1998"))

    @property
    def grid(self) -> Path:
        return self._copy("grid", self._sources["grid"])

    def params(self, edit: Callable[[dict], None]) -> Path:
        meta = json.loads((self.case / "params.json").read_text())
        edit(meta)
        (self.case / "params.json").write_text(json.dumps(meta))
        return self.case

    def site_yaml(self, edit: Callable[[dict], None]) -> Path:
        meta = yaml.safe_load((self.site / "site.yaml").read_text())
        edit(meta)
        (self.site / "site.yaml").write_text(yaml.safe_dump(meta))
        return self.site

    def yaml(self, name: str, content: dict | str) -> str:
        text = content if isinstance(content, str) else yaml.safe_dump(content)
        (self.root / name).write_text(text)
        return str(self.root / name)

    def grid_yaml(self, _: object = None, **keys) -> str:
        """grid_run.yaml in the grid folder (``_``: ignored, for a side effect in a table row)."""
        config = {"static": "static.nc", "forcing": "forcing.nc", "output": "out.zarr", "checkpoint_dir": "ckpt"}
        (self.grid / "grid_run.yaml").write_text(yaml.safe_dump({**config, **keys}))
        return str(self.grid / "grid_run.yaml")

    def mkdir(self, name: str) -> str:
        (self.root / name).mkdir(parents=True)
        return str(self.root / name)

    def empty(self, path: Path) -> Path:
        """Truncate ``path`` to 0 bytes; returns its folder."""
        path.write_bytes(b"")
        return path.parent

    def file(self, name: str, text: str = "keep me") -> str:
        (self.root / name).parent.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_text(text)
        return str(self.root / name)


def _forcing_gap(env: Env) -> str:
    path = env.site / "forcing.nc"
    ds = xr.load_dataset(path)
    ds["T_air"][100:103] = np.nan
    ds.to_netcdf(path)
    return str(env.site)


def _sensor_below_column(env: Env) -> str:
    site = env.site_yaml(lambda m: m["sensor_depths_m"].update(soil_moisture=[0.05, 0.2, 3.0]))
    obs = xr.load_dataset(site / "observations.nc")
    ddim = obs["soil_moisture"].dims[1]
    obs = obs.assign_coords({ddim: [0.05, 0.2, 3.0]})
    obs.to_netcdf(site / "observations.nc")
    return str(site)


def _initial_moisture(m: dict) -> None:
    m["initial_state"] = {"soil_layer_thickness_m": [0.1, 0.3, 0.6, 1.0], "soil_temperature_K": [280.0] * 4,
                          "soil_moisture": [1.5] * 4}  # fmt: skip


def _case_value(env: Env, column: str, value: str) -> str:
    """The soil case with ``value`` in row 20 of forcing.csv's ``column``; returns the case folder."""
    df = pd.read_csv(env.case / "forcing.csv", dtype=str)
    df.loc[20, column] = value
    df.to_csv(env.case / "forcing.csv", index=False)
    return str(env.case)


def _edited_grid_dir(env: Env) -> str:
    env.grid_yaml(time_block=5)  # the user's edited YAML
    return str(env.grid)


def _latin1(path: Path) -> str:
    """Add a Latin-1 comment (not UTF-8) to a text file; returns its folder, or the file for a YAML config."""
    with path.open("ab") as f:
        f.write(b"# caf\xe9\n")
    return str(path.parent if path.suffix == ".json" or path.name == "site.yaml" else path)


def _forcing_inf(env: Env) -> str:
    path = env.site / "forcing.nc"
    ds = xr.load_dataset(path)
    ds["T_air"][50] = np.inf
    path.unlink()
    ds.to_netcdf(path)
    return str(env.site)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_nc(path: Path, edit: Callable[[xr.Dataset], xr.Dataset]) -> None:
    ds = edit(xr.load_dataset(path))
    path.unlink()
    ds.to_netcdf(path)


def _inf_ghf(ds: xr.Dataset) -> xr.Dataset:
    ds["ghf_wm2"][3, 0, 0] = np.inf
    return ds


def _flux(env: Env) -> Path:
    """A copy of the FLUXNET half-hourly test slice with its metadata.yaml."""
    return env._copy("flux", Path(__file__).resolve().parent / "data" / "readers" / "fluxnet_hh")


def _flux_csv(env: Env, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> str:
    """Edit the FLUXNET slice's data file (as text columns); returns its folder."""
    path = next(_flux(env).glob("FLX_*.csv"))
    edit(pd.read_csv(path, dtype=str)).to_csv(path, index=False)
    return str(path.parent)


def _column_typo(env: Env) -> dict:
    meta = yaml.safe_load((_flux(env) / "metadata.yaml").read_text())
    meta["sensors"]["soil_moisture"][0]["column"] = "SWC_F_MDS_9"
    return meta


E = Env
CASES: dict[str, tuple[Callable[[E], list[str]], tuple[str, ...]]] = {
    # --- soil-column (issue 16 items 3, 6, 7)
    "case folder missing": (lambda e: ["soil-column", str(e.root / "nope"), "--output", f"{e.root}/o.csv"],
                            ("case folder", "does not exist")),
    "output is the case's forcing": (lambda e: ["soil-column", str(e.case), "--output", str(e.case / "forcing.csv")],
                                     ("is the input", "forcing.csv")),
    "output would shadow the reference": (
        lambda e: ["soil-column", str(e.case), "--output", str(e.case / "output.csv")], ("is the input", "output.csv")),
    "output is the params.json": (lambda e: ["soil-column", str(e.case), "--output", str(e.case / "params.json")],
                                  ("unsupported extension", ".json")),
    "unsupported extension, no folder made": (
        lambda e: ["soil-column", str(e.case), "--output", f"{e.root}/new/out.txt"], ("unsupported extension",)),
    "output is a folder": (lambda e: ["soil-column", str(e.case), "--output", e.mkdir("d.csv")], ("is a folder",)),
    "output exists": (lambda e: ["soil-column", str(e.case), "--output", e.file("old.csv")],
                      ("already exists", "--overwrite")),
    "output under a file": (lambda e: ["soil-column", str(e.case), "--output", e.file("f") + "/o.csv"],
                            ("is a file, not a folder",)),
    "empty forcing.csv": (lambda e: ["soil-column", str(e.empty(e.case / "forcing.csv")), "--output",
                                     f"{e.root}/o.csv"], ("forcing.csv is empty",)),
    "misspelt option OPT_FRZZ": (lambda e: ["soil-column", str(e.params(lambda m: m["options"].update(OPT_FRZZ=2))),
                                            "--output", f"{e.root}/o.csv"], ("OPT_FRZZ", "did you mean 'OPT_FRZ'")),
    "option opt_frz": (lambda e: ["soil-column", str(e.params(lambda m: m["options"].update(opt_frz=2))), "--output",
                                  f"{e.root}/o.csv"], ("opt_frz", "did you mean 'OPT_FRZ'")),
    "zbot for zbot_m": (lambda e: ["soil-column", str(e.params(lambda m: m.update(zbot=-3.0))), "--output",
                                   f"{e.root}/o.csv"], ("unknown key 'zbot'", "did you mean 'zbot_m'")),
    "n_steps beyond the forcing": (lambda e: ["soil-column", str(e.params(lambda m: m.update(n_steps=10**6))),
                                              "--output", f"{e.root}/o.csv"], ("n_steps=1000000",)),
    "initial moisture above porosity": (
        lambda e: ["soil-column", str(e.params(lambda m: m["initial_state"].update(smc=[1.5] * 4, sh2o=[1.5] * 4))),
                   "--output", f"{e.root}/o.csv"], ("initial_state smc", "smcmax")),
    "params.json not JSON": (lambda e: ["soil-column", str(e.empty(e.case / "params.json")), "--output",
                                        f"{e.root}/o.csv"], ("params.json is not valid JSON",)),
    "replay without reference": (lambda e: ["soil-column", str(e.case), "--output", f"{e.root}/o.csv", "--replay"],
                                 ("--replay needs the case's output.csv",)),
    "soil evaporation -1e-3 m/s": (
        lambda e: ["soil-column", _case_value(e, "evap_soil_mps", "-1e-3"), "--output", f"{e.root}/o.csv"],
        ("evap_soil_mps = -0.001 m/s at step 21", "check the units")),
    "ground heat flux 1e9": (
        lambda e: ["soil-column", _case_value(e, "ghf_wm2", "1e9"), "--output", f"{e.root}/o.csv", "--quiet"],
        ("soil temperature =", "at step 21", "outside 150-350 K")),
    "unknown dtype": (lambda e: ["soil-column", str(e.case), "--output", "o.csv", "--dtype", "float16"],
                      ("invalid choice: 'float16'",)),
    # --- run-station (items 3, 6, 7)
    "site missing": (lambda e: ["run-station", "nowhere", "--output", f"{e.root}/o.nc"],
                     ("neither a folder nor a shipped site", "bondville_1998")),
    "output is the site's forcing": (lambda e: ["run-station", str(e.site), "--output", str(e.site / "forcing.nc")],
                                     ("is the input", "forcing.nc")),
    "station output extension": (lambda e: ["run-station", "bondville_1998", "--output", f"{e.root}/x/o.csv"],
                                 ("unsupported extension '.csv'",)),
    "station output exists": (lambda e: ["run-station", "bondville_1998", "--output", e.file("o.nc")],
                              ("already exists", "--overwrite")),
    "station output folder is a file": (lambda e: ["run-station", "bondville_1998", "--output",
                                                   e.file("o_figures")[:-len("_figures")] + ".nc"],
                                        ("o_figures exists and is a file",)),
    "start before the forcing": (lambda e: ["run-station", "bondville_1998", "--output", f"{e.root}/o.nc", "--start",
                                            "1990-01-01"], ("start 1990-01-01 lies outside the forcing", "1998-01-0")),
    "end after the forcing": (lambda e: ["run-station", "bondville_1998", "--output", f"{e.root}/o.nc", "--end",
                                         "2001-01-01"], ("end 2001-01-01 lies outside the forcing",)),
    "start not a date": (lambda e: ["run-station", "bondville_1998", "--output", f"{e.root}/o.nc", "--start",
                                    "1998-13"], ("start '1998-13' is not a date",)),
    "start after end": (lambda e: ["run-station", "bondville_1998", "--output", f"{e.root}/o.nc", "--start",
                                   "1998-06-01", "--end", "1998-05-01"], ("is after end",)),
    "negative spin-up": (lambda e: ["run-station", "bondville_1998", "--output", "o.nc", "--spinup", "-3"],
                         ("--spinup", "-3 must be >= 0")),
    "unknown gap method": (lambda e: ["run-station", "bondville_1998", "--output", "o.nc", "--gaps", "zero"],
                           ("invalid choice: 'zero'",)),
    "initial soil moisture 1.5": (lambda e: ["run-station", str(e.site_yaml(_initial_moisture)), "--output",
                                             f"{e.root}/o.nc"], ("soil_moisture",)),
    "sensor below the column": (lambda e: ["run-station", _sensor_below_column(e), "--output", f"{e.root}/o.nc"],
                                ("a sensor at 3 m lies below the soil column",)),
    "empty forcing.nc": (lambda e: ["run-station", str(e.empty(e.site / "forcing.nc")), "--output",
                                    f"{e.root}/o.nc"], ("forcing.nc",)),
    "gap in the forcing": (lambda e: ["run-station", _forcing_gap(e), "--output", f"{e.root}/o.nc"],
                           ("T_air", "--gaps interpolate")),
    # --- experiment (items 6, 7, 8)
    "experiment config missing": (lambda e: ["experiment", str(e.root / "nope.yaml")], ("quick, full",)),
    "experiment epochs -5": (lambda e: ["experiment", e.yaml("x.yaml", {"network": {"epochs": -5}})],
                             ("x.yaml: network.epochs",)),
    "experiment window_days 0": (lambda e: ["experiment", e.yaml("x.yaml", {"network": {"window_days": 0}})],
                                 ("network.window_days",)),
    "experiment learning_rate -0.01": (
        lambda e: ["experiment", e.yaml("x.yaml", {"network": {"learning_rate": -0.01}})],
        ("network.learning_rate: Input should be greater than 0",)),
    "experiment spinup -3": (lambda e: ["experiment", e.yaml("x.yaml", {"spinup_cycles": -3})], ("spinup_cycles",)),
    "experiment unknown key": (lambda e: ["experiment", e.yaml("x.yaml", {"netwrok": {}})],
                               ("unknown key 'netwrok'; did you mean 'network'?",)),
    "experiment site missing": (lambda e: ["experiment", e.yaml("x.yaml", {"sites": ["nowhere"]})],
                                ("'nowhere' is neither a shipped site",)),
    "experiment invalid YAML": (lambda e: ["experiment", e.yaml("x.yaml", "network: {epochs: [")], ("not valid YAML",)),
    "experiment into a foreign folder": (
        lambda e: ["experiment", "quick", "--output-dir", str(Path(e.file("mine/thesis.tex")).parent)],
        ("not a dam experiment run folder",)),
    "experiment output_dir is a file": (lambda e: ["experiment", "quick", "--output-dir", e.file("runfile")],
                                        ("is a file",)),
    # --- make-grid (item 3)
    "make-grid over an edited grid": (lambda e: ["make-grid", _edited_grid_dir(e)], ("already exist", "--overwrite")),
    "make-grid zero rows": (lambda e: ["make-grid", str(e.root / "g"), "--lat", "0"], ("--lat", "must be >= 1")),
    "make-grid steps not a number": (lambda e: ["make-grid", str(e.root / "g"), "--steps", "abc"],
                                     ("'abc' is not a whole number",)),
    "make-grid into a file": (lambda e: ["make-grid", e.file("g")], ("is a file, not a folder",)),
    # --- grid-run (items 1, 2)
    "grid config missing": (lambda e: ["grid-run", str(e.root / "nope.yaml")], ("does not exist",)),
    "grid output is its folder": (lambda e: ["grid-run", e.grid_yaml(output=".")], ("contains the input",)),
    "grid output is a foreign file": (
        lambda e: ["grid-run", e.grid_yaml(output="../victim.txt", _=e.file("victim.txt"))], ("exists and is a file",)),
    "grid checkpoints in an input": (lambda e: ["grid-run", e.grid_yaml(checkpoint_dir="static.nc/c")],
                                     ("lies inside the input",)),
    "grid unknown key": (lambda e: ["grid-run", e.grid_yaml(colour=1)], ("unknown key 'colour'",)),
    "grid time_block 0": (lambda e: ["grid-run", e.grid_yaml(time_block=0)], ("time_block",)),
    "grid option misspelt": (lambda e: ["grid-run", e.grid_yaml(options={"supercoold": "niu06"})],
                             ("did you mean 'supercooled'",)),
    "grid missing static": (lambda e: ["grid-run", e.grid_yaml(static="nope.nc")], ("missing file",)),
    "grid invalid YAML": (lambda e: ["grid-run", e.yaml("g.yaml", "static: [")], ("not valid YAML",)),
    "grid processes half given": (lambda e: ["grid-run", e.grid_yaml(), "--num-processes", "2"], ("go together",)),
    "grid process id out of range": (
        lambda e: ["grid-run", e.grid_yaml(), "--coordinator", "localhost:1", "--num-processes", "2", "--process-id",
                   "2"], ("--process-id 2 must be below --num-processes 2",)),
    # --- second campaign (docs/safety.md): encodings, booleans, inf, dates, names, grid inputs
    "params.json not UTF-8": (lambda e: ["soil-column", _latin1(e.case / "params.json"), "--output", f"{e.root}/o.csv"],
                              ("params.json: not UTF-8 text",)),
    "site.yaml not UTF-8": (lambda e: ["run-station", _latin1(e.site / "site.yaml"), "--output", f"{e.root}/o.nc"],
                            ("site.yaml: not UTF-8 text",)),
    "grid YAML not UTF-8": (lambda e: ["grid-run", _latin1(Path(e.grid_yaml()))], ("grid_run.yaml: not UTF-8 text",)),
    "latitude: true": (lambda e: ["run-station", str(e.site_yaml(lambda m: m.update(latitude=True))), "--output",
                                  f"{e.root}/o.nc"], ("latitude", "expected a number, got a boolean")),
    "bexp: [true, ...]": (lambda e: ["soil-column", str(e.params(lambda m: m["per_layer"].update(bexp=[True] * 4))),
                                     "--output", f"{e.root}/o.csv"], ("per_layer.bexp", "got a boolean")),
    "grid time_block: true": (lambda e: ["grid-run", e.grid_yaml(time_block=True)], ("time_block", "boolean")),
    "experiment learning_rate .inf": (lambda e: ["experiment", e.yaml("x.yaml", "network: {learning_rate: .inf}")],
                                      ("network.learning_rate", "finite")),
    "experiment with a broken site.yaml": (
        lambda e: ["experiment", e.yaml("x.yaml", {"sites": [str(e.empty(e.site / "site.yaml"))]}), "--output-dir",
                   f"{e.root}/run"], ("site.yaml",)),
    "experiment with an empty forcing.nc": (  # checked before the run folder is created, like site.yaml
        lambda e: ["experiment", e.yaml("x.yaml", {"sites": [str(e.empty(e.site / "forcing.nc"))]}), "--output-dir",
                   f"{e.root}/run"], ("forcing.nc",)),
    "sensor depths fewer than observed": (
        lambda e: ["run-station", str(e.site_yaml(lambda m: m["sensor_depths_m"].update(soil_moisture=[0.05, 0.2]))),
                   "--output", f"{e.root}/o.nc"], ("sensor_depths_m.soil_moisture", "differ from observations.nc")),
    "initial state valid in another year": (
        lambda e: ["run-station", str(e.site_yaml(lambda m: m["initial_state"].update(valid_at_utc="1990-01-01"))),
                   "--output", f"{e.root}/o.nc"], ("initial_state.valid_at_utc 1990-01-01", "outside the forcing")),
    "forcing T_air inf": (lambda e: ["run-station", _forcing_inf(e), "--output", f"{e.root}/o.nc"],
                          ("'T_air'", "out of range", "inf")),
    "start 01/03/1998 (not ISO)": (lambda e: ["run-station", "bondville_1998", "--output", f"{e.root}/o.nc",
                                              "--start", "01/03/1998"], ("start '01/03/1998' is not a date",)),
    "end empty": (lambda e: ["run-station", "bondville_1998", "--output", f"{e.root}/o.nc", "--end", ""],
                  ("end '' is not a date",)),
    "spin-up 100000": (lambda e: ["run-station", "bondville_1998", "--output", "o.nc", "--spinup", "100000"],
                       ("--spinup", "must be <= 100")),
    "output name too long": (lambda e: ["soil-column", str(e.case), "--output", f"{e.root}/{'a' * 300}.csv"],
                             ("longer than 255 bytes",)),
    "make-grid into ''": (lambda e: ["make-grid", ""], ("an empty path",)),
    "make-grid seed 2**70": (lambda e: ["make-grid", str(e.root / "g"), "--seed", str(2**70)], ("--seed",)),
    "grid coordinator without port": (
        lambda e: ["grid-run", e.grid_yaml(), "--coordinator", "localhost", "--num-processes", "2", "--process-id",
                   "0"], ("'localhost' is not HOST:PORT",)),
    "grid static truncated": (lambda e: ["grid-run", e.grid_yaml(_=_truncate(e.grid / "static.nc"))],
                              ("static.nc cannot be read as netCDF",)),
    "grid static missing bexp, nothing created": (
        lambda e: ["grid-run", e.grid_yaml(_=_edit_nc(e.grid / "static.nc", lambda d: d.drop_vars("bexp")))],
        ("missing variable 'bexp'",)),
    "grid land_mask 0.5": (
        lambda e: ["grid-run", e.grid_yaml(_=_edit_nc(e.grid / "static.nc",
                                                      lambda d: d.assign(land_mask=d.land_mask * 0.5)))],
        ("land_mask must be 0 (sea) or 1 (land)",)),
    "grid forcing on another grid": (
        lambda e: ["grid-run", e.grid_yaml(_=_edit_nc(e.grid / "forcing.nc", lambda d: d.isel(lat=slice(0, 2))))],
        ("forcing file: lat", "differs from the static file")),
    "grid forcing time duplicated": (
        lambda e: ["grid-run", e.grid_yaml(_=_edit_nc(e.grid / "forcing.nc", lambda d: d.isel(time=[0, 1, 1, 2])))],
        ("time is not strictly increasing",)),
    "grid forcing every other step": (
        lambda e: ["grid-run", e.grid_yaml(_=_edit_nc(e.grid / "forcing.nc", lambda d: d.isel(time=slice(0, 10, 2))))],
        ("time step 3600 s", "dt_s = 1800 s")),
    "grid forcing inf, nothing created": (
        lambda e: ["grid-run", e.grid_yaml(_=_edit_nc(e.grid / "forcing.nc", _inf_ghf))],
        ("ghf_wm2 has non-finite values over land",)),
    "convert-site into its source folder": (lambda e: ["convert-site", str(_flux(e)), "--metadata",
                                                       str(_flux(e) / "metadata.yaml"), "--output", str(_flux(e)),
                                                       "--overwrite"], ("is the input",)),
    "convert-site over its metadata": (lambda e: ["convert-site", str(_flux(e)), "--metadata",
                                                  str(_flux(e) / "metadata.yaml"), "--output",
                                                  str(_flux(e) / "metadata.yaml"), "--overwrite"], ("is the input",)),
    "convert-site --overwrite a foreign folder": (
        lambda e: ["convert-site", str(_flux(e)), "--metadata", str(_flux(e) / "metadata.yaml"), "--output",
                   str(Path(e.file("mine/thesis.tex")).parent), "--overwrite"], ("not a site folder",)),
    "convert-site --max-gap -1": (lambda e: ["convert-site", str(_flux(e)), "--metadata",
                                             str(_flux(e) / "metadata.yaml"), "--output", f"{e.root}/s",
                                             "--max-gap", "-1"], ("--max-gap", "max_gap")),
    "convert-site metadata column typo": (
        lambda e: ["convert-site", str(_flux(e)), "--metadata", e.yaml("m.yaml", _column_typo(e)), "--output",
                   f"{e.root}/s"], ("['SWC_F_MDS_9']", "are not in the file")),
    "convert-site negative P_F names the column": (
        lambda e: ["convert-site", _flux_csv(e, lambda d: d.assign(P_F="-5.0")), "--metadata",
                   str(_flux(e) / "metadata.yaml"), "--output", f"{e.root}/s"],
        ("'precip'", "negative", "(column P_F)")),
    "convert-site duplicated rows": (
        lambda e: ["convert-site", _flux_csv(e, lambda d: pd.concat([d.iloc[:20], d.iloc[19:]])), "--metadata",
                   str(_flux(e) / "metadata.yaml"), "--output", f"{e.root}/s"], ("duplicated or unsorted rows",)),
    "convert-shared data folder missing": (
        lambda e: ["convert-shared", "CN-HaM", "--output-dir", f"{e.root}/s", "--data-dir", f"{e.root}/nope"],
        ("--data-dir", "is not a folder")),
    "convert-shared unknown name before the data folder": (
        lambda e: ["convert-shared", "nope", "--output-dir", f"{e.root}/s", "--data-dir", f"{e.root}/nope"],
        ("unknown shared site(s) ['nope']",)),
    "sites folder missing": (lambda e: ["sites", str(e.root / "nope")], ("sites folder", "does not exist")),
    "sites with a broken site.yaml": (lambda e: ["sites", str(Path(e.file("s/x/site.yaml", "name: [")).parents[1])],
                                      ("site.yaml: invalid YAML",)),
    # --- general
    "unknown command": (lambda e: ["frobnicate"], ("invalid choice: 'frobnicate'",)),
    "no command": (lambda e: [], ("required: COMMAND",)),
}  # fmt: skip


def _snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("label", list(CASES))
def test_user_error_is_one_line_with_exit_code_2_and_changes_nothing(label, tmp_path, sources, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative outputs (e.g. "o.nc") land here, so the snapshot sees them
    build, words = CASES[label]
    env = Env(tmp_path / "work", sources)
    env.root.mkdir()
    argv = build(env)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors and --help exit through SystemExit
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{label}: exit code {code}; stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("dam: error: "), f"{label}: stderr was {err!r}"
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], f"{label}: {word!r} not in {lines[0]!r}"
    assert _snapshot(tmp_path) == before, f"{label}: files changed"


@pytest.mark.parametrize("jit", ["jax.jit", "eqx.filter_jit"])
def test_an_in_graph_check_is_one_line_with_exit_code_2(jit, capsys, monkeypatch):
    """A run stopped by an ``eqx.error_if`` check other than the guards (here the soil state's finite check) reports
    the check's message on one line, not XLA's traceback."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from dam import cli
    from dam.physics.column import check_finite
    from dam.physics.types import SoilState

    wrap = jax.jit if jit == "jax.jit" else eqx.filter_jit
    nan_state = SoilState(t=jnp.full(4, 280.0), smc=jnp.full(4, jnp.nan), sh2o=jnp.full(4, 0.2))
    monkeypatch.setattr(cli, "_make_grid", lambda args: wrap(check_finite)(nan_state).smc.block_until_ready())
    capsys.readouterr()
    assert main(["make-grid", "unused"]) == 2
    err = capsys.readouterr().err
    assert err == "dam: error: soil state became non-finite (NaN or inf): check forcing and parameters\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_folder(tmp_path, sources, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main(["soil-column", str(sources["case"]), "--output", str(folder / "o.csv")]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        folder.chmod(0o755)


def test_version_and_help_on_every_option(capsys):
    from dam.cli import build_parser

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("dam ")
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"dam {name} {action.option_strings or action.dest}: no help"


def test_dates_with_a_utc_offset_select_in_utc():
    """``--start 1998-03-01T00:00+05:00`` used to be a pandas ValueError (a traceback): it is 19:00 UTC."""
    from dam.site_run import select_period
    from dam.sites import load_site

    sel = select_period(load_site("bondville_1998"), "1998-03-01T00:00+05:00", "1998-03-01T03:00Z")
    times = pd.DatetimeIndex(sel["time"].values)
    assert times[0] == pd.Timestamp("1998-02-28T19:00") and times[-1] == pd.Timestamp("1998-03-01T03:00")
