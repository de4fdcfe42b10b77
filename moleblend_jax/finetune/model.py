"""The fine-tuning model: the pretrained encoder plus a graph-token head (SPEC 7)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moleblend_jax.errors import UserError
from moleblend_jax.model import MoleBlendEncoder
from moleblend_jax.model.config import ModelConfig
from moleblend_jax.model.layers import dense, gelu


class FinetuneModel(nn.Module):
    """[batch per docs/batch_format.md] -> [B, num_tasks] float32 logits or standardised values.

    Head on the graph token: Linear(D, D) -> GELU -> Linear(D, num_tasks), N(0, init_std)
    kernels and zero biases with logical axes like every model param (`head_hidden` kernel
    ("embed", "mlp"), `head_out` ("mlp", "classes")), in float32. The encoder is named "encoder"
    as in MoleBlend, so pretrained parameters load by name. `config` is config.model (a
    ConfigDict, converted once on construction) or a ModelConfig.
    """

    config: ModelConfig
    num_tasks: int
    use_2d: bool = True
    use_3d: bool = False

    def __post_init__(self):
        self.config = ModelConfig.coerce(self.config)
        super().__post_init__()

    @nn.compact
    def __call__(self, batch: dict, train: bool = False) -> jax.Array:
        cfg = self.config
        encoder = MoleBlendEncoder(
            config=cfg, use_2d=self.use_2d, use_3d=self.use_3d, name="encoder"
        )
        graph_repr = encoder(batch, train).graph_repr

        def head(features, axes, name):
            # float32: a [B, D] readout costs nothing, and regression targets keep precision.
            return dense(features, axes, std=cfg.init_std, dtype=jnp.float32, name=name)

        hidden = gelu(head(cfg.hidden_dim, ("embed", "mlp"), "head_hidden")(graph_repr))
        return head(self.num_tasks, ("mlp", "classes"), "head_out")(hidden)


def load_pretrained_encoder(params: dict, pretrained: dict) -> tuple[dict, list[str]]:
    """Copies pretrained["encoder"] into params["encoder"] wherever the fine-tuning encoder has
    the same parameter; modules it lacks (3D modules for 2D tasks, pretraining heads) are
    dropped, as the original does.

    Returns (new params, sorted names of dropped pretrained encoder submodules). Raises if a
    shared parameter has a different shape (a checkpoint of another model size).
    """
    if "encoder" not in pretrained:
        raise ValueError(
            "The checkpoint has no 'encoder' parameters; is it a MoleBLEND checkpoint?"
        )
    source = pretrained["encoder"]
    dropped = sorted(set(source) - set(params["encoder"]))

    def take(path, current):
        node = source
        for key in path:
            node = node.get(key.key) if isinstance(node, dict) else None
            if node is None:
                return current  # Only in the fine-tuning model: keep its initialisation.
        if np.shape(node) != np.shape(current):
            name = "/".join(k.key for k in path)
            raise UserError(
                f"encoder/{name}: checkpoint shape {np.shape(node)} != model shape "
                f"{np.shape(current)}; fine-tune with the config variant it was pretrained with."
            )
        return jnp.asarray(node, current.dtype)

    encoder = jax.tree_util.tree_map_with_path(take, params["encoder"])
    return {**params, "encoder": encoder}, dropped
