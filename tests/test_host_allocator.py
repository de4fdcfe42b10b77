"""The glibc malloc settings the entry points restart with (moleblend_jax/host_allocator.py)."""

import os
import pathlib
import subprocess
import sys

import pytest

from moleblend_jax import host_allocator

# Frees and re-allocates a 64 MiB block (as XLA:CPU does with its temp buffer every step) and
# prints "pid|GLIBC_TUNABLES|fewest page faults of a re-allocation|env names". numpy's own
# MADV_HUGEPAGE is turned off so that only malloc's settings decide how many pages fault.
PROBE = """
import os, resource
import numpy as np
from moleblend_jax import host_allocator
host_allocator.reexec_with_malloc_tunables()
np._core.multiarray._set_madvise_hugepage(False)
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(16 * 2**20, np.float32).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
tunables = os.environ.get("GLIBC_TUNABLES", "")
print(f"{os.getpid()}|{tunables}|{min(faults[1:])}|{sorted(os.environ)}")
"""
PAGES_OF_64_MIB = 16 * 2**20 * 4 // 4096

needs_glibc = pytest.mark.skipif(not host_allocator.uses_glibc(), reason="glibc only")


def run_probe(**env_overrides) -> tuple[bool, str, int]:
    """-> (ran in the pid it was started with, its GLIBC_TUNABLES, page faults)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GLIBC_TUNABLES", host_allocator.OPT_OUT_ENV, host_allocator._REEXECED_ENV)
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE],
        env={**env, **env_overrides},
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    pid, tunables, faults, env_names = out.strip().splitlines()[-1].split("|")
    assert host_allocator._REEXECED_ENV not in env_names  # Children must not skip the restart.
    return int(pid) == proc.pid, tunables, int(faults)


def test_defaults_are_appended_and_keys_already_set_kept():
    all_defaults = ":".join(f"{k}={v}" for k, v in host_allocator.MALLOC_TUNABLES.items())
    assert host_allocator.tunables_with_defaults("") == all_defaults
    merged = host_allocator.tunables_with_defaults("glibc.malloc.arena_max=4::glibc.other=1")
    items = merged.split(":")
    assert items[:2] == ["glibc.malloc.arena_max=4", "glibc.other=1"]
    assert "glibc.malloc.arena_max=1" not in items
    assert {item.split("=")[0] for item in items} >= set(host_allocator.MALLOC_TUNABLES)
    assert host_allocator.tunables_with_defaults(merged) == merged


@needs_glibc
def test_reexec_sets_the_tunables_in_place_and_freed_blocks_stay_mapped():
    same_pid, tunables, faults = run_probe()
    assert same_pid
    assert tunables == host_allocator.tunables_with_defaults("")
    # A fresh mmap would fault all 16,384 pages again; the kept heap faults none.
    assert faults < 8


@needs_glibc
def test_opt_out_keeps_the_default_allocator():
    thp = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
    same_pid, tunables, faults = run_probe(**{host_allocator.OPT_OUT_ENV: "1"})
    assert same_pid and tunables == ""
    if thp.exists() and "[always]" not in thp.read_text():
        assert faults >= PAGES_OF_64_MIB // 2  # glibc maps the block afresh each time.
