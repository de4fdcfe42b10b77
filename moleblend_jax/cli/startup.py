"""What every command does before its own code: the start-up preamble and absl's app.run.

The preamble is written once here: glibc's malloc settings (host_allocator, read only at
start-up, so the process restarts itself once with them) and TensorFlow's C++ logs off. Then the
command's flags are defined and absl parses argv; `--help` shows the command's usage (its module
docstring: what a user needs first) and its own flags only.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

HELP_FLAGS = ("-h", "--help", "--helpshort", "-?")


def preamble(malloc_tunables: bool) -> None:
    """Restart with host_allocator's malloc settings (when asked and missing), quiet TF's C++."""
    if malloc_tunables:
        from moleblend_jax.host_allocator import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def quiet_library_logs() -> None:
    """JAX's probe for a TPU and orbax log INFO lines; a user's mistake should be the only
    line."""
    import logging

    from moleblend_jax.train import checkpoint

    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    checkpoint.quiet_orbax_info_logs()


def define_config_and_workdir(config_help: str, workdir_help: str) -> None:
    """--config (a config file, FILE.py[:variant], overridable as --config.x=y) and --workdir,
    both required: the flags of the commands that train."""
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, config_help)
    flags.DEFINE_string("workdir", None, workdir_help)
    flags.mark_flags_as_required(["config", "workdir"])


def begin(argv: list[str], guard_transfers: bool = False) -> None:
    """What a command's main does first: refuse positional arguments, quiet the library logs
    and, for the commands that train, make every host <-> device transfer explicit."""
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    if guard_transfers:
        import jax

        # Every host <-> device transfer must be explicit (device_put, global_batch, device_get).
        jax.config.update("jax_transfer_guard", "disallow")


def usage(command: ModuleType, prog: str) -> str:
    """The command's docstring, then its flags (absl's listing of the flags it defines)."""
    from absl import flags

    listing = flags.FLAGS.module_help(command.__name__)
    return f"usage: {prog} [flags]\n\n{(command.__doc__ or '').strip()}\n\nflags:\n{listing}\n"


def run(command: ModuleType, argv: list[str] | None = None, prog: str | None = None) -> None:
    """Runs `command` (a module of this package) with `argv` (default: sys.argv): preamble,
    `command.define_flags()`, then absl's `app.run(command.main)`."""
    argv = list(sys.argv if argv is None else argv)
    prog = prog or argv[0]
    preamble(getattr(command, "MALLOC_TUNABLES", False))
    from absl import app

    command.define_flags()
    from moleblend_jax.errors import exit_on_user_error

    exit_on_user_error(_refuse_retired_config_flags)(argv[1:])
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(usage(command, prog), end="")
        sys.exit(0)
    # absl's usage text on a UsageError is __main__'s docstring: make it the command's.
    main_module = sys.modules.get("__main__")
    if main_module is not None:
        main_module.__doc__ = command.__doc__
    app.run(command.main, argv=[prog, *argv[1:]])


def _refuse_retired_config_flags(args: list[str]) -> None:
    """UserError for --config.model.K where K became a fact of the record schema
    (ml_collections would print a traceback naming only the key)."""
    from moleblend_jax.errors import UserError
    from moleblend_jax.schema import RETIRED_MODEL_KEYS

    for arg in args:
        key = arg.split("=", 1)[0].removeprefix("--config.model.")
        if arg.startswith("--config.model.") and key in RETIRED_MODEL_KEYS:
            raise UserError(
                f"--config.model.{key} is not a setting: every record has "
                f"{RETIRED_MODEL_KEYS[key]} (moleblend_jax/schema.py); drop the flag"
            )
