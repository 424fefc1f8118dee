"""Bad input is rejected with an error that names the offending item.

Case-folder errors are :class:`dam.cases.CaseError` (a ``ValueError``) raised by ``read_case``; a state that
becomes non-finite inside a jitted run raises through ``eqx.error_if``; an unknown option string raises
``ValueError`` when :class:`dam.physics.SoilOptions` is built. Bad cases are copies of the ``koren_freeze``
reference case cut to 50 steps.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from dam import stress
from dam.cases import CaseError, read_case
from dam.physics import SoilOptions, run

N_ROWS = 50


@pytest.fixture
def case_dir(tmp_path, reference_dir) -> Path:
    """A valid 50-step case folder (no output.csv) to be broken by each test."""
    dst = tmp_path / "case"
    dst.mkdir()
    for name in ("params.json", "forcing.csv"):
        shutil.copy(reference_dir / "koren_freeze" / name, dst / name)
    forcing = pd.read_csv(dst / "forcing.csv", dtype=str).iloc[:N_ROWS]
    forcing.to_csv(dst / "forcing.csv", index=False)
    _edit_params(dst, lambda m: m.update(n_steps=N_ROWS))
    return dst


def _edit_forcing(folder: Path, fn: Callable[[pd.DataFrame], pd.DataFrame | None]) -> None:
    df = pd.read_csv(folder / "forcing.csv", dtype=str)
    out = fn(df)
    (df if out is None else out).to_csv(folder / "forcing.csv", index=False)


def _edit_params(folder: Path, fn: Callable[[dict], None]) -> None:
    meta = json.loads((folder / "params.json").read_text())
    fn(meta)
    (folder / "params.json").write_text(json.dumps(meta, indent=1))


def _set(df: pd.DataFrame, col: str, row: int, value: str) -> None:
    df.loc[row, col] = value


BAD_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "missing params.json": (lambda d: (d / "params.json").unlink(), ("params.json",)),
    "missing forcing.csv": (lambda d: (d / "forcing.csv").unlink(), ("forcing.csv",)),
    "missing forcing column": (
        lambda d: _edit_forcing(d, lambda df: df.drop(columns=["ghf_wm2"])),
        ("forcing.csv", "ghf_wm2"),
    ),
    "missing etran column": (lambda d: _edit_forcing(d, lambda df: df.drop(columns=["etran4_mps"])), ("etran4_mps",)),
    "NaN in forcing": (lambda d: _edit_forcing(d, lambda df: _set(df, "evap_soil_mps", 7, "nan")), ("evap_soil_mps",)),
    "empty forcing cell": (lambda d: _edit_forcing(d, lambda df: _set(df, "qinsurf_mps", 3, "")), ("qinsurf_mps",)),
    "non-numeric forcing": (lambda d: _edit_forcing(d, lambda df: _set(df, "ghf_wm2", 3, "12,5")), ("ghf_wm2",)),
    "gap in steps": (lambda d: _edit_forcing(d, lambda df: df.drop(index=20)), ("forcing.csv", "step")),
    "time_s not step*dt": (lambda d: _edit_forcing(d, lambda df: _set(df, "time_s", 5, "1234.0")), ("time_s",)),
    "extra layer (etran5 column)": (
        lambda d: _edit_forcing(d, lambda df: df.assign(etran5_mps="0.0")),
        ("etran5_mps",),
    ),
    "per_layer of wrong length": (
        lambda d: _edit_params(d, lambda m: m["per_layer"].update(smcmax=m["per_layer"]["smcmax"][:3])),
        ("smcmax", "per layer"),
    ),
    "initial state of wrong length": (
        lambda d: _edit_params(d, lambda m: m["initial_state"]["t_K"].append(280.0)),
        ("t_K",),
    ),
    "n_soil_layers disagrees with zsoil": (
        lambda d: _edit_params(d, lambda m: m.update(n_soil_layers=5)),
        ("n_soil_layers",),
    ),
    "smcmax <= smcwlt": (
        lambda d: _edit_params(d, lambda m: m["per_layer"].update(smcwlt=list(m["per_layer"]["smcmax"]))),
        ("smcwlt",),
    ),
    "dksat <= 0": (lambda d: _edit_params(d, lambda m: m["per_layer"]["dksat"].__setitem__(2, 0.0)), ("dksat",)),
    "negative dksat": (lambda d: _edit_params(d, lambda m: m["per_layer"]["dksat"].__setitem__(0, -1e-6)), ("dksat",)),
    "negative qinsurf": (lambda d: _edit_forcing(d, lambda df: _set(df, "qinsurf_mps", 11, "-1e-7")), ("qinsurf_mps",)),
    "frozen_ground not 0/1": (
        lambda d: _edit_forcing(d, lambda df: _set(df, "frozen_ground", 4, "2")),
        ("frozen_ground",),
    ),
    "unsupported option code": (
        lambda d: _edit_params(d, lambda m: m["options"].update({"OPT_FRZ (supercooled water)": 7})),
        ("OPT_FRZ",),
    ),
    "initial sh2o above smc": (
        lambda d: _edit_params(d, lambda m: m["initial_state"]["sh2o"].__setitem__(0, 0.45)),
        ("sh2o",),
    ),
    "non-finite parameter": (
        lambda d: (d / "params.json").write_text(
            (d / "params.json").read_text().replace('"frzk": 0.15', '"frzk": NaN')
        ),
        ("frzk",),
    ),
    "params.json not JSON": (lambda d: (d / "params.json").write_text("{ not json"), ("params.json",)),
    # issue 16 item 6: misspelt keys ran with the defaults, n_steps was ignored
    "misspelt option OPT_FRZZ": (
        lambda d: _edit_params(d, lambda m: m["options"].update({"OPT_FRZZ": 2})),
        ("unknown key 'options.OPT_FRZZ'", "did you mean 'OPT_FRZ'"),
    ),
    "lower-case option opt_frz": (
        lambda d: _edit_params(d, lambda m: m["options"].update({"opt_frz": 2})),
        ("unknown key 'options.opt_frz'", "did you mean 'OPT_FRZ'"),
    ),
    "zbot instead of zbot_m": (
        lambda d: _edit_params(d, lambda m: m.update(zbot=-4.0)),
        ("unknown key 'zbot'", "did you mean 'zbot_m'"),
    ),
    "n_steps beyond the forcing": (lambda d: _edit_params(d, lambda m: m.update(n_steps=N_ROWS + 1)), ("n_steps",)),
    "initial smc above porosity": (
        lambda d: _edit_params(d, lambda m: m["initial_state"]["smc"].__setitem__(0, 1.5)),
        ("initial_state smc", "smcmax"),
    ),
    "freezing point changed": (
        lambda d: _edit_params(d, lambda m: m["options"].update(freezing_point_K=273.15)),
        ("freezing_point_K",),
    ),
    "empty forcing file": (lambda d: (d / "forcing.csv").write_text(""), ("forcing.csv", "empty")),
}


def test_truncated_case_is_valid(case_dir):
    case = read_case(case_dir)
    assert case.n_steps == N_ROWS and case.reference is None


def test_n_steps_runs_the_first_rows(case_dir):
    _edit_params(case_dir, lambda m: m.update(n_steps=20))
    assert read_case(case_dir).n_steps == 20


@pytest.mark.parametrize("label", list(BAD_CASES))
def test_bad_case_raises_case_error_naming_the_item(label, case_dir):
    mutate, names = BAD_CASES[label]
    mutate(case_dir)
    with pytest.raises(CaseError) as info:
        read_case(case_dir)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    for name in names:
        assert name in message, f"{label}: error message does not name {name!r}: {message}"


# --- non-finite values inside a jitted run ------------------------------------------------------------------

_run = eqx.filter_jit(run)


@pytest.fixture(scope="module")
def short_run_inputs(tmp_path_factory):
    """A 50-step unfrozen, wet case in float64: (params, state0, forcing, grid, options)."""
    folder = stress.write_case("summer_stc1", tmp_path_factory.mktemp("nonfinite"), days=50 / stress.STEPS_PER_DAY)
    case = read_case(folder)
    params, state0, forcing = case.as_dtype(jnp.float64)
    return params, state0, forcing, case.grid, case.options


def _poison(forcing, field: str, step: int, value: float):
    return eqx.tree_at(lambda f: getattr(f, field), forcing, getattr(forcing, field).at[step].set(value))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ghf_wm2", np.nan),
        ("ghf_wm2", np.inf),
        ("qinsurf_mps", np.inf),
        ("evap_mps", np.nan),
        ("etran_mps", np.inf),
        ("frz_top_ice_flux_mmps", -np.inf),
    ],
)
def test_non_finite_state_is_caught_under_jit(field, value, short_run_inputs):
    params, state0, forcing, grid, options = short_run_inputs
    if field == "frz_top_ice_flux_mmps":  # only read on frozen-ground steps
        forcing = eqx.tree_at(lambda f: f.frozen_ground, forcing, jnp.ones_like(forcing.frozen_ground))
    bad = _poison(forcing, field, 10, value)
    with pytest.raises(RuntimeError, match="non-finite"):
        jax.block_until_ready(_run(state0, bad, params, grid, options))


def test_finite_run_does_not_raise(short_run_inputs):
    params, state0, forcing, grid, options = short_run_inputs
    final, _ = _run(state0, forcing, params, grid, options)
    assert np.all(np.isfinite(np.asarray(final.t)))


@pytest.mark.parametrize(("field", "value"), [("qinsurf_mps", np.nan), ("etran_mps", -np.inf)])
def test_non_finite_forcing_that_leaves_the_state_finite_is_caught(field, value, short_run_inputs):
    params, state0, forcing, grid, options = short_run_inputs
    bad = _poison(forcing, field, 10, value)
    with pytest.raises(RuntimeError, match="non-finite"):
        jax.block_until_ready(_run(state0, bad, params, grid, options))


# --- options ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("supercooled", "koren"),
        ("frozen_permeability", "none"),
        ("bottom_temperature", "fixed"),
        ("temperature_scheme", "crank_nicolson"),
        ("surface_runoff", "topmodel"),
        ("subsurface_runoff", "simgm"),
    ],
)
def test_unknown_option_string_raises_naming_the_option(field, value):
    with pytest.raises(ValueError, match=field) as info:
        SoilOptions(**{field: value})
    assert repr(value) in str(info.value)


def test_non_positive_time_step_raises():
    with pytest.raises(ValueError, match="dt_s"):
        SoilOptions(dt_s=0.0)
