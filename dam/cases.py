"""Soil-column case folders (the format of the Fortran Noah-MP soil references, e.g. the shipped
``bondville_soil``, see :func:`shipped_case`): read, validate, write.

A case folder holds ``params.json`` (grid, parameters, options, initial state), ``forcing.csv`` (one row
per step) and, for reference cases, ``output.csv`` (row 0 the initial state). Everything is validated at
this boundary: a missing file or column, a NaN, a gap in the steps, a wrong layer count or an unphysical
parameter raises :class:`CaseError` naming the item.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from pydantic import Field

from dam.physics import SoilForcing, SoilGrid, SoilOptions, SoilParams, SoilState
from dam.physics.constants import TFRZ
from dam.schema import ConfigError, Strict, read_text, validate


class CaseError(ValueError):
    """A case folder is missing something or holds invalid values."""


SHIPPED_CASES_DIR = Path(__file__).resolve().parent / "data"


def shipped_cases() -> list[str]:
    """Names of the case folders shipped with the package (``bondville_soil``: Fortran Noah-MP v5.2 soil
    routines driven by the fluxes of the full HRLDAS Bondville 1998 run, 17,472 steps of 30 min)."""
    return sorted(p.name for p in SHIPPED_CASES_DIR.iterdir() if (p / "params.json").is_file())


def shipped_case(name: str) -> Path:
    """Folder of the shipped case ``name`` (raises :class:`CaseError` listing the shipped names)."""
    if name not in shipped_cases():
        raise CaseError(f"no shipped case {name!r} (shipped: {shipped_cases()})")
    return SHIPPED_CASES_DIR / name


PER_LAYER_PARAMS = ("smcmax", "smcref", "smcwlt", "bexp", "dksat", "dwsat", "psisat", "quartz")
SCALAR_PARAMS = {  # params.json "scalars" key -> SoilParams field
    "csoil_J_m3_K": "csoil",
    "slope_drainage": "slope",
    "refkdt": "refkdt",
    "refdk_m_s": "refdk",
    "frzk": "frzk",
}
_OPTION_CODES = {
    "OPT_RUN": ("surface_runoff", {3: "schaake96"}),
    "OPT_FRZ": ("supercooled", {1: "niu06", 2: "koren99"}),
    "OPT_INF": ("frozen_permeability", {1: "niu06", 2: "koren99"}),
    "OPT_TBOT": ("bottom_temperature", {1: "zero_flux", 2: "tbot"}),
    "OPT_STC": ("temperature_scheme", {1: "semi_implicit", 2: "full_implicit", 3: "semi_implicit"}),
}

# ------------------------------------------------------------------------------------------ params.json schema
_INFO = "informational, not read"


class CaseOptions(Strict):
    """``params.json`` ``options``: Noah-MP namelist codes (a key may carry a description in parentheses, e.g.
    ``"OPT_FRZ (supercooled water)"``)."""

    OPT_RUN: Literal[3] = Field(3, description="runoff: 3 = Schaake 1996 infiltration, free drainage")
    OPT_FRZ: Literal[1, 2] = Field(1, description="supercooled liquid water: 1 Niu & Yang 2006, 2 Koren 1999")
    OPT_INF: Literal[1, 2] = Field(1, description="frozen soil permeability: 1 Niu & Yang 2006, 2 Koren 1999")
    OPT_TBOT: Literal[1, 2] = Field(2, description="bottom heat boundary: 1 zero flux, 2 TBOT at zbot_m")
    OPT_STC: Literal[1, 2, 3] = Field(3, description="heat time scheme: 1 and 3 semi-implicit, 2 fully implicit")
    soil_time_step_equals_main_step: Literal[True] = Field(True, description="must be true (one soil step per step)")
    freezing_point_K: float = Field(TFRZ, ge=TFRZ, le=TFRZ, description=f"must be {TFRZ} (Noah-MP's TFRZ)")
    n_water_substeps: Any = Field(None, description=_INFO)


class CasePerLayer(Strict):
    """``params.json`` ``per_layer``: one value per layer each."""

    smcmax: list[float] = Field(description="porosity, m3 m-3")
    smcref: list[float] = Field(description="field capacity, m3 m-3")
    smcwlt: list[float] = Field(description="wilting point, m3 m-3")
    bexp: list[float] = Field(description="Clapp-Hornberger b")
    dksat: list[float] = Field(description="saturated hydraulic conductivity, m s-1")
    dwsat: list[float] = Field(description="saturated diffusivity, m2 s-1")
    psisat: list[float] = Field(description="saturated matric potential (magnitude), m")
    quartz: list[float] = Field(description="quartz fraction")
    smcdry: list[float] | None = Field(None, description=_INFO)


class CaseScalars(Strict):
    """``params.json`` ``scalars``."""

    csoil_J_m3_K: float = Field(description="volumetric heat capacity of the soil solids, J m-3 K-1")
    slope_drainage: float = Field(description="slope factor of the free drainage, 0-1")
    refkdt: float = Field(description="Schaake infiltration parameter")
    refdk_m_s: float = Field(description="reference saturated conductivity of refkdt, m s-1")
    frzk: float = Field(description="frozen-ground parameter of the impermeable fraction")


class CaseInitialState(Strict):
    """``params.json`` ``initial_state``: one value per layer each."""

    t_K: list[float] = Field(description="soil temperature, K (150-350)")
    smc: list[float] = Field(description="total moisture, m3 m-3, within [0, smcmax]")
    sh2o: list[float] = Field(description="liquid moisture, m3 m-3, within [0, smc]")


class CaseParams(Strict):
    """A case folder's ``params.json`` (docs/soil_column.md)."""

    dt_s: float = Field(gt=0, description="time step, s")
    zsoil_m: list[float] = Field(description="depths of the layer bottoms, m, negative down")
    zbot_m: float = Field(-8.0, description="depth of the deep temperature boundary (TBOT), m, negative")
    n_soil_layers: int | None = Field(None, ge=1, description="number of layers (must match zsoil_m)")
    n_steps: int | None = Field(None, ge=1, description="run the first n_steps rows of forcing.csv (default: all)")
    start_utc: str | None = Field(
        None, description="UTC date and time the run starts (e.g. 1998-01-02T00:00:00Z): CF dates in the netCDF output"
    )
    tbot_K: float = Field(description="deep soil temperature at zbot_m, K")
    per_layer: CasePerLayer
    scalars: CaseScalars
    initial_state: CaseInitialState
    options: CaseOptions = CaseOptions()
    case: Any = Field(None, description=_INFO)
    precision: Any = Field(None, description=_INFO)
    zsoil_note: Any = Field(None, description=_INFO)
    layer_thickness_m: Any = Field(None, description=_INFO)
    layer_thickness_as_computed_m: Any = Field(None, description=_INFO)
    layer_thickness_note: Any = Field(None, description=_INFO)
    soil_type_stas: Any = Field(None, description=_INFO)
    soil_type_name: Any = Field(None, description=_INFO)
    units: Any = Field(None, description=_INFO)
    derived: Any = Field(None, description=_INFO)
    site: Any = Field(None, description=_INFO)
    full_model: Any = Field(None, description=_INFO)
    vegetation_type_modis: Any = Field(None, description=_INFO)


_DESCRIBED = re.compile(r"^(\S+) \(.*\)$")  # "OPT_FRZ (supercooled water)" -> "OPT_FRZ"


def _option_keys(raw: Any) -> Any:
    """Option keys without their parenthesised descriptions (a key given twice is an error)."""
    if not isinstance(raw, dict):
        return raw
    out: dict = {}
    for key, value in raw.items():
        name = m.group(1) if isinstance(key, str) and (m := _DESCRIBED.match(key)) else key
        if name in out:
            raise CaseError(f"params.json options: {name} is given twice")
        out[name] = value
    return out


def read_params(meta: Any) -> CaseParams:
    """``params.json`` content validated against :class:`CaseParams` (unknown keys rejected with the nearest
    valid name: a misspelt option such as ``OPT_FRZZ`` or ``opt_frz`` must not run with the default)."""
    if isinstance(meta, dict) and "options" in meta:
        meta = {**meta, "options": _option_keys(meta["options"])}
    try:
        return validate(CaseParams, meta, where="params.json")
    except ConfigError as err:
        raise CaseError(str(err)) from None


#: Plausible water fluxes of a soil-column forcing, m s-1 (``etran``: every layer's transpiration): about ten
#: times the largest observed rates, so that a unit slip (mm s-1 read as m s-1 is 1000x) is refused; water input
#: is never negative.
WATER_FLUX_BOUNDS_MPS = {"qinsurf_mps": (0.0, 2e-4), "evap_soil_mps": (-1e-5, 1e-5), "etran": (-1e-5, 1e-5)}


def _check_flux(values: np.ndarray, name: str, steps: np.ndarray, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    bad = np.flatnonzero((values < lo) | (values > hi))
    if bad.size:
        k = bad[0]
        raise CaseError(
            f"forcing.csv: {name} = {values[k]:.6g} m/s at step {steps[k]} is outside the plausible [{lo:g}, {hi:g}] "
            f"m/s ({hi * 3.6e6:g} mm per hour; {bad.size} value(s)): check the units (m s-1)"
        )


def forcing_columns(n_layers: int) -> list[str]:
    """Columns of ``forcing.csv`` after ``step`` and ``time_s``."""
    etran = [f"etran{k}_mps" for k in range(1, n_layers + 1)]
    return ["ghf_wm2", "qinsurf_mps", "evap_soil_mps", *etran, "frozen_ground", "frz_top_ice_flux_mmps"]


def output_columns(n_layers: int) -> list[str]:
    """Columns of ``output.csv``, in order."""
    layers = range(1, n_layers + 1)
    return [
        "step",
        "time_s",
        *[f"t{k}_k" for k in layers],
        *[f"smc{k}" for k in layers],
        *[f"sh2o{k}" for k in layers],
        "runoff_surface_mm",
        "runoff_subsurface_mm",
        "drainage_mmps",
        "infil_mps",
        "nsub",
        *[f"tdiff{k}_k" for k in layers],
    ]


@dataclasses.dataclass(frozen=True)
class Case:
    """A soil-column case, in float64 NumPy (convert with :meth:`as_dtype`)."""

    name: str
    grid: SoilGrid
    options: SoilOptions
    params: SoilParams
    state0: SoilState
    forcing: SoilForcing
    time_s: np.ndarray
    reference: pd.DataFrame | None
    start: np.datetime64 | None = None  # UTC start of the run (params.json ``start_utc``), if known

    @property
    def n_steps(self) -> int:
        return len(self.time_s)

    @property
    def n_layers(self) -> int:
        return self.grid.n_layers

    def as_dtype(self, dtype) -> tuple[SoilParams, SoilState, SoilForcing]:
        """Parameters, initial state and forcing as JAX arrays of ``dtype``."""
        cast = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)  # noqa: E731
        return cast(self.params), cast(self.state0), cast(self.forcing)

    def reference_states(self) -> SoilState:
        """Reference states, rows 0..T (float64 NumPy); requires ``output.csv``."""
        if self.reference is None:
            raise CaseError(f"case {self.name!r} has no output.csv to replay from")
        ref, n = self.reference, self.n_layers
        cols = lambda fmt: ref[[fmt.format(k) for k in range(1, n + 1)]].to_numpy()  # noqa: E731
        return SoilState(t=cols("t{}_k"), smc=cols("smc{}"), sh2o=cols("sh2o{}"))


def _finite_array(values, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if n is not None and arr.shape != (n,):
        raise CaseError(f"params.json: {name} has {arr.size} values, expected one per layer ({n})")
    if not np.all(np.isfinite(arr)):
        raise CaseError(f"params.json: {name} holds non-finite values {arr.tolist()}")
    return arr


def parse_options(raw: dict, dt_s: float) -> SoilOptions:
    """Noah-MP integer option codes (``params.json`` ``options``) to :class:`SoilOptions`."""
    try:
        codes = validate(CaseOptions, _option_keys(raw), where="params.json options")
    except ConfigError as err:
        raise CaseError(str(err)) from None
    return _soil_options(codes, dt_s)


def _soil_options(codes: CaseOptions, dt_s: float) -> SoilOptions:
    kwargs = {field: choices[getattr(codes, name)] for name, (field, choices) in _OPTION_CODES.items()}
    return SoilOptions(dt_s=float(dt_s), **kwargs)


def validate_params(params: SoilParams, state0: SoilState | None = None) -> None:
    """Reject unphysical parameter sets with an error naming the parameter (concrete arrays only)."""
    p = {f.name: np.asarray(getattr(params, f.name)) for f in dataclasses.fields(params)}
    checks = [
        ("smcmax", (p["smcmax"] > 0) & (p["smcmax"] <= 1), "must lie in (0, 1] m3/m3"),
        ("smcwlt", (p["smcwlt"] >= 0) & (p["smcwlt"] < p["smcmax"]), "must satisfy 0 <= smcwlt < smcmax"),
        ("smcref", (p["smcref"] > 0) & (p["smcref"] <= p["smcmax"]), "must satisfy 0 < smcref <= smcmax"),
        ("bexp", p["bexp"] > 0, "must be > 0 (b = 0 is the water soil type)"),
        ("dksat", p["dksat"] > 0, "must be > 0 m/s"),
        ("dwsat", p["dwsat"] > 0, "must be > 0 m2/s"),
        ("psisat", p["psisat"] > 0, "must be > 0 m (positive magnitude)"),
        ("quartz", (p["quartz"] >= 0) & (p["quartz"] <= 1), "must lie in [0, 1]"),
        ("csoil", p["csoil"] > 0, "must be > 0 J/m3/K"),
        ("slope", (p["slope"] >= 0) & (p["slope"] <= 1), "must lie in [0, 1]"),
        ("refkdt", p["refkdt"] > 0, "must be > 0"),
        ("refdk", p["refdk"] > 0, "must be > 0 m/s"),
        ("frzk", p["frzk"] >= 0, "must be >= 0"),
        ("tbot", (p["tbot"] > 150) & (p["tbot"] < 350), "must be a temperature in K (150-350)"),
    ]
    for name, ok, rule in checks:
        if not np.all(ok):
            raise CaseError(f"parameter {name}={p[name].tolist()} {rule}")
    if state0 is not None:
        t, smc, sh2o = (np.asarray(x) for x in (state0.t, state0.smc, state0.sh2o))
        if not np.all((t > 150) & (t < 350)):
            raise CaseError(f"initial_state t_K={t.tolist()} must be temperatures in K (150-350)")
        if not np.all((smc >= 0) & (smc <= p["smcmax"] + 1e-12)):
            raise CaseError(f"initial_state smc={smc.tolist()} must lie in [0, smcmax]")
        if not np.all((sh2o >= 0) & (sh2o <= smc + 1e-12)):
            raise CaseError(f"initial_state sh2o={sh2o.tolist()} must lie in [0, smc]")


def read_exact_csv(path) -> pd.DataFrame:
    """Read a CSV whose decimals must parse to the exact float64 they were written from."""
    # pandas < 3 parses with a fast, not always correctly rounded routine unless asked for round-trip.
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    return pd.read_csv(path, **exact)


def _csv_path(root: Path, stem: str) -> Path | None:
    """``stem.csv`` or its gzipped copy ``stem.csv.gz`` in ``root``, if either exists."""
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (root / name).is_file():
            return root / name
    return None


def _read_csv(path: Path | None, required: list[str], name: str = "") -> pd.DataFrame:
    if path is None or not path.is_file():
        raise CaseError(f"missing file {path or name}")
    try:
        df = read_exact_csv(path)
    except pd.errors.EmptyDataError:
        raise CaseError(f"{path.name} is empty (expected a header line with columns {required[:3]}...)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise CaseError(f"{path.name} cannot be read as CSV ({exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CaseError(f"{path.name}: missing column(s) {missing}")
    for col in required:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise CaseError(f"{path.name}: column {col!r} has NaN/non-numeric values at rows {rows}")
    return df


def _check_steps(df: pd.DataFrame, name: str, first: int, dt_s: float) -> None:
    steps = df["step"].to_numpy()
    expected = np.arange(first, first + len(df))
    if not np.array_equal(steps, expected):
        i = int(np.flatnonzero(steps != expected)[0])
        raise CaseError(f"{name}: steps must be consecutive from {first}; row {i} has step {steps[i]}")
    if "time_s" in df and not np.allclose(df["time_s"].to_numpy(), steps * dt_s, rtol=0, atol=1e-6 * dt_s):
        raise CaseError(f"{name}: time_s is not step * dt_s (dt_s = {dt_s}); a gap or a wrong time step")


def read_case(case_dir: str | Path) -> Case:
    """Read and validate a case folder."""
    root = Path(case_dir)
    if not root.is_dir():
        raise CaseError(f"case folder {root} does not exist")
    pfile = root / "params.json"
    if not pfile.is_file():
        raise CaseError(f"missing file {pfile}")
    try:
        meta = json.loads(read_text(pfile, "params.json"))
    except json.JSONDecodeError as err:
        raise CaseError(f"params.json is not valid JSON: {err}") from None

    p = read_params(meta)
    zsoil = _finite_array(p.zsoil_m, "zsoil_m")
    n = zsoil.size
    if p.n_soil_layers is not None and p.n_soil_layers != n:
        raise CaseError(f"params.json: n_soil_layers={p.n_soil_layers} but zsoil_m has {n} depths")
    try:
        grid = SoilGrid(zsoil=zsoil, zbot=float(p.zbot_m))
    except ValueError as err:
        raise CaseError(f"params.json: {err}") from None
    options = _soil_options(p.options, p.dt_s)
    fields = {name: _finite_array(getattr(p.per_layer, name), name, n) for name in PER_LAYER_PARAMS}
    for key, name in SCALAR_PARAMS.items():
        fields[name] = _finite_array(getattr(p.scalars, key), key)
    fields["tbot"] = _finite_array(p.tbot_K, "tbot_K")
    params = SoilParams(**fields)
    init = p.initial_state
    state0 = SoilState(
        t=_finite_array(init.t_K, "initial_state t_K", n),
        smc=_finite_array(init.smc, "initial_state smc", n),
        sh2o=_finite_array(init.sh2o, "initial_state sh2o", n),
    )
    validate_params(params, state0)
    dt_s = p.dt_s

    fdf = _read_csv(_csv_path(root, "forcing"), ["step", *forcing_columns(n)], str(root / "forcing.csv"))
    extra_etran = [c for c in fdf.columns if c.startswith("etran") and c not in forcing_columns(n)]
    if extra_etran:
        raise CaseError(f"forcing.csv has transpiration for more layers than zsoil_m ({n}): {extra_etran}")
    if len(fdf) == 0:
        raise CaseError("forcing.csv has no rows")
    if p.n_steps is not None:
        if p.n_steps > len(fdf):
            raise CaseError(f"params.json: n_steps={p.n_steps} but forcing.csv has only {len(fdf)} rows")
        fdf = fdf.iloc[: p.n_steps]
    _check_steps(fdf, "forcing.csv", 1, dt_s)
    col = lambda c: fdf[c].to_numpy(dtype=np.float64)  # noqa: E731
    for name in forcing_columns(n):
        bounds = WATER_FLUX_BOUNDS_MPS.get("etran" if name.startswith("etran") else name)
        if bounds is not None:
            _check_flux(col(name), name, fdf["step"].to_numpy(), bounds)
    if not np.all(np.isin(col("frozen_ground"), (0.0, 1.0))):
        raise CaseError("forcing.csv: frozen_ground must be 0 or 1")
    forcing = SoilForcing(
        ghf_wm2=col("ghf_wm2"),
        qinsurf_mps=col("qinsurf_mps"),
        evap_mps=col("evap_soil_mps"),
        etran_mps=np.stack([col(f"etran{k}_mps") for k in range(1, n + 1)], axis=-1),
        frozen_ground=col("frozen_ground"),
        frz_top_ice_flux_mmps=col("frz_top_ice_flux_mmps"),
    )
    time_s = fdf["time_s"].to_numpy(dtype=np.float64) if "time_s" in fdf else np.arange(1, len(fdf) + 1) * dt_s
    start = None
    if "start_utc" in meta:
        try:
            start = pd.Timestamp(meta["start_utc"]).tz_localize(None).to_datetime64()
        except (ValueError, TypeError):
            raise CaseError(f"params.json: start_utc={meta['start_utc']!r} is not a date and time") from None

    reference = None
    if (out_path := _csv_path(root, "output")) is not None:
        reference = _read_csv(out_path, output_columns(n))
        reference = reference.iloc[: len(fdf) + 1] if p.n_steps is not None else reference
        _check_steps(reference, "output.csv", 0, dt_s)
        if len(reference) != len(fdf) + 1:
            raise CaseError(f"output.csv has {len(reference)} rows, expected {len(fdf) + 1} (initial + steps)")
    return Case(root.name, grid, options, params, state0, forcing, time_s, reference, start)
