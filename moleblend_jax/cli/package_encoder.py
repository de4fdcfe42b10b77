"""Packages a pretraining run's encoder as a registered pretrained encoder's weights file.

  moleblend package-encoder --checkpoint=PRETRAIN_WORKDIR/checkpoints --name=small-moses
  (the same: python -m moleblend_jax.cli package-encoder ...)

Writes moleblend_jax/pretrained/<name>.npz (--out_dir: elsewhere) holding the encoder's params
(bfloat16-rounded unless --dtype=float32), the model config and the run's budget and last
held-out metrics, sets the entry's sha256 in registry.json beside it, and prints the file's
sha256, size and parameter count and the held-out metrics to paste into the model card
(moleblend_jax/pretrained/<name>.md). Then `--config.init_checkpoint=pretrained:<name>` and
`Embedder.from_pretrained("<name>")` load it. Mistakes are one line on stderr (exit status 2).
"""

from absl import app, flags

from moleblend_jax.errors import exit_on_user_error

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("checkpoint", None, "A pretraining workdir or its checkpoints directory.")
    flags.DEFINE_string(
        "name", None, "The registered name (moleblend_jax/pretrained/registry.json)."
    )
    flags.DEFINE_string(
        "out_dir", None, "Where to write; default: the package's pretrained/ folder."
    )
    flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Storage dtype of the weights.")
    flags.DEFINE_integer("step", None, "The checkpoint step; default: the newest.")
    flags.mark_flags_as_required(["checkpoint", "name"])


@exit_on_user_error
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from moleblend_jax.pretrained import package
    from moleblend_jax.train import checkpoint

    checkpoint.quiet_orbax_info_logs()
    done = package.package_checkpoint(
        FLAGS.checkpoint, FLAGS.name, FLAGS.out_dir, FLAGS.dtype, FLAGS.step
    )
    print(
        f"wrote {done.path}: {done.size_bytes:,} bytes ({done.size_bytes / 1e6:.2f} MB), "
        f"{done.num_params:,} params as {FLAGS.dtype}, step {done.step}"
    )
    print(f"sha256 {done.sha256} (set in {done.path.parent / 'registry.json'})")
    held_out = ", ".join(f"{k} {v:.4f}" for k, v in sorted(done.held_out.items()))
    print(f"held-out metrics (model card): {held_out or 'none logged'}")
