"""Constants shared by the record schema, the shard format and the padded batches.

A leaf module (plain Python, imports nothing): `moleblend_jax.chem` builds records with it and
`moleblend_jax.data` stores and pads them, so neither imports the other for it. See
docs/batch_format.md for the record and batch contract and docs/data.md for the on-disk layout.
"""

# Bumped whenever the on-disk serialisation changes; readers refuse other versions.
SCHEMA_VERSION = 2

# SPEC 1: 9 OGB atom categoricals and 3 OGB bond categoricals.
NUM_ATOM_FEATURES = 9
NUM_BOND_FEATURES = 3
# Sizes of the OGB vocabularies (`misc` slot included), in feature order.
ATOM_FEATURE_DIMS = (119, 5, 12, 12, 10, 6, 6, 2, 2)
BOND_FEATURE_DIMS = (5, 6, 2)
# config.model keys that once held the two counts above: a saved config (model_config.json, a
# fine-tuning manifest, config.json) holding one at this value still loads; another value,
# or the key given as a flag, is refused.
RETIRED_MODEL_KEYS = {
    "num_atom_features": NUM_ATOM_FEATURES,
    "num_bond_features": NUM_BOND_FEATURES,
}

# SPEC 1: shortest-path hop count for disconnected pairs (the original's reserved value).
UNREACHABLE_SPD = 510
# SPEC 1: bonds kept per shortest path (multi-hop edge encoding).
MAX_PATH_HOPS = 5
# Pad id of every shifted categorical in a batch; real ids are shifted by +1.
PAD_ID = 0

# Shards store atom indices and hop counts as uint8 (docs/data.md), so at most 256 atoms per
# molecule; an off-diagonal stored hop count of 0 means unreachable.
MAX_SUPPORTED_ATOMS = 256

# Where a record's coordinates come from (the shard writer's --conformers): RDKit's conformer,
# none, or the input's own (an SDF's conformer, QM9's xyz).
CONFORMER_MODES = ("rdkit", "none", "file")

# Keys of one record (docs/batch_format.md), in serialisation order.
RECORD_KEYS = (
    "id",
    "smiles",
    "atom_features",
    "bond_features",
    "bond_atoms",
    "spd",
    "path_bonds",
    "coords",
    "has_coords",
)
# Optional keys: labels when the source has them, name when the molecule has one.
LABEL_KEY = "labels"
NAME_KEY = "name"

SHARD_SUFFIX = ".tfrecord"
METADATA_FILE = "metadata.json"
