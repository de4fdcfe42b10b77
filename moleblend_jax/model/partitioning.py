"""Logical axis names -> mesh axes ("data", "fsdp") for the model params (STYLE: lm1b-style)."""

# Params are fully sharded along their "embed" (hidden, 768) dimension over the "fsdp" mesh axis and
# replicated otherwise; the batch dimension of activations goes over ("data", "fsdp").
LOGICAL_AXIS_RULES: list[tuple[str, str | tuple[str, ...] | None]] = [
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", None),
    ("kv", None),
    ("heads", None),
    ("vocab", None),
    ("hops", None),
    ("rbf", None),
    ("rbf_hidden", None),
    ("pair", None),
    ("pair_outer", None),
    ("classes", None),
]
