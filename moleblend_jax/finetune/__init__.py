"""Fine-tuning and evaluation: data set registry and loaders, splits, metrics (SPEC 7-8)."""

from moleblend_jax.finetune.catalog import (
    DATASETS,
    QM9_REPORT_UNIT,
    QM9_SPLIT_SIZES,
    QM9_TASKS,
    DatasetSpec,
    get_spec,
    load_dataset,
    load_moleculenet_csv,
    load_qm9,
    parse_qm9_geometry,
    qm9_to_report_units,
)
from moleblend_jax.finetune.metrics import compute_metric, is_better, mae, rmse, roc_auc
from moleblend_jax.finetune.splits import (
    check_split,
    load_split,
    make_split,
    random_split,
    save_split,
    scaffold_split,
)

__all__ = [
    "DATASETS",
    "QM9_REPORT_UNIT",
    "QM9_SPLIT_SIZES",
    "QM9_TASKS",
    "DatasetSpec",
    "check_split",
    "compute_metric",
    "get_spec",
    "is_better",
    "load_dataset",
    "load_moleculenet_csv",
    "load_qm9",
    "load_split",
    "mae",
    "make_split",
    "parse_qm9_geometry",
    "qm9_to_report_units",
    "random_split",
    "rmse",
    "roc_auc",
    "save_split",
    "scaffold_split",
]
