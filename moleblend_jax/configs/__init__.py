"""Configs: `base` (the paper's pretraining recipe, variants base/tiny), `finetune` (SPEC 7) and
`sweep` (the hyperparameter search space of `moleblend sweep`).

Each module has `get_config(variant=None) -> ml_collections.ConfigDict` (`sweep`: no variant).
The command line loads them through the thin files in the repository's `configs/` folder
(`--config=configs/base.py:tiny`); code imports them from here.
"""
