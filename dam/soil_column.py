"""Run a soil-column case folder: free run or per-step replay, comparison with the reference, outputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from dam import physics
from dam.cases import Case, output_columns
from dam.io_safety import save_figure, write_netcdf
from dam.io_safety import write_csv as _write_csv_atomic
from dam.physics import SoilFluxes, SoilGrid, SoilState
from dam.physics.guards import raise_located
from dam.precision import resolve_dtype
from dam.sharding import pad_axis

#: Per-variable tolerances of the Fortran match (per-step replay), in the reference's units.
TOLERANCES = {
    "t": 1e-6,
    "smc": 1e-9,
    "sh2o": 1e-9,
    "runoff_surface_mm": 1e-6,
    "runoff_subsurface_mm": 1e-6,
    "drainage_mmps": 1e-9,
    "infil_mps": 1e-9,
    "nsub": 0,
    "tdiff": 1e-6,
}


@eqx.filter_jit
def _run_block(state, forcing, params, grid, options):
    return physics.run(state, forcing, params, grid, options)


@eqx.filter_jit
def _replay(states, forcing, params, grid, options):
    return physics.replay(states, forcing, params, grid, options)


def run_case(
    case: Case, dtype: str = "float64", replay: bool = False, block: int = 2048, progress: bool = True
) -> pd.DataFrame:
    """Simulate a case and return its trajectory in the reference ``output.csv`` layout.

    Parameters
    ----------
    dtype : 'float64' or 'float32'.
    replay : start every step from the reference state of the row before it (needs ``output.csv``).
    block : steps per compiled block of the free run (the progress bar advances per block).
    """
    dt = resolve_dtype(dtype)
    params, state0, forcing = case.as_dtype(dt)
    if replay:
        before = jax.tree_util.tree_map(lambda x: jnp.asarray(x[:-1], dt), case.reference_states())
        states, fluxes = _replay(before, forcing, params, case.grid, case.options)
        # Row 0 of the table is the reference initial state.
        state0 = jax.tree_util.tree_map(lambda x: x[0], before)
    else:
        state, outs = state0, []
        bar = tqdm(total=case.n_steps, unit="step", desc=f"{case.name} ({dtype})", disable=not progress)
        for start in range(0, case.n_steps, block):
            # Every block has the same length (the last is padded and trimmed), so one compilation serves all.
            take = min(block, case.n_steps - start)
            frc = pad_axis(jax.tree_util.tree_map(lambda x, s=start: x[s : s + block], forcing), take, block)
            try:
                state, out = _run_block(state, frc, params, case.grid, case.options)
            except (RuntimeError, ValueError) as err:  # a plausibility guard: name the step and its time
                raise_located(err, start + 1, lambda k: f"time_s {float(case.time_s[min(k, case.n_steps) - 1]):g}")
                raise
            if take < block:  # the padded steps are discarded: continue from the last real state
                state = jax.tree_util.tree_map(lambda x, t=take: x[t - 1], out[0])
            outs.append(jax.tree_util.tree_map(lambda x, t=take: np.asarray(x[:t]), out))
            bar.update(take)
        bar.close()
        states, fluxes = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outs)
    return trajectory_table(state0, states, fluxes, case.options.dt_s)


def _groups(n_layers: int) -> dict[str, list[str]]:
    layers = range(1, n_layers + 1)
    return {
        "t": [f"t{k}_k" for k in layers],
        "tdiff": [f"tdiff{k}_k" for k in layers],
        "smc": [f"smc{k}" for k in layers],
        "sh2o": [f"sh2o{k}" for k in layers],
        **{c: [c] for c in ("runoff_surface_mm", "runoff_subsurface_mm", "drainage_mmps", "infil_mps", "nsub")},
    }


def max_differences(table: pd.DataFrame, reference: pd.DataFrame) -> dict[str, float]:
    """Max |model - reference| per variable group over all steps and layers (row 0 excluded)."""
    n = sum(c.startswith("smc") for c in table.columns)
    if list(table.columns) != output_columns(n) or len(table) != len(reference):
        raise ValueError("model and reference tables differ in columns or length")
    return {
        name: float(np.max(np.abs(table[cols].to_numpy()[1:] - reference[cols].to_numpy()[1:])))
        for name, cols in _groups(n).items()
    }


OUTPUT_SUFFIXES = (".csv", ".nc")


def write_output(table: pd.DataFrame, path: str | Path, case: Case, attrs: dict | None = None) -> None:
    """Write the trajectory as CSV (reference layout) or, for ``.nc``, CF netCDF (atomically)."""
    path = Path(path)
    if path.suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output must end in .csv or .nc, got {path.name!r}")
    if path.suffix == ".nc":
        options = {f"option_{f.name}": getattr(case.options, f.name) for f in dataclasses.fields(case.options)}
        meta = {
            "title": f"dam soil column: {case.name}",
            "source": "dam JAX port of the Noah-MP v5.2 soil heat and water physics",
            **options,
        }
        write_netcdf(trajectory_dataset(table, case.grid, {**meta, **(attrs or {})}, start=case.start), path)
    else:
        write_csv(table, path)


def plot_comparison(table: pd.DataFrame, reference: pd.DataFrame | None, path: str | Path, title: str = "") -> None:
    """PNG of layer temperature and liquid/total moisture, model against the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = sum(c.startswith("smc") for c in table.columns)
    days = table["time_s"].to_numpy() / 86400.0
    panels = (("t{}_k", "temperature (K)"), ("smc{}", "total moisture (m3/m3)"), ("sh2o{}", "liquid moisture (m3/m3)"))
    fig, axes = plt.subplots(len(panels) + (reference is not None), 1, figsize=(11, 11), sharex=True)
    colours = plt.cm.viridis(np.linspace(0, 0.85, n))
    for ax, (stem, label) in zip(axes, panels, strict=False):
        for k in range(1, n + 1):
            col = stem.format(k)
            if reference is not None:
                ax.plot(days, reference[col], color=colours[k - 1], lw=3, alpha=0.35)
            ax.plot(days, table[col], color=colours[k - 1], lw=0.8, label=f"layer {k}")
        ax.set_ylabel(label)
    if reference is not None:  # how far the model is from the reference, per variable (log scale)
        ax = axes[-1]
        for (stem, label), style in zip(panels, ("-", "--", ":"), strict=True):
            cols = [stem.format(k) for k in range(1, n + 1)]
            diff = np.max(np.abs(table[cols].to_numpy() - reference[cols].to_numpy()), axis=1)
            ax.semilogy(days, np.maximum(diff, 1e-18), style, lw=0.8, label=f"max |d| {label}")
        ax.set_ylabel("|dam - reference|")
        ax.legend(fontsize=8, loc="upper left")
    axes[0].legend(ncol=n, fontsize=8, loc="upper left")
    axes[-1].set_xlabel("days since start")
    axes[0].set_title(title or "dam (thin) vs Fortran Noah-MP (thick, translucent)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ trajectory outputs
def trajectory_table(state0: SoilState, states: SoilState, fluxes: SoilFluxes, dt_s: float) -> pd.DataFrame:
    """Model output in the reference ``output.csv`` layout (row 0 the initial state)."""
    t = np.concatenate([np.asarray(state0.t)[None], np.asarray(states.t)])
    smc = np.concatenate([np.asarray(state0.smc)[None], np.asarray(states.smc)])
    sh2o = np.concatenate([np.asarray(state0.sh2o)[None], np.asarray(states.sh2o)])
    tdiff = np.concatenate([np.asarray(state0.t)[None], np.asarray(fluxes.t_diff)])
    n_rows, n = t.shape
    zero_first = lambda x: np.concatenate([[0.0], np.asarray(x, dtype=np.float64)])  # noqa: E731
    data = {"step": np.arange(n_rows), "time_s": np.arange(n_rows) * float(dt_s)}
    for k in range(n):
        data[f"t{k + 1}_k"] = t[:, k]
    for k in range(n):
        data[f"smc{k + 1}"] = smc[:, k]
    for k in range(n):
        data[f"sh2o{k + 1}"] = sh2o[:, k]
    data["runoff_surface_mm"] = zero_first(fluxes.runoff_surface_mm)
    data["runoff_subsurface_mm"] = zero_first(fluxes.runoff_subsurface_mm)
    data["drainage_mmps"] = zero_first(fluxes.drainage_mmps)
    data["infil_mps"] = zero_first(fluxes.infil_mps)
    data["nsub"] = np.concatenate([[0], np.asarray(fluxes.nsub)]).astype(np.int64)
    for k in range(n):
        data[f"tdiff{k + 1}_k"] = tdiff[:, k]
    return pd.DataFrame(data, columns=output_columns(n))


def write_csv(table: pd.DataFrame, path: str | Path) -> None:
    """Write a trajectory table with every float as the shortest decimal that round-trips."""
    floats = [c for c in table.columns if c not in ("step", "nsub")]
    out = table.astype({c: object for c in floats})
    for c in floats:
        out[c] = [repr(float(v)) for v in table[c].to_numpy(dtype=np.float64)]
    _write_csv_atomic(out, path)


_NC_VARS = {  # output column stem -> (netCDF name, attributes)
    "t": ("soil_temperature", {"standard_name": "soil_temperature", "units": "K"}),
    "smc": ("soil_moisture", {"long_name": "total (liquid + ice) volumetric soil moisture", "units": "m3 m-3"}),
    "sh2o": ("soil_liquid_water", {"long_name": "liquid volumetric soil moisture", "units": "m3 m-3"}),
    "tdiff": (
        "soil_temperature_before_phase_change",
        {"long_name": "soil temperature after heat diffusion, before phase change", "units": "K"},
    ),
}
_NC_SERIES = {  # per-step series: output column -> (netCDF name, attributes)
    "runoff_surface_mm": (
        "surface_runoff_amount",
        {"standard_name": "surface_runoff_amount", "units": "kg m-2",
         "long_name": "surface runoff during the step (mm per step)"},
    ),
    "runoff_subsurface_mm": (
        "subsurface_runoff_amount",
        {"standard_name": "subsurface_runoff_amount", "units": "kg m-2",
         "long_name": "subsurface runoff during the step (mm per step)"},
    ),
    "drainage_mmps": ("drainage_flux", {"units": "kg m-2 s-1", "long_name": "free drainage out of the column bottom"}),
    "infil_mps": ("infiltration_rate", {"units": "m s-1", "long_name": "infiltration rate of the last water sub-step"}),
    "nsub": ("n_substeps", {"long_name": "number of water sub-steps"}),
}  # fmt: skip


def trajectory_dataset(
    table: pd.DataFrame, grid: SoilGrid, attrs: dict | None = None, start: np.datetime64 | None = None
) -> xr.Dataset:
    """The trajectory table as a CF ``xarray.Dataset`` with dimensions (time, layer).

    With ``start`` (UTC) the time coordinate holds the dates of the step ends (CF ``seconds since start``);
    without it, the seconds since the start of the run.
    """
    n = grid.n_layers
    z = np.asarray(grid.zsoil)
    ztop = np.concatenate([[0.0], z[:-1]])
    seconds = table["time_s"].to_numpy()
    if start is None:
        time = (seconds, {"units": "s", "long_name": "end of the step, seconds since the start of the run"})
    else:
        time = (start + (seconds * 1e9).astype("timedelta64[ns]"), {"long_name": "end of the step (UTC)"})
    coords = {
        "time": ("time", time[0], {"standard_name": "time", "axis": "T", **time[1]}),
        "layer": ("layer", np.arange(1, n + 1), {"long_name": "soil layer, 1 = top"}),
        "depth": (
            "layer",
            -(ztop + z) / 2,
            {"standard_name": "depth", "units": "m", "positive": "down", "long_name": "depth of the layer mid-point"},
        ),
        "layer_bottom": ("layer", -z, {"units": "m", "positive": "down", "long_name": "depth of the layer bottom"}),
    }
    data = {}
    for stem, (name, a) in _NC_VARS.items():
        suffix = "_k" if stem in ("t", "tdiff") else ""
        cols = [f"{stem}{k}{suffix}" for k in range(1, n + 1)]
        data[name] = (("time", "layer"), table[cols].to_numpy(), a)
    for column, (name, a) in _NC_SERIES.items():
        data[name] = ("time", table[column].to_numpy(), a)
    ds = xr.Dataset(data, coords=coords, attrs={"Conventions": "CF-1.10", **(attrs or {})})
    if start is not None:
        ds["time"].encoding = {"units": f"seconds since {pd.Timestamp(start):%Y-%m-%d %H:%M:%S}", "dtype": "float64"}
    return ds
