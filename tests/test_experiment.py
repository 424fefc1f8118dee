"""``dam experiment``: configuration checks, the run folder, determinism and resume.

A tiny configuration (one daily site, no spin-up, two training epochs) keeps this test short; the science
of the experiment is in the closing notes and docs, not asserted here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from dam.experiment import ExperimentConfig, load_config, run_experiment
from dam.run_folder import RunFolderError, safe_name
from dam.schema import ConfigError
from dam.sites import SiteError, shipped_site_dir


def _config(tmp_path, **kw) -> ExperimentConfig:
    base = {
        "output_dir": str(tmp_path / "run"),
        "sites": ["hyytiala_2000_2010"],
        "models": ["physics_default", "lstm", "hlstm_constrained", "hlstm_physics"],
        "spinup_cycles": 0,
        "network": {"hidden": 8, "epochs": 2, "window_days": 60, "stride_days": 60, "attention_window": 7},
        "pretrain": {"members": 2, "epochs": 1},
        "progress": False,
    }
    base.update(kw)
    return ExperimentConfig.from_dict(base)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sitez": ["x"]}, "unknown key 'sitez'; did you mean 'sites'?"),
        ({"network": {"hiden": 3}}, "unknown key 'network.hiden'; did you mean 'hidden'?"),
        ({"models": ["physics_default", "gpt"]}, "models.1: Input should be 'physics_default'"),
        # issue 16 item 6: these exited 0 with metrics of an untrained or diverging network
        ({"network": {"epochs": -5}}, "network.epochs: Input should be greater than or equal to 1"),
        ({"network": {"window_days": 0}}, "network.window_days: Input should be greater than or equal to 1"),
        ({"network": {"learning_rate": -0.01}}, "network.learning_rate: Input should be greater than 0"),
        ({"spinup_cycles": -3}, "spinup_cycles: Input should be greater than or equal to 0"),
        ({"train_frac": 1.5}, "train_frac: Input should be less than 1"),
        ({"sites": ["no_such_site"]}, "neither a shipped site (bondville_1998"),
        ({"sites": []}, "sites: Tuple should have at least 1 item"),
        ({"name": "../x"}, "name: String should match pattern"),
        ({"calibration": {"parameters": ["soil.nonsense"]}}, "soil.nonsense"),
        ({"models": ["lstm", "lstm"]}, "listed twice"),
        ({"calibration": {"phase_change_gradient": "smooth"}}, "calibration.phase_change_gradient: Input should be"),
    ],
)  # fmt: skip
def test_config_is_validated_naming_the_key(data, message):
    with pytest.raises(ConfigError, match="^config: ") as info:
        ExperimentConfig.from_dict(data)
    assert message in str(info.value)


def test_dpl_keys_keep_old_fingerprints_and_reach_the_dpl_training(monkeypatch):
    """``calibration.dpl_learning_rate``, ``dpl_loss`` and ``dpl_metric`` are written only where not the default
    (run folders made before them stay valid) and are what the dPL network trains with."""
    from dam import multisite_dpl

    keys = {"dpl_learning_rate", "dpl_loss", "dpl_metric"}
    assert not keys & set(ExperimentConfig.from_dict({}).to_dict()["calibration"])
    chosen = ExperimentConfig.from_dict(
        {"calibration": {"dpl_learning_rate": 0.01, "dpl_loss": "relative", "dpl_metric": "rmse"}}
    )
    written = chosen.to_dict()["calibration"]
    assert written["dpl_learning_rate"] == 0.01 and written["dpl_loss"] == "relative"
    assert written["dpl_metric"] == "rmse"
    seen = {}
    monkeypatch.setattr(multisite_dpl, "calibrate_dpl", lambda *a, **kw: seen.update(kw))
    monkeypatch.setattr(multisite_dpl, "calibration_window", lambda d, c, memo: (d, 0))
    monkeypatch.setattr(multisite_dpl, "site_attributes", lambda d: np.zeros(2))

    class Site:
        def with_phase_change_gradient(self, _):
            return self

    multisite_dpl.train_dpl([Site(), Site()], chosen.calibration, seed=0)
    assert seen["learning_rate"] == 0.01 and seen["relative"] and seen["residual"] and seen["loss"].data == "rmse"
    with pytest.raises(ConfigError, match="dpl_loss"):
        ExperimentConfig.from_dict({"calibration": {"dpl_loss": "median"}})


def test_phase_change_gradient_reaches_the_gradient_runs_and_keeps_old_fingerprints():
    """The YAML key chooses the derivative of soil freezing of calibration and hybrid training (the values the
    physics accepts); left at the default it is not written, so run folders made before the key stay valid."""
    import typing

    from dam.physics.types import PhaseChangeGradient
    from dam.sites import load_site

    default = ExperimentConfig.from_dict({})
    assert "phase_change_gradient" not in default.to_dict()["calibration"]
    exact = ExperimentConfig.from_dict({"calibration": {"phase_change_gradient": "exact"}})
    assert exact.to_dict()["calibration"]["phase_change_gradient"] == "exact"
    assert "phase_change_gradient" not in exact.to_dict()["hybrid"]
    field = type(default.calibration).model_fields["phase_change_gradient"]
    assert set(typing.get_args(field.annotation)) == set(typing.get_args(PhaseChangeGradient))
    from dam.site_run import setup_station

    setup = setup_station(load_site("bondville_1998"), end="1998-01-03")
    assert setup.with_phase_change_gradient("exact").options.soil.phase_change_gradient == "exact"
    assert setup.options.soil.phase_change_gradient == "implicit"


def test_missing_config_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match="does not exist .*quick, full"):
        load_config(tmp_path / "missing.yaml")
    assert load_config("quick").name == "quick"


@pytest.mark.slow  # three experiment runs (~10 min on 2 cores); test_stale_prediction_... covers run, read-back, resume
def test_run_folder_determinism_and_resume(tmp_path):
    cfg = _config(tmp_path, constraints={"sweep": [0.0]})
    table = run_experiment(cfg)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "metrics.md", "summary.csv", "timings.json", "plausibility.csv"):
        assert (run / name).is_file(), name
    for model in cfg.models:
        assert (run / "predictions" / "hyytiala_2000_2010" / f"{model}.nc").is_file()
    for fig in ("timeseries", "test_period", "scatter"):
        assert (run / "figures" / f"hyytiala_2000_2010_{fig}.png").is_file(), fig
    assert (run / "figures" / "metrics.png").is_file()
    md = (run / "metrics.md").read_text()
    assert "RMSE (m3 m-3)" in md and "depth (m)" in md and "water created (mm)" in md  # units in every table
    assert any((run / "checkpoints" / "hyytiala_2000_2010" / "lstm").iterdir())
    assert set(table["model"]) == set(cfg.models)
    assert len(table) == 4 * 4 and np.isfinite(table["rmse"]).all()
    plausible = pd.read_csv(run / "plausibility.csv")
    assert set(plausible["scenario"]) == {"test", "test_precip_x0.3"}
    assert set(plausible["model"]) == {"lstm", "hlstm_constrained", "hlstm_physics"}
    assert (plausible["bound_violations"] >= 0).all()
    sweep = pd.read_csv(run / "constraint_sweep.csv")
    assert sweep["factor"].tolist() == [0.0, 1.0] and sweep["water"].tolist() == [0.0, cfg.constraints.water]
    assert np.isfinite(sweep[["r", "rmse", "water_created_mm", "dry_water_created_mm"]].to_numpy()).all()

    # a killed run started again: finished stages are read back, a lost stage resumes from its checkpoints
    (run / "predictions" / "hyytiala_2000_2010" / "lstm.nc").unlink()
    again = run_experiment(cfg)
    pd.testing.assert_frame_equal(again, table)

    # the run folder refuses another configuration (its finished stages would be mixed in)
    with pytest.raises(RunFolderError, match="different configuration .*network"):
        run_experiment(_config(tmp_path, network={"hidden": 4, "epochs": 2}))

    # same seed from scratch: same numbers
    shutil.rmtree(run)
    fresh = run_experiment(cfg)
    pd.testing.assert_frame_equal(fresh, table)


def test_progress_bars_follow_stage_reports(capsys):
    """The coupling routines report dicts; the experiment shows them as one bar per stage, not as lines."""
    from dam.experiment_training import progress_bars

    assert progress_bars("ai_in_physics", {"pretrain": 21}, enabled=False) is False
    report = progress_bars("ai_in_physics", {"pretrain": 21, "train": 3}, enabled=True)
    for it in (0, 10, 20):
        report({"stage": "pretrain", "iteration": it, "loss": 1.0 / (it + 1)})
    for epoch in range(3):
        report({"stage": "train", "epoch": epoch, "val_loss": 0.5})
    err = capsys.readouterr().err
    assert "ai_in_physics pretrain" in err and "21/21" in err and "ai_in_physics train" in err and "3/3" in err


def _site_copy(tmp_path, edit_yaml=None):
    """A copy of the shipped daily Hyytiala site (optionally with site.yaml edited)."""
    site = tmp_path / "site"
    shutil.copytree(shipped_site_dir("hyytiala_2000_2010"), site)
    if edit_yaml is not None:
        meta = yaml.safe_load((site / "site.yaml").read_text())
        edit_yaml(meta)
        (site / "site.yaml").write_text(yaml.safe_dump(meta))
    return site


def test_site_name_cannot_escape_the_run_folder(tmp_path):
    """Issue 16 item 5: ``name: ../../x`` in site.yaml made the experiment write outside the run folder."""
    site = _site_copy(tmp_path, lambda m: m.update(name="../../escaped"))
    with pytest.raises(SiteError, match="name: String should match pattern"):  # refused when the site loads
        cfg = _config(tmp_path, sites=[str(site)], models=["physics_default"])
        run_experiment(cfg)
    with pytest.raises(RunFolderError, match="site name '../../escaped' cannot name a folder"):  # and by the run
        safe_name("../../escaped", "site name")
    assert not list(tmp_path.parent.glob("escaped*")) and not (tmp_path / "escaped").exists()


@pytest.mark.filterwarnings("ignore:variable 'precip'")  # the changed forcing has no precipitation, on purpose
def test_stale_prediction_is_not_reused_after_the_forcing_changed(tmp_path):
    """Issue 16 item 2: precipitation x 0 in a site's forcing gave identical metrics (stale predictions)."""
    site = _site_copy(tmp_path)
    for name in ("forcing.nc", "observations.nc"):  # three of the eleven years: enough to see a stale result
        xr.load_dataset(site / name).sel(time=slice("2000", "2002")).to_netcdf(site / name)
    cfg = _config(tmp_path, sites=[str(site)], models=["physics_default"])
    first = run_experiment(cfg)
    again = run_experiment(cfg)  # unchanged inputs: read back
    pd.testing.assert_frame_equal(first, again)
    forcing = xr.load_dataset(site / "forcing.nc")
    forcing["precip"] = forcing["precip"] * 0.0
    forcing.to_netcdf(site / "forcing.nc")
    dry = run_experiment(cfg)
    assert not np.allclose(dry["bias"], first["bias"])
    # a moved run folder resumes (a path spelled differently is the same folder)
    moved = tmp_path / "moved_run"
    shutil.move(tmp_path / "run", moved)
    resumed = run_experiment(cfg.replace(output_dir=str(moved) + "/./"))
    pd.testing.assert_frame_equal(resumed, dry)


def test_invalid_config_is_never_written_and_a_locked_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError):
        _config(tmp_path, network={"epochs": -5})
    assert not run.exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from dam.run_folder import RunLock\n"
         f"with RunLock({str(run)!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match="in use by another dam run"):
            run_experiment(_config(tmp_path, models=["physics_default"]))
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("precious")
    with pytest.raises(RunFolderError, match="not empty and is not a dam experiment run folder"):
        run_experiment(_config(tmp_path, output_dir=str(tmp_path / "foreign")))
    assert (tmp_path / "foreign" / "thesis.tex").read_text() == "precious"


def test_every_model_is_a_registered_stage():
    """Stages are found in a registry (not by attribute name); the configuration's models are exactly them."""
    from dam.experiment_config import MODELS
    from dam.experiment_stages import STAGES, stage

    assert tuple(STAGES) == MODELS
    with pytest.raises(ValueError, match="registered twice"):
        stage("lstm")(lambda exp, data, preds: None)


def test_an_undefined_score_is_a_note_not_a_warning():
    """A sensor without test observations scores NaN with the reason in ``note``; no RuntimeWarning per series
    (a many-site run would print one for every model and sensor)."""
    import dataclasses
    import warnings

    from dam.experiment_data import prepare_site
    from dam.predictions import Prediction
    from dam.scoring import score

    data = prepare_site("bondville_1998", spinup_cycles=0)
    observed = data.observed.copy()
    observed[data.test] = np.nan
    blind = dataclasses.replace(data, observed=observed)
    pred = Prediction("physics_default", np.full(observed.shape, 0.3), 0.0, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        table = score(blind, {"physics_default": pred})
    assert table["rmse"].isna().all() and table["note"].str.contains("valid pairs").all()
