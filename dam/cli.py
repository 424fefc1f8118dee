"""The ``dam`` command line.

dam demo [--output-dir DIR]                      run the shipped Bondville case and compare with Fortran
dam soil-column CASE --output OUT.csv|OUT.nc [--dtype float64|float32] [--replay]   CASE: folder or shipped name
dam make-grid DIR [--lat --lon --steps --seed]   synthetic gridded inputs and a grid_run.yaml
dam grid-run CONFIG.yaml [--local-processes N | --coordinator HOST:PORT --num-processes N --process-id K]
                                                 sharded, checkpointed, resumable grid run (one process, N
                                                 pinned to their own cores here, or one of N)
dam run-station SITE --output OUT.nc [--start --end --spinup N --gaps --dtype]   physics-only run at a site
dam experiment [CONFIG.yaml|quick|full]          the hybrid-modelling experiment (resumable run folder)
dam convert-site SOURCE --metadata META.yaml --output SITE_DIR   a flux-tower file + metadata -> a site folder
dam convert-shared [NAME ...] [--output-dir DIR]                 all shared sites (shipped metadata) in one go
dam sites [DIR ...] [--json]                                     the shipped and converted sites, what each holds
dam predict RUN SITE ... [--model --start --end --finetune N --output DIR]   a finished multi-site run at other sites

Every user error (a bad file, key, value or path) is one line ``dam: error: ...`` on stderr with exit code 2;
nothing is written before the checks pass, and no output replaces an input or, without ``--overwrite``, an
existing file (docs/safety.md). Compiled programs are kept on disk for the next run (dam.compile_cache;
``DAM_COMPILE_CACHE=off`` turns that off). Each subcommand is one ``_name(args)`` function plus one parser block in
:func:`build_parser`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

from dam.cli_grid import add_grid_run as _add_grid_run
from dam.cli_types import UserError
from dam.cli_types import count as _count
from dam.cli_types import one_line as _one_line
from dam.cli_types import path as _path


def _setup_numerics(dtype: str) -> None:
    from dam.precision import setup_numerics

    setup_numerics(dtype)


#: Most spin-up passes a run takes: each pass is a year of model time, so a typo (10000) would run for days.
MAX_SPINUP = 100


def _case_inputs(case_dir: Path) -> list[Path]:
    """A case's input files, including the names that would shadow a gzipped one (forcing.csv beside
    forcing.csv.gz would become the case's forcing)."""
    return [case_dir / n for n in ("params.json", "forcing.csv", "forcing.csv.gz", "output.csv", "output.csv.gz")]


def _soil_column(args: argparse.Namespace) -> int:
    from dam.cases import read_case, shipped_case, shipped_cases
    from dam.io_safety import check_outputs
    from dam.soil_column import OUTPUT_SUFFIXES

    case_dir = Path(args.case_dir)
    if not case_dir.exists() and args.case_dir in shipped_cases():
        case_dir = shipped_case(args.case_dir)
    check_outputs([args.output], inputs=_case_inputs(case_dir), overwrite=args.overwrite, suffixes=OUTPUT_SUFFIXES)
    _setup_numerics(args.dtype)
    from dam.soil_column import max_differences, run_case, write_output

    case = read_case(case_dir)
    if args.replay and case.reference is None:
        raise UserError(f"--replay needs the case's output.csv, which {case_dir} does not have")
    table = run_case(case, dtype=args.dtype, replay=args.replay, progress=not args.quiet)
    write_output(table, args.output, case, {"dtype": args.dtype, "mode": "replay" if args.replay else "free"})
    print(f"wrote {args.output} ({len(table)} rows)")
    if case.reference is not None and not args.quiet:
        diffs = max_differences(table, case.reference)
        print("max |dam - reference|: " + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))
    return 0


def _load_site(name: str, gaps: str, max_gap: int | None):
    from dam.sites import SiteError, load_site, shipped_sites

    if not Path(name).exists() and name not in shipped_sites():
        raise UserError(f"site {name!r} is neither a folder nor a shipped site (shipped: {', '.join(shipped_sites())})")
    try:
        return load_site(name, gaps=gaps, max_gap=max_gap)
    except SiteError as err:  # the library's hint names the Python argument; here it is an option
        hint = "gaps='interpolate' (with max_gap), 'previous' or 'climatology'"
        option = "--gaps interpolate (with --max-gap), previous or climatology"
        raise SiteError(str(err).replace(hint, option)) from None


def _run_station(args: argparse.Namespace) -> int:
    from dam.io_safety import check_outputs
    from dam.site_run import site_outputs
    from dam.sites import shipped_site_dir, shipped_sites

    files, figures = site_outputs(args.output)
    folder = shipped_site_dir(args.site) if args.site in shipped_sites() and not Path(args.site).exists() else None
    folder = folder or Path(args.site)
    inputs = [folder / name for name in ("site.yaml", "forcing.nc", "observations.nc")]
    check_outputs(files, inputs=inputs, overwrite=args.overwrite, suffixes=(".nc",), folders=[figures])
    _setup_numerics(args.dtype)
    from dam.site_run import run_site

    site = _load_site(args.site, args.gaps, args.max_gap)
    ds, table = run_site(
        site, args.output, start=args.start, end=args.end, spinup_cycles=args.spinup, dtype=args.dtype,
        progress=not args.quiet, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"wrote {args.output} ({ds.sizes['time']} steps) and figures in {figures}/")
    if table is not None:
        shown = table.assign(unreliable=table["unreliable"].astype(bool).map({True: "yes", False: ""}))
        cols = ["variable", "depth_m", "n", "r", "bias", "rmse", "ubrmse", "kge", "unreliable", "note"]
        print(shown[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from dam.experiment_config import load_config

    config = load_config("quick" if args.config is None else args.config)
    if args.output_dir is not None:
        config = config.replace(output_dir=args.output_dir)
    if args.quiet:
        config = config.replace(progress=False)
    _setup_numerics("float64")
    from dam.experiment import run_experiment
    from dam.scoring import summary, with_units

    t0 = time.perf_counter()
    table = run_experiment(config)
    print(
        f"\nTest-period metrics, mean over reliable sensors ({time.perf_counter() - t0:.0f} s; "
        f"full tables in {config.output_dir}/metrics.md):"
    )
    print(with_units(summary(table)).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from dam.io_safety import check_outputs, write_text

    out = Path(args.output_dir)
    names = ("bondville_soil.nc", "bondville_soil.png", "bondville_differences.json")
    check_outputs([out / n for n in names], overwrite=args.overwrite, folders=[out])
    _setup_numerics("float64")
    from dam.cases import read_case, shipped_case
    from dam.soil_column import TOLERANCES, max_differences, plot_comparison, run_case, write_output

    case = read_case(shipped_case("bondville_soil"))
    print(f"Bondville 1998 soil column: {case.n_steps} steps of {case.options.dt_s:.0f} s, {case.n_layers} layers")
    print(
        "options: " + ", ".join(f"{f.name}={getattr(case.options, f.name)}" for f in dataclasses.fields(case.options))
    )
    results = {}
    for mode, replay in (("replay", True), ("free", False)):
        t0 = time.perf_counter()
        table = run_case(case, "float64", replay=replay)
        results[mode] = max_differences(table, case.reference)
        print(f"{mode:6s} run float64 in {time.perf_counter() - t0:.1f} s")
    write_output(table, out / names[0], case, {"dtype": "float64", "mode": "free"})
    plot_comparison(
        table, case.reference, out / names[1], "Bondville 1998: dam float64 free run (thin) vs Fortran Noah-MP (thick)"
    )
    t0 = time.perf_counter()
    results["free_float32"] = max_differences(run_case(case, "float32"), case.reference)
    print(f"free   run float32 in {time.perf_counter() - t0:.1f} s")

    print("\nmax |dam - Fortran| over all steps and layers")
    print(f"{'variable':22s} {'replay f64':>12s} {'free f64':>12s} {'free f32':>12s} {'replay tol':>11s}")
    for name in results["replay"]:
        row = [results[m][name] for m in ("replay", "free", "free_float32")]
        print(f"{name:22s} " + " ".join(f"{v:12.3e}" for v in row) + f" {TOLERANCES[name]:11.0e}")
    write_text(out / names[2], json.dumps(results, indent=1))
    print(f"\nwrote {', '.join(str(out / n) for n in names)}")
    print("Bondville has soil freezing: free runs amplify round-off there; the replay is the strict test.")
    ok = all(results["replay"][k] <= TOLERANCES[k] for k in TOLERANCES)
    print("replay within tolerances:", "yes" if ok else "NO")
    return 0 if ok else 1


def _make_grid(args: argparse.Namespace) -> int:
    from dam.io_safety import check_outputs, write_netcdf, write_text

    out = Path(args.output_dir)
    names = ("static.nc", "forcing.nc", "grid_run.yaml")
    check_outputs([out / n for n in names], overwrite=args.overwrite, folders=[out])
    from dam.synthetic_grid import make_grid

    try:
        static, forcing = make_grid(args.lat, args.lon, args.steps, seed=args.seed)
    except MemoryError:
        raise UserError(f"--lat {args.lat} x --lon {args.lon} x --steps {args.steps} does not fit in memory") from None
    write_netcdf(static, out / names[0])
    write_netcdf(forcing, out / names[1])
    config = {
        "static": names[0],
        "forcing": names[1],
        "output": "output.zarr",
        "checkpoint_dir": "checkpoints",
        "time_block": min(args.steps, 240),
        "dtype": "float32",
    }
    import yaml

    write_text(out / names[2], yaml.safe_dump(config, sort_keys=False))
    n_land = int(static["land_mask"].sum())
    print(f"wrote {out}/static.nc, forcing.nc ({n_land} land columns, {args.steps} steps) and grid_run.yaml")
    return 0


def _convert_site(args: argparse.Namespace) -> int:
    from dam.readers import convert

    out = convert(args.source, args.metadata, args.output, overwrite=args.overwrite, gaps=args.gaps,
                  max_gap=args.max_gap)  # fmt: skip
    print(f"wrote {out}")
    return 0


def _convert_shared(args: argparse.Namespace) -> int:
    from dam.readers.catalogue import convert_shared, default_sites_dir

    output = Path(args.output_dir) if args.output_dir else default_sites_dir()

    def report(name, path, error):
        print(f"{name:14s} {'-> ' + str(path) if path else 'FAILED: ' + error}", flush=True)

    from dam.readers.catalogue import shared_metadata
    from dam.sites import default_shared_data_dir

    data_dir = Path(args.data_dir) if args.data_dir else None
    known = all(name in shared_metadata() for name in args.names)  # an unknown name is reported first
    if known and not (data_dir or default_shared_data_dir()).is_dir():  # else every site "fails" with exit 1
        where = "--data-dir" if data_dir else "the shared data folder ($DAM_SHARED_DATA)"
        raise UserError(f"{where} {data_dir or default_shared_data_dir()} is not a folder")
    results = convert_shared(output, args.names or None, data_dir=data_dir, overwrite=args.overwrite, report=report)
    failed = [n for n, r in results.items() if not isinstance(r, Path)]
    tail = f"; failed: {', '.join(failed)}" if failed else ""
    print(f"{len(results) - len(failed)} converted into {output}{tail}")
    return 1 if failed else 0


def _sites(args: argparse.Namespace) -> int:
    from dam.readers.catalogue import default_sites_dir, site_table

    dirs = args.dirs or ([default_sites_dir()] if default_sites_dir().is_dir() else [])
    table = site_table(dirs)
    if args.json:
        print(table.to_json(orient="records", indent=1))
    else:
        import pandas as pd

        with pd.option_context("display.max_colwidth", 60, "display.width", 250):
            print(table.to_string(index=False))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from dam.io_safety import check_outputs
    from dam.predict import finished_models

    run = Path(args.run).expanduser().resolve()
    finished_models(run)  # a clear error before any work for a folder that is not a finished run
    out = Path(args.output) if args.output is not None else run / "predict"
    check_outputs([out / "metrics.csv", out / "metrics.md"], overwrite=args.overwrite, folders=[out])
    _setup_numerics("float64")
    from dam import io_safety
    from dam.predict import predict_run
    from dam.predictions import save_prediction
    from dam.scoring import with_units

    table, results = predict_run(run, args.sites, models=args.model, start=args.start, end=args.end,
                                 finetune=args.finetune, progress=not args.quiet)  # fmt: skip
    for data, preds in results.values():
        for pred in preds.values():
            save_prediction(out, data, pred)
    io_safety.write_csv(table, out / "metrics.csv")
    io_safety.write_text(out / "metrics.md", f"# dam predict with {run}\n\n"
                         + with_units(table).to_markdown(index=False, floatfmt=".3f") + "\n")  # fmt: skip
    cols = ["site", "model", "days", "depth_m", "seen", "r", "rmse", "ubrmse", "kge"]
    print(with_units(table[cols]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\npredictions and metrics in {out}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one ``dam: error:`` line (the usage is one ``--help`` away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"dam: error: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    import dam

    return dam.__version__


def build_parser() -> argparse.ArgumentParser:
    from dam.sites import GAP_METHODS, shipped_sites

    parser = _Parser(prog="dam", description="Differentiable hybrid land-surface modelling.")
    parser.add_argument("--version", action="version", version=f"dam {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    overwrite = {"action": "store_true", "help": "replace existing output files (never an input)"}
    quiet = {"action": "store_true", "help": "no progress bar or table"}
    dtype = {"choices": ("float64", "float32"), "default": "float64", "help": "floating-point type (default float64)"}

    demo = sub.add_parser("demo", help="run the shipped Bondville soil case and compare with Fortran Noah-MP")
    demo.add_argument(
        "--output-dir", type=_path, default="out/demo", help="folder for the netCDF, PNG and JSON outputs"
    )
    demo.add_argument("--overwrite", **overwrite)
    demo.set_defaults(func=_demo)

    soil = sub.add_parser("soil-column", help="run a soil-column case folder (reference format)")
    soil.add_argument(
        "case_dir", help="folder with params.json and forcing.csv (and optionally output.csv), or a shipped case name"
    )
    soil.add_argument("--output", type=_path, required=True, help="OUT.csv (reference layout) or OUT.nc (CF netCDF)")
    soil.add_argument("--dtype", **dtype)
    soil.add_argument(
        "--replay", action="store_true", help="start every step from the state in the case's output.csv row before it"
    )
    soil.add_argument("--overwrite", **overwrite)
    soil.add_argument("--quiet", action="store_true", help="no progress bar or comparison")
    soil.set_defaults(func=_soil_column)

    _add_grid_run(sub)

    station = sub.add_parser("run-station", help="run the physics-only station model at a site folder")
    shipped = ", ".join(shipped_sites())
    station.add_argument("site", help=f"site folder (docs/site_format.md) or shipped site: {shipped}")
    station.add_argument(
        "--output", type=_path, required=True, help="output netCDF path (OUT.nc; tables and figures beside it)"
    )
    station.add_argument("--start", default=None, help="first day or step end (UTC), e.g. 1998-03-01")
    station.add_argument("--end", default=None, help="last day or step end (UTC), e.g. 1998-09-30")
    station.add_argument("--spinup", type=_count(0, MAX_SPINUP), default=1,
                         help=f"passes over the first year before the run (at most {MAX_SPINUP})")  # fmt: skip
    station.add_argument("--gaps", choices=GAP_METHODS, default="error", help="what to do with missing forcing")
    station.add_argument("--max-gap", type=_count(1), default=6, help="longest gap (steps) --gaps may fill")
    station.add_argument("--dtype", **dtype)
    station.add_argument("--overwrite", **overwrite)
    station.add_argument("--quiet", **quiet)
    station.set_defaults(func=_run_station)

    exp = sub.add_parser("experiment", help="run the hybrid-model experiment (physics, calibration, LSTMs, hybrids)")
    exp.add_argument("config", nargs="?", default=None, help="experiment YAML or a shipped one: quick (default), full")
    exp.add_argument("--output-dir", type=_path, default=None, help="run folder (overrides the config's output_dir)")
    exp.add_argument("--quiet", action="store_true", help="no progress bars")
    exp.set_defaults(func=_experiment)

    conv = sub.add_parser("convert-site", help="convert a FLUXNET/AmeriFlux/table file + metadata YAML to a site")
    conv.add_argument("source", help="data file, or the folder holding it (and SOURCE.md)")
    conv.add_argument("--metadata", required=True, help="site metadata YAML (docs/adding_a_site.md)")
    conv.add_argument("--output", type=_path, required=True, help="site folder to write")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing site folder")
    conv.add_argument("--gaps", choices=("error", "interpolate", "previous", "climatology"), default=None,
                      help="override the metadata's forcing gap policy")  # fmt: skip
    conv.add_argument("--max-gap", type=int, default=None, help="longest gap (steps) interpolate/previous may fill")
    conv.set_defaults(func=_convert_site)

    shared = sub.add_parser("convert-shared", help="convert the shared sites with their shipped metadata")
    shared.add_argument("names", nargs="*", help="sites to convert (default: all)")
    shared.add_argument("--output-dir", type=_path, default=None, help="sites folder (default: $DAM_SITES or ./sites)")
    shared.add_argument("--data-dir", default=None, help="shared data (default: $DAM_SHARED_DATA or ../shared/data)")
    shared.add_argument("--overwrite", action="store_true", help="replace existing site folders")
    shared.set_defaults(func=_convert_shared)

    sites = sub.add_parser("sites", help="list the shipped and converted sites and what each holds")
    sites.add_argument("dirs", nargs="*", help="sites folders (default: $DAM_SITES or ./sites where it exists)")
    sites.add_argument("--json", action="store_true", help="JSON records instead of a table")
    sites.set_defaults(func=_sites)

    pred = sub.add_parser("predict", help="predict and score sites or periods with a finished multi-site run")
    pred.add_argument("run", help="run folder of a finished dam experiment with multi-site models")
    pred.add_argument("sites", nargs="+", help="shipped site names, site folders or glob patterns")
    pred.add_argument("--model", action="append", default=None, help="multi-site model (repeatable; default all)")
    pred.add_argument("--start", default=None, help="first day (UTC), e.g. 2003-01-01")
    pred.add_argument("--end", default=None, help="last day (UTC)")
    pred.add_argument("--finetune", type=_count(0), default=0, help="epochs of fine-tuning on each site's first days")
    pred.add_argument("--output", type=_path, default=None, help="output folder (default RUN/predict)")
    pred.add_argument("--overwrite", **overwrite)
    pred.add_argument("--quiet", **quiet)
    pred.set_defaults(func=_predict)

    _add_make_grid(sub, overwrite)
    return parser


def _add_make_grid(sub, overwrite: dict) -> None:
    """The make-grid command: a synthetic grid to try grid-run on."""
    make = sub.add_parser("make-grid", help="write a synthetic grid (static fields, forcing, grid_run.yaml)")
    make.add_argument("output_dir", type=_path, help="folder for static.nc, forcing.nc and grid_run.yaml")
    make.add_argument("--lat", type=_count(1), default=32, help="grid rows (latitudes)")
    make.add_argument("--lon", type=_count(1), default=64, help="grid columns (longitudes)")
    make.add_argument("--steps", type=_count(1), default=480, help="forcing time steps (30 min each)")
    make.add_argument(
        "--seed", type=_count(0, 2**32 - 1), default=0, help="random seed of the land mask, soils and weather"
    )
    make.add_argument("--overwrite", **overwrite)
    make.set_defaults(func=_make_grid)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that report a problem with the user's input, not a bug in dam."""
    from dam.cases import CaseError
    from dam.grid_run import GridRunError
    from dam.io_safety import OutputError
    from dam.physics.guards import PlausibilityError
    from dam.run_folder import RunFolderError
    from dam.schema import ConfigError
    from dam.sites import SiteError

    return (CaseError, ConfigError, GridRunError, OutputError, PlausibilityError, RunFolderError, SiteError,
            UserError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 1 a failed demo check, 2 a user error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("dam: interrupted (a grid run or experiment resumes when started again)", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, _user_errors()):
            print(f"dam: error: {_one_line(err)}", file=sys.stderr)
            return 2
        from dam.physics.guards import MARK, last_violation

        found = last_violation()
        if found is not None and MARK in str(err):  # a guard stopped a run outside dam's drivers
            print(f"dam: error: {found.describe()}", file=sys.stderr)
            return 2
        message = _in_graph_check(err)
        if message is not None:  # e.g. a non-finite state: its message, not XLA's page of traceback
            print(f"dam: error: {message}", file=sys.stderr)
            return 2
        raise


def _in_graph_check(err: BaseException) -> str | None:
    """The message of the ``eqx.error_if`` check that stopped a run (under ``jax.jit`` or ``eqx.filter_jit``), if
    one did: both put it after the name of Equinox's runtime error."""
    found = re.search(r"EquinoxRuntimeError: (.+)", str(err))
    return found.group(1).strip() if found else None


if __name__ == "__main__":
    sys.exit(main())
