"""CPU-sized pretraining config: 4 layers, hidden 128, 8 heads, K=32 (same as base.py:tiny)."""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "configs_base", pathlib.Path(__file__).with_name("base.py")
)
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


def get_config():
    return base.get_config("tiny")
