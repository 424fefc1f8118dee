"""Grid runs: packing land columns, sharding, incremental zarr output and resume after a kill."""

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
import yaml

from dam.grid_run import GridRunConfig, GridRunError, grid_run
from dam.io_safety import OutputError
from dam.run_folder import RunFolderError
from dam.schema import ConfigError
from dam.synthetic_grid import make_grid


@pytest.fixture(scope="module")
def grid_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    static, forcing = make_grid(5, 7, 60, seed=3)  # an odd number of land columns over 8 devices
    static.to_netcdf(root / "static.nc")
    forcing.to_netcdf(root / "forcing.nc")
    return root, static


def test_synthetic_grid_is_varied_and_deterministic():
    a, fa = make_grid(8, 10, 20, seed=5)
    b, fb = make_grid(8, 10, 20, seed=5)
    xr.testing.assert_identical(a, b)
    xr.testing.assert_identical(fa, fb)
    land = a["land_mask"].values.astype(bool)
    assert 0.2 < land.mean() < 0.9
    assert np.unique(a["bexp"].values[0][land]).size > 3
    assert float(a["tbot"].max() - a["tbot"].min()) > 20  # climates from cold to warm


def test_resume_after_kill_equals_uninterrupted(grid_files, grid_config):
    root, static = grid_files
    summary = grid_run(grid_config(root, "full"), progress=False)
    assert summary["finished"] and summary["land_columns"] == int(static["land_mask"].sum())
    assert summary["land_columns"] % 8 != 0
    killed = grid_config(root, "resumed")
    first = grid_run(killed, progress=False, stop_after_blocks=2)
    assert not first["finished"]
    # The resume runs the columns in chunks: a speed setting that neither changes results nor blocks the resume.
    second = grid_run(killed.model_copy(update={"column_chunk": 5}), progress=False)
    assert second["resumed_from_block"] == 2 and second["finished"]
    full = xr.open_zarr(root / "full.zarr").load()
    resumed = xr.open_zarr(root / "resumed.zarr").load()
    for name in full.data_vars:
        np.testing.assert_array_equal(full[name].values, resumed[name].values)
    land = static["land_mask"].values.astype(bool)
    t = full["soil_temperature"].values
    assert np.all(np.isfinite(t[:, :, land])) and np.all(np.isnan(t[:, :, ~land]))
    assert full["soil_temperature"].attrs["standard_name"] == "soil_temperature"


def test_grid_matches_column_runs(grid_files):
    """A grid run equals running the packed columns directly with dam.physics.run."""
    import jax
    import jax.numpy as jnp

    from dam import physics
    from dam.grid_run import _forcing_block, load_columns

    root, static = grid_files
    out = xr.open_zarr(root / "full.zarr").load()
    land, grid, params, state = load_columns(static)
    forcing = xr.open_dataset(root / "forcing.nc")
    frc = _forcing_block(forcing, land, 0, forcing.sizes["time"])
    cast = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)  # noqa: E731
    final, _ = physics.run(cast(state), cast(frc), cast(params), grid, physics.SoilOptions(dt_s=1800.0))
    t_last = out["soil_temperature"].values[-1].reshape(4, -1)[:, land].T
    np.testing.assert_allclose(t_last, np.asarray(final.t), rtol=0, atol=1e-10)


def test_store_keeps_the_run_dtype_compressed(grid_files, grid_config):
    """A float32 run writes a float32 store (half the bytes of float64; the values are float32 already), every
    variable compressed with zstd level 1."""
    root, _ = grid_files
    grid_run(grid_config(root, "single", dtype="float32", time_block=60), progress=False)
    out = xr.open_zarr(root / "single.zarr")
    assert {str(v.dtype) for v in out.data_vars.values()} == {"float32"}
    for v in out.data_vars.values():
        (codec,) = v.encoding["compressors"]
        assert type(codec).__name__ == "ZstdCodec" and codec.level == 1
    assert np.isfinite(out["soil_moisture"].values[-1, 0][grid_files[1]["land_mask"].values.astype(bool)]).all()


def test_bad_config_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"static": "s.nc", "forcing": "f.nc", "output": "o.zarr", "colour": 1}))
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        GridRunConfig.from_yaml(path)
    path.write_text(yaml.safe_dump({"static": "s.nc", "forcing": "f.nc", "output": "o.zarr", "checkpoint_dir": "c"}))
    with pytest.raises(GridRunError, match="missing file"):
        grid_run(GridRunConfig.from_yaml(path), progress=False)
    with pytest.raises(ValueError, match="column_chunk"):
        GridRunConfig(static="s.nc", forcing="f.nc", output="o.zarr", checkpoint_dir="c", column_chunk=0)
    for bad, key in (({"options": {"supercoold": "niu06"}}, "did you mean 'supercooled'"),
                     ({"time_block": 0}, "time_block"), ({"outputs": ["soil_temp"]}, "outputs.0")):  # fmt: skip
        path.write_text(yaml.safe_dump({"static": "s", "forcing": "f", "output": "o", "checkpoint_dir": "c", **bad}))
        with pytest.raises(ConfigError, match=key):
            GridRunConfig.from_yaml(path)


def test_exp_log_pow_is_an_option_and_another_run(grid_files, grid_config):
    """``options: {pow: exp_log}`` reaches the physics and is another run; runs started before the option existed
    (libm's pow, the default) keep their fingerprint, so they still resume."""
    root, _ = grid_files
    exact = grid_config(root, "pow_libm")
    fast = grid_config(root, "pow_libm", options={"pow": "exp_log"})
    assert exact.options.build(1800.0).pow == "libm" and fast.options.build(1800.0).pow == "exp_log"
    assert "pow" not in exact._identity()["options"] and fast._identity()["options"]["pow"] == "exp_log"
    assert fast.fingerprint() != exact.fingerprint()


def test_store_of_another_run_is_refused_naming_both(grid_files, grid_config):
    """Issue 16 item 2: a second configuration writing the same output silently overwrote a finished run."""
    root, _ = grid_files
    other = grid_config(root, "full", dtype="float32")  # same output and checkpoints, different configuration
    before = xr.open_zarr(root / "full.zarr").attrs["run_fingerprint"]
    with pytest.raises(RunFolderError, match=f"holds the results of run {before}.*this configuration is run "):
        grid_run(other, progress=False)
    assert xr.open_zarr(root / "full.zarr").attrs["run_fingerprint"] == before


def _grid_folder(root, name, grid_files, **yaml_keys):
    """A folder with copies of static.nc and forcing.nc and a grid_run.yaml (relative paths)."""
    folder = root / name
    folder.mkdir()
    for f in ("static.nc", "forcing.nc"):
        shutil.copy(grid_files[0] / f, folder / f)
    config = {"static": "static.nc", "forcing": "forcing.nc", "output": "out.zarr", "checkpoint_dir": "ckpt",
              "time_block": 16, **yaml_keys}  # fmt: skip
    (folder / "grid_run.yaml").write_text(yaml.safe_dump(config))
    return folder


def _listing(folder):
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("output", "checkpoints", "message"),
    [(".", "ckpt", "contains the input"), ("static.nc", "ckpt", "is the input"),
     ("../victim.txt", "ckpt", "exists and is a file"), ("../foreign", "ckpt", "not a dam grid-run store"),
     ("out.zarr", "../foreign", "not dam checkpoints"), ("out.zarr", "out.zarr/ckpt", "lies inside the output"),
     ("out.zarr", "static.nc/x", "lies inside the input")],
)  # fmt: skip
def test_output_never_deletes_inputs_or_foreign_files(tmp_path, grid_files, output, checkpoints, message):
    """Issue 16 item 1: ``output: .`` deleted the run's own static.nc, forcing.nc and YAML; ``output: ../other``
    deleted an unrelated file."""
    folder = _grid_folder(tmp_path, "g", grid_files, output=output, checkpoint_dir=checkpoints)
    (tmp_path / "victim.txt").write_text("precious")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("precious")
    before = _listing(tmp_path)
    with pytest.raises((OutputError, GridRunError), match=message):
        grid_run(GridRunConfig.from_yaml(folder / "grid_run.yaml"), progress=False)
    assert _listing(tmp_path) == before


def test_changed_input_is_another_run_and_a_moved_run_resumes(tmp_path, grid_files, grid_config):
    """Issue 16 items 2 and 8: after a kill, changing dksat in static.nc resumed and mixed parameters; a moved
    run folder could not resume."""
    folder = _grid_folder(tmp_path, "a", grid_files)
    config = GridRunConfig.from_yaml(folder / "grid_run.yaml")
    assert not grid_run(config, progress=False, stop_after_blocks=1)["finished"]
    static = xr.load_dataset(folder / "static.nc")
    static["dksat"] = static["dksat"] * 2
    static.to_netcdf(folder / "static.nc")
    with pytest.raises(RunFolderError, match="its static file changed"):
        grid_run(GridRunConfig.from_yaml(folder / "grid_run.yaml"), progress=False)
    shutil.copy(grid_files[0] / "static.nc", folder / "static.nc")  # the original input again

    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    summary = grid_run(GridRunConfig.from_yaml(moved / "grid_run.yaml"), progress=False)
    assert summary["resumed_from_block"] == 1 and summary["finished"]
    full = xr.open_zarr(grid_files[0] / "full.zarr").load()
    resumed = xr.open_zarr(moved / "out.zarr").load()
    for name in full.data_vars:
        np.testing.assert_array_equal(full[name].values, resumed[name].values)
    # --overwrite replaces this run's store with the run of the changed input
    static.to_netcdf(moved / "static.nc")
    assert grid_run(GridRunConfig.from_yaml(moved / "grid_run.yaml"), progress=False, overwrite=True)["finished"]


def test_second_process_on_a_run_gets_a_clear_error_at_once(tmp_path, grid_files):
    folder = _grid_folder(tmp_path, "locked", grid_files)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from dam.run_folder import RunLock\n"
         f"with RunLock({str(folder / 'ckpt')!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        with pytest.raises(RunFolderError, match=f"in use by another dam run \\(PID {holder.pid}"):
            grid_run(GridRunConfig.from_yaml(folder / "grid_run.yaml"), progress=False)
        assert time.perf_counter() - t0 < 30
    finally:
        holder.kill()
        holder.wait()
    # the lock of a dead process is taken over at once
    assert grid_run(GridRunConfig.from_yaml(folder / "grid_run.yaml"), progress=False, stop_after_blocks=1)


def test_block_writer_checkpoints_a_block_only_after_its_writes():
    """Each block's checkpoint comes after its writes and before the next block's; a write's error reaches the
    caller; after an error of the caller the pending block is still checkpointed when its writes succeeded."""
    import threading

    from dam.grid_output import BlockWriter

    log, gate = [], threading.Event()

    def write(name, wait=False):
        def run():
            if wait:
                gate.wait(5)
            log.append(f"write {name}")

        return run

    with BlockWriter() as writer:
        writer.submit([write("0a", wait=True), write("0b")], lambda: log.append("ckpt 0"))
        log.append("run 1")  # the caller runs block 1 while block 0 is written
        gate.set()
        writer.submit([write("1")], lambda: log.append("ckpt 1"))
    assert log == ["run 1", "write 0a", "write 0b", "ckpt 0", "write 1", "ckpt 1"]

    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), BlockWriter() as writer:
        writer.submit([fail], lambda: log.append("never"))
        writer.submit([], lambda: None)
    log.clear()
    with pytest.raises(KeyboardInterrupt), BlockWriter() as writer:
        writer.submit([write("2")], lambda: log.append("ckpt 2"))
        raise KeyboardInterrupt
    assert log == ["write 2", "ckpt 2"]


def test_band_rows_balance_the_processes():
    """One process: the most rows within ``column_block``. Several: the least work for the busiest process (its
    bands, each padded to the widest): five rows of 10 land cells over 2 processes are bands of 3 + 2 rows (30
    columns of work each), not 2 + 2 + 1 (2 x 20 for one process)."""
    from dam.grid_run import _band_rows

    mask = np.zeros((5, 12), bool)
    mask[:, :10] = True
    assert _band_rows(mask, None) == 5 and _band_rows(mask, 25) == 2
    assert _band_rows(mask, None, processes=2) == 3
    assert _band_rows(mask, 15, processes=2) == 1  # within column_block, whatever the balance
    assert _band_rows(mask, None, processes=5) == 1
