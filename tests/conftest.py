"""Test set-up before JAX starts its backend: float64, Fortran-like arithmetic (no FMA contraction), eight
emulated CPU devices for the sharding tests (unsharded computations run on the first) and single-threaded
XLA:CPU kernels (the tests run on as many workers as cores)."""

import gc
import os
from pathlib import Path

import pytest
from shipped_data import materialise

from dam.precision import emulate_cpu_devices, enable_x64, fortran_exact_cpu

fortran_exact_cpu()
emulate_cpu_devices(8)
if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    # Two pytest workers share two cores: one compute thread each, not a thread pool each (measured ~7 % faster)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
os.environ.setdefault("DAM_COMPILE_CACHE", "off")  # CLI calls in tests compile afresh and write nothing to ~/.cache
enable_x64()


# The longest test files (minutes each on 2 cores), longest first. pytest-xdist (--dist loadfile
# --no-loadscope-reorder) hands whole files to the workers in collection order: a long file collected last would
# keep one worker busy for minutes after the other has finished. Started first, the short files fill in at the end.
LONG_FILES = ("test_calibration.py", "test_docs.py", "test_hybrid.py", "test_snowpack.py", "test_station.py",
              "test_gradients.py", "test_multiprocess.py", "test_site_setup.py", "test_experiment.py",
              "test_column_chunk.py", "test_ensemble.py", "test_sharding.py", "test_fault_injection.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole and in order


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches():
    """Each test module starts from empty JAX caches: compiled programs of earlier modules are freed (the
    process stays at a few GB instead of growing past 10), and no module's programs depend on what an earlier
    module happened to trace (XLA:CPU once crashed compiling a gradient only after hundreds of other tests)."""
    import jax

    jax.clear_caches()
    gc.collect()
    yield


@pytest.fixture(scope="session")
def shipped_data(pytestconfig, tmp_path_factory):
    """``shipped_data(tree)``: the original files of ``tests/data/<tree>`` (see tests/shipped_data.py), rebuilt
    once into pytest's cache folder (a temporary folder when the cache is disabled) and reused while unchanged."""
    cache = (
        pytestconfig.cache.mkdir("dam_test_data") if hasattr(pytestconfig, "cache") else tmp_path_factory.mktemp("d")
    )
    return lambda tree: materialise(tree, Path(cache))


@pytest.fixture(scope="session")
def reference_dir(shipped_data) -> Path:
    """The Fortran soil-column reference cases ``bondville`` and ``koren_freeze`` (tests/data/noahmp_soil)."""
    return shipped_data("noahmp_soil")


@pytest.fixture(scope="session")
def full_reference_dir(shipped_data) -> Path:
    """The full Fortran Noah-MP v5.2 Bondville 1998 run: forcing.csv, output.csv.gz, setup.json, README.md."""
    return shipped_data("noahmp_full/bondville")


@pytest.fixture(scope="session")
def cold_reference_dir(shipped_data) -> Path:
    """The full Fortran Noah-MP v5.2 Bondville 1998 run with the air 8 K colder (multi-layer snow, frozen soil):
    forcing.csv, output.csv.gz (float32 history values), setup.json, README.md."""
    return shipped_data("noahmp_full/bondville_cold")


@pytest.fixture(scope="session")
def shared_data_dir(shipped_data) -> Path:
    """The raw station files of bondville_1998, hyytiala_2000_2010 and tanggula_forcing_only (one folder per site,
    each with its SOURCE.md), as the site readers read them."""
    return shipped_data("stations")


@pytest.fixture
def grid_config():
    """``grid_config(root, name, **kw)``: a grid-run configuration on ``root``/static.nc and forcing.nc that
    writes ``name``.zarr with checkpoints in ``name``_ckpt (time blocks of 16 steps unless given)."""
    from dam.grid_run import GridRunConfig

    def make(root: Path, name: str, **kw) -> GridRunConfig:
        kw = {"time_block": 16, **kw}
        return GridRunConfig(
            static=str(root / "static.nc"),
            forcing=str(root / "forcing.nc"),
            output=str(root / f"{name}.zarr"),
            checkpoint_dir=str(root / f"{name}_ckpt"),
            **kw,
        )

    return make
