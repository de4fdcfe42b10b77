"""Fine-tuning recipe (SPEC 7).

  python experiments/finetune.py --config=configs/finetune.py --config.dataset=esol --workdir=DIR \
      [--config.init_checkpoint=PRETRAIN_WORKDIR/checkpoints]
  --config=configs/finetune.py:tiny   the CPU-sized model (to fine-tune a base.py:tiny checkpoint)
  --config=configs/finetune.py:small  the CPU study's model (a base.py:small checkpoint)

The model section must match the pretrained checkpoint's; the 3D modules are dropped for 2D
data sets and the 2D ones for QM9.
"""

import ml_collections

from moleblend_jax.configs import base


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    variant = variant or "base"
    pretrain = base.get_config(variant)
    config = ml_collections.ConfigDict()
    # The encoder takes its 2D or 3D modules from the data set (3D for QM9).
    config.model = pretrain.model
    config.model.activation_dropout = 0.0  # SPEC 7: attention dropout 0.1 only.
    config.model.stochastic_depth = 0.0
    config.mesh = pretrain.mesh

    # A registered name (finetune/catalog.py), "csv" / "sdf": your own file at dataset_path, or
    # "unimol_lmdb": a Uni-Mol directory of train/valid/test.lmdb (finetune/unimol_data.py).
    config.dataset = "esol"
    # The MoleculeNet CSV of a registered name, your own CSV / SDF (dataset "csv" / "sdf") or
    # the Uni-Mol directory (dataset "unimol_lmdb").
    config.dataset_path = ml_collections.FieldReference(None, field_type=str)
    # Own files only (finetune/user_data.py). CSV column of the SMILES; "" = the one named
    # "smiles" in any case.
    config.smiles_column = ""
    # Comma-separated label columns (CSV) or SD properties (SDF), one task each, blank cells =
    # missing labels; "" = every numeric column except the SMILES, id and split columns.
    config.label_columns = ""
    # "regression" | "classification"; "" = inferred (every label 0 or 1: classification).
    config.task_type = ""
    # Column naming each row (kept as the molecule's name); "" = none (SDF: the title line).
    config.id_column = ""
    # Column of train / valid / test per row, read with split "column" (the default when set);
    # without valid rows, 10% of the train rows are carved out as valid by scaffold.
    config.split_column = ""
    # "scaffold" | "random" | "column" (own files with split_column) | "files" (unimol_lmdb: its
    # files' split); empty = the data set's default (own files: "column" with a split_column,
    # else "scaffold"; unimol_lmdb: "files").
    config.split = ""
    # A saved split of record ids to read (same for every seed); never written. Unset: each seed's
    # split is made and saved as WORKDIR/split_<kind>_seed<k>.json.
    config.split_file = ml_collections.FieldReference(None, field_type=str)
    # pretrained:NAME (a shipped encoder: moleblend_jax/pretrained/registry.json), a pretraining
    # workdir's orbax checkpoints directory, or the original's .pt file; None = random init.
    config.init_checkpoint = ml_collections.FieldReference(None, field_type=str)
    # Molecule descriptors concatenated to the graph token before the head, comma-separated:
    # "morgan_counts" (radius 2, 2048 bins), "rdkit_2d" (RDKit's 2D descriptors, normalised on
    # the train split); "" = none (finetune/extra_features.py).
    config.extra_features = ""
    # SDF files: "" = from the file (every record 3D: the 3D encoder; none: 2D; a mix is
    # refused with the counts), "3d" (records without 3D coordinates skipped and counted as
    # no_3d_coordinates) or "2d" (coordinates ignored). unimol_lmdb: "" / "2d" = 2D, "3d" =
    # each record's first conformer (hydrogens dropped).
    config.modality = ""
    # A rerun in a workdir whose run used other data (file contents, columns, split) is
    # refused unless this is true; the new run then replaces it when it finishes.
    config.overwrite = False
    config.num_seeds = 3
    # 0 = all; else a fixed random subset (QM9: the first max_molecules of the source).
    config.max_molecules = 0

    # Regression: "label_units" (the original's) compares output * std + mean with the raw
    # labels, one scalar mean/std; "standardised" compares the output with per-task
    # standardised labels (use it for multi-task sets in mixed units, such as QM9's 12).
    config.regression_loss = "label_units"
    config.batch_size = 128
    config.epochs = 80
    config.warmup_epochs = 8
    config.patience = 20  # Early stopping on the validation metric.
    config.optimizer = ml_collections.ConfigDict(
        dict(
            peak_lr=1e-5,
            end_lr=0.0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            eps_placement="fairseq",  # The original's Adam; "optax" as optax.adamw (base.py).
            weight_decay=5e-5,
            grad_clip_norm=5.0,
        )
    )
    # Shards of the data set are built once under WORKDIR/data/<dataset>; molecules with more
    # than max_atoms heavy atoms are skipped there (counted in results.json "skipped"), so the
    # last bucket must be >= max_atoms.
    config.data = ml_collections.ConfigDict(
        dict(buckets=(32, 64, 128, 256), max_atoms=256, num_prep_workers=2)
    )
    config.seed = 0
    if variant == "small":  # The CPU study's: the same settings for scratch and pretrained.
        config.batch_size = 32
        config.epochs = 60
        config.warmup_epochs = 3
        config.patience = 15
        config.optimizer.peak_lr = 1e-4
        config.data.buckets = (32, 64)
        config.data.max_atoms = 64
    if variant == "tiny":
        config.batch_size = 64
        config.epochs = 30
        config.warmup_epochs = 3
        config.patience = 10
        config.optimizer.peak_lr = 3e-4
        config.data.buckets = (32, 64)
        config.data.max_atoms = 64
    return config
