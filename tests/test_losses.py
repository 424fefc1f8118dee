"""Physics-in-AI loss terms on hand-made cases: zero for physical sequences, positive for violations, finite
gradients (also at a perfect fit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dam.coupling.losses import (
    PhysicsLoss,
    bounds_penalty,
    column_heat_residual,
    heat_residual,
    masked_mae,
    masked_mse,
    masked_rmse,
    masked_ubrmse,
    surface_energy_residual,
    water_balance_residual,
)

DZ = jnp.array([0.1, 0.3, 0.6, 1.0])


def _conserving_sequence(t=6, seed=0):
    """Moisture (T, 4) whose storage change equals inputs - outputs every step."""
    rng = np.random.default_rng(seed)
    theta0 = np.array([0.30, 0.32, 0.33, 0.35])
    inputs = rng.uniform(0.0, 5.0, t)
    outputs = rng.uniform(0.0, 3.0, t)
    theta = [theta0]
    for k in range(t):
        # put the net gain in layer 1 and move 0.5 mm from layer 2 to layer 3 (internal, conserving)
        new = theta[-1].copy()
        new[0] += (inputs[k] - outputs[k]) / 1000.0 / 0.1
        new[1] -= 0.5 / 1000.0 / 0.3
        new[2] += 0.5 / 1000.0 / 0.6
        theta.append(new)
    return jnp.asarray(np.stack(theta[1:])), jnp.asarray(theta0), jnp.asarray(inputs), jnp.asarray(outputs)


def test_water_balance_zero_for_conserving_and_positive_for_a_leak():
    theta, theta0, inp, out = _conserving_sequence()
    r = water_balance_residual(theta, DZ, inp, out, theta_initial=theta0)
    assert r.shape == (6,)
    np.testing.assert_allclose(r, 0.0, atol=1e-10)
    # without the initial state: T - 1 residuals, still zero
    np.testing.assert_allclose(water_balance_residual(theta, DZ, inp, out), 0.0, atol=1e-10)
    # 2 mm appear in layer 4 at step 3: residual +2 mm at that step, 0 elsewhere
    leak = theta.at[3:, 3].add(2.0 / 1000.0 / 1.0)
    r = water_balance_residual(leak, DZ, inp, out, theta_initial=theta0)
    np.testing.assert_allclose(r, [0, 0, 0, 2.0, 0, 0], atol=1e-10)
    # batch of two sequences
    rb = water_balance_residual(jnp.stack([theta, leak]), DZ, jnp.stack([inp, inp]), jnp.stack([out, out]),
                                theta_initial=theta0)  # fmt: skip
    assert rb.shape == (2, 6) and float(jnp.abs(rb[1]).max()) == pytest.approx(2.0)


def test_bounds_penalty_zero_inside_quadratic_outside():
    theta = jnp.array([[0.10, 0.30, 0.45]])
    assert float(bounds_penalty(theta, 0.05, 0.46)) == 0.0
    assert float(bounds_penalty(theta, 0.05, 0.46, liquid=theta * 0.9)) == 0.0
    over = float(bounds_penalty(theta, 0.05, 0.40))  # 0.45 is 0.05 above
    assert over == pytest.approx(0.05**2 / 3)
    under = float(bounds_penalty(theta, 0.2, 0.46))  # 0.10 is 0.1 below
    assert under == pytest.approx(0.1**2 / 3)
    liq = float(bounds_penalty(theta, 0.05, 0.46, liquid=theta + 0.01))  # liquid above total
    assert liq == pytest.approx(0.01**2)
    g = jax.grad(lambda x: bounds_penalty(x, 0.05, 0.40))(theta)
    assert np.all(np.isfinite(g)) and float(g[0, 2]) > 0.0 and float(g[0, 0]) == 0.0


def test_heat_residual_zero_for_the_implicit_heat_equation_and_flags_errors():
    """Temperatures from solving the implicit finite-volume heat equation give a zero residual per layer;
    the column form closes without conductivity; a wrong flux gives a residual of exactly its error."""
    dz = np.array([0.1, 0.3, 0.6, 1.0])
    cap = np.array([2.0e6, 2.2e6, 2.4e6, 2.5e6])
    lam = np.array([1.0, 1.2, 1.3, 1.4])
    dt = 1800.0
    dist = 0.5 * (dz[:-1] + dz[1:])
    g = np.array([50.0, -20.0, 10.0])
    hb = np.array([1.0, 2.0, -1.0])
    t_prev = np.array([290.0, 288.0, 286.0, 285.0])
    temps = []
    for k in range(3):
        a = np.zeros((4, 4))
        rhs = cap * dz * t_prev / dt
        rhs[0] += g[k]
        rhs[-1] += hb[k]
        for i in range(4):
            a[i, i] = cap[i] * dz[i] / dt
        for i in range(3):
            c = lam[i] / dist[i]
            a[i, i] += c
            a[i, i + 1] -= c
            a[i + 1, i + 1] += c
            a[i + 1, i] -= c
        t_prev = np.linalg.solve(a, rhs)
        temps.append(t_prev)
    temps = jnp.asarray(np.stack(temps))
    t0 = jnp.array([290.0, 288.0, 286.0, 285.0])
    r = heat_residual(temps, t0, cap, lam, dz, g, hb, dt)
    assert r.shape == (3, 4)
    np.testing.assert_allclose(r, 0.0, atol=1e-8)
    col = column_heat_residual(temps, t0, cap, dz, g, hb, dt)
    np.testing.assert_allclose(col, 0.0, atol=1e-8)
    np.testing.assert_allclose(jnp.sum(r, axis=-1), col, atol=1e-8)
    # a ground heat flux 5 W m-2 too large: residual -5 in layer 1 and in the column
    r_bad = heat_residual(temps, t0, cap, lam, dz, g + 5.0, hb, dt)
    np.testing.assert_allclose(r_bad[:, 0], -5.0, atol=1e-8)
    np.testing.assert_allclose(column_heat_residual(temps, t0, cap, dz, g + 5.0, hb, dt), -5.0, atol=1e-8)
    grad = jax.grad(lambda t: jnp.sum(heat_residual(t, t0, cap, lam, dz, g, hb, dt) ** 2))(temps + 0.1)
    assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).max()) > 0.0
    assert float(surface_energy_residual(400.0, 100.0, 250.0, 50.0)) == 0.0
    assert float(surface_energy_residual(400.0, 100.0, 200.0, 50.0)) == 50.0


def test_masked_metrics_and_combined_loss():
    pred = jnp.array([0.30, 0.32, 0.40, 0.25])
    obs = jnp.array([0.30, np.nan, 0.35, 0.27])
    assert float(masked_mse(pred, obs)) == pytest.approx((0.05**2 + 0.02**2) / 3)
    assert float(masked_rmse(pred, obs)) == pytest.approx(np.sqrt((0.05**2 + 0.02**2) / 3))
    assert float(masked_mae(pred, obs)) == pytest.approx(0.07 / 3)
    assert float(masked_mse(pred, obs, weights=jnp.array([1.0, 1.0, 0.0, 1.0]))) == pytest.approx(0.02**2 / 2)
    assert float(masked_mse(pred, jnp.full(4, np.nan))) == 0.0  # no observation: contributes nothing
    g = jax.grad(lambda p: masked_rmse(p, obs))(jnp.where(jnp.isnan(obs), 0.1, obs))  # perfect fit
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) == 0.0
    g = jax.grad(lambda p: masked_rmse(p, obs))(pred)
    assert np.all(np.isfinite(g)) and float(g[1]) == 0.0 and float(g[2]) > 0.0

    theta, theta0, inp, out = _conserving_sequence()
    cfg = PhysicsLoss(w_water=0.5, w_bounds=2.0, w_heat=1.0, data="mse", water_scale_mm=2.0, bounds_scale=0.01)
    clean = cfg(pred, obs, water_residual_mm=water_balance_residual(theta, DZ, inp, out, theta0), theta=theta,
                theta_lower=0.02, theta_upper=0.5, heat_residual_wm2=jnp.zeros(3))  # fmt: skip
    assert float(clean.total) == pytest.approx(float(clean.data))
    assert float(clean.water) == pytest.approx(0.0, abs=1e-18) and float(clean.bounds) == 0.0
    leak = theta.at[3:, 3].add(0.002)
    bad = cfg(pred, obs, water_residual_mm=water_balance_residual(leak, DZ, inp, out, theta0), theta=theta,
              theta_lower=0.02, theta_upper=0.31, heat_residual_wm2=jnp.full(3, 10.0))  # fmt: skip
    assert float(bad.water) == pytest.approx((2.0 / 2.0) ** 2 / 6)
    assert float(bad.heat) == pytest.approx(1.0)
    assert float(bad.bounds) > 0.0
    expected = bad.data + 0.5 * bad.water + 2.0 * bad.bounds + 1.0 * bad.heat
    assert float(bad.total) == pytest.approx(float(expected))

    def total(th):
        res = water_balance_residual(th, DZ, inp, out, theta0)
        return cfg(pred, obs, water_residual_mm=res, theta=th, theta_lower=0.02, theta_upper=0.31).total

    g = jax.grad(total)(leak)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0.0
    with pytest.raises(ValueError):
        PhysicsLoss(data="huber")
    with pytest.raises(ValueError):
        PhysicsLoss(w_water=-1.0)


def test_unbiased_rmse_ignores_each_sensors_level():
    """masked_ubrmse: dam.metrics.ubrmse per sensor (NaN skipped), blind to a constant added to a sensor's series,
    pooled over sensors with weights; its gradient sums to zero along each series (no pull on the level) and
    is finite at a perfect fit."""
    from dam.metrics import ubrmse

    rng = np.random.default_rng(0)
    obs = rng.uniform(0.1, 0.4, (30, 2))
    obs[[3, 11], 0] = np.nan
    pred = obs + rng.normal(0.0, 0.02, obs.shape) + np.array([0.05, -0.1])
    pred[5, 1] = np.nan  # a gap in the model series drops the pair as well
    for j in range(2):
        assert float(masked_ubrmse(pred[:, j], obs[:, j])) == pytest.approx(float(ubrmse(pred[:, j], obs[:, j])))
    assert float(masked_ubrmse(pred + np.array([0.3, -0.2]), obs)) == pytest.approx(float(masked_ubrmse(pred, obs)))
    assert float(masked_ubrmse(pred, obs)) < float(masked_rmse(pred, obs))
    per_sensor = masked_ubrmse(pred, obs, axis=0)
    assert float(masked_ubrmse(pred, obs, weights=jnp.array([1.0, 0.0]))) == pytest.approx(float(per_sensor[0]))
    x = jnp.asarray(np.nan_to_num(pred, nan=0.2))
    g = np.asarray(jax.grad(lambda p: masked_ubrmse(p, obs))(x))
    np.testing.assert_allclose(g.sum(axis=0), 0.0, atol=1e-12)
    assert np.abs(g).max() > 0.0
    exact = np.round(obs * 1024) / 1024  # + 0.5 is exact: a perfect fit but for the level
    g = jax.grad(lambda p: masked_ubrmse(p, exact))(jnp.asarray(np.nan_to_num(exact, nan=0.2)) + 0.5)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) == 0.0
    assert float(PhysicsLoss(data="ubrmse")(pred, obs).total) == pytest.approx(float(masked_ubrmse(pred, obs)))


def test_sensor_constraints_count_what_the_loss_penalises():
    """coupling.constraints: a window inside its bounds that gains no more water than falls costs nothing; one
    out of bounds or gaining water on an ice-free day is penalised and counted (the same numbers in numpy and
    jax.numpy)."""
    import numpy as np

    from dam.coupling.constraints import SensorTarget, constraint_penalty, plausibility, water_created

    target = SensorTarget(np.array([0.05, 0.05]), np.array([0.45, 0.45]), np.array([0.0, 10.0, 0.0, 0.0]),
                          np.array([True, True, True, False]), 0.1)  # fmt: skip
    ok = np.array([[0.2, 0.2], [0.25, 0.2], [0.2, 0.2], [0.3, 0.2]])  # +5 mm with 10 mm of rain; the thaw day
    days = jnp.arange(4)
    assert float(constraint_penalty(jnp.asarray(ok), days, target, 1.0, 1.0)) == 0.0
    assert plausibility(ok, target) == {"bound_violations": 0, "water_created_mm": 0.0}
    bad = ok.copy()
    bad[2] = [0.5, 0.5]  # 25 mm gained on a dry, ice-free day, and out of bounds
    np.testing.assert_allclose(water_created(bad, target.precip_mm, target.ice_free, 0.1), [0.0, 25.0, 0.0])
    np.testing.assert_allclose(
        water_created(jnp.asarray(bad), jnp.asarray(target.precip_mm), jnp.asarray(target.ice_free), 0.1, jnp),
        water_created(bad, target.precip_mm, target.ice_free, 0.1),
    )
    assert plausibility(bad, target)["bound_violations"] == 2
    assert float(constraint_penalty(jnp.asarray(bad), days, target, 0.0, 1.0)) > 0.0
