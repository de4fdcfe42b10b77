"""The flags that choose fine-tuning's molecules in the tools that fit models on fixed features
(experiments/make_split.py, baseline_rf.py, linear_probe.py), defined once: each sets the
configs/finetune.py key of its name (`max_atoms`: config.data.max_atoms), its default the
config's, so a tool scores the molecules a fine-tuning run with those settings trains on.
"""

from absl import flags

from moleblend_jax.configs import finetune as finetune_configs

# Your own CSV / SDF (dataset csv / sdf): the config keys that read it (configs/finetune.py).
OWN_FILE_KEYS = ("smiles_column", "label_columns", "task_type", "id_column", "split_column")


def define(own_files: bool = False) -> None:
    """--dataset, --dataset_path (alias --path), --max_molecules, --max_atoms and, with
    `own_files`, the OWN_FILE_KEYS flags."""
    config = finetune_configs.get_config()
    own = ", or csv / sdf (your own file at --dataset_path)" if own_files else ""
    flags.DEFINE_string("dataset", None, f"config.dataset: a registered name{own}.", required=True)
    flags.DEFINE_string(
        "dataset_path", None, "config.dataset_path: the MoleculeNet CSV (default: the bundled copy)"
    )
    flags.DEFINE_alias("path", "dataset_path")
    flags.DEFINE_integer(
        "max_molecules", config.max_molecules, "config.max_molecules: 0 = all, else a fixed subset."
    )
    flags.DEFINE_integer(
        "max_atoms", config.data.max_atoms, "config.data.max_atoms: larger molecules are skipped."
    )
    for key in OWN_FILE_KEYS if own_files else ():
        flags.DEFINE_string(key, config[key], f"config.{key} (configs/finetune.py).")


def values() -> dict:
    """The flags' values as keywords of `finetune.baselines.load_data` and the tools' `run`:
    name, path, max_molecules, max_atoms and the OWN_FILE_KEYS defined."""
    values = flags.FLAGS
    settings = dict(
        name=values.dataset,
        path=values.dataset_path,
        max_molecules=values.max_molecules,
        max_atoms=values.max_atoms,
    )
    return settings | {key: values[key].value for key in OWN_FILE_KEYS if key in values}
