"""The derivative of soil freezing: the implicit (apparent-heat-capacity) tangent of Noah-MP's explicit step.

Noah-MP freezes a layer explicitly: after heat diffusion to ``T``, liquid water above the supercooled limit
``theta_sc(T)`` freezes down to that limit and its latent heat warms the layer,
``T' = T + (L rho_w / C) (theta_liq - theta_sc(T))`` with ``theta_liq' = theta_sc(T)``. The exact derivative of
this map, ``dT'/dT = 1 - k`` with ``k = L rho_w theta_sc'(T) / C``, is about -34 (and down to -600) near
273.16 K (Niu06 curve), so products of step Jacobians over a winter grow like ``k ** steps`` and the gradient
of any loss over a window with slow freezing is astronomically large and useless (docs/gradients.md).

In energy coordinates ``(C dT, L rho_w dtheta_liq)`` the exact step Jacobian has two modes: eigenvalue 1
along the equilibrium curve (``dtheta_liq = theta_sc' dT``) and eigenvalue ``-k`` at constant energy (the
step's overshoot of the equilibrium). The step that solves the energy/ice equilibrium implicitly,
``C (T' - T) = L rho_w (theta_liq - theta_sc(T'))``, has the same two eigenvectors with eigenvalues 1 and 0:
it conserves energy and lands on the equilibrium curve. :func:`implicit_freezing_tangent` keeps the exact
forward values and replaces the tangent of the freezing layers by that of the implicit step (slope taken at
the diffusion temperature ``T``, where the exact step evaluates the curve):

    dT'   = (dT'_exact + k dT) / (1 + k)
    dtheta_liq' = dtheta_liq'_exact + theta_sc'(T) (dT' - dT)

which is the exact tangent with the unstable mode ``-k`` replaced by 0. Parameter tangents of the curve
(``smcmax``, ``psisat``, ``bexp``) shift the equilibrium and the energy conservation splits them between
temperature and ice, as in the implicit step. Elsewhere (melting, warming below freezing, frozen layers held
at the limit, layers without ice) the tangent is exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


@jax.custom_jvp
def implicit_freezing_tangent(
    t_in: jax.Array,
    t_out: jax.Array,
    sh2o_out: jax.Array,
    latent_out: jax.Array,
    slope: jax.Array,
    phase_factor: jax.Array,
    latent_factor: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Identity on ``(t_out, sh2o_out, latent_out)``; its JVP maps the exact tangent to the implicit one.

    Parameters
    ----------
    t_in : (..., N) layer temperature entering the phase change (after diffusion), K.
    t_out, sh2o_out : (..., N) temperature (K) and liquid moisture (m3 m-3) after the exact phase change.
    latent_out : (...,) energy used by the phase change of the column, W m-2 (tangent kept consistent).
    slope : (..., N) ``theta_sc'(t_in)``, m3 m-3 K-1, in layers that freeze to the supercooled limit; 0 in the
        others (their tangent stays exact).
    phase_factor : (..., N) ``dt / (C dz)``, K m2 W-1.
    latent_factor : (..., N) ``L rho_w dz / dt``, W m-2 per m3 m-3.

    ``slope``, ``phase_factor`` and ``latent_factor`` are coefficients of the tangent map: the outputs do not
    depend on them, and their own tangents do not enter.
    """
    return t_out, sh2o_out, latent_out


@implicit_freezing_tangent.defjvp
def _implicit_freezing_jvp(primals, tangents):
    t_in, t_out, sh2o_out, latent_out, slope, phase_factor, latent_factor = primals
    dt_in, dt_out, dsh2o_out, dlatent_out = tangents[:4]
    k = phase_factor * latent_factor * slope
    dt = (dt_out + k * dt_in) / (1.0 + k)
    shift = slope * (dt - dt_in)  # tangent of the liquid water moved onto the equilibrium curve
    dlatent = dlatent_out + jnp.sum(latent_factor * shift, axis=-1)
    return (t_out, sh2o_out, latent_out), (dt, dsh2o_out + shift, dlatent)


def supercooled_slope(supercooled, t: jax.Array, at_limit: jax.Array) -> jax.Array:
    """``theta_sc'(t)`` (m3 m-3 K-1) where ``at_limit``, else 0, without a tangent of its own.

    ``supercooled(t)`` is the supercooled liquid limit (m3 m-3) as a function of temperature alone (the other
    arguments bound); the slope is its forward-mode derivative, so any curve works (Niu06, Koren99).
    """
    _, slope = jax.jvp(supercooled, (t,), (jnp.ones_like(t),))
    return lax.stop_gradient(jnp.where(at_limit, jnp.maximum(slope, 0.0), 0.0))
