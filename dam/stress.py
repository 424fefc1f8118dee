"""Synthetic stress cases for the soil column, written as case folders in the reference format.

Each case drives one corner of the Noah-MP soil physics hard (thermal properties, heat diffusion, phase change,
soil water, runoff):

==================  =====================================================================================
``sand_storms``     STAS 1 sand under thunderstorms (water input up to 5e-5 m/s): 6 water sub-steps and
                    saturation excess (bucket overflow).
``clay_drought``    STAS 12 clay drying under strong transpiration and evaporation: layers are emptied
                    and refilled to the 0.01 mm minimum (the negative-water fix, bottom refill booked in
                    the subsurface runoff).
``deep_freeze``     STAS 6 loam, Koren99 supercooled water (OPT_FRZ=2), liquid-water permeability
                    (OPT_INF=2), zero-flux bottom (OPT_TBOT=1): a long cold spell freezing the column from
                    the top, rain on frozen ground, frost/sublimation of the frozen surface, then a thaw.
``summer_stc1``     STAS 3 sandy loam in summer with OPT_STC=1 and OPT_TBOT=1: strong diurnal heating,
                    evapotranspiration and showers.
==================  =====================================================================================

A case folder holds ``params.json`` (same keys as the shared reference cases), ``forcing.csv`` (same
columns), ``params.nml`` (the Fortran driver's namelist) and a short ``README.md``; there is no
``output.csv``. Forcing is deterministic for a given ``seed``. Read a written case with
:func:`dam.cases.read_case`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from dam.io_safety import write_csv, write_text
from dam.site_variables import TFRZ
from dam.soil_table import STAS, stas_parameters

DT_S = 1800.0
ZSOIL_M = (-0.1, -0.4, -1.0, -2.0)
ZBOT_M = -8.0
N_LAYERS = len(ZSOIL_M)
STEPS_PER_DAY = int(86400.0 / DT_S)

_PER_LAYER_ORDER = ("smcmax", "smcref", "smcwlt", "smcdry", "bexp", "dksat", "dwsat", "psisat", "quartz")
_SCALARS = {"csoil_J_m3_K": 2.0e6, "slope_drainage": 0.1, "refkdt": 3.0, "refdk_m_s": 2.0e-6, "frzk": 0.15}
_UNITS = {
    "smcmax": "m3 m-3 (porosity)",
    "smcref": "m3 m-3 (field capacity; not used by these routines)",
    "smcwlt": "m3 m-3 (wilting point; used by OPT_RUN=3 infiltration capacity)",
    "smcdry": "m3 m-3 (not used by these routines)",
    "bexp": "- (Clapp-Hornberger b)",
    "dksat": "m s-1 (saturated hydraulic conductivity)",
    "dwsat": "m2 s-1 (saturated diffusivity)",
    "psisat": "m (saturated matric potential, positive magnitude)",
    "quartz": "- (quartz fraction)",
}
FORCING_COLUMNS = (
    "step",
    "time_s",
    "ghf_wm2",
    "qinsurf_mps",
    "evap_soil_mps",
    *[f"etran{k}_mps" for k in range(1, N_LAYERS + 1)],
    "frozen_ground",
    "frz_top_ice_flux_mmps",
    "snow_flag",
)
_INT_COLUMNS = ("step", "frozen_ground", "snow_flag")


@dataclasses.dataclass(frozen=True)
class StressCase:
    """A synthetic case before it is written: ``params`` is the params.json content, ``forcing`` the
    forcing.csv table (columns :data:`FORCING_COLUMNS`)."""

    name: str
    description: str
    params: dict
    forcing: pd.DataFrame

    @property
    def n_steps(self) -> int:
        return len(self.forcing)


def _params_json(
    name: str, stas: int, n_steps: int, tbot_k: float, t0: list[float], smc0: list[float], options: dict[str, int]
) -> dict:
    """params.json content; the initial state is unfrozen (sh2o = smc)."""
    soil = stas_parameters(stas)
    per_layer = {k: [soil[k]] * N_LAYERS for k in _PER_LAYER_ORDER}
    z = list(ZSOIL_M)
    dz = [-z[0]] + [z[k - 1] - z[k] for k in range(1, N_LAYERS)]
    smcmax1, smcref1 = soil["smcmax"], soil["smcref"]
    return {
        "case": name,
        "precision": "float64 (all values are exact float64; parse the decimal strings as double)",
        "n_steps": n_steps,
        "dt_s": DT_S,
        "n_soil_layers": N_LAYERS,
        "zsoil_m": z,
        "zsoil_note": "depth of layer BOTTOMS, negative downward (Noah-MP convention)",
        "layer_thickness_m": [round(x, 6) for x in dz],
        "layer_thickness_as_computed_m": dz,
        "layer_thickness_note": "the model computes dz1 = -zsoil1 and dzk = zsoil(k-1) - zsoil(k) in float64 "
        "(dz2 = 0.30000000000000004); use the computed values for bit-level agreement",
        "tbot_K": tbot_k,
        "zbot_m": ZBOT_M,
        "soil_type_stas": stas,
        "soil_type_name": STAS[stas][0],
        "per_layer": per_layer,
        "units": dict(_UNITS),
        "scalars": dict(_SCALARS),
        "derived": {
            "infmax_coeff (SoilInfilMaxCoeff = refkdt*dksat1/refdk)": _SCALARS["refkdt"]
            * soil["dksat"]
            / _SCALARS["refdk_m_s"],
            "imperv_coeff (SoilImpervFracCoeff = frzk*((smcmax1/smcref1)*(0.412/0.468)))": _SCALARS["frzk"]
            * ((smcmax1 / smcref1) * (0.412 / 0.468)),
        },
        "initial_state": {"t_K": list(t0), "smc": list(smc0), "sh2o": list(smc0)},
        "options": {
            "OPT_RUN": options.get("OPT_RUN", 3),
            "OPT_FRZ (supercooled water)": options.get("OPT_FRZ", 1),
            "OPT_INF (frozen permeability)": options.get("OPT_INF", 1),
            "OPT_TBOT": options.get("OPT_TBOT", 2),
            "OPT_STC": options.get("OPT_STC", 3),
            "soil_time_step_equals_main_step": True,
            "n_water_substeps": "3, or 6 when InfilRateSfc*dt > dz1*smcmax",
            "freezing_point_K": TFRZ,
        },
    }


class _Clock:
    """Time axis of a case: step s = 1..T ends at s*dt; ``hour`` is the local hour at the step middle."""

    def __init__(self, days: float):
        self.n = int(round(days * STEPS_PER_DAY))
        self.step = np.arange(1, self.n + 1)
        self.time_s = self.step * DT_S
        mid = self.time_s - 0.5 * DT_S
        self.day = mid / 86400.0
        self.hour = (mid / 3600.0) % 24.0

    def diurnal(self, mean: float, amplitude: float, peak_hour: float = 13.0) -> np.ndarray:
        """A cosine day cycle peaking at ``peak_hour``."""
        return mean + amplitude * np.cos(2.0 * np.pi * (self.hour - peak_hour) / 24.0)

    def daylight(self, peak: float, sunrise: float = 6.0, sunset: float = 20.0) -> np.ndarray:
        """A half sine between sunrise and sunset (0 at night) with maximum ``peak``."""
        x = (self.hour - sunrise) / (sunset - sunrise)
        return np.where((x > 0) & (x < 1), peak * np.sin(np.pi * np.clip(x, 0.0, 1.0)), 0.0)

    def window(self, start_day: float, hours: float) -> np.ndarray:
        """True on the steps whose middle lies in [start_day, start_day + hours)."""
        return (self.day >= start_day) & (self.day < start_day + hours / 24.0)


def _storm(clock: _Clock, start_day: float, hours: float, peak: float) -> np.ndarray:
    """A convective storm: intensity rising quickly to ``peak`` then decaying (m/s), 0 outside."""
    x = (clock.day - start_day) * 24.0 / hours
    shape = np.where(x < 0.25, x / 0.25, 1.0 - (x - 0.25) / 0.75 * 0.8)
    return np.where((x >= 0) & (x < 1), peak * np.clip(shape, 0.15, 1.0), 0.0)


def _table(clock: _Clock, **cols: np.ndarray) -> pd.DataFrame:
    zero = np.zeros(clock.n)
    data = {"step": clock.step, "time_s": clock.time_s}
    for col in FORCING_COLUMNS[2:]:
        data[col] = np.asarray(cols.get(col, zero), dtype=np.float64) + zero
    for col in _INT_COLUMNS:
        data[col] = np.asarray(data[col]).astype(np.int64)
    return pd.DataFrame(data, columns=list(FORCING_COLUMNS))


def sand_storms(seed: int = 0, days: float = 10.0) -> StressCase:
    """STAS 1 sand, summer thunderstorms up to 5e-5 m/s: 6 water sub-steps and saturation excess."""
    rng = np.random.default_rng(seed)
    c = _Clock(days)
    q = np.zeros(c.n)
    # a fixed 5e-5 m/s cloudburst on day 1 and a second storm 3 h later (saturates the column), then
    # random afternoon storms.
    q = np.maximum(q, _storm(c, 1.0 + 15.0 / 24.0, 4.0, 5.0e-5))
    q = np.maximum(q, _storm(c, 1.0 + 21.0 / 24.0, 3.0, 4.0e-5))
    for day in range(3, int(days)):
        if rng.random() < 0.6:
            start = day + (13.0 + 6.0 * rng.random()) / 24.0
            q = np.maximum(q, _storm(c, start, 1.0 + 3.0 * rng.random(), rng.uniform(1.0e-5, 5.0e-5)))
    wet = q > 0
    ghf = c.diurnal(8.0, 70.0) + rng.normal(0.0, 8.0, c.n)
    ghf = np.where(wet, 0.3 * ghf - 10.0, ghf)
    evap = np.where(wet, 0.0, c.daylight(6.0e-8))
    root = (0.3, 0.4, 0.3, 0.0)
    etran = {f"etran{k + 1}_mps": np.where(wet, 0.0, c.daylight(8.0e-8 * root[k])) for k in range(N_LAYERS)}
    forcing = _table(c, ghf_wm2=ghf, qinsurf_mps=q, evap_soil_mps=evap, **etran)
    params = _params_json(
        "sand_storms",
        1,
        c.n,
        289.0,
        [294.0, 292.5, 291.0, 290.0],
        [0.12, 0.14, 0.16, 0.18],
        {"OPT_FRZ": 1, "OPT_INF": 1, "OPT_TBOT": 2, "OPT_STC": 3},
    )
    return StressCase("sand_storms", sand_storms.__doc__, params, forcing)


def clay_drought(seed: int = 0, days: float = 10.0) -> StressCase:
    """STAS 12 clay drying under strong transpiration and evaporation: layers emptied to the 0.01 mm
    minimum-water fix (the bottom refill shows as subsurface runoff below drainage*dt)."""
    rng = np.random.default_rng(seed)
    c = _Clock(days)
    cloud = np.repeat(rng.uniform(0.7, 1.0, int(np.ceil(days)) + 1), STEPS_PER_DAY)[: c.n]
    ghf = c.diurnal(6.0, 45.0 * cloud) + rng.normal(0.0, 4.0, c.n)
    q = 1.5e-6 * c.window(min(6.0, 0.6 * days) + 17.0 / 24.0, 1.0)  # one short light shower
    evap = np.where(q > 0, 0.0, c.daylight(1.2e-7) * cloud)
    peaks = (0.8e-7, 2.0e-7, 3.0e-7, 5.0e-7)
    etran = {f"etran{k + 1}_mps": np.where(q > 0, 0.0, c.daylight(peaks[k]) * cloud) for k in range(N_LAYERS)}
    forcing = _table(c, ghf_wm2=ghf, qinsurf_mps=q, evap_soil_mps=evap, **etran)
    params = _params_json(
        "clay_drought",
        12,
        c.n,
        292.0,
        [298.0, 296.0, 294.0, 292.5],
        [0.15, 0.15, 0.13, 0.08],
        {"OPT_FRZ": 1, "OPT_INF": 1, "OPT_TBOT": 2, "OPT_STC": 3},
    )
    return StressCase("clay_drought", clay_drought.__doc__, params, forcing)


def deep_freeze(seed: int = 0, days: float = 30.0) -> StressCase:
    """STAS 6 loam, Koren99 (OPT_FRZ=2), OPT_INF=2, zero-flux bottom (OPT_TBOT=1): a 22-day cold spell
    freezing the column from the top, two rains on frozen ground, frost/sublimation, then a thaw."""
    rng = np.random.default_rng(seed)
    c = _Clock(days)
    cold_end = min(24.0, 0.8 * days)
    cold = (c.day >= 2.0) & (c.day < cold_end)
    thaw = c.day >= cold_end
    noise = rng.normal(0.0, 10.0, c.n)
    ghf = np.where(cold, c.diurnal(-55.0, 30.0), np.where(thaw, c.diurnal(40.0, 50.0), c.diurnal(-15.0, 30.0)))
    ghf = ghf + noise
    skin = np.where(cold, c.diurnal(262.0, 6.0), np.where(thaw, c.diurnal(276.0, 8.0), c.diurnal(272.0, 4.0)))
    frozen = (skin <= TFRZ).astype(np.int64)
    q = 3.0e-6 * c.window(10.0 + 8.0 / 24.0, 8.0) + 1.5e-6 * c.window(18.0, 12.0)
    q = q + np.where(thaw, c.daylight(4.0e-7, 10.0, 17.0), 0.0)  # meltwater-like input during the thaw
    frz_flux = np.where(frozen == 1, np.where(c.daylight(1.0) > 0, -8.0e-7, 6.0e-7) * rng.uniform(0.5, 1.0, c.n), 0.0)
    evap = np.where((frozen == 0) & (q == 0), c.daylight(3.0e-8), 0.0)
    etran = {
        f"etran{k + 1}_mps": np.where(thaw & (frozen == 0), c.daylight(1.0e-8 * w), 0.0)
        for k, w in enumerate((1.0, 1.5, 0.5, 0.0))
    }
    forcing = _table(
        c, ghf_wm2=ghf, qinsurf_mps=q, evap_soil_mps=evap, frozen_ground=frozen, frz_top_ice_flux_mmps=frz_flux, **etran
    )
    params = _params_json(
        "deep_freeze",
        6,
        c.n,
        276.0,
        [274.5, 275.0, 275.5, 276.0],
        [0.33, 0.34, 0.35, 0.36],
        {"OPT_FRZ": 2, "OPT_INF": 2, "OPT_TBOT": 1, "OPT_STC": 3},
    )
    return StressCase("deep_freeze", deep_freeze.__doc__, params, forcing)


def summer_stc1(seed: int = 0, days: float = 10.0) -> StressCase:
    """STAS 3 sandy loam in summer with OPT_STC=1 and a zero-flux bottom (OPT_TBOT=1): strong diurnal
    heating, evapotranspiration and two showers. (OPT_FRZ=2 and OPT_INF=2 as in ``deep_freeze``; without
    ice they act like options 1, and the shared options let both cases share one compiled run.)"""
    rng = np.random.default_rng(seed)
    c = _Clock(days)
    cloud = np.repeat(rng.uniform(0.5, 1.0, int(np.ceil(days)) + 1), STEPS_PER_DAY)[: c.n]
    ghf = c.diurnal(10.0, 130.0 * cloud) + rng.normal(0.0, 10.0, c.n)
    q = _storm(c, 3.0 + 16.0 / 24.0, 2.0, 1.2e-5) + _storm(c, min(7.0, 0.7 * days) + 2.0 / 24.0, 5.0, 3.0e-6)
    wet = q > 0
    ghf = np.where(wet, 0.3 * ghf, ghf)
    evap = np.where(wet, 0.0, c.daylight(8.0e-8) * cloud)
    root = (0.3, 0.4, 0.3, 0.0)
    etran = {f"etran{k + 1}_mps": np.where(wet, 0.0, c.daylight(1.2e-7 * root[k]) * cloud) for k in range(N_LAYERS)}
    forcing = _table(c, ghf_wm2=ghf, qinsurf_mps=q, evap_soil_mps=evap, **etran)
    params = _params_json(
        "summer_stc1",
        3,
        c.n,
        290.0,
        [297.0, 295.0, 292.0, 290.0],
        [0.25, 0.27, 0.29, 0.31],
        {"OPT_FRZ": 2, "OPT_INF": 2, "OPT_TBOT": 1, "OPT_STC": 1},
    )
    return StressCase("summer_stc1", summer_stc1.__doc__, params, forcing)


STRESS_CASES: dict[str, Callable[..., StressCase]] = {
    "sand_storms": sand_storms,
    "clay_drought": clay_drought,
    "deep_freeze": deep_freeze,
    "summer_stc1": summer_stc1,
}


def build(name: str, seed: int = 0, days: float | None = None) -> StressCase:
    """The stress case ``name`` (one of :data:`STRESS_CASES`)."""
    if name not in STRESS_CASES:
        raise ValueError(f"unknown stress case {name!r}; choose one of {sorted(STRESS_CASES)}")
    kwargs = {"seed": seed} if days is None else {"seed": seed, "days": days}
    return STRESS_CASES[name](**kwargs)


def _num(x) -> str:
    return repr(float(x))


def _namelist(p: dict) -> str:
    pl, sc, init, opt = p["per_layer"], p["scalars"], p["initial_state"], p["options"]
    vec = lambda v: ", ".join(_num(x) for x in v)  # noqa: E731
    lines = [
        "&soilcol",
        f" nsoil = {p['n_soil_layers']}",
        f" dt = {_num(p['dt_s'])}",
        f" zbot = {_num(p['zbot_m'])}",
        f" tbot = {_num(p['tbot_K'])}",
        f" csoil = {_num(sc['csoil_J_m3_K'])}",
        f" slope = {_num(sc['slope_drainage'])}",
        f" refkdt = {_num(sc['refkdt'])}",
        f" refdk = {_num(sc['refdk_m_s'])}",
        f" frzk = {_num(sc['frzk'])}",
        f" zsoil = {vec(p['zsoil_m'])}",
        *[f" {k} = {vec(pl[k])}" for k in _PER_LAYER_ORDER],
        f" t_init = {vec(init['t_K'])}",
        f" smc_init = {vec(init['smc'])}",
        f" sh2o_init = {vec(init['sh2o'])}",
        f" opt_run = {opt['OPT_RUN']}",
        f" opt_frz = {opt['OPT_FRZ (supercooled water)']}",
        f" opt_inf = {opt['OPT_INF (frozen permeability)']}",
        f" opt_tbot = {opt['OPT_TBOT']}",
        f" opt_stc = {opt['OPT_STC']}",
        "/",
    ]
    return "\n".join(lines) + "\n"


def write_case(case: StressCase | str, root: str | Path, *, seed: int = 0, days: float | None = None) -> Path:
    """Write a stress case (a :class:`StressCase` or a name from :data:`STRESS_CASES`) to ``root/<name>``.

    Writes ``params.json``, ``forcing.csv`` (every float as the shortest decimal that round-trips),
    ``params.nml`` and ``README.md``; returns the case folder.
    """
    if isinstance(case, str):
        case = build(case, seed=seed, days=days)
    folder = Path(root) / case.name
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "params.json", json.dumps(case.params, indent=1) + "\n")
    out = case.forcing.astype({c: object for c in case.forcing.columns if c not in _INT_COLUMNS})
    for col in out.columns:
        if col not in _INT_COLUMNS:
            out[col] = [_num(v) for v in case.forcing[col].to_numpy(dtype=np.float64)]
    write_csv(out, folder / "forcing.csv")
    write_text(folder / "params.nml", _namelist(case.params))
    opts = case.params["options"]
    write_text(
        folder / "README.md",
        f"# Synthetic soil-column stress case: {case.name}\n\n"
        f"{' '.join(case.description.split())}\n\n"
        f"Generated by `dam.stress` (deterministic for a given seed); {case.n_steps} steps of {DT_S:g} s; "
        f"STAS {case.params['soil_type_stas']} {case.params['soil_type_name'].lower()}; "
        f"OPT_RUN={opts['OPT_RUN']} OPT_FRZ={opts['OPT_FRZ (supercooled water)']} "
        f"OPT_INF={opts['OPT_INF (frozen permeability)']} OPT_TBOT={opts['OPT_TBOT']} OPT_STC={opts['OPT_STC']}.\n"
        "Files and columns as in the Fortran reference cases (params.json, params.nml, forcing.csv; "
        "tests/data/noahmp_soil/README.md); "
        "there is no output.csv (no Fortran run behind it). `snow_flag` is 0 throughout.\n",
    )
    return folder


def write_all(root: str | Path, *, seed: int = 0) -> dict[str, Path]:
    """Write every stress case under ``root``; returns name -> folder."""
    return {name: write_case(name, root, seed=seed) for name in STRESS_CASES}
