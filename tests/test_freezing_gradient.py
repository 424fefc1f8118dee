"""The derivative of soil freezing (``SoilOptions.phase_change_gradient``, dam.physics.phase_change_gradient).

1. One phase-change call on layers in every regime (freezing to the supercooled limit, energy-limited freezing,
   melting, warming below freezing, no ice; Niu06 and Koren99): both options give identical values; the exact
   option's Jacobian is the finite-difference one; the implicit option's Jacobian differs only in the layers
   that freeze to the limit, where it is the exact Jacobian with the eigenvalue ``-k`` (``k = L rho_w
   theta_sc'(T) / C``, checked against the analytic Niu06 slope) replaced by 0 along the same eigenvectors, and
   it conserves energy.
2. A soil-column window across freezing and thawing (the shipped Bondville case): the exact gradient exceeds
   1e6 within a week of slow freezing, the default one is bounded and agrees with central finite differences at a
   calibration scale; over a window without freezing to the limit the two are identical.

tests/test_forward_mode.py checks that the custom JVP gives the same derivative in forward and reverse mode
(batched columns, ``checkpoint_every``).
"""

from __future__ import annotations

import dataclasses
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dam.cases import read_case
from dam.physics import SoilGrid, SoilOptions, SoilParams, SoilState, run
from dam.physics.phase_change import phase_change, supercooled_niu06
from dam.physics.soil_thermal_properties import soil_thermal_properties
from dam.soil_table import stas_parameters

TFRZ = 273.16
LF, RHO_W, GRAV = 0.3336e6, 1000.0, 9.80616
IMPLICIT, EXACT = SoilOptions(), SoilOptions(phase_change_gradient="exact")


def test_option_is_validated_and_implicit_by_default():
    assert SoilOptions().phase_change_gradient == "implicit"
    with pytest.raises(ValueError, match="phase_change_gradient") as info:
        SoilOptions(phase_change_gradient="smooth")
    assert "'smooth'" in str(info.value)


# --------------------------------------------------------------------------------------------------------
# 1. One phase-change call

GRID = SoilGrid(zsoil=np.array([-0.1, -0.4, -1.0, -2.0]))
REGIMES = ("limit", "energy_limited", "melt", "warming_below", "ice_free")


def _params(soil_class: int = 8) -> SoilParams:
    row = stas_parameters(soil_class)
    layered = {f: jnp.full(4, row[f]) for f in ("smcmax", "smcref", "smcwlt", "bexp", "dksat", "dwsat", "psisat",
                                                 "quartz")}  # fmt: skip
    scalars = dict(csoil=2.0e6, slope=0.1, refkdt=3.0, refdk=2.0e-6, frzk=0.15, tbot=285.0)
    return SoilParams(**layered, **{k: jnp.asarray(v) for k, v in scalars.items()})


def _niu06(t, p: SoilParams):
    psi = LF * (TFRZ - t) / (GRAV * t)
    return p.smcmax * (psi / p.psisat) ** (-1.0 / p.bexp)


def _niu06_slope(t, p: SoilParams):
    psi = LF * (TFRZ - t) / (GRAV * t)
    return _niu06(t, p) / (p.bexp * psi) * LF * TFRZ / (GRAV * t * t)


def _columns(p: SoilParams):
    """(5, 4) start-of-step states and temperatures after diffusion, one regime per column (all 4 layers)."""
    smc = jnp.full((5, 4), 0.40)
    t_in = jnp.array([TFRZ - 1.5, TFRZ - 0.5, TFRZ + 0.3, TFRZ - 0.5, TFRZ + 2.0])[:, None] + jnp.array(
        [0.0, -0.3, -0.6, -1.0]
    )
    t_in = t_in.at[2].set(TFRZ + jnp.array([0.3, 0.2, 0.1, 0.05])).at[4].set(TFRZ + jnp.array([2.0, 1.0, 3.0, 5.0]))
    limit = _niu06(t_in, p)
    sh2o = jnp.stack(
        [
            limit[0] + 0.002,  # freezes to the limit; the energy left keeps the layer below freezing
            limit[1] + 0.05,  # not enough energy to freeze down to the limit: ends at TFRZ
            jnp.full(4, 0.25),  # ice melts at TFRZ + 0.3
            limit[3] - 0.02,  # below the limit and warming: nothing changes
            smc[4],  # no ice, warm
        ]
    )
    state = SoilState(t=t_in - 0.4, smc=smc, sh2o=sh2o)  # start-of-step state (for C and the phase factor)
    return state, t_in


def _phase(options: SoilOptions, p: SoilParams, supercooled: str = "niu06"):
    options = dataclasses.replace(options, supercooled=supercooled)
    state, t_in = _columns(p)
    _, _, factor = soil_thermal_properties(state, p, GRID, options.const, options.dt_s)

    def f(t, sh2o):
        t_out, smc, sh2o_out, latent, _ = phase_change(t, state.smc, sh2o, factor, p, GRID.dz, options)
        return t_out, sh2o_out, smc, latent

    return f, t_in, state.sh2o, factor


def _layer_jacobians(f, t, sh2o):
    """Per-layer 2x2 Jacobians d(T', sh2o')/d(T, sh2o) (layers are independent), shape (5, 4, 2, 2)."""
    jt = jax.jacfwd(lambda t, s: f(t, s)[:2], argnums=(0, 1))(t, sh2o)
    idx = jnp.arange(5)[:, None], jnp.arange(4)[None, :]
    rows = [[jt[o][i][idx[0], idx[1], idx[0], idx[1]] for i in range(2)] for o in range(2)]
    return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


@pytest.mark.parametrize("supercooled", ["niu06", "koren99"])
def test_values_identical_and_exact_jacobian_matches_finite_differences(supercooled):
    p = _params()
    f_exact, t, sh2o, _ = _phase(EXACT, p, supercooled)
    f_impl, *_ = _phase(IMPLICIT, p, supercooled)
    for a, b in zip(jax.jit(f_exact)(t, sh2o), jax.jit(f_impl)(t, sh2o), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    jac = np.asarray(_layer_jacobians(f_exact, t, sh2o))
    assert np.all(np.isfinite(jac))
    eps = 1e-7
    for i, (dt, ds) in enumerate(((eps, 0.0), (0.0, eps))):
        up, dn = f_exact(t + dt, sh2o + ds), f_exact(t - dt, sh2o - ds)
        cols = slice(None) if i == 0 else slice(0, 4)  # no liquid perturbation without ice (smc = sh2o is a kink)
        for o in range(2):
            fd = (np.asarray(up[o]) - np.asarray(dn[o])) / (2 * eps)
            np.testing.assert_allclose(jac[cols, :, o, i], fd[cols], rtol=1e-5, atol=1e-6)


def test_implicit_jacobian_replaces_the_unstable_mode():
    p = _params()
    f_exact, t, sh2o, factor = _phase(EXACT, p)
    f_impl, *_ = _phase(IMPLICIT, p)
    je = np.asarray(_layer_jacobians(f_exact, t, sh2o))
    ji = np.asarray(_layer_jacobians(f_impl, t, sh2o))
    # Regimes other than freezing to the limit: the exact derivative, bit for bit.
    np.testing.assert_array_equal(je[1:], ji[1:])
    # Freezing to the limit: k from the analytic Niu06 slope, C from the phase factor dt / (C dz).
    slope = np.asarray(_niu06_slope(t[0], p))
    c = IMPLICIT.dt_s / (np.asarray(factor[0]) * np.asarray(GRID.dz))
    k = LF * RHO_W * slope / c
    assert np.all(k > 1.0), k  # the exact step is unstable there: dT'/dT = 1 - k < -1 in some layers
    np.testing.assert_allclose(je[0, :, 0, 0], 1.0 - k, rtol=1e-8)
    a = LF * RHO_W / c
    for layer in range(4):
        j_e, j_i = je[0, layer], ji[0, layer]
        np.testing.assert_allclose(sorted(np.linalg.eigvals(j_e).real), sorted([-k[layer], 1.0]), rtol=1e-8)
        np.testing.assert_allclose(sorted(np.linalg.eigvals(j_i).real), [0.0, 1.0], atol=1e-12)
        # Same eigenvectors: along the equilibrium curve (1, theta_sc') -> 1; at constant energy (a, -1) -> 0.
        v_curve, v_energy = np.array([1.0, slope[layer]]), np.array([a[layer], -1.0])
        np.testing.assert_allclose(j_e @ v_curve, v_curve, rtol=1e-8)
        np.testing.assert_allclose(j_i @ v_curve, v_curve, rtol=1e-8)
        np.testing.assert_allclose(j_e @ v_energy, -k[layer] * v_energy, rtol=1e-8)
        np.testing.assert_allclose(j_i @ v_energy, 0.0, atol=1e-10 * a[layer])
        # Energy (C T + L rho_w sh2o) is conserved by the implicit tangent: the new row sums weight to the old.
        np.testing.assert_allclose(c[layer] * j_i[0] + LF * RHO_W * j_i[1], [c[layer], LF * RHO_W], rtol=1e-10)


def test_implicit_latent_heat_tangent_matches_the_water_it_moves():
    """The latent-heat diagnostic (W m-2) moves with the liquid water of the implicit tangent."""
    p = _params()
    f, t, sh2o, _ = _phase(IMPLICIT, p)
    _, (dt_out, dsh2o, _, dlatent) = jax.jvp(f, (t, sh2o), (jnp.ones_like(t), jnp.zeros_like(sh2o)))
    expected = jnp.sum(LF * RHO_W * GRID.dz / IMPLICIT.dt_s * dsh2o, axis=-1)
    np.testing.assert_allclose(np.asarray(dlatent[0]), np.asarray(expected[0]), rtol=1e-10)


def test_supercooled_limit_matches_the_analytic_curve():
    p = _params()
    t = jnp.array([268.0, 270.0, 272.0, 273.0])
    np.testing.assert_allclose(np.asarray(supercooled_niu06(t, p, IMPLICIT.const)), np.asarray(_niu06(t, p)),
                               rtol=1e-12)  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# 2. A soil-column window across freezing and thawing


# Windows of the shipped Bondville soil case (steps of 1800 s from 2 January 1998), each from the Fortran
# reference state at its start: 300 steps from step 300 (January; the top layer freezes and thaws, layer 2
# lingers just below 273.16 K), the same from step 600 (slow freezing of layer 2: the exact gradient grows to
# ~1e10) and from step 8000 (June, no ice).
WINDOW, STARTS = 300, (300, 600, 8000)
FIELDS = ("smcmax", "bexp", "csoil", "tbot")


@pytest.fixture(scope="module")
def windows():
    """d loss / d log(multiplier) of FIELDS per window, by the default and the exact derivative and by central
    finite differences (relative step 1e-3); shape (len(STARTS), len(FIELDS)) each."""
    with resources.as_file(resources.files("dam.data") / "bondville_soil") as path:
        case = read_case(path)
    params, _, forcing = case.as_dtype(jnp.float64)
    ref = case.reference_states()
    state0 = SoilState(*(jnp.asarray(np.stack([getattr(ref, n)[s] for s in STARTS])) for n in ("t", "smc", "sh2o")))
    forcing = jax.tree_util.tree_map(lambda x: jnp.stack([x[s : s + WINDOW] for s in STARTS], 1), forcing)

    def loss(m, options):  # m (B, F) multipliers -> (B,) mean soil temperature (K) + 10 x mean moisture
        fields = {f: getattr(params, f) * (m[:, i, None] if getattr(params, f).ndim else m[:, i])
                  for i, f in enumerate(FIELDS)}  # fmt: skip
        p = dataclasses.replace(params, **fields)
        _, (t, smc) = run(state0, forcing, p, case.grid, options, observe=lambda s, f: (s.t, s.smc))
        return jnp.mean(t - TFRZ, axis=(0, 2)) + 10.0 * jnp.mean(smc, axis=(0, 2))

    m0 = jnp.ones((len(STARTS), len(FIELDS)))
    out = {}
    for g in ("implicit", "exact"):
        options = dataclasses.replace(case.options, phase_change_gradient=g)
        out[g] = np.asarray(jax.jit(jax.grad(lambda m, o=options: jnp.sum(loss(m, o))))(m0))
    h = 1e-3
    steps = np.concatenate([np.eye(len(FIELDS)), -np.eye(len(FIELDS))]) * h  # (2F, F)
    values = jax.jit(jax.vmap(lambda d: loss(m0 + d, case.options)))(jnp.asarray(steps))  # (2F, B)
    values = np.asarray(values)
    out["fd"] = ((values[: len(FIELDS)] - values[len(FIELDS) :]) / (2 * h)).T
    return out


def test_window_values_and_gradient_without_freezing_to_the_limit_are_the_exact_ones(windows):
    np.testing.assert_allclose(windows["implicit"][2], windows["exact"][2], rtol=1e-12, atol=0.0)
    np.testing.assert_allclose(windows["exact"][2], windows["fd"][2], rtol=1e-4)


def test_window_gradient_across_freezing_is_bounded_and_matches_finite_differences(windows):
    impl, exact, fd = windows["implicit"], windows["exact"], windows["fd"]
    assert np.all(np.isfinite(impl)) and np.abs(impl).max() < 10.0, impl
    assert np.abs(exact[1]).max() > 1e6, exact[1]  # products of step Jacobians dT'/dT = 1 - k < -1
    # January window: the default gradient has the sign and, within a factor 2, the size of the finite
    # differences; the exact one is ~50 times too large with the wrong sign for smcmax and bexp.
    ratio = impl[0] / fd[0]
    assert np.all((ratio > 0.5) & (ratio < 2.0)), dict(zip(FIELDS, ratio, strict=True))
    assert np.any(exact[0] / fd[0] < 0.0)
