"""`moleblend SUBCOMMAND`: the user's commands, one thin module each over the library.

Each module (pretrain.py, finetune.py, ...) holds its usage text as its docstring, a
`define_flags()` (absl flags, defined only when that command runs, so that two commands' flags of
the same name never meet) and a `main(argv)`; `main.py` dispatches on argv[1]. The scripts under
experiments/ and data_prep/ are one-line shims over the same modules.
"""

# Subcommand -> (module in this package, what it is for): the order `moleblend --help` lists.
SUBCOMMANDS = {
    "pretrain": ("pretrain", "pretrain the encoder (--config=configs/base.py[:tiny])"),
    "finetune": ("finetune", "fine-tune on a data set or your own CSV / SDF, over seeds"),
    "sweep": ("sweep", "search fine-tuning hyperparameters on validation, then score on test"),
    "predict": ("predict", "predict new molecules with a fine-tuning workdir"),
    "embed": ("embed", "embed molecules with a pretrained or fine-tuned encoder"),
    "build-shards": ("build_shards", "build TFRecord shards from QM9, MOSES, .smi, .csv, .sdf"),
    "import-checkpoint": ("import_checkpoint", "import an original (fairseq) checkpoint"),
    "compare": ("compare", "tabulate results.json files next to the published numbers"),
    "aot": ("aot", "size a run for a TPU slice: compile its programs here, report per chip"),
    "package-encoder": ("package_encoder", "package a pretrained encoder for pretrained:NAME"),
}
