"""The platform a model is traced for, which picks platform-specific forms of a few ops.

Usually the default backend. A program compiled ahead of time for other devices (train/aot.py
compiles TPU programs on a CPU host) is traced under `compiling_for(platform)`, so it gets the
forms it would get on that platform rather than the host's.
"""

import contextlib
import contextvars

import jax

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("target", default=None)


def target() -> str:
    """'cpu', 'gpu' or 'tpu': the platform being traced for."""
    return _TARGET.get() or jax.default_backend()


@contextlib.contextmanager
def compiling_for(platform: str):
    """Traces inside this block are for `platform` (a device's `.platform`)."""
    token = _TARGET.set(platform)
    try:
        yield
    finally:
        _TARGET.reset(token)
