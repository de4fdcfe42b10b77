"""TensorFlow as the input pipeline uses it: CPU only (the accelerators belong to jax), quiet.

Import `tf` from here, never `tensorflow` directly, so the settings come first.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")
tf.get_logger().setLevel("ERROR")

__all__ = ["tf"]
