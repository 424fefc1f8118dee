"""Test set-up: float64 and Fortran-like arithmetic (no FMA contraction) before JAX starts its backend."""

from pathlib import Path

import pytest

from dam.precision import enable_x64, fortran_exact_cpu

fortran_exact_cpu()
enable_x64()

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference" / "noahmp_soil"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The shared Fortran reference cases (tests needing them are skipped where ../shared is absent)."""
    if not REFERENCE.is_dir():
        pytest.skip("../shared/reference/noahmp_soil is not available")
    return REFERENCE
