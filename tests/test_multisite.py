"""Multi-site training, the leave-sites-out split and ``dam predict`` (dam.multisite) on tiny sites cut from the
shipped Hyytiälä record (daily; 14 months each; the copies get other names and positions so that they are
different sites to the code)."""

import dataclasses
import shutil
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from jax_events import compiled_functions, jit_name, sees_compiles

from dam import multisite as MS
from dam.cli import main
from dam.experiment_config import ConstraintConfig, ExperimentConfig, expand_sites
from dam.experiment_data import prepare_site
from dam.experiment_stages import STAGES
from dam.multisite_run import run_multisite
from dam.predict import predict_run
from dam.predictions import Prediction
from dam.run_folder import RunFolderError
from dam.schema import ConfigError
from dam.sites import SHIPPED_SITES_DIR

TINY = {"hidden": 4, "epochs": 2, "window_days": 60, "stride_days": 30, "warmup_days": 10, "batch_size": 8,
        "attention_window": 7, "patience": 5}  # fmt: skip
PERIODS = {"hyy_a": ("2000-01-01", 61.8), "hyy_b": ("2002-01-01", 55.0), "hyy_c": ("2004-01-01", 50.0),
           "hyy_d": ("2006-01-01", 65.0), "hyy_new": ("2008-01-01", 58.0)}  # fmt: skip


def tiny_site(root: Path, name: str) -> Path:
    """A copy of 14 months of the shipped Hyytiälä site named ``name`` (another latitude)."""
    start, lat = PERIODS[name]
    end = str(np.datetime64(start) + np.timedelta64(425, "D"))
    src, out = SHIPPED_SITES_DIR / "hyytiala_2000_2010", root / name
    out.mkdir(parents=True)
    for f in ("forcing.nc", "observations.nc"):
        with xr.open_dataset(src / f) as ds:
            ds.sel(time=slice(start, end)).load().to_netcdf(out / f)
    meta = yaml.safe_load((src / "site.yaml").read_text())
    meta.update(name=name, latitude=lat)
    (out / "site.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sites")
    for name in PERIODS:
        tiny_site(root / ("new" if name == "hyy_new" else "train"), name)
    return root


def _config(root: Path, out: Path, **kw) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "name": "tiny", "output_dir": str(out), "sites": [str(root / "train" / "*")], "split": "leave_sites_out",
        "folds": 2, "spinup_cycles": 0, "models": ["lstm_multisite"], "network": TINY, "progress": False, **kw,
    })  # fmt: skip


# ------------------------------------------------------------------------------------------ folds and config
def test_folds_cover_every_site_once():
    names = [f"s{i}" for i in range(11)]
    for k in (2, 3, 5, 11):
        folds = MS.assign_folds(names, k, seed=3)
        assert sorted(folds) == sorted(names)  # every site in exactly one fold
        sizes = np.bincount(list(folds.values()), minlength=k)
        assert sizes.max() - sizes.min() <= 1 and len(sizes) == k
    assert MS.assign_folds(names[::-1], 3, seed=3) == MS.assign_folds(names, 3, seed=3)  # order does not matter
    assert MS.assign_folds(names, 3, seed=3) != MS.assign_folds(names, 3, seed=4)
    with pytest.raises(ValueError, match="folds"):
        MS.assign_folds(names[:2], 3, seed=0)


def test_held_out_sites_are_drawn_among_those_that_can_validate():
    everyone = MS.held_out(8, 3, seed=1, what="x")
    assert len(set(everyone)) == 3 and MS.held_out(8, 3, seed=1, what="x", usable=[True] * 8) == everyone
    usable = [i != everyone[0] for i in range(8)]  # the first site drawn has no observations: the next is taken
    assert MS.held_out(8, 3, seed=1, what="x", usable=usable) == [*everyone[1:], MS.held_out(8, 4, 1, "x")[3]]
    with pytest.raises(ValueError, match="x = 2: only 1 of the 8 training sites have observations"):
        MS.held_out(8, 2, seed=1, what="x", usable=[i == 0 for i in range(8)])
    with pytest.raises(ValueError, match="leaves none of the 3 training sites"):
        MS.held_out(3, 3, seed=1, what="x")


def _cut_record(root: Path, name: str, keep) -> Path:
    """A tiny site whose soil moisture is kept only where ``keep(time)`` holds."""
    folder = tiny_site(root, name)
    with xr.open_dataset(folder / "observations.nc") as ds:
        obs = ds.load()
    obs["soil_moisture"] = obs["soil_moisture"].where(keep(obs["time"]))
    obs.to_netcdf(folder / "observations.nc")
    return folder


def test_calibration_windows_need_observations(sites, tmp_path, monkeypatch, capsys):
    """A record that stops before the training period does moves the calibration window back to its last
    observed day (announced); a site without a training observation would score 0 whatever its parameters:
    calibration refuses it with the site and window named, and a dPL fold leaves it out of training (and
    validation)."""
    from dam import multisite_dpl
    from dam.calibration import NoObservationsError, prepare_observations
    from dam.experiment_config import CalibrationConfig
    from dam.experiment_training import calibration_window

    c = CalibrationConfig(window_steps=120, warmup_steps=30)
    stops = prepare_site(str(_cut_record(tmp_path / "a", "hyy_c", lambda t: t < np.datetime64("2004-08-01"))),
                         spinup_cycles=0)  # fmt: skip
    short, first = calibration_window(stops, c)
    assert "it ends on 2004-07-31, the last training day with one" in capsys.readouterr().out
    assert short.times[-1].date().isoformat() == "2004-07-31" and first == 30
    assert np.isfinite(np.asarray(prepare_observations(short, start=first).values)).sum() > 100

    none = _cut_record(tmp_path / "b", "hyy_c", lambda t: t >= np.datetime64("2004-12-06"))  # test days only
    data = {d.name: d for d in (prepare_site(str(p), spinup_cycles=0) for p in (sites / "train" / "hyy_a", none))}
    assert not np.isfinite(data["hyy_c"].observed[: data["hyy_c"].test.start]).any()
    short, first = calibration_window(data["hyy_c"], c)
    with pytest.raises(NoObservationsError, match=r"site hyy_c: no soil_moisture observation .* in the scored window"):
        prepare_observations(short, start=first)
    assert multisite_dpl._scored(data["hyy_a"], c, None) and not multisite_dpl._scored(data["hyy_c"], c, None)

    class Trained(Exception):
        pass

    def train_dpl(train, *args, **kw):
        raise Trained([d.name for d in train])

    monkeypatch.setattr(multisite_dpl, "train_dpl", train_dpl)
    cfg = _config(sites, tmp_path / "run", split="chronological", models=["physics_default", "physics_dpl"],
                  calibration={"window_steps": 120, "warmup_steps": 30})  # fmt: skip
    with pytest.raises(Trained) as trained:
        multisite_dpl.dpl_folds(tmp_path / "run", cfg, data, {"hyy_a": 0, "hyy_c": 0}, {"hyy_a": "a", "hyy_c": "c"},
                                {"hyy_a": {}, "hyy_c": {}}, {}, [])  # fmt: skip
    assert trained.value.args[0] == ["hyy_a"]


def test_config_validation(sites, tmp_path):
    pattern = str(sites / "train" / "*")
    assert len(expand_sites((pattern,))) == 4
    assert expand_sites(("hyytiala_*",)) == ("hyytiala_2000_2010",)  # shipped names match too
    assert expand_sites(("tanggula_*", "hyytiala_*")) == ("hyytiala_2000_2010",)  # sites without soil moisture skipped
    cfg = _config(sites, tmp_path)
    assert cfg.multisite and cfg.split == "leave_sites_out"
    bad = {
        "split": ({"split": "by_site"}, "split"),
        "folds": ({"folds": 9}, "folds"),
        "one fold": ({"folds": 1}, "folds"),
        "per-site model": ({"models": ["lstm_multisite", "hlstm_attention"]}, "hlstm_attention"),
        "no match": ({"sites": [str(tmp_path / "nothing" / "*")]}, "matches no"),
        "unknown model": ({"models": ["gru_multisite"]}, "models"),
    }
    for what, (change, words) in bad.items():
        with pytest.raises(ConfigError, match=words):
            _config(sites, tmp_path, **change)
        assert what  # the case names the rule


# ------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def tiny_data(sites):
    return [prepare_site(str(sites / "train" / n), spinup_cycles=0) for n in ("hyy_a", "hyy_b", "hyy_c")]


def test_multisite_training_reduces_the_loss(tiny_data):
    cfg = ExperimentConfig().network.model_copy(update={**TINY, "epochs": 15, "patience": 20, "learning_rate": 0.01})
    model, hist = MS.train_multisite("lstm", tiny_data, cfg, seed=0)
    assert np.isfinite(hist["train_loss"]).all()
    assert hist["train_loss"][-1] < 0.7 * hist["train_loss"][0]
    assert min(hist["val_loss"]) < hist["initial_val"]
    daily = MS.predict_site(model, tiny_data[0])
    assert daily.shape == tiny_data[0].observed.shape and np.isfinite(daily).all()


def test_sites_with_other_sensors_share_one_network(tiny_data):
    """A site with fewer sensors (padding) trains with the others; attributes differ between the sites."""
    fewer = tiny_data[1]
    keep = np.array([True, False, True, False])
    fewer = dataclasses.replace(fewer, observed=fewer.observed[:, keep], sensor_depths_m=fewer.sensor_depths_m[keep],
                                reliable=fewer.reliable[keep], sensor_liquid=fewer.sensor_liquid[keep])  # fmt: skip
    batch = MS.Batch.of([tiny_data[0], fewer])
    assert batch.targets.shape[-1] == 4 and np.isnan(batch.targets[1, :, 2:]).all()
    assert np.all(batch.weights[1, 2:] == 0) and np.allclose(batch.weights[0].sum(axis=1), 1.0)
    assert batch.attributes.shape == (2, len(MS.ATTRIBUTES)) and batch.attributes[0, 0] != batch.attributes[1, 0]
    cfg = ExperimentConfig().network.model_copy(update={**TINY, "epochs": 1})
    model, _ = MS.train_multisite("lstm", [tiny_data[0], fewer], cfg, seed=0)
    assert MS.predict_site(model, fewer).shape == (len(fewer.days), 2)


def test_standard_layers_are_thickness_weighted_means():
    std = np.arange(4.0)
    np.testing.assert_array_equal(MS.standard_layers(std, MS.LAYERS), std)  # the standard column itself
    fine = MS.standard_layers(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), [0.05, 0.1, 0.4, 1.0, 3.0])
    np.testing.assert_allclose(fine, [1.5, 3.0, 4.0, 5.0])  # split top layer averaged, deep layer shared
    shallow = MS.standard_layers(np.array([[1.0, 2.0]]), [0.3, 0.6])
    np.testing.assert_allclose(shallow, [[1.0, (0.2 * 1 + 0.1 * 2) / 0.3, 2.0, 2.0]])  # below the column: its deepest


def _fake_physics(data, bias: float):
    """A physics_default-like prediction: observed soil moisture scaled and offset (a wrong level and amplitude),
    with layer series on the site's column."""
    n = data.setup.grid.n_layers
    layers = np.repeat(np.nan_to_num(np.nanmean(data.observed, axis=1, keepdims=True), nan=0.3), n, axis=1)
    return Prediction("physics_default", 0.5 * np.nan_to_num(data.observed, nan=0.3) + bias, 0.0,
                      layer_total=layers, layer_liquid=layers)  # fmt: skip


def test_physics_guided_network_corrects_the_physics(tiny_data):
    """With the physics run as input and base, the network predicts its correction: the trained model is closer
    to the observations than the physics it starts from, and the physics inputs are on the standard column."""
    physics = {d.name: _fake_physics(d, 0.25) for d in tiny_data}
    x, base = MS.site_inputs(tiny_data[0], physics[tiny_data[0].name])
    assert x.shape == (len(tiny_data[0].days), len(MS.FEATURES) + 2 * len(MS.LAYERS))
    np.testing.assert_array_equal(base, physics[tiny_data[0].name].daily)
    cfg = ExperimentConfig().network.model_copy(update={**TINY, "epochs": 15, "patience": 20, "learning_rate": 0.01})
    model, hist = MS.train_multisite("lstm", tiny_data, cfg, seed=0, physics=physics)
    assert hist["train_loss"][-1] < 0.7 * hist["train_loss"][0]
    d = tiny_data[2]
    obs, phys = d.observed[d.test], physics[d.name].daily[d.test]
    pred = MS.predict_site(model, d, physics[d.name])[d.test]
    assert np.sqrt(np.nanmean((pred - obs) ** 2)) < 0.5 * np.sqrt(np.nanmean((phys - obs) ** 2))
    with pytest.raises(ValueError, match="layer series"):
        MS.site_inputs(d, Prediction("physics_default", phys, 0.0))
    # level="physics": the physics keeps its mean level over the period predicted, the network adds variation
    kept, _ = MS.train_multisite("lstm", tiny_data, cfg, seed=0, physics=physics, level="physics")
    whole = MS.predict_site(kept, d, physics[d.name])
    np.testing.assert_allclose(whole.mean(axis=0), physics[d.name].daily.mean(axis=0), atol=1e-12)
    anomaly = np.sqrt(np.nanmean(((whole - whole.mean(0)) - (d.observed - np.nanmean(d.observed, 0))) ** 2))
    phys_anomaly = np.sqrt(np.nanmean(((phys := physics[d.name].daily) - phys.mean(0) - (d.observed -
                                       np.nanmean(d.observed, 0))) ** 2))  # fmt: skip
    assert anomaly < 0.95 * phys_anomaly  # it corrects the variation (the fake physics has half the amplitude)
    with pytest.raises(ValueError, match="needs a network that reads the physics"):
        MS.build_model("lstm", cfg, 0, level="physics")
    for kind in ("lstm", "hlstm"):  # untrained, a physics-guided network is the physics run itself
        fresh = MS.build_model(kind, cfg, 0, physics=True, level="physics")
        np.testing.assert_allclose(MS.predict_site(fresh, d, physics[d.name]), physics[d.name].daily, atol=1e-12)


def test_physics_as_input_only(tiny_data):
    """level="input": the network reads the physics run but predicts the moisture itself. The base is not added,
    the untrained network is not the physics run, its output normaliser is of moisture (not of corrections), and
    it learns the observations whatever the physics' level; it cannot continue a network of corrections."""
    physics = {d.name: _fake_physics(d, 0.25) for d in tiny_data}  # a level 0.25 m3 m-3 too wet
    cfg = ExperimentConfig().network.model_copy(update={**TINY, "epochs": 15, "patience": 20, "learning_rate": 0.01})
    d = tiny_data[2]
    fresh = MS.build_model("lstm", cfg, 0, physics=True, level="input")
    x, base = (jax.numpy.asarray(np.nan_to_num(v)) for v in MS.site_inputs(d, physics[d.name]))
    a, w = jax.numpy.asarray(MS.site_attributes(d)), jax.numpy.asarray(MS.layer_weights(d))
    np.testing.assert_array_equal(fresh.at_sensors(x, a, w, base), fresh.at_sensors(x, a, w, 0 * base))
    assert not np.allclose(MS.predict_site(fresh, d, physics[d.name]), physics[d.name].daily, atol=1e-3)
    model, hist = MS.train_multisite("lstm", tiny_data, cfg, seed=0, physics=physics, level="input")
    assert model.level == "input" and hist["train_loss"][-1] < 0.7 * hist["train_loss"][0]
    observed = np.concatenate([MS.training_targets(s)[s.train].ravel() for s in tiny_data])
    np.testing.assert_allclose(model.y_norm.mean, np.nanmean(observed), rtol=1e-12)  # moisture, not residuals
    obs, phys = d.observed[d.test], physics[d.name].daily[d.test]
    pred = MS.predict_site(model, d, physics[d.name])[d.test]
    assert np.sqrt(np.nanmean((pred - obs) ** 2)) < 0.8 * np.sqrt(np.nanmean((phys - obs) ** 2))
    assert abs(np.nanmean(pred - obs)) < 0.5 * abs(np.nanmean(phys - obs))  # not held to the physics' level
    with pytest.raises(ValueError, match="needs a network that reads the physics"):
        MS.build_model("lstm", cfg, 0, level="input")
    corrections, _ = MS.train_multisite("lstm", tiny_data, cfg.model_copy(update={"epochs": 1}), seed=0,
                                        physics=physics)  # fmt: skip
    with pytest.raises(ValueError, match="cannot continue as level 'input'"):
        MS.train_multisite("lstm", tiny_data, cfg, seed=0, init=corrections, physics=physics, level="input")


@pytest.mark.slow
def test_hierarchical_multisite_network_trains(tiny_data):
    cfg = ExperimentConfig().network.model_copy(update={**TINY, "epochs": 6, "learning_rate": 0.01})
    model, hist = MS.train_multisite("hlstm", tiny_data, cfg, seed=0)
    assert hist["train_loss"][-1] < hist["train_loss"][0] and min(hist["val_loss"]) < hist["initial_val"]
    assert np.isfinite(MS.predict_site(model, tiny_data[2])).all()


@pytest.mark.slow  # a second training compiled for 4 devices; test_training checks the engine's data parallelism
@pytest.mark.skipif(jax.device_count() < 2, reason="needs several (emulated) devices")
def test_data_parallel_equals_single_device(tiny_data):
    from dam.sharding import column_mesh

    cfg = ExperimentConfig().network.model_copy(update={**TINY, "epochs": 1})
    one, _ = MS.train_multisite("lstm", tiny_data[:2], cfg, seed=0)
    many, _ = MS.train_multisite("lstm", tiny_data[:2], cfg, seed=0, mesh=column_mesh(jax.devices()[:4]))
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(many), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------ the run and predict
@pytest.fixture(scope="module")
def finished_run(sites, tmp_path_factory, request):
    """A leave-sites-out run (2 folds over 4 sites) with a spy on the sites every training really gets."""
    seen: list[tuple[str, ...]] = []
    real = MS.train_multisite

    def spy(kind, data, *args, **kw):
        seen.append(tuple(d.name for d in data))
        # the training data themselves: every target value comes from these sites' training days only
        batch = MS.Batch.of(data)
        for d, y in zip(data, batch.targets, strict=True):
            assert np.isnan(y[d.train.stop :]).all()
        return real(kind, data, *args, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(MS, "train_multisite", spy)
    out = tmp_path_factory.mktemp("run") / "run"
    table = run_multisite(_config(sites, out))
    mp.undo()
    return out, table, seen


def test_leave_sites_out_never_trains_on_a_test_site(finished_run):
    out, table, trained_on = finished_run
    folds = dict(np.loadtxt(out / "folds.csv", delimiter=",", skiprows=1, dtype=str))
    assert sorted(folds) == ["hyy_a", "hyy_b", "hyy_c", "hyy_d"]
    assert len(trained_on) == 2
    for fold, train in enumerate(trained_on):
        test = {n for n, f in folds.items() if int(f) == fold}
        assert test and not test & set(train)  # the data this fold's network got hold no test site
        assert set(train) | test == set(folds)
        scored = set(table.loc[table["fold"] == fold, "site"])
        assert scored == test
    assert set(table["site"]) == set(folds) and np.isfinite(table["rmse"]).all()
    for name in ("multisite.md", "pooled.csv", "metrics.md", "figures/skill_by_site.png", "models/index.json"):
        assert (out / name).is_file(), name
    assert "leave_sites_out" in (out / "multisite.md").read_text()
    peaks = yaml.safe_load((out / "timings.json").read_text())["peak_memory_gib"]  # what raised the peak, per stage
    assert list(peaks) == ["sites", "lstm_multisite"] and 0.1 < peaks["sites"] <= peaks["lstm_multisite"] < 64
    assert "Peak memory of this process" in (out / "multisite.md").read_text()
    plausible = pd.read_csv(out / "plausibility.csv")  # the network's plausibility at every site it predicted
    assert sorted(plausible["site"]) == sorted(folds) and set(plausible["model"]) == {"lstm_multisite"}
    assert (plausible["bound_violations"] >= 0).all() and np.isfinite(plausible["water_created_mm"]).all()
    assert "Physical plausibility of the networks" in (out / "multisite.md").read_text()


def test_predict_unseen_site_and_refuse_unfinished(finished_run, sites, tmp_path, capsys):
    out, _, _ = finished_run
    new = str(sites / "new" / "hyy_new")
    table, results = predict_run(out, [new])
    assert set(table["days"]) == {"all", "test"} and not table["seen"].any()
    assert results["hyy_new"][1]["lstm_multisite"].info["folds"] == [0, 1]  # an unseen site: mean of all folds
    assert np.isfinite(table["rmse"]).all()
    table, _ = predict_run(out, [str(sites / "train" / "hyy_a")])
    fold_a = int(dict(np.loadtxt(out / "folds.csv", delimiter=",", skiprows=1, dtype=str))["hyy_a"])
    assert not table["seen"].any()  # its own fold's network never saw it

    assert main(["predict", str(out), new, "--output", str(tmp_path / "p"), "--finetune", "1", "--quiet"]) == 0
    assert (tmp_path / "p" / "metrics.csv").is_file()
    assert (tmp_path / "p" / "predictions" / "hyy_new" / "lstm_multisite+finetune.nc").is_file()
    assert fold_a in (0, 1)
    capsys.readouterr()
    untrainable = _cut_record(tmp_path / "cut", "hyy_new", lambda t: t >= np.datetime64("2008-12-06"))  # test days
    table, _ = predict_run(out, [str(untrainable)], finetune=1)
    assert "hyy_new] no soil moisture observation on its training days: not fine-tuned" in capsys.readouterr().out
    assert not table["model"].str.endswith("+finetune").any()
    assert np.isfinite(table.query("days == 'test'")["rmse"]).all()  # scored on its test days

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "dam_run.json").write_text('{"kind": "experiment"}')
    with pytest.raises(RunFolderError, match="not finished"):
        predict_run(unfinished, [new])
    capsys.readouterr()
    assert main(["predict", str(unfinished), new]) == 2
    assert "not finished" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "p"), new]) == 2  # not a run folder at all


def test_shipped_shared_config_is_valid():
    """shared.yaml needs the converted shared sites in ./sites; every other key validates here."""
    from dam.experiment_config import shipped_config

    raw = yaml.safe_load(shipped_config("shared").read_text())
    assert "sites/??-???" in raw["sites"]
    cfg = ExperimentConfig.from_dict({**raw, "sites": ["bondville_1998", "hyytiala_2000_2010"], "folds": 2})
    assert cfg.multisite and cfg.split == "leave_sites_out"
    with pytest.raises(ConfigError, match="matches no"):
        ExperimentConfig.from_dict({**raw, "sites": ["no_such_dir/??-???"]})


@pytest.mark.filterwarnings("ignore:metrics")
def test_cli_resume_reads_back_and_a_failed_physics_site_is_reported(finished_run, sites, monkeypatch, capsys):
    """``dam experiment`` dispatches a multi-site configuration; a second run reads the networks back (no training),
    and a physics stage stopped by a guard at one site is reported, not fatal (the physics is replaced by a stub)."""
    from dam.experiment_stages import STAGES
    from dam.physics.guards import PlausibilityError
    from dam.predictions import Prediction

    out, table, _ = finished_run
    before = {p: p.stat().st_mtime_ns for p in (out / "models").rglob("*.eqx")}

    def fake_physics(exp, data, preds):
        if data.name == "hyy_a":
            raise PlausibilityError("soil temperature = 500 K at step 3")
        return Prediction("physics_default", data.observed + 0.01, 0.0)

    monkeypatch.setitem(STAGES, "physics_default", fake_physics)
    monkeypatch.setattr(MS, "train_multisite", lambda *a, **k: pytest.fail("a finished network was trained again"))
    config = _config(sites, out, models=["physics_default", "lstm_multisite"]).to_dict()
    path = out.parent / "again.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["experiment", str(path), "--quiet"]) == 0
    assert "FAILED" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "models").rglob("*.eqx")} == before
    report = (out / "multisite.md").read_text()
    assert "Stages that failed at a site" in report and "hyy_a" in report
    summ = np.genfromtxt(out / "summary.csv", delimiter=",", names=True, dtype=None, encoding=None)
    rmse = {(s, m): v for s, m, v in zip(summ["site"], summ["model"], summ["rmse"], strict=True)}
    assert np.isnan(rmse[("hyy_a", "physics_default")]) and rmse[("hyy_b", "physics_default")] > 0
    assert (out / "models" / "index.json").is_file()


def test_a_site_without_observations_to_fit_is_reported_with_what_builds_on_it(sites, tmp_path, monkeypatch):
    """A calibration without observations in its window fails at that site (the physics are stubs here), the
    network built on the calibrated physics there is reported as failed with it, and the other site goes on; a
    network without a training observation refuses to train."""
    from dam.calibration import NoObservationsError
    from dam.experiment_stages import STAGES
    from dam.experiment_training import train_sequence_model

    def stub(model):
        def physics(exp, data, preds):
            if model == "physics_calibrated" and data.name == "hyy_a":
                raise NoObservationsError("site hyy_a: no soil_moisture observation in the scored window")
            daily = np.nan_to_num(data.observed, nan=0.3) + 0.01
            bexp = float(np.ravel(data.setup.params.soil.bexp)[0])  # "calibrated" to its table value
            return Prediction(model, daily, 0.0, {"values": {"soil.bexp": bexp}}, liquid=daily, total=daily)

        return physics

    for model in ("physics_default", "physics_calibrated"):
        monkeypatch.setitem(STAGES, model, stub(model))
    names = [str(sites / "train" / n) for n in ("hyy_a", "hyy_b")]
    out = tmp_path / "run"
    models = ["physics_default", "physics_calibrated", "hlstm_physics"]
    table = run_multisite(_config(sites, out, sites=names, split="chronological", models=models,
                                  calibration={"parameters": ["soil.bexp"]}))  # fmt: skip
    report = (out / "multisite.md").read_text()
    assert "hyy_a  | hlstm_physics      | site hyy_a: it builds on physics_calibrated, which failed" in report
    rmse = table.groupby(["site", "model"])["rmse"].mean()
    assert np.isnan(rmse[("hyy_a", "hlstm_physics")]) and np.isfinite(rmse[("hyy_b", "hlstm_physics")])

    data = prepare_site(names[0], spinup_cycles=0)
    cfg = ExperimentConfig().network.model_copy(update=TINY)
    with pytest.raises(NoObservationsError, match="site hyy_a: no soil moisture observation on the training days"):
        train_sequence_model(data, "lstm", data.forcing, cfg, seed=0, checkpoint_dir=tmp_path / "ck", progress=False,
                             targets=np.full_like(data.observed, np.nan))  # fmt: skip
    # without a validation observation a loss of 0 would keep the first epoch: the last one is kept instead
    from dam import experiment_training

    captured = {}
    fake_fit = lambda model, *a, **kw: captured.update(kw) or (model, {})  # noqa: E731
    monkeypatch.setattr(experiment_training, "fit", fake_fit)
    monkeypatch.setattr(MS, "fit", fake_fit)
    no_val = data.observed.copy()
    no_val[data.val] = np.nan
    train_sequence_model(data, "lstm", data.forcing, cfg, seed=0, checkpoint_dir=tmp_path / "ck", progress=False,
                         targets=no_val)  # fmt: skip
    assert captured.pop("val_fn") is None
    MS.train_multisite("lstm", [dataclasses.replace(data, observed=no_val)], cfg, seed=0)
    assert captured.pop("val_fn") is None
    MS.train_multisite("lstm", [data], cfg, seed=0)
    assert captured.pop("val_fn") is not None


def test_chronological_multisite_run_trains_once_on_every_sites_training_days(sites, tmp_path, monkeypatch):
    """Under the chronological split one network trains on the training days of all sites (never a later day) and
    the report counts the sites where it matches the single-site network in mean r."""
    seen = []
    real = MS.train_multisite

    def spy(kind, data, *args, **kw):
        seen.append(tuple(d.name for d in data))
        for d, y in zip(data, MS.Batch.of(data).targets, strict=True):
            assert np.isnan(y[d.train.stop :]).all()
        return real(kind, data, *args, **kw)

    monkeypatch.setattr(MS, "train_multisite", spy)
    out = tmp_path / "run"
    two = [str(sites / "train" / n) for n in ("hyy_a", "hyy_b")]
    cfg = _config(sites, out, sites=two, split="chronological", models=["lstm", "lstm_multisite"],
                  network={**TINY, "epochs": 1})  # fmt: skip
    table = run_multisite(cfg)
    assert seen == [("hyy_a", "hyy_b")]
    assert set(table["model"]) == {"lstm", "lstm_multisite"} and np.isfinite(table["rmse"]).all()
    report = (out / "multisite.md").read_text()
    assert "Multi-site against single-site networks" in report and "of 2 sites" in report


def test_physics_guided_multisite_run_and_predict(sites, tmp_path):
    """A leave-sites-out run of the physics-guided network on the real physics: ``dam predict`` runs the physics
    at a new site for it and fine-tuning there keeps the network's level; a configuration without physics_default
    before it is refused."""
    out = tmp_path / "run"
    models = ["physics_default", "lstm_physics_multisite"]
    table = run_multisite(_config(sites, out, models=models, network={**TINY, "epochs": 1}))
    assert set(table["model"]) == set(models) and np.isfinite(table["rmse"]).all()
    spec = yaml.safe_load((out / "models" / "lstm_physics_multisite" / "fold0.json").read_text())
    assert spec["physics"] is True and spec["kind"] == "lstm" and spec["level"] == "physics"
    with xr.open_dataset(out / "predictions" / "hyy_a" / "physics_default.nc") as ds:
        assert ds["layer_total_soil_moisture"].shape[1] == 4 and (ds["layer"].values > 0).all()
    result, got = predict_run(out, [str(sites / "new" / "hyy_new")], finetune=1)
    preds = got["hyy_new"][1]
    assert np.isfinite(preds["lstm_physics_multisite"].daily).all() and "lstm_physics_multisite+finetune" in preds
    # fine-tuning keeps the network's level: both follow the physics run's mean over the days
    np.testing.assert_allclose(preds["lstm_physics_multisite+finetune"].daily.mean(axis=0),
                               preds["lstm_physics_multisite"].daily.mean(axis=0), atol=1e-12)  # fmt: skip
    assert np.isfinite(result["rmse"]).all()
    with pytest.raises(ConfigError, match="list physics_default before it"):
        _config(sites, out, models=["lstm_physics_multisite", "physics_default"])


def test_sites_held_out_choose_the_epoch(tiny_data, sites):
    """``validation``: sites not trained on choose the epoch, scored on their training and validation days; a
    physics-level network's mean at a shorter (padded) validation site runs over its real days, as when it
    predicts that site alone."""
    short = prepare_site(str(sites / "train" / "hyy_d"), spinup_cycles=0, end="2006-10-31")
    held = [tiny_data[2], short]
    assert len(short.days) < len(held[0].days)
    physics = {d.name: _fake_physics(d, 0.25) for d in [*tiny_data, short]}
    cfg = ExperimentConfig().network.model_copy(update={**TINY, "epochs": 4, "learning_rate": 0.01})
    model, hist = MS.train_multisite("lstm", tiny_data[:2], cfg, seed=0, physics=physics, level="physics",
                                     validation=held)  # fmt: skip
    vb = MS.Batch.of(held, physics, held_out=True)
    assert vb.days[1].sum() == len(short.days) and np.isnan(vb.val_targets[1, len(short.days) :]).all()
    sq, n = 0.0, 0
    for i, d in enumerate(held):  # the returned model's loss, each site predicted over its own record
        err = (MS.predict_site(model, d, physics[d.name]) - MS.training_targets(d)) / vb.scale[i, : d.n_sensors]
        sq, n = sq + np.nansum(err[d.fit_days] ** 2), n + np.isfinite(err[d.fit_days]).sum()
    assert n > np.isfinite(MS.training_targets(held[0])[held[0].val]).sum()  # more than the validation days
    np.testing.assert_allclose(sq / n, min(hist["initial_val"], *hist["val_loss"]), rtol=1e-9)


def test_site_balance_weighs_every_site_the_same(tiny_data, sites, monkeypatch):
    """``site_balance: 1``: a site with a short record weighs as much as a long one, in the training members (each
    site's member weights sum to the same) and in the validation loss (the mean of the sites' own losses); 0: every
    window and every validation observation weighs the same."""
    short = prepare_site(str(sites / "train" / "hyy_d"), spinup_cycles=0, end="2006-10-31")
    data = [tiny_data[0], short]
    captured = {}
    monkeypatch.setattr(MS, "fit", lambda model, *a, **kw: captured.update(model=model, **kw) or (model, {}))
    for balance in (0.0, 1.0, 0.5):
        cfg = ExperimentConfig().network.model_copy(update={**TINY, "stride_days": 10, "site_balance": balance})
        MS.train_multisite("lstm", data, cfg, seed=0)
        weight, members = captured["batch_fn"](None, np.arange(captured["n_members"]))
        site = np.where((np.asarray(members[1]) == np.asarray(members[1][0])).all(axis=1), 0, 1)  # by attributes
        counts = np.bincount(site)
        assert counts[0] > 1.5 * counts[1]  # the short site has fewer windows
        totals = np.bincount(site, weights=np.asarray(weight))
        np.testing.assert_allclose(totals / totals.sum(), counts ** (1 - balance) / np.sum(counts ** (1 - balance)))
        assert np.asarray(weight).mean() == pytest.approx(1.0)

        b = MS.Batch.of(data)
        per_site = []
        for i, d in enumerate(data):
            err = (MS.predict_site(captured["model"], d) - MS.training_targets(d)) / b.scale[i, : d.n_sensors]
            per_site.append((np.nansum(err[d.val] ** 2), np.isfinite(err[d.val]).sum()))
        (sq_a, n_a), (sq_b, n_b) = per_site
        w_a, w_b = n_a**-balance, n_b**-balance
        expected = (w_a * sq_a + w_b * sq_b) / (w_a * n_a + w_b * n_b)
        np.testing.assert_allclose(captured["val_fn"](captured["model"]), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="site_balance"):
        ExperimentConfig.from_dict({"network": {"site_balance": 1.5}})


def test_validation_sites_are_held_out_of_training(sites, tmp_path, monkeypatch):
    """``network.validation_sites``: each fold's network trains on the other training sites and is validated at
    the held-out ones (recorded in its spec and the models' index); the key is not written at its default (older
    runs keep their fingerprints); the configuration refuses a chronological split and a count that leaves no site
    to train on."""
    calls: list[tuple[set, set]] = []
    real = MS.train_multisite

    def spy(kind, data, *args, validation=None, **kw):
        calls.append(({d.name for d in data}, {d.name for d in validation}))
        return real(kind, data, *args, validation=validation, **kw)

    monkeypatch.setattr(MS, "train_multisite", spy)
    out = tmp_path / "run"
    run_multisite(_config(sites, out, network={**TINY, "epochs": 1, "validation_sites": 1}))
    folds = dict(np.loadtxt(out / "folds.csv", delimiter=",", skiprows=1, dtype=str))
    index = yaml.safe_load((out / "models" / "index.json").read_text())["models"]["lstm_multisite"]
    assert len(calls) == 2
    for (train, held), entry in zip(calls, index, strict=True):
        test = {n for n, f in folds.items() if int(f) == entry["fold"]}
        assert len(held) == 1 and not held & (train | test) and train | held | test == set(folds)
        assert set(entry["validation_sites"]) == held and set(entry["train_sites"]) == train
    assert "validation_sites" not in _config(sites, out).to_dict()["network"]  # older runs' fingerprints hold
    with pytest.raises(ConfigError, match="leave_sites_out"):
        _config(sites, out, split="chronological", network={**TINY, "validation_sites": 1})
    with pytest.raises(ConfigError, match="leaves none to train on"):
        _config(sites, out, network={**TINY, "validation_sites": 2})


def test_constraint_terms_shape_the_multisite_network(tiny_data):
    """hlstm_constrained_multisite's loss terms: per-site targets stacked like the batch (padded sensors keep
    0..1, around the zero the network gives them), and each term moves the trained network: an upper bound below
    most observations holds it down, a heavy water-balance term lowers the water it creates."""
    from dam.coupling.constraints import water_created

    b = MS.Batch.of(tiny_data)
    ice = {d.name: np.arange(len(d.days)) % 2 == 0 for d in tiny_data}
    c = MS.Constraint.of(tiny_data, ice, ConstraintConfig(), b)
    d0 = tiny_data[0]
    assert c.lower.shape == c.upper.shape == b.scale.shape and c.precip_mm.shape == b.targets.shape[:2]
    np.testing.assert_array_equal(c.ice_free[0, : len(d0.days)], ice[d0.name])
    np.testing.assert_array_equal(c.precip_mm[0, : len(d0.days)], d0.forcing[:, MS.FEATURES.index("precip")])
    assert (c.lower[0] <= np.nanmin(d0.observed[d0.fit_days], 0)).all()  # widened to what was observed
    cfg = ExperimentConfig().network.model_copy(update={**TINY, "epochs": 10, "patience": 20, "learning_rate": 0.01})
    init = MS.initial_model("lstm", tiny_data, b, cfg, seed=0)
    spans = [d.train for d in tiny_data]
    free, _ = MS.fit_batch(init, b, spans, cfg, seed=0, epochs=cfg.epochs)
    cap = np.nanmedian(b.targets, axis=1)  # (n, S): half the training days lie above it
    capped = dataclasses.replace(c, upper=np.where(np.isfinite(cap), cap, 1.0),
                                 weights=ConstraintConfig(bounds=1e3, water=0.0))  # fmt: skip
    held, _ = MS.fit_batch(init, b, spans, cfg, seed=0, epochs=cfg.epochs, constraint=capped)
    dry = dataclasses.replace(c, ice_free=np.ones_like(c.ice_free), weights=ConstraintConfig(bounds=0.0, water=1.0))
    balanced, _ = MS.fit_batch(init, b, spans, cfg, seed=0, epochs=cfg.epochs, constraint=dry)

    def above_cap(model):  # mean squared excursion above the cap on the training days, (m3 m-3)^2
        return np.mean([np.mean(np.maximum(MS.predict_site(model, d)[d.train] - cap[i, : d.n_sensors], 0.0) ** 2)
                        for i, d in enumerate(tiny_data)])  # fmt: skip

    def water(model):
        return sum(water_created(MS.predict_site(model, d)[d.train], c.precip_mm[i, d.train],
                                 np.ones(d.train.stop - d.train.start, bool), c.top_layer_m[i]).sum()
                   for i, d in enumerate(tiny_data))  # fmt: skip

    assert above_cap(held) < 0.5 * above_cap(free)
    assert water(balanced) < 0.7 * water(free)


def test_ensemble_pretraining_learns_the_physics_response_to_soil_attributes(tiny_data):
    """hlstm_ensemble_multisite's pretraining: each member is a pseudo-site with its perturbed porosity, b and
    conductivity as attributes and its simulated moisture on the standard column as target; pretraining lowers
    the loss on the members, and training on observations continues from it."""
    from dam.multisite_pretrain import ensemble_batch, pretrain_multisite, site_ensemble

    sites = tiny_data[:2]
    ens = {d.name: site_ensemble(d, 3, seed=0) for d in sites}
    targets, attrs = ens[sites[0].name]
    assert targets.shape == (3, len(sites[0].days), len(MS.LAYERS)) and np.isfinite(targets).all()
    i_smc = MS.ATTRIBUTES.index("smcmax_m3m3")
    assert attrs[0, i_smc] == MS.site_attributes(sites[0])[i_smc]  # member 0: the default parameters
    assert len(set(attrs[:, i_smc])) == 3 and len(set(attrs[:, MS.ATTRIBUTES.index("log10_dksat_ms")])) == 3
    assert not np.allclose(targets[1], targets[0])  # members differ
    batch, spans = ensemble_batch(sites, ens)
    assert batch.targets.shape[0] == 6 and np.isnan(batch.targets[0, sites[0].train.stop :]).all()
    cfg = ExperimentConfig().network.model_copy(update={**TINY, "learning_rate": 0.01})
    first = pretrain_multisite("lstm", sites, ens, cfg, seed=0, epochs=1)
    more = pretrain_multisite("lstm", sites, ens, cfg, seed=0, epochs=8)
    x, a = jax.numpy.asarray(batch.forcing), jax.numpy.asarray(batch.attributes)

    def member_rmse(model):
        pred = np.asarray(jax.vmap(model)(x, a))
        return np.sqrt(np.nanmean((pred - batch.targets) ** 2))

    assert member_rmse(more) < member_rmse(first)
    tuned, _ = MS.train_multisite("lstm", sites, cfg.model_copy(update={"epochs": 1}), seed=0, init=more)
    for a, b in zip(jax.tree_util.tree_leaves(tuned.y_norm), jax.tree_util.tree_leaves(more.y_norm), strict=True):
        np.testing.assert_array_equal(a, b)  # the pretraining's normalisers are kept
    assert np.isfinite(MS.predict_site(tuned, tiny_data[2])).all()
    # physics-guided: the rows read the site's physics run, their base is member 0 (the default parameters)
    physics = {d.name: _fake_physics(d, 0.0) for d in tiny_data}
    pb, spans = ensemble_batch(sites, ens, physics)
    assert pb.forcing.shape[-1] == len(MS.FEATURES) + 2 * len(MS.LAYERS)
    np.testing.assert_array_equal(pb.base[1, : len(sites[0].days)], targets[0])
    x, a, base = (jax.numpy.asarray(v) for v in (pb.forcing, pb.attributes, pb.base))

    def departure_rmse(model):
        pred = np.asarray(jax.vmap(model.at_sensors)(x, a, jax.numpy.asarray(pb.weights), base))
        return np.sqrt(np.nanmean((pred - pb.targets)[:, sites[0].train] ** 2))

    g1 = pretrain_multisite("lstm", sites, ens, cfg, seed=0, epochs=1, physics=physics)
    g8 = pretrain_multisite("lstm", sites, ens, cfg, seed=0, epochs=8, physics=physics)
    assert g8.level == "learned" and departure_rmse(g8) < departure_rmse(g1)
    kept, _ = MS.train_multisite("lstm", sites, cfg.model_copy(update={"epochs": 1}), seed=0, init=g8,
                                 physics=physics, level="physics")  # fmt: skip
    d = tiny_data[2]
    whole = MS.predict_site(kept, d, physics[d.name])
    np.testing.assert_allclose(whole.mean(axis=0), physics[d.name].daily.mean(axis=0), atol=1e-12)
    with pytest.raises(ValueError, match="needs a network that reads the physics"):
        MS.train_multisite("lstm", sites, cfg, seed=0, init=g8, level="physics")
    # physics as input only: pretrained on the members' moisture itself, continued at the same level
    gi = pretrain_multisite("lstm", sites, ens, cfg, seed=0, epochs=1, physics=physics, level="input")
    members = np.concatenate([y[s.train].ravel() for s in sites for y in ens[s.name][0]])
    assert gi.level == "input" and np.isclose(float(gi.y_norm.mean[0]), members.mean(), rtol=1e-12)
    tuned, _ = MS.train_multisite("lstm", sites, cfg.model_copy(update={"epochs": 1}), seed=0, init=gi,
                                  physics=physics, level="input")  # fmt: skip
    assert tuned.level == "input" and np.isfinite(MS.predict_site(tuned, d, physics[d.name])).all()


@pytest.mark.slow  # ensembles at four sites and a hierarchical pretraining (about 2 min on 2 cores)
def test_ensemble_pretrained_networks_in_a_leave_sites_out_run(sites, tmp_path, capsys):
    """hlstm_ensemble_multisite and hlstm_constrained_multisite share each site's ensemble and each fold's
    pretraining; the constrained one records its loss weights and trains with the penalty terms added."""
    out = tmp_path / "run"
    models = ["physics_default", "hlstm_ensemble_multisite", "hlstm_constrained_multisite"]
    cfg = _config(sites, out, models=models, network={**TINY, "epochs": 1}, pretrain={"members": 2, "epochs": 1},
                  constraints={"bounds": 100.0, "water": 1e-2})  # fmt: skip
    table = run_multisite(cfg)
    assert set(table["model"]) == set(models) and np.isfinite(table["rmse"]).all()
    assert capsys.readouterr().out.count("ensemble of 2 members") == 4  # each site's ensemble run once, not per fold
    assert len(list((out / "ensembles").glob("*.nc"))) == 4
    checkpoints = out / "checkpoints" / "multisite"
    assert any((checkpoints / "hlstm_ensemble_multisite").rglob("pretrain"))
    assert not any((checkpoints / "hlstm_constrained_multisite").rglob("pretrain"))  # the same pretraining reused
    spec = yaml.safe_load((out / "models" / "hlstm_constrained_multisite" / "fold0.json").read_text())
    assert spec["constraints"]["bounds"] == 100.0 and spec["kind"] == "hlstm"
    plain = yaml.safe_load((out / "models" / "hlstm_ensemble_multisite" / "fold0.json").read_text())
    assert spec["train_loss"][0] > plain["train_loss"][0]  # the same start and batches, plus the penalty terms
    shutil.rmtree(out / "models" / "hlstm_constrained_multisite")
    for p in out.glob("predictions/*/hlstm_constrained_multisite.nc"):
        p.unlink()
    assert np.isfinite(run_multisite(cfg)["rmse"]).all()  # resumed: pretrained again on the saved ensembles
    assert "ensemble of" not in capsys.readouterr().out
    with pytest.raises(ConfigError, match="list physics_default before it"):
        _config(sites, out, models=["hlstm_constrained_multisite"])


def test_calibration_windows_start_from_the_default_run_without_compiling_per_site(sites, monkeypatch):
    """The state entering a calibration window is the default run's (bit for bit), reached in the padded blocks
    of the site's run: whatever the window's start, nothing compiles beyond physics_default's program."""
    import equinox as eqx

    from dam import experiment_training as training
    from dam import site_run
    from dam.experiment_config import CalibrationConfig
    from dam.experiment_training import calibration_window
    from dam.physics.station import run_station

    c = CalibrationConfig(window_steps=120, warmup_steps=30)
    a, b = (prepare_site(str(sites / "train" / n), spinup_cycles=0) for n in ("hyy_a", "hyy_b"))
    site_run.run_blocks(a.setup, progress=False)  # physics_default's run (one block: the record, 426 days)
    with compiled_functions() as windows:
        (short_a, first_a), _ = calibration_window(a, c), calibration_window(b, c)
    assert sees_compiles() and jit_name(run_station) not in windows and first_a == 30 and len(short_a.times) == 150
    s0 = int(np.searchsorted(a.step_day, a.test.start)) - 150
    head = jax.tree_util.tree_map(lambda x: x[:s0], a.setup.forcing)
    alone = eqx.filter_jit(run_station)(a.setup.state0, head, a.setup.params, a.setup.grid, a.setup.options,
                                        observe=None)[0]  # fmt: skip
    for x, y in zip(jax.tree_util.tree_leaves(alone), jax.tree_util.tree_leaves(short_a.state0), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # a run's memo keeps the state: the stages and folds after the first get the same window without running again
    memo: dict = {}
    calibration_window(a, c, memo)
    monkeypatch.setattr(training, "run_blocks", lambda *args, **kw: pytest.fail("the default run ran again"))
    again, first = calibration_window(a, c, memo)
    assert first == first_a and len(again.times) == len(short_a.times)
    for x, y in zip(jax.tree_util.tree_leaves(again.state0), jax.tree_util.tree_leaves(short_a.state0), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # the station model's gradient compiles (about 2 min on 2 cores)
def test_dpl_regionalisation_in_a_leave_sites_out_run(sites, tmp_path):
    """physics_dpl: one network per fold from attributes to soil parameters, trained through the physics at the
    training sites (starting from every site's own table values); its test sites run with the parameters it
    gives them, which differ from the table values and between sites. One of each fold's two training sites is
    held out to choose the step (the lowest loss there, before training included)."""
    out = tmp_path / "run"
    calibration = {"steps": 3, "window_steps": 120, "warmup_steps": 30, "dpl_learning_rate": 0.3,
                   "parameters": ["soil.bexp", "soil.smcmax"], "dpl_validation_sites": 1}  # fmt: skip
    table = run_multisite(_config(sites, out, models=["physics_default", "physics_dpl"], calibration=calibration))
    assert set(table["model"]) == {"physics_default", "physics_dpl"} and np.isfinite(table["rmse"]).all()
    folds = [yaml.safe_load((out / "models" / "physics_dpl" / f"fold{k}.json").read_text()) for k in (0, 1)]
    for fold in folds:
        assert fold["train_loss"][-1] != fold["train_loss"][0]
        assert not set(fold["train_sites"]) & set(fold["test_sites"])
        assert len(fold["validation_sites"]) == 1 and set(fold["validation_sites"]) < set(fold["train_sites"])
        assert len(fold["validation_loss"]) == 4  # before training and after each of the 3 steps
        assert fold["best_step"] == int(np.argmin(fold["validation_loss"])) - 1
    with xr.open_dataset(out / "predictions" / "hyy_a" / "physics_dpl.nc") as ds:
        values = yaml.safe_load(ds.attrs["info"])["values"]
    default = prepare_site(str(sites / "train" / "hyy_a"), spinup_cycles=0).setup.params.soil
    untrained = next(f for f in folds if "hyy_a" in f["test_sites"])["best_step"] == -1  # then the table values
    same = float(np.ravel(values["soil.smcmax"])[0]) == float(np.ravel(default.smcmax)[0])
    assert same == untrained


def test_a_model_whose_code_changed_is_not_read_back(sites, tmp_path, monkeypatch):
    """A run folder resumed after physics_dpl's revision changed (a newer dam computes it differently, e.g. a changed
    default left out of the configuration) trains the network again; at the same revision it is read back, and
    so is physics_default, whose revision did not change. (The dPL training is a stand-in: only the keys matter.)"""
    import types

    import dam.multisite_dpl as dpl
    from dam import predictions

    trained = []

    def train_dpl(train, c, **kwargs):
        trained.append(train)
        history = pd.DataFrame({"loss": [1.0]})
        return types.SimpleNamespace(history=history, values=[{}] * len(train), validation=(), best_step=None)

    monkeypatch.setattr(dpl, "train_dpl", train_dpl)
    monkeypatch.setattr(dpl, "predict_dpl", lambda result, data: Prediction("physics_dpl", data.observed + 0.0, 0.0))
    cfg = _config(sites, tmp_path / "run", models=["physics_default", "physics_dpl"])
    run_multisite(cfg)
    assert len(trained) == 2  # a network per fold
    monkeypatch.setitem(STAGES, "physics_default", lambda *a: pytest.fail("physics_default was computed again"))
    run_multisite(cfg)
    assert len(trained) == 2  # read back
    monkeypatch.setitem(predictions.MODEL_REVISIONS, "physics_dpl", predictions.MODEL_REVISIONS["physics_dpl"] + 1)
    run_multisite(cfg)
    assert len(trained) == 4
