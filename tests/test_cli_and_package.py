"""The command line on case folders, and the installed package layout."""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import xarray as xr

from dam.cases import output_columns, read_case
from dam.cli import main


def test_soil_column_cli_replay_csv(reference_dir, tmp_path):
    out = tmp_path / "out.csv"
    assert main(["soil-column", str(reference_dir / "koren_freeze"), "--output", str(out), "--replay", "--quiet"]) == 0
    table = pd.read_csv(out)
    ref = read_case(reference_dir / "koren_freeze").reference
    assert list(table.columns) == output_columns(4) == list(ref.columns)
    assert len(table) == len(ref)
    np.testing.assert_array_equal(table["nsub"].to_numpy(), ref["nsub"].to_numpy())
    state_cols = [c for c in ref.columns if c.startswith(("t", "smc", "sh2o")) and c != "time_s"]
    assert np.max(np.abs(table[state_cols].to_numpy() - ref[state_cols].to_numpy())) < 1e-6


def test_soil_column_cli_netcdf_is_cf(reference_dir, tmp_path):
    out = tmp_path / "out.nc"
    assert (
        main(
            ["soil-column", str(reference_dir / "koren_freeze"), "--output", str(out), "--dtype", "float32", "--quiet"]
        )
        == 0
    )
    ds = xr.open_dataset(out)
    assert ds["soil_temperature"].attrs["standard_name"] == "soil_temperature"
    assert ds["soil_temperature"].attrs["units"] == "K"
    assert ds["soil_temperature"].dims == ("time", "layer")
    assert ds.sizes["time"] == 2881
    assert ds.attrs["option_supercooled"] == "koren99"
    assert float(ds["soil_temperature"].min()) > 250


def test_cli_reports_bad_case(tmp_path, capsys):
    assert main(["soil-column", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_wheel_installs_only_dam(tmp_path):
    """Only the import name ``dam`` goes to site-packages: physics/ etc. are mapped to dam.physics."""
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(root),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("dam-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"dam", next(t for t in top if t.endswith(".dist-info"))}
    for sub in ("physics", "surrogates", "coupling"):
        assert f"dam/{sub}/__init__.py" in names
    assert "dam/physics/soil_water.py" in names
    assert "dam/data/bondville_soil/forcing.csv.gz" in names


def test_public_api_is_lazy_and_complete():
    """``import dam`` loads no JAX; every name of ``dam.__all__`` resolves to the object of its home module (one
    way to do each job, not a copy); an unknown name is an AttributeError."""
    import importlib

    import pytest

    import dam

    code = (
        "import sys, dam; assert 'jax' not in sys.modules and 'dam.physics' not in sys.modules; print(len(dam.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(dam.__all__)
    for name in dam.__all__:
        assert getattr(dam, name) is not None, name
    for name, (module, attr) in dam._EXPORTS.items():
        assert getattr(dam, name) is getattr(importlib.import_module(module), attr), name
    assert {"run_site", "run_experiment", "calibrate", "fit", "load_site", "run_case"} <= set(dam.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dam.nope  # noqa: B018


def test_compile_cache_location_and_switch(monkeypatch, tmp_path):
    from dam.compile_cache import compile_cache_dir

    monkeypatch.setenv("DAM_COMPILE_CACHE", "off")
    assert compile_cache_dir() is None
    monkeypatch.setenv("DAM_COMPILE_CACHE", str(tmp_path / "c"))
    assert compile_cache_dir().parent == tmp_path / "c" and compile_cache_dir().name.startswith("jax-")
    monkeypatch.delenv("DAM_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache_dir().parent == tmp_path / "xdg" / "dam" / "xla"


def test_compile_cache_serves_a_second_process(tmp_path):
    """A program compiled in one process is loaded from the cache folder by the next (what a repeated CLI
    command gets); a program compiled with other XLA flags is a different entry."""
    probe = (
        "import jax, jax.numpy as jnp\n"
        "from dam.compile_cache import enable_compile_cache\n"
        "events = []\n"
        "jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))\n"
        "enable_compile_cache(min_compile_s=0.0)\n"
        "jax.jit(lambda x: jnp.sin(x) * 2.0 + x**3)(jnp.arange(5.0)).block_until_ready()\n"
        "print(sum('cache_hits' in e for e in events), sum('cache_misses' in e for e in events))\n"
    )
    env = {**os.environ, "DAM_COMPILE_CACHE": str(tmp_path / "cache"), "XLA_FLAGS": "--xla_cpu_max_isa=AVX"}

    def hits_misses(**extra):
        out = subprocess.run([sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return tuple(int(v) for v in out.stdout.split())

    first = hits_misses()
    assert first[0] == 0 and first[1] > 0
    assert list((tmp_path / "cache").glob("jax-*/jit_*-cache"))
    assert hits_misses() == (first[1], 0)
    assert hits_misses(XLA_FLAGS="")[0] == 0
