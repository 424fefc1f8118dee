"""The ``dam grid-run`` command: one process, one of several (``--coordinator``, ``--num-processes``,
``--process-id``, e.g. under SLURM), or several started here on their own CPU cores (``--local-processes``)."""

from __future__ import annotations

import argparse
import json
import os

from dam.cli_types import UserError, address, count, one_line

DISTRIBUTED = {"coordinator": "--coordinator", "num_processes": "--num-processes", "process_id": "--process-id"}


def grid_run(args: argparse.Namespace) -> int:
    """Run the grid of ``args.config`` (docs/grid_runs.md); prints the run's summary as JSON."""
    from dam.grid_run import GridRunConfig

    config = GridRunConfig.from_yaml(args.config)
    given = [k for k in DISTRIBUTED if getattr(args, k) is not None]
    if args.local_processes is not None:
        if given:
            raise UserError(f"--local-processes starts the run's processes itself: drop {DISTRIBUTED[given[0]]} "
                            "(or unset $DAM_COORDINATOR, $DAM_NUM_PROCESSES and $DAM_PROCESS_ID)")  # fmt: skip
        return _launch_local(args)
    if given and len(given) < 3:
        raise UserError("--coordinator, --num-processes and --process-id go together (or $DAM_COORDINATOR, "
                        "$DAM_NUM_PROCESSES and $DAM_PROCESS_ID)")  # fmt: skip
    if given and args.process_id >= args.num_processes:
        raise UserError(f"--process-id {args.process_id} must be below --num-processes {args.num_processes}")
    from dam.precision import setup_numerics

    setup_numerics(config.dtype)
    from dam.sharding import initialize_distributed

    # Before any array exists; without settings, an srun step of several tasks is detected by JAX.
    if not given or args.num_processes > 1:
        settings = {"coordinator_address": args.coordinator, "num_processes": args.num_processes,
                    "process_id": args.process_id}  # fmt: skip
        try:
            initialize_distributed(**(settings if given else {}))
        except Exception as err:  # noqa: BLE001 - an unreachable coordinator, a port in use, a missing peer
            raise UserError(f"cannot join the run's processes ({one_line(err)[:300]})") from None
    from dam.grid_run import grid_run as run

    summary = run(config, progress=not args.quiet, overwrite=args.overwrite)
    print(json.dumps(summary, indent=1))
    return 0


def _launch_local(args: argparse.Namespace) -> int:
    """The run as ``args.local_processes`` processes of this machine, each pinned to its share of the cores."""
    from dam.local_processes import launch

    dam_args = ["grid-run", args.config, *(["--overwrite"] if args.overwrite else []),
                *(["--quiet"] if args.quiet else [])]  # fmt: skip
    try:
        return launch(dam_args, args.local_processes)
    except ValueError as err:  # more processes than cores
        raise UserError(f"--local-processes: {err}") from None


def add_grid_run(sub) -> None:
    """The grid-run command's parser, with the options of a run over several processes."""
    grid = sub.add_parser("grid-run", help="run the soil column over a grid (sharded, checkpointed, resumable)")
    grid.add_argument("config", help="YAML configuration (see docs/grid_runs.md)")
    grid.add_argument("--overwrite", action="store_true", help="replace a store and checkpoints of another run")
    grid.add_argument("--quiet", action="store_true", help="no progress bar")
    grid.add_argument("--local-processes", metavar="N", type=count(1),
                      help="start N processes on this machine, each pinned to its share of the CPU cores "
                           "(on a CPU, faster than one process using all cores)")  # fmt: skip
    env = os.environ.get
    grid.add_argument("--coordinator", metavar="HOST:PORT", type=address, default=env("DAM_COORDINATOR"),
                      help="process 0's address: run as one of several processes ($DAM_COORDINATOR)")  # fmt: skip
    grid.add_argument("--num-processes", type=count(1), default=env("DAM_NUM_PROCESSES"),
                      help="processes of the run, all started alike ($DAM_NUM_PROCESSES)")  # fmt: skip
    grid.add_argument("--process-id", type=count(0), default=env("DAM_PROCESS_ID"),
                      help="this process, 0 to --num-processes - 1 ($DAM_PROCESS_ID)")  # fmt: skip
    grid.set_defaults(func=grid_run)
