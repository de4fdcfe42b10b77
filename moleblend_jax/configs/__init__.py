"""Configs: `base` (the paper's pretraining recipe, variants base/tiny) and `finetune` (SPEC 7).

Each module has `get_config(variant=None) -> ml_collections.ConfigDict`. The command line loads
them through the thin files in the repository's `configs/` folder
(`--config=configs/base.py:tiny`); code imports them from here.
"""
