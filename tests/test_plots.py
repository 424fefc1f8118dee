"""Figures of the experiment (dam.plots): gaps break lines, every figure is written with its panels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from dam.plots import break_gaps, plot_metric_bars, plot_site


def test_break_gaps_inserts_nan_only_at_gaps():
    days = pd.DatetimeIndex(["2000-01-01", "2000-01-02", "2000-01-03", "2000-01-10", "2000-01-11"])
    t, v = break_gaps(days, np.arange(5.0)[:, None])
    assert len(t) == 6 and t[3] == pd.Timestamp("2000-01-04") and np.isnan(v[3, 0])
    np.testing.assert_array_equal(np.delete(v[:, 0], 3), np.arange(5.0))
    same_t, same_v = break_gaps(days[:3], np.arange(3.0))
    assert same_t.equals(days[:3]) and np.array_equal(same_v, np.arange(3.0))


def _site(n_days=400, gap=slice(100, 130)):
    """A stand-in for dam.experiment_data.SiteData: two sensors, the second flagged unreliable, a data gap."""
    days = pd.date_range("2001-01-01", periods=n_days, freq="D").delete(range(gap.start, gap.stop))
    rng = np.random.default_rng(0)
    obs = 0.3 + 0.05 * np.sin(np.arange(len(days)) / 30.0)[:, None] + rng.normal(0, 0.01, (len(days), 2))
    obs[200:210, 0] = np.nan
    site = SimpleNamespace(meta=SimpleNamespace(title="Test station"))
    return SimpleNamespace(name="test_site", site=site, days=days, observed=obs, n_sensors=2,
                           sensor_depths_m=np.array([0.05, 0.3]), reliable=np.array([True, False]),
                           describe_seen=lambda: "total water (liquid + ice)",
                           test=slice(int(0.8 * len(days)), len(days)))  # fmt: skip


def test_site_figures_and_metric_bars(tmp_path):
    data = _site()
    preds = {m: SimpleNamespace(daily=data.observed + k * 0.01) for k, m in enumerate(["a", "b", "c", "d", "e"])}
    plot_site(tmp_path, data, preds)
    for name in ("timeseries", "test_period", "scatter"):
        assert (tmp_path / f"test_site_{name}.png").stat().st_size > 10_000, name
    summary = pd.DataFrame({"site": ["test_site"] * 2, "model": ["a", "b"], "r": [0.9, 0.8], "rmse": [0.02, 0.03]})
    plot_metric_bars(tmp_path / "metrics.png", summary, ("b", "a"))
    assert (tmp_path / "metrics.png").is_file()
