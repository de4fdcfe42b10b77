"""The `moleblend` console command: `moleblend SUBCOMMAND [flags]` runs moleblend_jax/cli/<it>.py.

Installed by `pip install -e .` (setup.cfg's console_scripts); `python -m moleblend_jax.cli`
is the same command without installing.
"""

from __future__ import annotations

import importlib
import sys

from moleblend_jax.cli import SUBCOMMANDS
from moleblend_jax.errors import EXIT_USER_ERROR

PROG = "moleblend"


def overview() -> str:
    """`moleblend --help`: the subcommands, one line each."""
    width = max(map(len, SUBCOMMANDS))
    lines = [
        f"usage: {PROG} SUBCOMMAND [flags]   ({PROG} SUBCOMMAND --help: its flags)",
        "",
        "subcommands:",
        *(f"  {name:<{width}}  {about}" for name, (_, about) in SUBCOMMANDS.items()),
        "",
        "Configs are absl config files with overrides, as in the experiments/ scripts:",
        f"  {PROG} finetune --config=configs/finetune.py:tiny --config.dataset=csv \\",
        "      --config.dataset_path=mine.csv --workdir=DIR",
        f"  {PROG} predict --workdir=DIR --input=new.csv --out=predictions.csv",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Dispatches `argv[1]` (default: sys.argv) to its module; --help or no subcommand prints
    the overview; an unknown one is a one-line error, exit status 2."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2:
        print(overview(), end="", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    if argv[1] in ("-h", "--help", "help"):
        print(overview(), end="")
        sys.exit(0)
    name = argv[1]
    if name not in SUBCOMMANDS:
        known = ", ".join(SUBCOMMANDS)
        print(f"error: unknown subcommand {name!r}; give one of {known}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    from moleblend_jax.cli import startup

    command = importlib.import_module(f"moleblend_jax.cli.{SUBCOMMANDS[name][0]}")
    startup.run(command, [argv[0], *argv[2:]], prog=f"{PROG} {name}")


if __name__ == "__main__":
    main()
