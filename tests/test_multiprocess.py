"""Several JAX processes (``jax.distributed`` on localhost). ``dam grid-run``: the one output store equals a
single-process run bit for bit, also after one process was killed and all were started again. Data-parallel
training (:func:`dam.training.fit` over the devices of all processes): equal to one process to round-off, also
when resumed from checkpoints that both processes wrote."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from dam.local_processes import free_port
from dam.synthetic_grid import make_grid

TIMEOUT_S = 300  # a hang (a process waiting for a peer that never comes) fails the test instead of blocking it


def _grid_folder(root: Path, name: str, time_block: int = 12) -> Path:
    folder = root / name
    folder.mkdir()
    static, forcing = make_grid(2, 4, 48, seed=0)
    static.to_netcdf(folder / "static.nc")
    forcing.to_netcdf(folder / "forcing.nc")
    config = {"static": "static.nc", "forcing": "forcing.nc", "output": "out.zarr", "checkpoint_dir": "ckpt",
              "time_block": time_block, "dtype": "float64"}  # fmt: skip
    (folder / "grid_run.yaml").write_text(yaml.safe_dump(config))
    return folder


def _env(cache: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONUNBUFFERED": "1"}  # one CPU device per process
    if cache is not None:  # restarted processes load their programs instead of compiling them again
        env.update(DAM_COMPILE_CACHE=str(cache))
    return env


def _start(folder: Path, env: dict, processes: int = 1, port: int = 0) -> list[subprocess.Popen]:
    """Start the grid run's processes."""
    cmd = [sys.executable, "-m", "dam.cli", "grid-run", str(folder / "grid_run.yaml"), "--quiet"]
    return _launch(cmd, folder, env, processes, port)


def _launch(cmd: list[str], folder: Path, env: dict, processes: int, port: int) -> list[subprocess.Popen]:
    """Start ``processes`` copies of ``cmd`` (with the distributed options when more than one), their output in
    files in ``folder`` (a full pipe would block a process and its peers)."""
    if processes > 1:
        cmd = [*cmd, "--coordinator", f"localhost:{port}", "--num-processes", str(processes)]
    procs = []
    for k in range(processes):
        log = folder / f"process-{k}-{time.monotonic_ns()}"
        args = [*cmd, "--process-id", str(k)] if processes > 1 else cmd
        with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
            proc = subprocess.Popen(args, env=env, stdout=out, stderr=err)
        proc.log = log
        procs.append(proc)
    return procs


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    """Wait for every process (killing all at the timeout); each must succeed. Returns what each printed."""
    t0 = time.monotonic()
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"processes did not finish within {TIMEOUT_S} s")
    for proc in procs:
        assert proc.returncode == 0, Path(f"{proc.log}.err").read_text()[-3000:]
    return [Path(f"{proc.log}.out").read_text() for proc in procs]


def _assert_same_output(a: Path, b: Path) -> None:
    x, y = xr.open_zarr(a).load(), xr.open_zarr(b).load()
    assert sorted(x.data_vars) == sorted(y.data_vars)
    for name in x.data_vars:
        assert np.array_equal(x[name].values, y[name].values, equal_nan=True), name  # NaN over sea in both
    land = x["soil_temperature"].values[0, 0] == x["soil_temperature"].values[0, 0]
    assert land.any() and np.all(np.isfinite(y["soil_temperature"].values[:, :, land]))


def test_two_processes_equal_one(tmp_path):
    """Two processes (``--local-processes 2``: each its share of the latitude bands and of the CPU cores, one
    store, own checkpoints) write the same store as one process; a single process may neither resume the
    two-process run nor remove its checkpoints."""
    one, two = _grid_folder(tmp_path, "one"), _grid_folder(tmp_path, "two")
    env = _env()
    t0 = time.perf_counter()
    local = [sys.executable, "-m", "dam.cli", "grid-run", str(two / "grid_run.yaml"), "--local-processes", "2"]
    procs = _start(one, env) + _launch(local, two, env, 1, 0)  # all at once: less wall time
    outputs = _finish(procs)
    assert all('"finished": true' in out for out in outputs)  # process 1's summary is not printed
    assert '"processes": 2' in outputs[1] and '"processes"' not in outputs[0]
    _assert_same_output(one / "out.zarr", two / "out.zarr")
    assert xr.open_zarr(two / "out.zarr").attrs["run_processes"] == 2
    assert sorted(p.name for p in (two / "ckpt").iterdir() if not p.name.startswith(".")) == ["process-0", "process-1"]
    assert all(list((two / "ckpt" / f"process-{k}").glob("*.npz")) for k in (0, 1))
    print(f"1 + 2 processes: {time.perf_counter() - t0:.1f} s")

    from dam.grid_run import GridRunConfig, grid_run
    from dam.run_folder import RunFolderError

    with pytest.raises(
        RunFolderError, match=r"run of 2 process\(es\) and this is 1: resume it with 2 processes \(--local-processes 2"
    ):
        grid_run(GridRunConfig.from_yaml(two / "grid_run.yaml"), progress=False)
    # Another configuration, once the store is gone, may not remove the two processes' checkpoints.
    shutil.rmtree(two / "out.zarr")
    other = GridRunConfig.from_yaml(two / "grid_run.yaml").model_copy(update={"time_block": 6})
    with pytest.raises(RunFolderError, match=r"process-\d belong to another run"):
        grid_run(other, progress=False)
    assert all(list((two / "ckpt" / f"process-{k}").glob("*.npz")) for k in (0, 1))


def test_bad_input_stops_both_processes_naming_the_check(tmp_path):
    """Process 0 alone reads the inputs whole (checks and fingerprint); a forcing with NaN over land stops it with
    the check's message and process 1 with the same message, named as process 0's, before anything is written."""
    folder = _grid_folder(tmp_path, "bad")
    forcing = xr.load_dataset(folder / "forcing.nc")
    land = xr.load_dataset(folder / "static.nc")["land_mask"].values > 0
    forcing["ghf_wm2"].values[3][land] = np.nan
    forcing.to_netcdf(folder / "forcing.nc")
    cmd = [sys.executable, "-m", "dam.cli", "grid-run", str(folder / "grid_run.yaml"), "--local-processes", "2"]
    (proc,) = _launch(cmd, folder, _env(), 1, 0)
    assert proc.wait(timeout=TIMEOUT_S) == 2
    err = Path(f"{proc.log}.err").read_text()
    assert "dam: error: forcing file: ghf_wm2 has non-finite values over land" in err
    assert "dam: error: process 0 of 2 stopped: forcing file: ghf_wm2 has non-finite values over land" in err
    assert not (folder / "out.zarr").exists()


def _kill_one(procs: list[subprocess.Popen], folder: Path, victim: int) -> None:
    """SIGKILL process ``victim`` once it has checkpointed a time block, then the other one: JAX's coordination
    service would stop it at its heartbeat timeout (100 s), which the test need not wait for."""
    first = folder / "ckpt" / f"process-{victim}" / "00000001.npz"
    t0 = time.monotonic()
    while not first.exists() and procs[victim].poll() is None and time.monotonic() - t0 < TIMEOUT_S:
        time.sleep(0.01)
    assert procs[victim].poll() is None, "the process finished before the kill: make the grid run longer"
    procs[victim].send_signal(signal.SIGKILL)
    time.sleep(1.0)
    for proc in procs:
        proc.kill()
        proc.wait(timeout=TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_killed_process_resumes_to_the_same_output(tmp_path, victim):
    """One process is killed mid-run (the other with it); started again, both resume from their own checkpoints
    and the store equals an uninterrupted single-process run bit for bit."""
    env = _env(tmp_path / "jax_cache")
    reference, killed = _grid_folder(tmp_path, "reference", 4), _grid_folder(tmp_path, "killed", 4)
    _finish(_start(reference, env))
    procs = _start(killed, env, processes=2, port=free_port())
    _kill_one(procs, killed, victim)
    assert not (killed / "ckpt" / f"process-{victim}" / "00000011.npz").exists()  # it was killed before the end
    outputs = _finish(_start(killed, env, processes=2, port=free_port()))
    assert all('"finished": true' in out for out in outputs)
    assert '"resumed_from_block": 0' not in outputs[victim]
    _assert_same_output(reference / "out.zarr", killed / "out.zarr")


def test_data_parallel_training_over_two_processes_equals_one(tmp_path):
    """A small hierarchical LSTM trained over 2 processes (batches of 5 padded to 6, one half each, gradients
    all-reduced over localhost) equals one process to 1e-12, though stopped after 2 of 3 epochs and resumed by
    two new processes from the orbax checkpoints they wrote."""
    worker = [sys.executable, str(Path(__file__).with_name("distributed_training.py"))]
    ckpt = tmp_path / "ckpt"
    env = _env()
    two = [*worker, str(tmp_path / "two.npz"), "--checkpoint-dir", str(ckpt)]
    procs = _launch([*worker, str(tmp_path / "one.npz")], tmp_path, env, 1, 0)
    procs += _launch([*two, "--stop-after", "2"], tmp_path, env, 2, free_port())  # all at once: less wall time
    _finish(procs)
    assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ["0", "1"]  # epochs 1 and 2
    _finish(_launch(two, tmp_path, env, 2, free_port()))
    one, resumed = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert int(one["devices"]) == 1 and int(resumed["devices"]) == 2 and int(resumed["resumed_from"]) == 2
    leaves = [k for k in one.files if k.startswith("arr_")]
    assert leaves and sorted(leaves) == sorted(k for k in resumed.files if k.startswith("arr_"))
    for k in leaves:
        np.testing.assert_allclose(resumed[k], one[k], rtol=1e-12, atol=1e-15, err_msg=k)
    np.testing.assert_allclose(resumed["train_loss"], one["train_loss"], rtol=1e-12)
    assert one["train_loss"][-1] < 0.8 * one["train_loss"][0]  # it trained
