"""``dam experiment``: configuration checks, the run folder, determinism and resume.

A tiny configuration (one daily site, no spin-up, two training epochs) keeps this test short; the science
of the experiment is in the closing notes and docs, not asserted here.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from dam.experiment import ExperimentConfig, load_config, run_experiment


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


def test_config_rejects_unknown_keys_and_models(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        ExperimentConfig.from_dict({"sitez": ["x"]})
    with pytest.raises(ValueError, match="network: unknown keys"):
        ExperimentConfig.from_dict({"network": {"hiden": 3}})
    with pytest.raises(ValueError, match="unknown"):
        ExperimentConfig.from_dict({"models": ["physics_default", "gpt"]})
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


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
    with pytest.raises(ValueError, match="different configuration .*network"):
        run_experiment(_config(tmp_path, network={"hidden": 4, "epochs": 2}))

    # same seed from scratch: same numbers
    shutil.rmtree(run)
    fresh = run_experiment(cfg)
    pd.testing.assert_frame_equal(fresh, table)


def test_progress_bars_follow_stage_reports(capsys):
    """The coupling routines report dicts; the experiment shows them as one bar per stage, not as lines."""
    from dam.experiment import progress_bars

    assert progress_bars("ai_in_physics", {"pretrain": 21}, enabled=False) is False
    report = progress_bars("ai_in_physics", {"pretrain": 21, "train": 3}, enabled=True)
    for it in (0, 10, 20):
        report({"stage": "pretrain", "iteration": it, "loss": 1.0 / (it + 1)})
    for epoch in range(3):
        report({"stage": "train", "epoch": epoch, "val_loss": 0.5})
    err = capsys.readouterr().err
    assert "ai_in_physics pretrain" in err and "21/21" in err and "ai_in_physics train" in err and "3/3" in err
