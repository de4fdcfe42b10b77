"""Interoperability with the original PyTorch/fairseq MoleBLEND checkpoints (docs/interop.md)."""

from moleblend_jax.interop.fairseq import (
    FINETUNED,
    PRETRAINED,
    Conversion,
    ImportedCheckpoint,
    checkpoint_kind,
    convert_state_dict,
    export_state_dict,
    import_checkpoint,
    load_checkpoint,
    params_from_state_dict,
    state_dict_from_params,
)
from moleblend_jax.interop.tables import FairseqTables

__all__ = [
    "FINETUNED",
    "PRETRAINED",
    "Conversion",
    "FairseqTables",
    "ImportedCheckpoint",
    "checkpoint_kind",
    "convert_state_dict",
    "export_state_dict",
    "import_checkpoint",
    "load_checkpoint",
    "params_from_state_dict",
    "state_dict_from_params",
]
