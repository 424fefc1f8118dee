"""Which functions XLA compiles inside a block, read from JAX's public monitoring events (not a private cache)."""

import contextlib

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compiled_functions():
    """Yield a list that collects the name (``jit(<function>)``) of every program XLA compiles in the block."""
    names: list[str] = []

    def listen(event: str, duration: float, **kwargs) -> None:
        if event == COMPILE_EVENT:
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def jit_name(fn) -> str:
    """The name :func:`compiled_functions` records for a jitted ``fn``: taken from the function object, so that a
    renamed function fails the import rather than passing a ``not in`` check vacuously."""
    return f"jit({fn.__name__})"


def sees_compiles() -> bool:
    """Whether :func:`compiled_functions` sees a compilation (a positive control that does not depend on which
    programs earlier tests compiled): a new function is compiled inside it."""

    def _probe(x):
        return x + 1

    with compiled_functions() as names:
        jax.jit(_probe)(1.0)
    return "jit(_probe)" in names
