"""Metrics (dam.metrics): hand-computed values, identities, NaN handling, jit/vmap/grad, per-layer table."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from dam import metrics as M
from dam.sites import load_site

OBS = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
SIM = np.array([1.5, 2.5, 2.5, 5.0, 1.0])


def test_hand_computed_values() -> None:
    # valid pairs: sim 1.5 2.5 2.5 5, obs 1 2 3 4; errors .5 .5 -.5 1
    out = {k: float(v) for k, v in M.all_metrics(SIM, OBS).items()}
    assert out["n"] == 4
    assert out["bias"] == pytest.approx(0.375, rel=1e-14)
    assert out["rmse"] == pytest.approx(np.sqrt(1.75 / 4), rel=1e-14)
    assert out["nse"] == pytest.approx(1 - 1.75 / 5.0, rel=1e-14)  # sum (o - mean o)^2 = 5
    ms, mo = 11.5 / 4, 2.5
    ds, do = np.array([1.5, 2.5, 2.5, 5]) - ms, np.array([1, 2, 3, 4.0]) - mo
    r = (ds * do).sum() / np.sqrt((ds**2).sum() * (do**2).sum())
    assert out["r"] == pytest.approx(r, rel=1e-14)
    assert out["ubrmse"] == pytest.approx(np.sqrt(((ds - do) ** 2).mean()), rel=1e-14)
    alpha, beta = np.sqrt((ds**2).mean() / (do**2).mean()), ms / mo
    assert out["kge"] == pytest.approx(1 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2), rel=1e-14)


def test_identities() -> None:
    rng = np.random.default_rng(0)
    o = rng.normal(10, 2, 500)
    s = o + rng.normal(0.7, 1.0, 500)
    assert float(M.kge(o, o)) == 1.0 and float(M.nse(o, o)) == 1.0
    assert float(M.pearson_r(o, o)) == pytest.approx(1.0, abs=1e-15)
    assert float(M.rmse(o, o)) == 0.0 and float(M.bias(o, o)) == 0.0 and float(M.ubrmse(o, o)) == 0.0
    assert float(M.ubrmse(s, o)) ** 2 == pytest.approx(float(M.rmse(s, o)) ** 2 - float(M.bias(s, o)) ** 2, rel=1e-12)
    assert float(M.pearson_r(2 * o + 3, o)) == pytest.approx(1.0, abs=1e-14)  # r is scale/offset invariant
    assert float(M.pearson_r(-o, o)) == pytest.approx(-1.0, abs=1e-14)
    assert float(M.nse(np.full_like(o, o.mean()), o)) == pytest.approx(0.0, abs=1e-14)  # mean predictor


def test_nan_pairs_dropped_and_too_few_pairs() -> None:
    o = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    s = np.array([1.0, 2.0, np.nan, 4.0, 6.0])
    assert float(M.rmse(s, o)) == pytest.approx(np.sqrt(1 / 3))  # pairs 0, 3, 4
    with pytest.warns(RuntimeWarning, match="fewer than 3 valid"):
        assert np.isnan(float(M.nse([1.0, np.nan], [1.0, 2.0])))
    with pytest.warns(RuntimeWarning):
        assert np.isnan(float(M.kge(s, o, min_pairs=10)))


def test_axis_jit_vmap_and_grad() -> None:
    rng = np.random.default_rng(1)
    o = rng.normal(0.3, 0.05, (200, 3))
    s = o + rng.normal(0.01, 0.02, (200, 3))
    s[5, 1] = np.nan
    per_col = np.asarray(M.kge(s, o, axis=0))
    by_hand = [float(M.kge(s[:, j], o[:, j])) for j in range(3)]
    np.testing.assert_allclose(per_col, by_hand, rtol=1e-14)
    np.testing.assert_allclose(jax.jit(M.kge, static_argnames="axis")(s, o, axis=0), per_col, rtol=1e-14)
    np.testing.assert_allclose(jax.vmap(M.kge, in_axes=(1, 1))(s, o), per_col, rtol=1e-14)
    for f in M.METRICS.values():
        g = jax.grad(lambda x, f=f: f(x, jnp.asarray(o[:, 0])))(jnp.asarray(s[:, 0]))
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
    g0 = jax.grad(lambda x: M.rmse(x, jnp.asarray(o[:, 0])))(jnp.asarray(o[:, 0]))  # perfect fit
    assert bool(jnp.all(g0 == 0))
    # gradient of NSE against finite differences
    x = jnp.asarray(s[:, 0])
    g = jax.grad(lambda v: M.nse(v, jnp.asarray(o[:, 0])))(x)
    h = 1e-6
    fd = (float(M.nse(x.at[7].add(h), o[:, 0])) - float(M.nse(x.at[7].add(-h), o[:, 0]))) / (2 * h)
    assert float(g[7]) == pytest.approx(fd, rel=1e-6)


def test_metrics_table_bondville() -> None:
    """Model = observations at the sensor's layer (perfect) or shifted: the table reports it per sensor."""
    site = load_site("bondville_1998")
    obs = site.observations.isel(time=slice(0, 480))
    bottoms = [0.1, 0.4, 1.0, 2.0]
    # a 'model' with the observed 5/20/60 cm moisture in layers 1..3 and 0.3 in layer 4; ST from 2/16/32/64 cm.
    # Bondville's sensors see liquid water: the table compares soil_liquid_water, not the total soil_moisture.
    sm = obs.soil_moisture.values
    st = obs.soil_temperature.values
    model = xr.Dataset(
        {
            "soil_liquid_water": (("time", "layer"), np.c_[sm, np.full(len(sm), 0.3)] + 0.01),
            "soil_moisture": (("time", "layer"), np.c_[sm, np.full(len(sm), 0.3)] + 0.05),
            "soil_temperature": (("time", "layer"), st[:, [0, 3, 5, 5]]),
            "sensible_heat_flux": ("time", obs.sensible_heat_flux.values * 1.1),
        },
        coords={"time": obs.time.values},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = M.metrics_table(
            model, obs, bottoms, variables=["soil_moisture", "soil_temperature", "sensible_heat_flux"], site=site,
            rule="layer",
        )  # fmt: skip
        interp = M.metrics_table(model, obs, bottoms, variables=["soil_moisture"], site=site)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == [
        "variable",
        "depth_m",
        "layer",
        "n",
        "r",
        "bias",
        "rmse",
        "ubrmse",
        "nse",
        "kge",
        "units",
        "unreliable",
        "note",
    ]
    sm_rows = table[table.variable == "soil_moisture"]
    np.testing.assert_allclose(sm_rows.bias, 0.01, atol=1e-12)
    np.testing.assert_allclose(sm_rows.ubrmse, 0.0, atol=1e-12)
    assert sm_rows.layer.tolist() == [0, 1, 2]
    assert sm_rows.unreliable.astype(bool).tolist() == [False, True, True]
    st_rows = table[table.variable == "soil_temperature"].set_index("depth_m")
    assert st_rows.loc[0.02, "rmse"] == 0.0 and st_rows.loc[0.02, "kge"] == 1.0  # 2 cm is itself in layer 1
    assert st_rows.loc[0.04, "rmse"] > 0  # 4 cm compared with the layer-1 value (the 2 cm series)
    # read at the sensor depths, the 20 and 60 cm sensors see a blend of two layers: no longer a copy of the series
    assert interp.layer.tolist() == [0, 1, 2] and interp.rmse.iloc[0] == pytest.approx(0.01, abs=1e-12)
    assert (interp.ubrmse.iloc[1:] > 1e-4).all()
    h = table[table.variable == "sensible_heat_flux"].iloc[0]
    assert h.layer == -1 and h.n == int(np.isfinite(obs.sensible_heat_flux.values).sum())
    assert h.r == pytest.approx(1.0, abs=1e-12)


def test_metrics_table_averages_a_finer_model_onto_daily_observations() -> None:
    times_obs = pd.date_range("2001-01-02", periods=5, freq="D")  # ends of daily intervals
    times_mod = pd.date_range("2001-01-01T00:30", periods=5 * 48, freq="30min")
    vals = np.arange(5 * 48, dtype=float)
    model = xr.Dataset({"latent_heat_flux": ("time", vals)}, coords={"time": times_mod})
    daily = vals.reshape(5, 48).mean(axis=1)
    obs = xr.Dataset({"latent_heat_flux": ("time", daily, {"units": "W m-2"})}, coords={"time": times_obs})
    table = M.metrics_table(model, obs, min_pairs=3)
    assert table.rmse.iloc[0] == pytest.approx(0.0, abs=1e-12) and table.n.iloc[0] == 5


@pytest.mark.parametrize(
    ("sim", "obs", "reason"),
    [
        (np.arange(20.0), np.full(20, 0.3), "constant observations"),
        (np.full(20, 0.3), np.arange(20.0) + 1, "constant simulation"),
        (np.arange(20.0), np.tile([-1.0, 1.0], 10), "zero observed mean"),
    ],
)  # fmt: skip
def test_undefined_terms_give_nan_never_a_perfect_score(sim, obs, reason) -> None:
    """Issue 16 item 4: KGE was 1.0 whenever r was NaN (the square root mapped NaN to 0)."""
    out = {k: float(v) for k, v in M.all_metrics(sim, obs).items()}
    assert np.isnan(out["kge"])
    assert reason in M.why_undefined(sim, obs)
    if "constant" in reason:
        assert np.isnan(out["r"])
    assert np.isfinite(out["rmse"]) and np.isfinite(out["bias"])


def test_why_undefined_is_empty_for_a_defined_series_and_names_too_few_points() -> None:
    rng = np.random.default_rng(3)
    o = rng.normal(0.3, 0.05, 30)
    assert M.why_undefined(o + 0.01, o) == ""
    assert M.why_undefined(o[:2], o[:2], min_pairs=10) == "too few points (2 valid pairs < 10)"
