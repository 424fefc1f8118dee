"""Floating-point set-up shared by the CLI, tests and benchmarks."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

# XLA:CPU contracts a*b+c into fused multiply-adds on FMA-capable CPUs; the Fortran reference (gfortran -O2,
# generic x86-64) never does. Capping the ISA at AVX removes the contraction (no FMA instructions), which
# matters for free runs through soil freezing, where 1-ulp differences grow.
NO_FMA_FLAG = "--xla_cpu_max_isa=AVX"


def fortran_exact_cpu() -> bool:
    """Ask XLA:CPU not to fuse multiply-adds. Effective only before JAX creates its CPU backend.

    Returns True when the flag is (now) in ``XLA_FLAGS``.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if NO_FMA_FLAG.split("=")[0] in flags:
        return NO_FMA_FLAG in flags
    os.environ["XLA_FLAGS"] = f"{flags} {NO_FMA_FLAG}".strip()
    return True


def emulate_cpu_devices(n: int) -> None:
    """Split the host CPU into ``n`` XLA devices (for sharding tests); only before JAX starts its backend."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def enable_x64() -> None:
    """Enable float64 in JAX (idempotent). Call before creating float64 arrays."""
    jax.config.update("jax_enable_x64", True)


def setup_numerics(dtype: str) -> None:
    """The CLI's floating-point and compile set-up: no fused multiply-adds, float64 if asked, the compile cache.

    Must run before JAX creates its CPU backend (i.e. before any array exists) and compiles anything.
    """
    from dam.compile_cache import enable_compile_cache

    fortran_exact_cpu()
    if dtype == "float64":
        enable_x64()
    enable_compile_cache()  # a second run of a command loads its compiled programs (docs/performance.md)


def resolve_dtype(name: str) -> jnp.dtype:
    """'float64' or 'float32' to a dtype, enabling x64 when float64 is asked for."""
    if name == "float64":
        enable_x64()
        return jnp.float64
    if name == "float32":
        return jnp.float32
    raise ValueError(f"dtype must be 'float64' or 'float32', got {name!r}")
