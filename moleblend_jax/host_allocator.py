"""glibc malloc settings that stop XLA:CPU from page-faulting its buffers again every step.

XLA:CPU takes each step's temporary buffer from malloc (147 MB for the tiny pretraining step at
batch 32, N=32). glibc serves a block above 32 MB with a fresh mmap and unmaps it on free, so
every step touches 36,000 new 4 KiB pages: ~0.1 s of kernel time per tiny step on the 2-core
benchmark machine (benchmarks/README.md). These tunables serve large blocks from one heap that is
never trimmed, so its pages stay mapped, and back it with transparent huge pages. glibc reads
them only when a process starts, so the entry points call `reexec_with_malloc_tunables()` first,
which restarts the interpreter once with them set. They change where host memory comes from,
never a number a step computes.
"""

import os
import sys

MALLOC_TUNABLES = {
    "glibc.malloc.arena_max": "1",  # One heap: other arenas cap at 64 MB and shrink on free.
    "glibc.malloc.mmap_max": "0",  # Large blocks from that heap, not a fresh mmap each.
    "glibc.malloc.trim_threshold": str(2**46),  # Never hand freed heap pages back.
    "glibc.malloc.hugetlb": "1",  # madvise(MADV_HUGEPAGE) on the heap (glibc >= 2.35).
}
OPT_OUT_ENV = "MOLEBLEND_KEEP_MALLOC"  # Set to 1 to keep the process's own allocator settings.
_REEXECED_ENV = "MOLEBLEND_MALLOC_REEXECED"


def uses_glibc() -> bool:
    """Whether this process runs on glibc (the tunables mean nothing to other C libraries)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


def _missing(current: str) -> list[str]:
    """The "key=value" items of MALLOC_TUNABLES whose key a GLIBC_TUNABLES value lacks."""
    present = {item.split("=", 1)[0] for item in current.split(":") if item}
    return [f"{key}={value}" for key, value in MALLOC_TUNABLES.items() if key not in present]


def tunables_with_defaults(current: str) -> str:
    """A GLIBC_TUNABLES value with MALLOC_TUNABLES added; keys already in `current` are kept."""
    return ":".join([item for item in current.split(":") if item] + _missing(current))


def missing_tunables() -> str:
    """The MALLOC_TUNABLES this process did not start with, as a GLIBC_TUNABLES value ('' if
    none are missing, off glibc, or with OPT_OUT_ENV=1)."""
    if os.environ.get(OPT_OUT_ENV) == "1" or not uses_glibc():
        return ""
    return ":".join(_missing(os.environ.get("GLIBC_TUNABLES", "")))


def reexec_with_malloc_tunables() -> None:
    """Restart this Python process (same argv, same pid) with MALLOC_TUNABLES, at most once.

    Does nothing when `missing_tunables()` is empty. Call it at the top of an entry point,
    before anything slow is imported and before any thread starts.
    """
    if os.environ.pop(_REEXECED_ENV, None) == "1" or not missing_tunables():
        return  # Popped: child processes inherit the tunables, not the marker.
    tunables = tunables_with_defaults(os.environ.get("GLIBC_TUNABLES", ""))
    env = dict(os.environ, GLIBC_TUNABLES=tunables, **{_REEXECED_ENV: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
