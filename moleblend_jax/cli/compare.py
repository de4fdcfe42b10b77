"""Tabulates fine-tuning results next to the published MoleBLEND numbers, the other test
metrics and MUBen's reference re-runs (finetune/comparison.py).

Usage:
  moleblend compare RESULTS.json [RESULTS.json ...] [--out=FILE.md]
  (the same: python experiments/compare.py RESULTS.json ...)
"""

from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

from moleblend_jax.errors import exit_on_user_error
from moleblend_jax.finetune.comparison import load_results, render_markdown

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("out", None, "Also write the Markdown table to this file.")


@exit_on_user_error
def main(argv: Sequence[str]) -> None:
    if len(argv) < 2:
        raise app.UsageError("Give one or more results.json files.")
    markdown = render_markdown(load_results(argv[1:]))
    print(markdown, end="")
    if FLAGS.out:
        Path(FLAGS.out).write_text(markdown)
