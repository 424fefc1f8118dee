"""Conservation, branch coverage, precision and bounds of free runs on the reference and stress cases.

Cases: the two Fortran reference cases (tests/data/noahmp_soil) and the four synthetic
stress cases of :mod:`dam.stress`, written to a temporary folder. Each case is run once per precision
(float64 and float32, cached for the module).

Per step, in float64:

* water: ``sum_k dz_k (smc_new - smc_old) = (P - E_eff - sum Tr) dt + [frozen] Fice dt / 1000
  - (R_sfc + R_sub) / 1000`` (m), with ``E_eff = 0`` on frozen-ground steps (Noah-MP SoilWaterMain). Every term is
  O(0.1 m) or less, so round-off is O(1e-17 m); 1e-12 m leaves four orders of margin over the measured
  residuals (<= 3e-16 m) and still catches any lost or double-counted water above 1e-9 mm per step.
* heat: diffusion ``sum_k C_k dz_k (T_diff - T_old) = (G - H_bot) dt`` (``H_bot`` leaving the bottom; the
  sign convention of ``heat_bottom_wm2`` is pinned by its own test) and phase change
  ``sum_k C_k dz_k (T_new - T_diff) = -L dt`` (J m-2), C the start-of-step heat capacity used by the step,
  ``L`` the latent heat diagnostic. Round-off: each layer temperature is stored with a relative error
  of eps/2 (|T| ~ 280 K, so ~3e-14 K) and that error is multiplied by ``C_k dz_k`` (up to ~3e6 J m-2 K-1),
  so the residual is bounded by a small multiple of ``eps * sum_k C_k dz_k |T_k|`` (~3e-7 J m-2 for the
  2 m column) plus ``eps * |flux| dt`` for the boundary terms. We allow 2x that sum (about 6e-7 J m-2, i.e.
  ~5e-12 relative to step fluxes of ~1e5 J m-2); measured residuals stay below 0.22x it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from dam import stress
from dam.cases import read_case
from dam.physics import run

REFERENCE_CASES = ("bondville", "koren_freeze")
STRESS_CASES = tuple(stress.STRESS_CASES)
ALL_CASES = REFERENCE_CASES + STRESS_CASES
EPS64 = float(np.finfo(np.float64).eps)
WATER_TOL_M = 1e-12
HEAT_ULP_FACTOR = 2.0
PAD_TO = 17472  # steps of the Bondville year, the longest case

_run = eqx.filter_jit(run)


@pytest.fixture(scope="module")
def stress_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stress_cases")
    stress.write_all(root, seed=0)
    return root


@pytest.fixture(params=ALL_CASES)
def case_dir(request, stress_root) -> Path:
    if request.param in REFERENCE_CASES:
        return request.getfixturevalue("reference_dir") / request.param
    return stress_root / request.param


@functools.cache
def simulate(case_dir: str, dtype_name: str):
    """Free run of a case folder: (case, state0, states, fluxes) as float64 NumPy arrays.

    Compilation dominates (3-9 s per options/length/dtype variant on a shared 2-core machine, against
    < 1 s to run 17,472 steps), and the scan length is part of the compiled shape. Steps are causal, so the
    forcing is padded with quiet steps (all fluxes zero) to at least ``PAD_TO`` steps and the padding is
    dropped from the outputs: cases with the same options then share one executable per dtype.
    """
    case = read_case(case_dir)
    params, state0, forcing = case.as_dtype(jnp.dtype(dtype_name))
    n = case.n_steps
    pad = lambda x: jnp.concatenate([x, jnp.zeros((max(PAD_TO - n, 0), *x.shape[1:]), x.dtype)])  # noqa: E731
    _, (states, fluxes) = _run(state0, jax.tree_util.tree_map(pad, forcing), params, case.grid, case.options)
    to_np = lambda tree: jax.tree_util.tree_map(lambda x: np.asarray(x[:n], dtype=np.float64), tree)  # noqa: E731
    state0 = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype=np.float64), state0)
    return case, state0, to_np(states), to_np(fluxes)


def _with_initial(x0: np.ndarray, xs: np.ndarray) -> np.ndarray:
    return np.concatenate([x0[None], xs])


def water_residual(case, state0, states, fluxes) -> np.ndarray:
    """Per-step water-balance residual, m."""
    dt = case.options.dt_s
    dz = np.asarray(case.grid.dz, dtype=np.float64)
    f = case.forcing
    smc = _with_initial(state0.smc, states.smc)
    storage_change = np.sum(dz * (smc[1:] - smc[:-1]), axis=-1)
    frozen = np.asarray(f.frozen_ground) > 0
    evap = np.where(frozen, 0.0, f.evap_mps)
    inputs = (f.qinsurf_mps - evap - np.sum(f.etran_mps, axis=-1)) * dt
    inputs = inputs + np.where(frozen, f.frz_top_ice_flux_mmps * dt / 1000.0, 0.0)
    runoff = (fluxes.runoff_surface_mm + fluxes.runoff_subsurface_mm) / 1000.0
    return storage_change - (inputs - runoff)


def test_water_balance_per_step(case_dir):
    case, state0, states, fluxes = simulate(str(case_dir), "float64")
    residual = water_residual(case, state0, states, fluxes)
    worst = int(np.argmax(np.abs(residual)))
    assert np.abs(residual).max() <= WATER_TOL_M, (
        f"{case.name}: water balance residual {residual[worst]:.3e} m at step {worst + 1}"
    )
    if case.reference is not None:  # the same budget closes on the Fortran output: the formula is Noah-MP's
        ref, ref_states = case.reference, case.reference_states()
        ref_fluxes = SimpleNamespace(
            runoff_surface_mm=ref["runoff_surface_mm"].to_numpy()[1:],
            runoff_subsurface_mm=ref["runoff_subsurface_mm"].to_numpy()[1:],
        )
        ref_residual = water_residual(
            case, SimpleNamespace(smc=ref_states.smc[0]), SimpleNamespace(smc=ref_states.smc[1:]), ref_fluxes
        )
        assert np.abs(ref_residual).max() <= WATER_TOL_M


def heat_residuals(case, state0, states, fluxes, bottom_sign: float = 1.0):
    """Per-step residuals (J m-2) of the diffusion and the phase-change energy budgets, and the tolerance.

    The diffusion budget is ``sum C dz (T_diff - T_old) = (G + bottom_sign * heat_bottom_wm2) dt``;
    ``bottom_sign = +1`` is the documented convention of :class:`dam.physics.SoilFluxes` (heat flux into
    the column through its bottom, positive up, Noah-MP's Hbot).
    """
    dt = case.options.dt_s
    dz = np.asarray(case.grid.dz, dtype=np.float64)
    cdz = fluxes.heat_capacity * dz
    t_old = _with_initial(state0.t, states.t)[:-1]
    boundary = (case.forcing.ghf_wm2 + bottom_sign * fluxes.heat_bottom_wm2) * dt
    diffusion = np.sum(cdz * (fluxes.t_diff - t_old), axis=-1) - boundary
    phase = np.sum(cdz * (states.t - fluxes.t_diff), axis=-1) + fluxes.latent_heat_wm2 * dt
    scale = np.sum(cdz * np.abs(t_old), axis=-1) + np.abs(boundary) + np.abs(fluxes.latent_heat_wm2 * dt)
    return diffusion, phase, HEAT_ULP_FACTOR * EPS64 * scale


def _assert_within(case, label, residual, tol):
    worst = int(np.argmax(np.abs(residual) / tol))
    assert np.all(np.abs(residual) <= tol), (
        f"{case.name}: {label} energy residual {residual[worst]:.3e} J/m2 at step {worst + 1} "
        f"exceeds the round-off bound {tol[worst]:.3e} J/m2"
    )


def test_energy_balance_per_step(case_dir):
    """Heat diffusion and phase change conserve energy to round-off."""
    case, state0, states, fluxes = simulate(str(case_dir), "float64")
    diffusion, phase, tol = heat_residuals(case, state0, states, fluxes)
    _assert_within(case, "diffusion", diffusion, tol)
    _assert_within(case, "phase change", phase, tol)
    assert np.median(tol) < 1e-5  # the bound is a few ulp, far below step fluxes of ~1e5 J/m2


def test_heat_bottom_sign_convention(stress_root):
    """``SoilFluxes.heat_bottom_wm2`` is documented as the heat flux into the column bottom, positive up:
    the diffusion budget closes as ``(G + heat_bottom_wm2) dt`` on a case with a TBOT boundary, not with
    the opposite sign."""
    case, state0, states, fluxes = simulate(str(stress_root / "sand_storms"), "float64")
    assert case.options.bottom_temperature == "tbot" and np.abs(fluxes.heat_bottom_wm2).max() > 0.01
    diffusion, _, tol = heat_residuals(case, state0, states, fluxes, bottom_sign=+1.0)
    flipped, _, _ = heat_residuals(case, state0, states, fluxes, bottom_sign=-1.0)
    assert np.all(np.abs(diffusion) <= tol)
    assert not np.all(np.abs(flipped) <= tol)


def test_physical_bounds(case_dir):
    case, _, states, _ = simulate(str(case_dir), "float64")
    tiny = 1e-14  # smc = (smcmax - ice) + ice may round 1-2 ulp above smcmax at saturation
    smcmax = np.asarray(case.params.smcmax, dtype=np.float64)
    assert states.sh2o.min() >= 0.0, f"{case.name}: negative liquid water {states.sh2o.min()}"
    assert np.all(states.sh2o <= states.smc + tiny), f"{case.name}: liquid water above total water"
    excess = (states.smc - smcmax).max()
    assert excess <= tiny, f"{case.name}: total water exceeds porosity by {excess:.3e}"
    assert np.all(np.isfinite(states.t)) and 200.0 < states.t.min() and states.t.max() < 350.0


def test_float32_tracks_float64_and_reference(case_dir):
    case, _, s64, _ = simulate(str(case_dir), "float64")
    _, _, s32, _ = simulate(str(case_dir), "float32")
    if case.reference is not None:
        ref = case.reference_states()
        target = {"t": ref.t[1:], "smc": ref.smc[1:], "sh2o": ref.sh2o[1:]}
    else:
        target = {"t": s64.t, "smc": s64.smc, "sh2o": s64.sh2o}
    tols = {"t": 1.0, "smc": 0.01, "sh2o": 0.01}
    for field, tol in tols.items():
        err = np.abs(getattr(s32, field) - target[field]).max()
        assert err <= tol, f"{case.name}: float32 {field} differs by {err:.3g} (allowed {tol})"


# --- the stress cases reach the branches they were made for --------------------------------------------------


def _stress(stress_root, name):
    return simulate(str(stress_root / name), "float64")


def test_sand_storms_hit_six_substeps_and_saturation_excess(stress_root):
    case, _, states, fluxes = _stress(stress_root, "sand_storms")
    assert case.options.supercooled == "niu06" and case.options.frozen_permeability == "niu06"
    assert 4.5e-5 <= np.asarray(case.forcing.qinsurf_mps).max() <= 5.0e-5
    assert np.sum(fluxes.nsub == 6) >= 3, "the cloudbursts must trigger 6 water sub-steps"
    assert set(np.unique(fluxes.nsub)) == {3.0, 6.0}
    # The bucket clips a layer to its effective porosity (smcmax - ice, no ice here), and the excess leaves as
    # surface runoff: a layer ends the step exactly at porosity while surface runoff exceeds what the
    # infiltration capacity of the last sub-step alone would shed.
    smcmax = np.asarray(case.params.smcmax)
    at_porosity = np.any(np.abs(states.sh2o - smcmax) <= 1e-12, axis=-1)
    infil_excess_mm = (np.asarray(case.forcing.qinsurf_mps) - fluxes.infil_mps) * case.options.dt_s * 1000.0
    saturation_excess = at_porosity & (fluxes.runoff_surface_mm > infil_excess_mm + 1.0)
    assert saturation_excess.sum() >= 3, "the storms must saturate the column (saturation-excess runoff)"


def test_clay_drought_hits_minimum_water_fix(stress_root):
    case, _, states, fluxes = _stress(stress_root, "clay_drought")
    dt = case.options.dt_s
    dz = np.asarray(case.grid.dz)
    # bottom-layer refill from outside the column is booked as negative subsurface runoff
    refill = fluxes.runoff_subsurface_mm < fluxes.drainage_mmps * dt - 1e-9
    assert refill.sum() >= 10, "layer 4 must be refilled to the 0.01 mm minimum"
    # layers above are refilled from below to exactly 0.01 mm
    at_minimum = np.abs(states.sh2o * dz * 1000.0 - 0.01) <= 1e-9
    assert np.all(at_minimum.any(axis=0)), f"steps at the 0.01 mm minimum per layer: {at_minimum.sum(0)}"
    assert states.sh2o.min() > 0.0
    assert np.all(states.smc == states.sh2o), "no ice in the summer drought"


def test_deep_freeze_forms_ice_and_takes_rain_on_frozen_ground(stress_root):
    case, state0, states, fluxes = _stress(stress_root, "deep_freeze")
    opts = case.options
    assert (opts.supercooled, opts.frozen_permeability, opts.bottom_temperature) == ("koren99", "koren99", "zero_flux")
    ice = states.smc - states.sh2o
    assert np.all(ice.max(axis=0)[:3] > 0.1), f"max ice per layer {ice.max(axis=0)}"
    assert states.t[:, 0].min() < 263.0
    assert fluxes.latent_heat_wm2.min() < -50.0 and fluxes.latent_heat_wm2.max() > 10.0  # freeze and thaw
    assert np.all(fluxes.heat_bottom_wm2 == 0.0), "OPT_TBOT=1 is a zero-flux bottom"
    f = case.forcing
    ice_before = _with_initial(state0.smc - state0.sh2o, ice)[:-1]
    rain_on_ice = (f.qinsurf_mps > 0) & (f.frozen_ground == 1) & (ice_before[:, 0] > 0.1)
    assert rain_on_ice.sum() >= 10
    assert fluxes.runoff_surface_mm[rain_on_ice].sum() > 1.0, "frozen ground sheds part of the rain"
    assert np.any((f.frozen_ground == 1) & (f.frz_top_ice_flux_mmps < 0)) and np.any(f.frz_top_ice_flux_mmps > 0)


def test_summer_stc1_zero_flux_bottom(stress_root):
    case, _, states, fluxes = _stress(stress_root, "summer_stc1")
    assert case.options.temperature_scheme == "semi_implicit" and case.options.bottom_temperature == "zero_flux"
    assert '"OPT_STC": 1' in (stress_root / "summer_stc1" / "params.json").read_text()
    assert np.all(fluxes.heat_bottom_wm2 == 0.0)
    assert np.all(states.smc == states.sh2o) and np.all(fluxes.latent_heat_wm2 == 0.0)
    daily_range = np.ptp(states.t[: stress.STEPS_PER_DAY, 0])
    assert daily_range > 5.0, f"layer-1 diurnal range {daily_range:.2f} K"


def test_stress_cases_are_deterministic_and_in_reference_format(tmp_path, reference_dir):
    a = stress.write_case("deep_freeze", tmp_path / "a", seed=3)
    b = stress.write_case("deep_freeze", tmp_path / "b", seed=3)
    c = stress.write_case("deep_freeze", tmp_path / "c", seed=4)
    assert (a / "forcing.csv").read_bytes() == (b / "forcing.csv").read_bytes()
    assert (a / "forcing.csv").read_bytes() != (c / "forcing.csv").read_bytes()
    assert not (a / "output.csv").exists()
    ref_params = json.loads((reference_dir / "koren_freeze" / "params.json").read_text())
    ref_forcing = pd.read_csv(reference_dir / "koren_freeze" / "forcing.csv", nrows=2)
    for name in STRESS_CASES:
        folder = stress.write_case(name, tmp_path / "fmt")
        params = json.loads((folder / "params.json").read_text())
        assert list(params) == list(ref_params)
        assert list(params["options"]) == list(ref_params["options"])
        assert list(params["per_layer"]) == list(ref_params["per_layer"])
        assert list(params["scalars"]) == list(ref_params["scalars"])
        assert list(pd.read_csv(folder / "forcing.csv", nrows=2).columns) == list(ref_forcing.columns)
        case = read_case(folder)
        assert case.reference is None and 2 * stress.STEPS_PER_DAY <= case.n_steps <= 31 * stress.STEPS_PER_DAY
