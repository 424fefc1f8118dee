"""Parameter calibration of the station model: synthetic-truth recovery, gradient vs. Latin-hypercube baseline at
equal budget, dPL over two sites, specs and observation alignment.

Synthetic truth: Bondville, 6 wet days of June 1998, half-hourly; the truth run has SMCMAX - 0.03 and
DKSAT x 0.5 and its four layers' moisture is the observation. Identifiability over such a window: SMCMAX is
identifiable (the wet top layers approach saturation and the whole retention curve scales with it) and DKSAT is
identifiable (it sets the drainage rate after each storm; 20 Adam steps recover both within 0.1 %); BEXP is only
weakly identifiable jointly with DKSAT in a few days (K = DKSAT (theta / SMCMAX)^(2b+3) over a narrow moisture
range: a larger b and a larger DKSAT give nearly the same K), so the recovery test calibrates (SMCMAX, DKSAT) with
BEXP at its truth value (a trial with BEXP x 1.3 as well ended with SMCMAX within 4 % but BEXP and DKSAT 14-16 % off
along that valley, at an RMSE of 6e-4 m3 m-3).
"""

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import xarray as xr
from jax_events import compiled_functions, jit_name, sees_compiles

from dam.calibration import (
    calibrate,
    evaluate,
    latin_hypercube_search,
    prepare_observations,
    sees_liquid,
)
from dam.calibration_dpl import calibrate_dpl
from dam.coupling.calibration import (
    DEFAULT_RANGES,
    ParameterSpec,
    apply_parameters,
    current_values,
    forward_moisture,
    initial_latent,
    latent_to_values,
    make_specs,
)
from dam.identifiability import identifiability
from dam.site_run import setup_station
from dam.sites import load_site, shipped_site_dir

START, END = "1998-06-08", "1998-06-13T23:30"
SPECS = make_specs(["soil.smcmax", "soil.dksat"])
STEPS = 20


def _observed(setup, params):
    """The truth run's layer moisture as an observation DataArray (sensors at the layer centres)."""
    liquid = sees_liquid(setup)
    smc = np.asarray(forward_moisture(setup.state0, setup.forcing, params, setup.grid, setup.options, liquid))
    bottoms = setup.layer_bottoms_m
    centres = 0.5 * (np.r_[0.0, bottoms[:-1]] + bottoms)
    return xr.DataArray(smc, dims=("time", "sm_depth"), coords={"time": setup.times.values, "sm_depth": centres},
                        name="soil_moisture")  # fmt: skip


@pytest.fixture(scope="module")
def synthetic():
    setup = setup_station(load_site(shipped_site_dir("bondville_1998")), start=START, end=END)
    p = setup.params
    truth = {"soil.smcmax": float(p.soil.smcmax[0]) - 0.03, "soil.dksat": float(p.soil.dksat[0]) * 0.5}
    obs = _observed(setup, apply_parameters(p, SPECS, truth))
    return setup, truth, obs


def test_specs_squash_and_apply():
    s = ParameterSpec("soil.dksat", 5e-7, 5e-5)
    assert s.is_log and not ParameterSpec("soil.bexp", 2.5, 12.0).is_log
    for v in (6e-7, 2e-6, 4.9e-5):
        assert float(s.from_latent(s.to_latent(v))) == pytest.approx(v, rel=1e-9)
    z = np.linspace(-30, 30, 61)
    vals = np.asarray(s.from_latent(z))
    assert vals.min() >= 5e-7 * (1 - 1e-12) and vals.max() <= 5e-5 * (1 + 1e-12)
    specs = make_specs(["soil.bexp", {"name": "soil.refkdt", "lower": 1.0, "upper": 4.0},
                        {"name": "surface.stomata.slope", "per_layer": False}])  # fmt: skip
    assert specs[1].lower == 1.0 and specs[2].upper == DEFAULT_RANGES["surface.stomata.slope"][1]
    with pytest.raises(ValueError):
        make_specs(["soil.nonsense"])
    with pytest.raises(ValueError):
        ParameterSpec("soil.bexp", 5.0, 2.0)
    setup = setup_station(load_site(shipped_site_dir("bondville_1998")), start=START, end=END)
    new = apply_parameters(setup.params, specs, {"soil.bexp": 5.0, "soil.refkdt": 2.0, "surface.stomata.slope": 7})
    np.testing.assert_array_equal(np.asarray(new.soil.bexp), 5.0)
    assert np.asarray(new.soil.bexp).shape == np.asarray(setup.params.soil.bexp).shape
    assert float(new.surface.stomata.slope) == 7.0 and float(new.soil.refkdt) == 2.0
    back = latent_to_values(initial_latent(setup.params, specs), specs)
    assert float(back["soil.bexp"]) == pytest.approx(float(setup.params.soil.bexp[0]), rel=1e-9)


def test_observations_are_averaged_onto_coarser_periods(synthetic):
    setup, _, obs = synthetic
    daily = obs.resample(time="1D", closed="right", label="right").mean()
    daily = daily.isel(time=slice(1, -1))  # whole days only
    target = prepare_observations(setup, daily)
    smc = np.asarray(obs.values)
    pred = np.asarray(target.model_at_obs(smc))
    ok = np.isfinite(np.asarray(target.values))
    assert ok.shape == (daily.sizes["time"], 4) and ok.all()  # every whole day, every layer
    np.testing.assert_allclose(pred[ok], np.asarray(target.values)[ok], rtol=1e-12)
    # half-hourly observations: identity mapping, sensors to their layers
    t2 = prepare_observations(setup, obs, start=10, end=100)
    assert t2.layer_index == (0, 1, 2, 3) and t2.n_obs == 90
    np.testing.assert_allclose(np.asarray(t2.model_at_obs(smc)), smc[10:100], rtol=0, atol=0)
    # Bondville's 20 and 60 cm sensors are flagged unreliable in site.yaml and left out by default
    full = setup_station(load_site(shipped_site_dir("bondville_1998")), start=START, end=END)
    assert prepare_observations(full).depths == (0.05,)


def test_synthetic_truth_recovery_and_gradient_beats_latin_hypercube(synthetic):
    setup, truth, obs = synthetic
    res = calibrate(setup, obs, SPECS, steps=STEPS, learning_rate=0.15, progress=False)
    hist = res.history
    assert res.evaluations == STEPS and len(hist) == STEPS
    assert np.all(np.isfinite(hist["loss"]))
    assert hist["loss"].min() < 0.2 * hist["loss"].iloc[0]
    for name, value in truth.items():
        assert float(res.values[name]) == pytest.approx(value, rel=0.05), name
    lhs = latin_hypercube_search(setup, obs, SPECS, budget=STEPS, seed=0)
    assert lhs.evaluations == STEPS
    assert lhs.history["loss"].iloc[0] == pytest.approx(hist["loss"].iloc[0], rel=1e-9)  # both start at defaults
    assert hist["loss"].min() < lhs.history["loss"].min()
    # the calibrated parameters also fit better in a forward run over the window
    assert evaluate(setup, res.params, obs)["rmse"] < evaluate(setup, None, obs)["rmse"]


def test_sites_with_other_sensors_and_root_zones_share_one_compiled_gradient(synthetic):
    """A site's calibration problem is padded (sensors, observation periods) and its root zone is an array, so a
    site with two daily sensors and two root layers runs the gradient compiled for four half-hourly sensors and
    three root layers; the padding leaves the loss as it was (round-off)."""
    from dam.calibration import _problem
    from dam.coupling.calibration import _loss, loss_value, make_problem, value_and_grad
    from dam.coupling.losses import PhysicsLoss

    setup, truth, obs = synthetic
    loss = PhysicsLoss(data="rmse")
    other = dataclasses.replace(setup, params=eqx.tree_at(lambda p: p.roots.n_root, setup.params, jnp.asarray(2)))
    daily = obs.isel(sm_depth=[0, 2]).resample(time="1D", closed="right", label="right").mean().isel(time=slice(1, -1))
    latent = initial_latent(setup.params, SPECS)
    value_and_grad(latent, _problem(setup, obs, SPECS, loss, None, None, None, 1))  # compiled here or before
    prob = _problem(other, daily, SPECS, loss, None, None, None, 1)
    assert prob.target.values.shape == (setup.forcing.t_air_k.shape[0], 4)
    with compiled_functions() as second:
        value, _, grad = value_and_grad(latent, prob)
    assert sees_compiles() and jit_name(_loss) not in second  # the gradient program of _value_and_grad
    assert np.isfinite(float(value)) and all(np.all(np.isfinite(g)) for g in grad.values())
    target = prepare_observations(other, daily)
    bare = make_problem(other.state0, other.forcing, other.params, other.grid, other.options, target, SPECS, loss)
    np.testing.assert_allclose(float(loss_value(latent, bare)), float(value), rtol=1e-13)
    more = obs.isel(sm_depth=[0, 1]).assign_coords(sm_depth=obs["sm_depth"].values[:2] + 0.01)
    six = xr.concat([obs, more], "sm_depth")  # more sensors than a block: the next multiple of 4
    assert six.sizes["sm_depth"] == 6
    assert _problem(setup, six, SPECS, loss, None, None, None, 1).target.values.shape[1] == 8
    with pytest.raises(ValueError, match="pad"):
        target.padded(target.n_obs - 1, 4)


@pytest.mark.slow  # the line search's gradient program compiles (~3 min on 2 cores)
def test_lbfgs_recovers_the_truth_in_few_steps(synthetic):
    """optax.lbfgs through ``calibrate`` (its zoom line search gets the loss as objective): with exact gradients
    it recovers SMCMAX and DKSAT to 0.1 % in 12 steps (Adam with the same steps: DKSAT 23 % off), and its
    line-search trials count as evaluations."""
    setup, truth, obs = synthetic
    res = calibrate(setup, obs, SPECS, steps=12, optimizer=optax.lbfgs(), progress=False)
    for name, value in truth.items():
        assert float(res.values[name]) == pytest.approx(value, rel=1e-3), name
    trials = res.history["linesearch_steps"]
    assert (trials >= 1).all() and res.evaluations == 12 + int(trials.sum())


def test_identifiability_sees_what_the_readings_depend_on(synthetic):
    """``identifiability`` at the truth: a value's RMSE alone equals a rerun's with that value off (finite
    difference), PSISAT below the top layer has none (in June it acts only through frozen soil), SMCMAX's shows
    through the refitted others, refitting never shows more than the value alone, and an error or a value that is
    not positive is refused before anything compiles."""
    setup, truth, obs = synthetic
    specs = make_specs(["soil.smcmax", "soil.dksat", "soil.bexp", {"name": "soil.psisat", "per_layer": True}])
    params = apply_parameters(setup.params, SPECS, truth)
    table = identifiability(setup, specs, params, obs, relative_error=1e-3)
    assert table.attrs["n"] == obs.size and list(table.index[3:]) == [f"soil.psisat[{k}]" for k in range(4)]

    liquid = sees_liquid(setup)
    bumped = apply_parameters(params, make_specs(["soil.dksat"]), {"soil.dksat": truth["soil.dksat"] * 1.001})
    base, off = (np.asarray(forward_moisture(setup.state0, setup.forcing, p, setup.grid, setup.options, liquid))
                 for p in (params, bumped))  # fmt: skip
    assert table.loc["soil.dksat", "rmse_alone"] == pytest.approx(np.sqrt(np.mean((off - base) ** 2)), rel=0.01)
    assert (table.loc[["soil.psisat[1]", "soil.psisat[2]", "soil.psisat[3]"], "rmse_alone"] < 1e-15).all()
    smcmax = table.loc["soil.smcmax"]  # identifiable (module docs): the others hide less than 95 % of its error
    assert smcmax.rmse_profile > 0.05 * smcmax.rmse_alone > 1e-6
    assert (table.rmse_profile <= table.rmse_alone * (1 + 1e-9)).all()
    with pytest.raises(ValueError, match="relative_error"):
        identifiability(setup, specs, params, obs, relative_error=0.0)
    with pytest.raises(ValueError, match="soil.bexp"):
        identifiability(setup, ["soil.bexp"], apply_parameters(params, make_specs(["soil.bexp"]), {"soil.bexp": 0.0}),
                        obs)  # fmt: skip


def test_validation_window_chooses_the_step_and_stops_early(synthetic):
    """Early stopping on a validation window: where its sensors read the table parameters' run (training moves away
    from them) the starting parameters are returned and ``patience`` ends the run; where they read the truth, as
    the training window does, the parameters of the step with the lowest validation loss are returned."""
    setup, truth, obs = synthetic
    split = 200  # of 288 half-hourly steps
    table = _observed(setup, setup.params)
    mixed = xr.concat([obs.isel(time=slice(None, split)), table.isel(time=slice(split, None))], "time")
    res = calibrate(setup, mixed, SPECS, steps=STEPS, learning_rate=0.15, validation=(split, None), patience=2,
                    progress=False)  # fmt: skip
    hist = res.history
    assert hist.attrs["initial_val_loss"] == pytest.approx(0.0, abs=1e-9)  # the table run is its observation
    assert hist.attrs["best_step"] == -1 and len(hist) == 2 and (hist["val_loss"] > 1e-4).all()
    assert res.evaluations == 2 + 3  # two gradient steps, three validation runs
    for name, table_value in current_values(setup.params, SPECS).items():
        assert float(res.values[name]) == pytest.approx(float(np.ravel(table_value)[0]), rel=1e-9), name
    res = calibrate(setup, obs, SPECS, steps=4, learning_rate=0.15, validation=(split, None), progress=False)
    hist = res.history
    best = int(np.argmin(hist["val_loss"]))
    assert hist.attrs["best_step"] == best and hist["val_loss"].iloc[best] < hist.attrs["initial_val_loss"]
    assert evaluate(setup, res.params, obs, start=split)["rmse"] == pytest.approx(hist["val_loss"].iloc[best], rel=1e-9)
    with pytest.raises(ValueError, match="single start"):
        calibrate(setup, obs, SPECS, steps=1, starts=2, validation=(split, None), progress=False)


@pytest.mark.slow  # two more gradient programs to compile (~3-5 min on 2 cores)
def test_multi_start_runs_the_starts_side_by_side_and_keeps_the_best(synthetic):
    """Start 0 of a multi-start calibration is the single-start one (the summed objective gives each start its own
    gradient and Adam its own moments), so the best of three starts is at least as good; every start is counted."""
    setup, _, obs = synthetic
    single = calibrate(setup, obs, SPECS, steps=4, learning_rate=0.15, progress=False)
    multi = calibrate(setup, obs, SPECS, steps=4, learning_rate=0.15, starts=3, seed=1, progress=False)
    assert multi.evaluations == 12 and len(multi.history) == 4
    assert multi.history["loss"].iloc[0] <= single.history["loss"].iloc[0] * (1 + 1e-9)
    assert multi.history["loss"].min() <= single.history["loss"].min() * (1 + 1e-9)
    best = evaluate(setup, multi.params, obs, end=len(setup.times))["rmse"]
    assert best == pytest.approx(multi.history["loss"].min(), rel=1e-6)  # the returned parameters are the best seen


@pytest.mark.slow  # ~2 min of compile and 30 joint gradient steps; the synthetic-truth test covers calibration
def test_dpl_learns_site_specific_parameters(synthetic):
    """Two 'sites' (the same forcing, truths differing in SMCMAX) with attributes 0 and 1: one network lowers the
    joint loss and maps the wetter attribute to the larger porosity."""
    setup, truth, obs_a = synthetic
    truth_b = dict(truth, **{"soil.smcmax": truth["soil.smcmax"] + 0.04})
    obs_b = _observed(setup, apply_parameters(setup.params, SPECS, truth_b))
    res = calibrate_dpl([setup, setup], [obs_a, obs_b], [[0.0], [1.0]], SPECS, steps=12, learning_rate=0.02,
                        progress=False)  # fmt: skip
    hist = res.history
    assert np.all(np.isfinite(hist["loss"]))
    assert hist["loss"].min() < 0.5 * hist["loss"].iloc[0]
    lo, hi = DEFAULT_RANGES["soil.smcmax"][:2]
    for v in res.values:
        assert lo <= float(v["soil.smcmax"]) <= hi
    assert float(res.values[1]["soil.smcmax"]) > float(res.values[0]["soil.smcmax"])


def test_dpl_validation_sites_choose_the_step(synthetic):
    """Sites held out of dPL training choose the step returned: a held-out site whose sensors read the table
    parameters' run (training moves every site away from them) keeps the untrained network (step -1: every site's
    table values); one that reads the truth, as the trained sites do, gets the step of its lowest loss."""
    setup, truth, obs = synthetic
    table = _observed(setup, setup.params)
    for held_obs, improves in ((table, False), (obs, True)):
        res = calibrate_dpl([setup] * 3, [obs, obs, held_obs], [[0.0], [1.0], [0.5]], SPECS, steps=4,
                            learning_rate=0.01, residual=True, validation=[2], progress=False)  # fmt: skip
        hist = res.history
        assert res.validation == (2,) and {"site0", "site1", "val_loss"} <= set(hist) and "site2" not in hist
        assert hist["loss"].min() < hist["loss"].iloc[0]  # the trained sites improve either way
        untrained = hist.attrs["initial_val_loss"]
        if improves:
            assert res.best_step == int(np.argmin(hist["val_loss"])) and min(hist["val_loss"]) < untrained
            moved = abs(float(res.values[2]["soil.smcmax"]) - truth["soil.smcmax"])
            assert moved < abs(float(setup.params.soil.smcmax[0]) - truth["soil.smcmax"])
        else:
            assert res.best_step == -1 and min(hist["val_loss"]) > untrained
            for values in res.values:  # exactly the tables' values (no latent round trip)
                for name, table_value in current_values(setup.params, SPECS).items():
                    np.testing.assert_array_equal(values[name], table_value)
    # relative: every site's loss in units of its table parameters' loss, the held-out site's too
    rel = calibrate_dpl([setup] * 3, [obs, table, obs], [[0.0], [1.0], [0.5]], SPECS, steps=2, learning_rate=0.01,
                        residual=True, relative=True, validation=[2], progress=False)  # fmt: skip
    first = rel.history.iloc[0]
    assert rel.history.attrs["initial_val_loss"] == pytest.approx(1.0, rel=1e-12)
    assert first["site0"] == pytest.approx(1.0, rel=1e-12)
    assert first["site1"] == 0.0  # its table run is its observation: loss 0, kept absolute
    assert first["loss"] == pytest.approx(0.5, rel=1e-12)
    assert rel.history["site1"].iloc[1] > 0 and rel.history["site0"].iloc[1] < 1
    with pytest.raises(ValueError, match="validation"):
        calibrate_dpl([setup] * 2, [obs, obs], [[0.0], [1.0]], SPECS, steps=1, validation=[0, 1], progress=False)
