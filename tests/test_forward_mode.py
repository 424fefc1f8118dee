"""Forward-mode AD (``jax.jvp`` / ``jax.jacfwd``) through the soil column.

The tridiagonal solve is a ``lax.custom_linear_solve``, so forward mode works and must agree with reverse
mode and with central finite differences:

1. jvp of the solve (all four coefficient arrays perturbed) equals the jvp of a dense ``jnp.linalg.solve``.
2. jvp of a short batched run (frozen layers, storms that trigger six water sub-steps) along a random
   direction in parameters and initial state equals the reverse-mode directional derivative and central
   finite differences.
3. ``jax.jacfwd`` with respect to four scalar parameter multipliers equals ``jax.jacrev``, for the default
   derivative of freezing (a custom JVP, ``phase_change_gradient="implicit"``) and the exact one; the two differ
   here (layers freeze to the supercooled limit).

Finite differences at small steps check the exact derivative of the discrete model, so test 2 uses
``phase_change_gradient="exact"`` (tests/test_freezing_gradient.py checks the default one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dam.physics import SoilForcing, SoilGrid, SoilOptions, SoilParams, SoilState, run, tridiagonal_solve
from dam.physics.phase_change import supercooled_niu06
from dam.soil_table import stas_parameters

jax.config.update("jax_enable_x64", True)

N_LAYERS = 4
N_STEPS = 24
FIELDS = ("bexp", "smcmax", "smcref", "smcwlt", "psisat", "dksat", "dwsat", "quartz")


def _columns(n_columns: int = 4, seed: int = 0):
    """Heterogeneous columns: some start frozen, some get storms large enough for six water sub-steps."""
    rng = np.random.default_rng(seed)
    soils = [stas_parameters(k) for k in (2, 3, 6, 9)][:n_columns]
    layered = {f: np.array([[s[f]] * N_LAYERS for s in soils]) for f in FIELDS}
    params = SoilParams(
        **layered,
        csoil=np.full(n_columns, 2.0e6),
        slope=np.full(n_columns, 0.1),
        refkdt=np.full(n_columns, 3.0),
        refdk=np.full(n_columns, 2.0e-6),
        frzk=np.full(n_columns, 0.15),
        tbot=np.linspace(274.0, 290.0, n_columns),
    )
    smc = rng.uniform(0.5, 0.9, (n_columns, N_LAYERS)) * layered["smcmax"]
    t = np.linspace(270.0, 285.0, n_columns)[:, None] + np.linspace(0.0, 2.0, N_LAYERS)
    sh2o = np.where(t < 273.16, 0.6 * smc, smc)
    state = SoilState(t=t, smc=smc, sh2o=sh2o)
    hours = np.arange(N_STEPS)[:, None] * 0.5
    diurnal = np.sin(2 * np.pi * (hours / 24.0 + np.linspace(0, 1, n_columns)))
    rain = np.zeros((N_STEPS, n_columns))
    rain[5:8] = 2.0e-5  # heavy enough for six sub-steps in the wetter columns
    rain[15, ::2] = 3.0e-6
    forcing = SoilForcing(
        ghf_wm2=60.0 * diurnal,
        qinsurf_mps=rain,
        evap_mps=2e-8 * (1 + diurnal),
        etran_mps=(1e-8 * (1 + diurnal))[..., None] * np.array([0.4, 0.3, 0.2, 0.1]),
        frozen_ground=np.zeros((N_STEPS, n_columns)),
        frz_top_ice_flux_mmps=np.zeros((N_STEPS, n_columns)),
    )
    as_jax = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)  # noqa: E731
    grid = SoilGrid(zsoil=np.array([-0.1, -0.4, -1.0, -2.0]))
    return as_jax(params), as_jax(state), as_jax(forcing), grid


OPTIONS = SoilOptions(dt_s=1800.0, phase_change_gradient="exact")


def _loss(params, state, forcing, grid, checkpoint_every=None):
    final, runoff = run(
        state,
        forcing,
        params,
        grid,
        OPTIONS,
        observe=lambda s, f: f.runoff_surface_mm + f.runoff_subsurface_mm,
        checkpoint_every=checkpoint_every,
    )
    return jnp.sum(final.t - 273.16) * 1e-2 + 100.0 * jnp.sum(final.smc) + 0.1 * jnp.sum(runoff)


@pytest.mark.parametrize("n", [2, 4, 6])
def test_tridiagonal_jvp_matches_dense_solve(n):
    rng = np.random.default_rng(n)
    shape = (3, n)
    a, c = rng.uniform(-1, 0, shape), rng.uniform(-1, 0, shape)
    b = rng.uniform(2.5, 3.0, shape)
    d = rng.normal(size=shape)
    a[:, 0], c[:, -1] = 0.0, 0.0
    primals = tuple(jnp.asarray(v) for v in (a, b, c, d))
    tangents = tuple(jnp.asarray(rng.normal(size=shape)) for _ in range(4))
    tangents = (tangents[0].at[:, 0].set(0.0), tangents[1], tangents[2].at[:, -1].set(0.0), tangents[3])

    def dense(a, b, c, d):
        m = jnp.zeros((*a.shape[:-1], n, n))
        idx = jnp.arange(n)
        m = m.at[..., idx, idx].set(b)
        m = m.at[..., idx[1:], idx[:-1]].set(a[..., 1:])
        m = m.at[..., idx[:-1], idx[1:]].set(c[..., :-1])
        return jnp.linalg.solve(m, d[..., None])[..., 0]

    x, dx = jax.jvp(tridiagonal_solve, primals, tangents)
    x_ref, dx_ref = jax.jvp(dense, primals, tangents)
    np.testing.assert_allclose(x, x_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)


def test_run_jvp_matches_reverse_mode_and_finite_differences():
    params, state, forcing, grid = _columns()
    rng = np.random.default_rng(7)
    # Relative direction: every parameter and state entry moves by a random fraction of itself; smc and sh2o
    # by the same fraction, so that unfrozen layers (sh2o == smc, on the kink of max(0, smc - sh2o)) stay
    # unfrozen and central differences see a smooth function.
    dp = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape)) * x, params)
    r = jnp.asarray(rng.normal(size=state.smc.shape))
    ds = SoilState(t=jnp.asarray(rng.normal(size=state.t.shape)) * state.t, smc=r * state.smc, sh2o=r * state.sh2o)
    direction = (dp, ds)

    def f(p, s):
        return _loss(p, s, forcing, grid, checkpoint_every=5)

    value, jvp = jax.jit(lambda p, s, dp, ds: jax.jvp(f, (p, s), (dp, ds)))(params, state, *direction)
    grads = jax.jit(jax.grad(f, argnums=(0, 1)))(params, state)
    reverse = sum(
        jnp.vdot(g, v)
        for g, v in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction), strict=True)
    )
    np.testing.assert_allclose(jvp, reverse, rtol=1e-9)

    f_jit = jax.jit(f)

    def shifted(eps):
        p, s = jax.tree_util.tree_map(lambda x, v: x + eps * v, (params, state), direction)
        return f_jit(p, s)

    assert np.isfinite(value)
    fd = [(shifted(eps) - shifted(-eps)) / (2 * eps) for eps in (1e-5, 1e-6, 1e-7)]
    assert min(abs(x - jvp) for x in fd) <= 1e-4 * abs(jvp)


@pytest.fixture(scope="module")
def jacobians():
    """The columns with the liquid water of every frozen layer 0.005 above its supercooled limit, so that
    freezing stops at the limit (where the two derivatives differ)."""
    params, state, forcing, grid = _columns()
    limit = supercooled_niu06(state.t, params, OPTIONS.const)
    state = SoilState(t=state.t, smc=state.smc, sh2o=jnp.where(state.t < 273.16, limit + 0.005, state.sh2o))
    return {g: _jacobians(params, state, forcing, grid, g) for g in ("implicit", "exact")}


def _jacobians(params, state, forcing, grid, gradient: str):
    options = SoilOptions(dt_s=1800.0, phase_change_gradient=gradient)

    def f(m):
        p = SoilParams(
            **{
                **{name: getattr(params, name) for name in SoilParams.__dataclass_fields__},
                "bexp": params.bexp * m[0],
                "dksat": params.dksat * m[1],
                "psisat": params.psisat * m[2],
                "quartz": params.quartz * m[3],
            }
        )
        final, _ = run(state, forcing, p, grid, options, observe=None, checkpoint_every=5)
        return jnp.concatenate([jnp.mean(final.t, axis=0), jnp.mean(final.smc, axis=0)])

    m = jnp.ones(4)
    return jax.jit(jax.jacfwd(f))(m), jax.jit(jax.jacrev(f))(m)


@pytest.mark.slow  # four Jacobians through 48 freezing steps (~2.5 min); test_freezing_gradient covers the default
@pytest.mark.parametrize("gradient", ["implicit", "exact"])
def test_jacfwd_equals_jacrev_for_parameter_multipliers(jacobians, gradient):
    fwd, rev = jacobians[gradient]
    assert fwd.shape == (2 * N_LAYERS, 4)
    assert np.all(np.isfinite(fwd))
    assert np.any(np.abs(fwd) > 1e-8)
    np.testing.assert_allclose(fwd, rev, rtol=1e-9, atol=1e-13)


@pytest.mark.slow  # shares the Jacobians above
def test_default_derivative_of_freezing_is_exercised(jacobians):
    """The columns freeze to the supercooled limit, so the default and the exact derivative differ."""
    assert not np.allclose(jacobians["implicit"][0], jacobians["exact"][0], rtol=1e-6, atol=0.0)
