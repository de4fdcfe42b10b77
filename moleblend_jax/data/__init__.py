"""Shard writer/reader, padding and the tf.data pipeline (docs/batch_format.md).

Importing this package does not import TensorFlow; `moleblend_jax.data.pipeline` does.
"""

from moleblend_jax.data.batching import bucket_batches, pad_batch
from moleblend_jax.data.reader import iter_records, load_metadata
from moleblend_jax.data.shards import build_shards

__all__ = ["bucket_batches", "build_shards", "iter_records", "load_metadata", "pad_batch"]
