"""The lock of the process training in a workdir (WORKDIR/lock): one run per workdir."""

import contextlib
import fcntl
import json
import logging
import os
import socket

from etils import epath

from moleblend_jax.errors import UserError
from moleblend_jax.train.paths import is_local

LOCK_FILE = "lock"


@contextlib.contextmanager
def locked(workdir: epath.Path, enabled: bool = True):
    """Holds an exclusive lock on `workdir` (WORKDIR/lock, holding the pid and host) while the
    block runs; a second run on the same workdir gets a UserError naming the holder. The kernel
    drops the lock when its process dies, so a killed run never leaves a stale one. Only local
    workdirs can be locked (others are logged); `enabled`: this process locks (process 0)."""
    if not enabled or not is_local(workdir):
        if enabled:
            logging.warning("%s is not local: not locked against a second run.", workdir)
        yield
        return
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = json.loads(handle.read() or "{}")
            raise UserError(
                f"{workdir} is in use by another run (pid {holder.get('pid')} on host "
                f"{holder.get('host')}, lock {path}); wait for it to finish or use another "
                "--workdir"
            ) from None
        handle.truncate(0)
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
