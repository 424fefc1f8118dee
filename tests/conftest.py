"""Test set-up before JAX starts its backend: float64, Fortran-like arithmetic (no FMA contraction) and eight
emulated CPU devices for the sharding tests (unsharded computations run on the first)."""

import os
from pathlib import Path

import pytest

from dam.precision import emulate_cpu_devices, enable_x64, fortran_exact_cpu

fortran_exact_cpu()
emulate_cpu_devices(8)
enable_x64()

SHARED = Path(os.environ.get("DAM_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REFERENCE = SHARED / "reference" / "noahmp_soil"
FULL_REFERENCE = SHARED / "reference" / "noahmp_full" / "bondville"
COLD_REFERENCE = SHARED / "reference" / "noahmp_full" / "bondville_cold"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The shared Fortran reference cases (tests needing them are skipped where ../shared is absent)."""
    if not REFERENCE.is_dir():
        pytest.skip("../shared/reference/noahmp_soil is not available")
    return REFERENCE


@pytest.fixture(scope="session")
def full_reference_dir() -> Path:
    """The full Fortran Noah-MP v5.2 Bondville 1998 run (forcing.csv, output.csv.gz, setup.json)."""
    if not FULL_REFERENCE.is_dir():
        pytest.skip("../shared/reference/noahmp_full/bondville is not available")
    return FULL_REFERENCE


@pytest.fixture(scope="session")
def cold_reference_dir() -> Path:
    """The full Fortran Noah-MP v5.2 Bondville 1998 run with the air 8 K colder (snow layers, frozen soil)."""
    if not COLD_REFERENCE.is_dir():
        pytest.skip("../shared/reference/noahmp_full/bondville_cold is not available")
    return COLD_REFERENCE


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared station data (one folder per site, each with a SOURCE.md)."""
    if not DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return DATA


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
