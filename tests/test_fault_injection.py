"""Fault injection: ``dam grid-run`` processes are killed (SIGKILL, or SIGTERM) at random points, including while an
orbax checkpoint or the output store is being written, and started again until the run finishes; the result must
equal an uninterrupted run bit for bit, and no kill may leave anything that blocks the next start.

The default test makes a few kills in about a minute (a persistent compilation cache keeps restarts short); the
``slow`` variant makes many more and also kills ``dam experiment``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from dam.synthetic_grid import make_grid


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", XLA_FLAGS="", PYTHONUNBUFFERED="1")  # fmt: skip
    return env


def _grid_folder(root: Path, name: str, time_block: int) -> Path:
    folder = root / name
    folder.mkdir()
    static, forcing = make_grid(4, 5, 72, seed=4)
    static.to_netcdf(folder / "static.nc")
    forcing.to_netcdf(folder / "forcing.nc")
    config = {"static": "static.nc", "forcing": "forcing.nc", "output": "out.zarr", "checkpoint_dir": "ckpt",
              "time_block": time_block, "dtype": "float64"}  # fmt: skip
    (folder / "grid_run.yaml").write_text(yaml.safe_dump(config))
    return folder


def _cmd(folder: Path) -> list[str]:
    return [sys.executable, "-m", "dam.cli", "grid-run", str(folder / "grid_run.yaml"), "--quiet"]


def _start(folder: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(_cmd(folder), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _writing(folder: Path) -> bool:
    """True while orbax writes a checkpoint (a temporary step folder) or the store is being created."""
    ckpt = folder / "ckpt"
    in_ckpt = ckpt.is_dir() and any("tmp" in p.name for p in ckpt.iterdir())
    return in_ckpt or any(p.name.startswith(".out.dam-tmp-") for p in folder.iterdir())


def _kill(proc: subprocess.Popen, folder: Path, mode: str, delay: float, timeout: float = 300.0) -> str:
    """Kill ``proc`` as ``mode`` says ("write": as soon as a checkpoint or store write is seen; "time": after
    ``delay`` seconds; "term": SIGTERM after ``delay``); returns what happened."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if (mode == "write" and _writing(folder)) or (mode != "write" and time.monotonic() - t0 >= delay):
            proc.send_signal(signal.SIGTERM if mode == "term" else signal.SIGKILL)
            proc.wait()
            return f"{mode} at {time.monotonic() - t0:.2f} s"
        time.sleep(0.001 if mode == "write" else 0.01)
    proc.wait()
    return f"{mode}: finished before the kill (rc {proc.returncode})"


def _kill_and_resume(root: Path, n_kills: int, seed: int) -> list[str]:
    cache = root / "jax_cache"
    env = _env(cache)
    reference = _grid_folder(root, "reference", time_block=6)
    done = subprocess.run(_cmd(reference), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Kill times scale with a run that finds its programs in the compilation cache, as the killed runs do (the
    # first run's compile time would put most kills after the end of the run).
    t0 = time.monotonic()
    warm = subprocess.run(_cmd(_grid_folder(root, "warm", time_block=6)), env=env, capture_output=True, text=True)
    duration = time.monotonic() - t0
    assert warm.returncode == 0, warm.stderr

    killed = _grid_folder(root, "killed", time_block=6)
    rng = np.random.default_rng(seed)
    log = []
    for i in range(n_kills):
        mode = ("write", "time", "term", "write")[i % 4]
        proc = _start(killed, env)
        log.append(_kill(proc, killed, mode, delay=float(rng.uniform(0.2, 0.8) * duration)))
    final = subprocess.run(_cmd(killed), env=env, capture_output=True, text=True)
    assert final.returncode == 0, f"resume after {log}: {final.stderr}"
    ref = xr.open_zarr(reference / "out.zarr").load()
    out = xr.open_zarr(killed / "out.zarr").load()
    for name in ref.data_vars:
        assert np.array_equal(ref[name].values, out[name].values, equal_nan=True), f"{name} differs after {log}"
    assert out.attrs["run_fingerprint"] == ref.attrs["run_fingerprint"]  # same configuration and inputs
    return log


def test_killed_grid_runs_resume_bit_for_bit(tmp_path):
    log = _kill_and_resume(tmp_path, n_kills=3, seed=0)
    print(log)
    assert sum(" at " in entry for entry in log) >= 2, log


@pytest.mark.slow
def test_many_kills_bit_for_bit(tmp_path):
    log = _kill_and_resume(tmp_path, n_kills=16, seed=1)
    assert sum(" at " in entry for entry in log) >= 8, log


@pytest.mark.slow
def test_killed_experiment_resumes_to_the_same_metrics(tmp_path):
    """``dam experiment`` killed during training and checkpoint writes gives the metrics of an uninterrupted run."""
    import pandas as pd

    env = _env(tmp_path / "jax_cache")
    network = {"hidden": 8, "epochs": 4, "window_days": 60, "stride_days": 60}
    config = {"sites": ["hyytiala_2000_2010"], "models": ["physics_default", "lstm"], "spinup_cycles": 0,
              "network": network, "progress": False}  # fmt: skip
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))

    def start(run: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "dam.cli", "experiment", str(tmp_path / "exp.yaml"), "--output-dir",
               str(tmp_path / run), "--quiet"]  # fmt: skip
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    t0 = time.monotonic()
    assert start("reference").wait() == 0
    duration = time.monotonic() - t0
    rng = np.random.default_rng(2)
    for _ in range(4):
        proc = start("killed")
        time.sleep(float(rng.uniform(0.3, 0.9) * duration))
        proc.kill()
        proc.wait()
    last = start("killed")
    assert last.wait() == 0, last.stderr.read()
    ref = pd.read_csv(tmp_path / "reference" / "metrics.csv")
    out = pd.read_csv(tmp_path / "killed" / "metrics.csv")
    pd.testing.assert_frame_equal(ref, out)
