"""Reverse-mode gradients of the soil column (``dam.physics.run``) against finite differences, float64.

1. ``jax.grad`` of a scalar of a 30-day trajectory (1,450 steps of 1800 s) with respect to every field of
   :class:`SoilParams`, the initial state and the forcing agrees with central finite differences to relative
   1e-4, along random directions. Two windows: Bondville from 1 June (no ice, 189 mm of rain) and a
   well-conditioned ice window (Bondville January rain and a damped ground heat flux on a column frozen
   throughout, every layer at least 4 K below freezing), where the freezing parameters (``frzk``,
   ``smcref``, ``psisat``) and the frozen-ground forcing matter. Every field is shown to matter (non-zero
   directional derivative) in at least one window; the 0/1 ``frozen_ground`` flag has a zero gradient.
2. Edge states (saturated layers, a layer below the 0.01 hydraulic saturation floor, a fully frozen layer,
   T = 273.16 K exactly with and without ice): every gradient leaf is finite, and the physically required
   sensitivities are non-zero (with their sign where it is known).
3. The checkpointed scan (``checkpoint_every``) gives the same gradient as the plain scan (1e-12 relative):
   48 steps, which leaves a 10-step tail segment (1450 = 30 x 48 + 10), and (``slow``) 50, which divides T.
4. The custom-VJP tridiagonal solver matches finite differences and autodiff through a dense solve.

Cost is compile time (2 cores): one batched gradient and one batched forward serve groups 1 and 2 (every
base and edge column is a column of the same batch; every finite-difference evaluation a column of one
forward batch), and one more gradient compile per checkpoint segment length (about 90 s in all).

Finite differences: the perturbation of a leaf is ``eps * x * r`` (relative to the value ``x``; ``r`` random),
so zero entries stay zero (no straddling of the ``q > 0`` or ice = 0 kinks). Central differences are taken at
eps in ``EPS_LADDER`` and the best one is compared with the gradient: too large an eps meets the kinks of
Noah-MP's max/min branches, too small one the round-off of a 1,450-step trajectory (~1e-12 in the loss),
and the best eps differs per direction. The tolerance is 1e-4 at that eps. Ice-free layers sit exactly on
the kink smc = sh2o, so in the ice-free window the moisture directions move smc and sh2o together
(liquid water); smc and sh2o are perturbed separately only where every layer holds ice.

These checks are of the exact derivative of the discrete model (``phase_change_gradient="exact"``; the
default derivative of freezing is checked in tests/test_freezing_gradient.py). Windows in which a layer with
ice lingers near 273.16 K are not usable for them: the explicit phase change with Niu06's steep
supercooled-water curve gives a step Jacobian dT/dT of about -34 there (the forward model oscillates with
period 2), products of step Jacobians reach 1e17-1e21 over 30-day windows of Bondville's January and
1e35-1e139 over koren_freeze, and the loss is then not differentiable at any usable scale. The AD and
finite-difference step Jacobians agree there; the ill-conditioning is the model's, not the gradient's, and
the reason for the default derivative (docs/gradients.md).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dam.cases import read_case
from dam.physics import SoilForcing, SoilParams, SoilState, run, tridiagonal_solve

TFRZ = 273.16
T_STEPS = 1450  # 30.2 days of 1800 s; not a multiple of the checkpoint segment 48
SUMMER_START = 7200  # Bondville 1998-06-01: no ice, 189 mm of rain over the window
RTOL = 1e-4
EPS_LADDER = (1e-4, 1e-5, 1e-6, 1e-7)
ZERO = 1e-10  # |directional derivative| below this counts as zero (loss ~100, directions relative)
# Loss = sum_k w_k c_k with c = (final mean T - TFRZ, trajectory mean T - TFRZ, final mean smc,
# trajectory mean smc, total runoff in mm; then, with weight 0, diagnostics of the window: max and min of
# T - TFRZ and min of ice over the trajectory); weights bring the terms to similar magnitudes.
WEIGHTS = np.array([1.0, 1.0, 100.0, 100.0, 0.1, 0.0, 0.0, 0.0])
ONLY_FINAL_T = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
ONLY_FINAL_SMC = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
MAX_T, MIN_T, MIN_ICE = 5, 6, 7

PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(SoilParams))
STATE_FIELDS = ("t", "smc", "sh2o")
FORCING_FIELDS = tuple(f.name for f in dataclasses.fields(SoilForcing))
GROUPS = ("params", "state", "forcing")


# --------------------------------------------------------------------------------------------------------
# Loss and its compiled gradient / forward (batched: every column carries its own params, state, forcing)


def _observe(state, fluxes):
    return state.t, state.smc, state.sh2o, fluxes.runoff_surface_mm + fluxes.runoff_subsurface_mm


def _components(params, state0, forcing, grid, options, checkpoint_every=None):
    """(B, 8) terms of the loss of each column (columns are independent)."""
    final, (t, smc, sh2o, runoff) = run(
        state0, forcing, params, grid, options, observe=_observe, checkpoint_every=checkpoint_every
    )
    return jnp.stack(
        [
            jnp.mean(final.t - TFRZ, axis=-1),
            jnp.mean(t - TFRZ, axis=(0, -1)),
            jnp.mean(final.smc, axis=-1),
            jnp.mean(smc, axis=(0, -1)),
            jnp.sum(runoff, axis=0),
            jnp.max(t - TFRZ, axis=(0, -1)),
            jnp.min(t - TFRZ, axis=(0, -1)),
            jnp.min(smc - sh2o, axis=(0, -1)),
        ],
        axis=-1,
    )


column_components = jax.jit(_components, static_argnames="checkpoint_every")


@partial(jax.jit, static_argnames="checkpoint_every")
def column_gradients(params, state0, forcing, weights, grid, options, checkpoint_every=None):
    """Gradient of the summed loss: entry b of every leaf is the gradient of column b's own loss."""

    def total(p, s, f):
        return jnp.sum(_components(p, s, f, grid, options, checkpoint_every) * weights)

    return jax.grad(total, argnums=(0, 1, 2))(params, state0, forcing)


# --------------------------------------------------------------------------------------------------------
# Columns (one column: NumPy float64 params (N,)/(), state (N,), forcing (T,)/(T, N), weights (8,))


@dataclasses.dataclass(frozen=True)
class Column:
    params: SoilParams
    state: SoilState
    forcing: SoilForcing
    weights: np.ndarray = dataclasses.field(default_factory=lambda: WEIGHTS)

    def tree(self, group: str):
        return {"params": self.params, "state": self.state, "forcing": self.forcing}[group]

    def replace(self, group: str, **fields) -> Column:
        return dataclasses.replace(self, **{group: _replace(self.tree(group), fields)})


def _replace(module, fields: dict):
    names = list(fields)
    return eqx.tree_at(lambda m: [getattr(m, n) for n in names], module, [np.asarray(fields[n]) for n in names])


def _np_tree(tree):
    return jax.tree_util.tree_map(lambda x: np.array(x, dtype=np.float64), tree)


def stack(columns: list[Column]):
    """Columns -> batched JAX arrays (params (B, ...), state (B, N), forcing (T, B, ...), weights (B, 8))."""

    def cat(axis):
        return lambda *xs: jnp.asarray(np.stack(xs, axis=axis))

    params = jax.tree_util.tree_map(cat(0), *[c.params for c in columns])
    state = jax.tree_util.tree_map(cat(0), *[c.state for c in columns])
    forcing = jax.tree_util.tree_map(cat(1), *[c.forcing for c in columns])
    weights = jnp.asarray(np.stack([c.weights for c in columns]))
    return params, state, forcing, weights


def _column_slice(grads, b: int) -> dict:
    """Column b of batched gradients, as {(group, field): array}."""
    out = {}
    for group, tree in zip(GROUPS, grads, strict=True):
        axis = 1 if group == "forcing" else 0
        for f in dataclasses.fields(tree):
            out[(group, f.name)] = np.take(np.asarray(getattr(tree, f.name)), b, axis=axis)
    return out


def _supercooled_niu06(t, params: SoilParams, k: int) -> float:
    psi = 0.3336e6 * (TFRZ - t) / (9.80616 * t)
    return float(params.smcmax[k] * (psi / params.psisat[k]) ** (-1.0 / params.bexp[k]))


# --------------------------------------------------------------------------------------------------------
# Windows and edge states


@pytest.fixture(scope="module")
def case(reference_dir):
    case = read_case(reference_dir / "bondville")
    return dataclasses.replace(case, options=dataclasses.replace(case.options, phase_change_gradient="exact"))


def _summer(case) -> Column:
    ref = case.reference_states()
    state = SoilState(*(np.array(getattr(ref, n)[SUMMER_START]) for n in STATE_FIELDS))
    forcing = jax.tree_util.tree_map(lambda x: np.array(x[SUMMER_START : SUMMER_START + T_STEPS]), case.forcing)
    return Column(_np_tree(case.params), state, forcing)


def _ice(case) -> Column:
    """Column frozen throughout (ice in every layer, T 260-268 K, TBOT 268 K) under Bondville's
    January rain (44 mm, 470 wet steps) on frozen ground and a damped ground heat flux (0.3 G - 3 W m-2),
    so that no layer comes near 273.16 K (well-conditioned; see the module docstring). The initial liquid
    water lies 0.005 above the supercooled limit (about 0.2), so the freezing branch of the phase change runs
    (warming the layers by about 1 K)."""
    forcing = jax.tree_util.tree_map(lambda x: np.array(x[:T_STEPS]), case.forcing)
    forcing = _replace(forcing, {"ghf_wm2": 0.3 * forcing.ghf_wm2 - 3.0, "frozen_ground": np.ones(T_STEPS)})
    params = _replace(_np_tree(case.params), {"tbot": np.float64(268.0)})
    t = np.array([263.0, 264.0, 266.0, 268.0])
    sh2o = np.array([_supercooled_niu06(t[k], params, k) for k in range(4)]) + 0.005
    state = SoilState(t=t, smc=np.array([0.40, 0.39, 0.38, 0.37]), sh2o=sh2o)
    return Column(params, state, forcing)


def _edge_columns(summer: Column, ice: Column) -> dict[str, Column]:
    p = summer.params
    smcmax = np.asarray(p.smcmax)
    s = summer.state
    edges = {}
    # Every layer saturated (smc = sh2o = smcmax): bucket overflow ties, zero infiltration deficit
    # (the Schaake px / (px + dx) fallback), maximal free drainage.
    edges["saturated_column"] = summer.replace("state", smc=smcmax.copy(), sh2o=smcmax.copy())
    sat2_smc, sat2_sh2o = s.smc.copy(), s.sh2o.copy()
    sat2_smc[1] = sat2_sh2o[1] = smcmax[1]
    edges["saturated_layer"] = summer.replace("state", smc=sat2_smc, sh2o=sat2_sh2o)
    # Top layer below the 0.01 floor of theta/theta_s (0.002 / 0.464 = 0.0043) under summer evaporation:
    # the hydraulic floor and the negative-water refill act.
    dry_smc, dry_sh2o = s.smc.copy(), s.sh2o.copy()
    dry_smc[0] = dry_sh2o[0] = 0.002
    edges["dry_layer"] = summer.replace("state", smc=dry_smc, sh2o=dry_sh2o)
    # Top layer fully frozen: 255 K, liquid water at the Niu06 supercooled limit, smc close to porosity.
    fz_t, fz_smc, fz_sh2o = ice.state.t.copy(), ice.state.smc.copy(), ice.state.sh2o.copy()
    fz_t[0], fz_smc[0] = 255.0, 0.45
    fz_sh2o[0] = _supercooled_niu06(255.0, ice.params, 0)
    edges["frozen_layer"] = ice.replace("state", t=fz_t, smc=fz_smc, sh2o=fz_sh2o)
    # T = 273.16 exactly in layer 1 (with ice) and layer 2 (without), under summer forcing.
    edges["freezing_point"] = summer.replace(
        "state",
        t=np.array([TFRZ, TFRZ, 285.0, 288.0]),
        smc=np.array([0.40, 0.30, 0.33, 0.35]),
        sh2o=np.array([0.25, 0.30, 0.33, 0.35]),
    )
    # Stationary at the freezing point: uniform 273.16 K, TBOT 273.16 K, no ground heat flux, so every step's
    # phase change sees T == 273.16 exactly (layers 1-2 with ice, 3-4 without), while rain and evaporation
    # move the water.
    edges["freezing_point_stationary"] = dataclasses.replace(
        summer.replace(
            "state", t=np.full(4, TFRZ), smc=np.array([0.40, 0.38, 0.30, 0.30]), sh2o=np.array([0.25, 0.20, 0.30, 0.30])
        ),
        params=_replace(p, {"tbot": np.float64(TFRZ)}),
        forcing=_replace(summer.forcing, {"ghf_wm2": np.zeros(T_STEPS)}),
    )
    # Single-output losses for sign checks.
    edges["saturated_column_final_smc"] = dataclasses.replace(edges["saturated_column"], weights=ONLY_FINAL_SMC)
    edges["summer_final_t"] = dataclasses.replace(summer, weights=ONLY_FINAL_T)
    edges["frozen_layer_final_t"] = dataclasses.replace(edges["frozen_layer"], weights=ONLY_FINAL_T)
    return edges


@pytest.fixture(scope="module")
def batch(case):
    return build_batch(case)


def build_batch(case) -> dict:
    """All base and edge columns and their plain-scan gradients (one compile)."""
    summer, ice = _summer(case), _ice(case)
    columns = {"summer": summer, "ice": ice, **_edge_columns(summer, ice)}
    names = list(columns)
    args = stack([columns[n] for n in names])
    grads = jax.block_until_ready(column_gradients(*args, case.grid, case.options))
    return {
        "case": case,
        "columns": columns,
        "names": names,
        "args": args,
        "grads": grads,
        "by_name": {n: _column_slice(grads, i) for i, n in enumerate(names)},
    }


# --------------------------------------------------------------------------------------------------------
# 1. Directional derivatives against central finite differences


def _directions(col: Column, rng: np.random.Generator) -> list[tuple[str, dict]]:
    """(label, {(group, field): v}) with v relative to the value of the leaf."""
    dirs = []
    for field in PARAM_FIELDS:
        x = np.asarray(getattr(col.params, field))
        for j in range(1 if x.ndim == 0 else 2):
            r = np.float64(1.0) if x.ndim == 0 else rng.standard_normal(x.shape)
            dirs.append((f"params.{field}[{j}]", {("params", field): x * r}))
    st = col.state
    for j in range(2):
        dirs.append((f"state.t[{j}]", {("state", "t"): st.t * rng.standard_normal(4)}))
        if np.all(st.smc - st.sh2o > 0.05):  # every layer holds ice: smc and sh2o are independent
            dirs.append((f"state.smc[{j}]", {("state", "smc"): st.smc * rng.standard_normal(4)}))
            dirs.append((f"state.sh2o[{j}]", {("state", "sh2o"): st.sh2o * rng.standard_normal(4)}))
        else:  # ice-free layers sit on the smc = sh2o kink: move the liquid water (smc and sh2o together)
            v = st.sh2o * rng.standard_normal(4)
            dirs.append((f"state.smc+sh2o[{j}]", {("state", "smc"): v, ("state", "sh2o"): v}))
    for field in FORCING_FIELDS:
        if field == "frozen_ground":  # a 0/1 flag, only compared with 0: its gradient must be 0 (below)
            continue
        x = np.asarray(getattr(col.forcing, field))
        for j in range(2):
            dirs.append((f"forcing.{field}[{j}]", {("forcing", field): x * rng.standard_normal(x.shape)}))
    return dirs


def _perturbed(col: Column, direction: dict, h: float) -> Column:
    for group in GROUPS:
        fields = {f: np.asarray(getattr(col.tree(group), f)) + h * v for (g, f), v in direction.items() if g == group}
        if fields:
            col = col.replace(group, **fields)
    return col


@pytest.fixture(scope="module")
def fd_results(batch):
    return finite_difference_checks(batch, seed=20240611)


def finite_difference_checks(batch: dict, seed: int) -> list[dict]:
    """Every (window, direction): gradient . v and central differences at each eps of the ladder.

    One forward batch: the named columns themselves (for the window diagnostics), then the perturbations."""
    rng = np.random.default_rng(seed)
    names = batch["names"]
    rows, fd_columns = [], [batch["columns"][n] for n in names]
    for name in ("summer", "ice"):
        col = batch["columns"][name]
        g = batch["by_name"][name]
        for label, direction in _directions(col, rng):
            ad = float(sum(np.sum(g[key] * v) for key, v in direction.items()))
            rows.append((name, label, ad))
            for eps in EPS_LADDER:
                fd_columns += [_perturbed(col, direction, eps), _perturbed(col, direction, -eps)]
    case = batch["case"]
    params, state, forcing, weights = stack(fd_columns)
    comps = np.asarray(column_components(params, state, forcing, case.grid, case.options))
    batch["components"] = dict(zip(names, comps[: len(names)], strict=True))
    losses = np.sum(comps[len(names) :] * np.asarray(weights[len(names) :]), axis=-1)
    central = (losses[0::2] - losses[1::2]) / (2.0 * np.tile(EPS_LADDER, len(rows)))
    central = central.reshape(len(rows), len(EPS_LADDER))
    results = []
    for (name, label, ad), fd in zip(rows, central, strict=True):
        scale = np.maximum(np.abs(fd), abs(ad))
        err = np.where(scale < ZERO, 0.0, np.abs(fd - ad) / np.where(scale > 0, scale, 1.0))
        k = int(np.argmin(err))
        results.append(
            {
                "window": name,
                "label": label,
                "ad": ad,
                "fd": float(fd[k]),
                "eps": EPS_LADDER[k],
                "rel_err": float(err[k]),
                "rel_err_1e-6": float(err[EPS_LADDER.index(1e-6)]),
            }
        )
    return results


@pytest.mark.parametrize("group", GROUPS)
def test_gradient_matches_finite_differences(fd_results, group):
    rows = [r for r in fd_results if r["label"].startswith(group)]
    assert rows
    bad = [r for r in rows if not r["rel_err"] <= RTOL]
    for window in ("summer", "ice"):
        sel = [r for r in rows if r["window"] == window]
        worst = max(sel, key=lambda r: r["rel_err"])
        print(
            f"\n{group:8s} {window:7s} {len(sel):3d} directions, max rel err {worst['rel_err']:.1e} "
            f"({worst['label']}, eps {worst['eps']:.0e}); at eps 1e-6: "
            f"{max(r['rel_err_1e-6'] for r in sel):.1e}"
        )
    assert not bad, "gradient and finite differences disagree:\n" + "\n".join(map(str, bad))


def test_every_input_field_is_exercised(fd_results):
    """Each parameter field, state field and continuous forcing leaf has a clearly non-zero directional
    derivative in at least one window, so the agreement above is not 0 == 0."""
    nonzero = {r["label"].split("[")[0] for r in fd_results if abs(r["ad"]) > 1e-6}
    expected = {f"params.{f}" for f in PARAM_FIELDS}
    expected |= {"state.t", "state.smc", "state.sh2o", "state.smc+sh2o"}
    expected |= {f"forcing.{f}" for f in FORCING_FIELDS if f != "frozen_ground"}
    assert expected <= nonzero, f"zero sensitivity in every window: {sorted(expected - nonzero)}"


def test_frozen_ground_flag_has_zero_gradient(batch):
    for name in batch["names"]:
        g = batch["by_name"][name][("forcing", "frozen_ground")]
        assert np.all(g == 0.0), name


# --------------------------------------------------------------------------------------------------------
# 2. Edge states

EDGE_STATES = (
    "saturated_column",
    "saturated_layer",
    "dry_layer",
    "frozen_layer",
    "freezing_point",
    "freezing_point_stationary",
)


@pytest.mark.parametrize("name", EDGE_STATES)
def test_edge_state_gradients_finite_and_nonzero(batch, name):
    g = batch["by_name"][name]
    col = batch["columns"][name]
    for key, value in g.items():
        assert np.all(np.isfinite(value)), f"{name}: non-finite gradient for {key}"
    # The initial temperature of every layer, the forcing heat flux and the water input always matter.
    assert np.all(g[("state", "t")] != 0.0), name
    assert np.any(g[("forcing", "ghf_wm2")] != 0.0), name
    assert np.any(g[("forcing", "qinsurf_mps")] != 0.0), name
    # Hydraulic and thermal parameters matter (water moves, heat is stored).
    fields = ["dksat", "dwsat", "bexp", "smcmax"]
    if name != "freezing_point_stationary":  # no heat flows there: heat capacity and conductivity are moot
        fields += ["csoil", "quartz"]
    for field in fields:
        assert np.any(g[("params", field)] != 0.0), f"{name}: zero gradient w.r.t. {field}"
    liquid = g[("state", "smc")] + g[("state", "sh2o")]
    assert np.all(np.isfinite(liquid)) and np.any(liquid != 0.0), name
    if name == "dry_layer":  # the layer really is below the hydraulic floor
        assert col.state.sh2o[0] / col.params.smcmax[0] < 0.01


def test_edge_state_sensitivities_have_physical_signs(batch):
    g = batch["by_name"]
    # Free drainage of a saturated column: more conductivity or a steeper drainage slope leaves less water.
    sat = g["saturated_column_final_smc"]
    assert np.sum(sat[("params", "dksat")] * batch["columns"]["saturated_column"].params.dksat) < 0.0
    assert sat[("params", "slope")] < 0.0
    # Heat conduction is monotone: a warmer initial layer gives a warmer final column (no phase change in
    # summer; below freezing the layer stays frozen).
    assert np.all(g["summer_final_t"][("state", "t")] > 0.0)
    assert np.all(g["frozen_layer_final_t"][("state", "t")] > 0.0)
    assert g["summer_final_t"][("params", "tbot")] > 0.0


def test_windows_are_as_designed(batch, fd_results):
    """The windows exercise what they are meant to (trajectory diagnostics from the forward batch)."""
    comps = batch["components"]
    # Ice window: every layer holds ice and stays >= 4 K below freezing for all 1,450 steps.
    assert comps["ice"][MIN_ICE] > 0.1 and comps["ice"][MAX_T] < -4.0
    # Summer window: no ice, no freezing.
    assert comps["summer"][MIN_ICE] == 0.0 and comps["summer"][MIN_T] > 5.0
    # Stationary column: T == 273.16 exactly at every step, so every phase change sees T == TFRZ.
    assert comps["freezing_point_stationary"][MAX_T] == 0.0 == comps["freezing_point_stationary"][MIN_T]


# --------------------------------------------------------------------------------------------------------
# 3. Checkpointed scan


@pytest.mark.parametrize(
    "checkpoint_every",
    [1, 48, pytest.param(50, marks=pytest.mark.slow)],  # per step (keeps the sub-step carries); 1450 = 30 x 48 + 10
    # (a tail segment); 1450 = 29 x 50
)
def test_checkpointed_gradient_equals_plain(batch, checkpoint_every):
    case = batch["case"]
    grads = column_gradients(*batch["args"], case.grid, case.options, checkpoint_every=checkpoint_every)
    for ref_tree, ck_tree in zip(batch["grads"], grads, strict=True):
        for f in dataclasses.fields(ref_tree):
            ref = np.asarray(getattr(ref_tree, f.name))
            ck = np.asarray(getattr(ck_tree, f.name))
            scale = np.max(np.abs(ref))
            assert np.max(np.abs(ck - ref)) <= 1e-12 * scale, f"{f.name}: checkpoint_every={checkpoint_every}"


# --------------------------------------------------------------------------------------------------------
# 4. Tridiagonal solver


def _random_systems(rng, shape, n):
    a = rng.uniform(-1.0, 1.0, (*shape, n))
    c = rng.uniform(-1.0, 1.0, (*shape, n))
    b = (np.abs(a) + np.abs(c) + rng.uniform(0.5, 2.0, (*shape, n))) * rng.choice([-1.0, 1.0], (*shape, n))
    d = rng.normal(size=(*shape, n))
    return tuple(jnp.asarray(x) for x in (a, b, c, d))


def _dense_solve(a, b, c, d):
    n = d.shape[-1]
    m = (
        b[..., :, None] * jnp.eye(n)
        + a[..., :, None] * jnp.eye(n, k=-1)  # row k, column k-1: a_k (a_0 unused)
        + c[..., :, None] * jnp.eye(n, k=1)  # row k, column k+1: c_k (c_{N-1} unused)
    )
    return jnp.linalg.solve(m, d[..., None])[..., 0]


@pytest.mark.parametrize("shape,n", [((), 2), ((3,), 4), ((2, 5), 7)])
def test_tridiagonal_solve_and_vjp_match_dense_autodiff(shape, n):
    rng = np.random.default_rng(n)
    args = _random_systems(rng, shape, n)
    w = jnp.asarray(rng.normal(size=(*shape, n)))

    def loss(solve):
        return lambda *abcd: jnp.sum(w * solve(*abcd) ** 2)

    @jax.jit
    def both(*abcd):
        grad = partial(jax.grad, argnums=(0, 1, 2, 3))
        return (
            tridiagonal_solve(*abcd),
            _dense_solve(*abcd),
            grad(loss(tridiagonal_solve))(*abcd),
            grad(loss(_dense_solve))(*abcd),
        )

    x, x_ref, g, g_ref = both(*args)
    np.testing.assert_allclose(x, x_ref, rtol=1e-12, atol=1e-12)
    for name, gi, ri in zip("abcd", g, g_ref, strict=True):
        assert np.all(np.isfinite(gi))
        np.testing.assert_allclose(gi, ri, rtol=1e-10, atol=1e-12 * float(jnp.max(jnp.abs(ri))), err_msg=name)
    # The unused corners get no gradient.
    assert np.all(np.asarray(g[0])[..., 0] == 0.0) and np.all(np.asarray(g[2])[..., -1] == 0.0)


def test_tridiagonal_vjp_matches_finite_differences():
    rng = np.random.default_rng(7)
    args = _random_systems(rng, (4, 3), 4)
    w = jnp.asarray(rng.normal(size=(4, 3, 4)))

    @jax.jit
    def loss(*abcd):
        return jnp.sum(w * jnp.sin(tridiagonal_solve(*abcd)))

    g = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*args)
    eps = 1e-6
    for _ in range(3):
        vs = [jnp.asarray(rng.normal(size=x.shape)) * x for x in args]
        ad = sum(float(jnp.sum(gi * v)) for gi, v in zip(g, vs, strict=True))
        plus = loss(*(x + eps * v for x, v in zip(args, vs, strict=True)))
        minus = loss(*(x - eps * v for x, v in zip(args, vs, strict=True)))
        fd = float(plus - minus) / (2 * eps)
        assert abs(ad - fd) <= 1e-7 * abs(fd), (ad, fd)


def test_tridiagonal_vjp_under_vmap_matches_batched_call():
    """The custom VJP is batch-native; vmap over it gives the same gradient as the batched call."""
    rng = np.random.default_rng(11)
    args = _random_systems(rng, (6,), 4)

    def loss(*abcd):
        return jnp.sum(tridiagonal_solve(*abcd) ** 3)

    grad = partial(jax.grad, argnums=(0, 1, 2, 3))
    g_batched, g_vmapped = jax.jit(lambda *abcd: (grad(loss)(*abcd), jax.vmap(grad(loss))(*abcd)))(*args)
    for gb, gv in zip(g_batched, g_vmapped, strict=True):
        np.testing.assert_allclose(gb, gv, rtol=1e-13, atol=0.0)


def test_phase_change_tangent_at_exactly_freezing_is_the_warm_side(reference_dir):
    """A layer with ice exactly at 273.16 K: Noah-MP changes nothing, and the derivative is the warm (melt)
    side's: warming melts ice (d sh2o / dT > 0) while the temperature stays at freezing (dT_out/dT_in = 0),
    instead of a tangent that loses the energy. Checked against a one-sided finite difference."""
    from dam.physics import soil_step

    case = read_case(reference_dir / "bondville")
    params, _, forcing = case.as_dtype(jnp.float64)
    params = dataclasses.replace(params, tbot=jnp.asarray(TFRZ))
    state = SoilState(
        t=jnp.full(4, TFRZ), smc=jnp.array([0.40, 0.38, 0.30, 0.30]), sh2o=jnp.array([0.25, 0.20, 0.30, 0.30])
    )
    zero = jax.tree_util.tree_map(lambda x: jnp.zeros_like(x[0]), forcing)

    def out(t):
        new, _ = soil_step(SoilState(t, state.smc, state.sh2o), zero, params, case.grid, case.options)
        return jnp.concatenate([new.t, new.sh2o])

    jac = jax.jacrev(out)(state.t)
    assert jnp.all(jnp.isfinite(jac))
    eps = 1e-7
    warm = (out(state.t.at[0].add(eps)) - out(state.t)) / eps
    assert float(jac[4, 0]) > 0  # d sh2o_1 / d T_1: melting
    # T_1, sh2o_1, sh2o_2 (the layers deeper down move by less than the round-off of a one-sided FD of T)
    rows = [0, 4, 5]
    np.testing.assert_allclose(np.asarray(jac[rows, 0]), np.asarray(warm[jnp.array(rows)]), rtol=1e-4, atol=1e-9)
