"""The fine-tuning model: the pretrained encoder plus a graph-token head (SPEC 7)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.errors import UserError
from moleblend_jax.model import THREE_D_SUBMODULES, TWO_D_SUBMODULES, MoleBlendEncoder
from moleblend_jax.model.config import ModelConfig
from moleblend_jax.model.layers import dense, gelu
from moleblend_jax.train.checkpoint import require_same_params


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
    """Copies pretrained["encoder"] into params["encoder"], parameter by parameter; the
    modality modules the fine-tuning encoder lacks (3D modules for 2D tasks, 2D ones for QM9)
    are dropped, as the original does (the pretraining heads live outside "encoder").

    Returns (new params, sorted names of dropped pretrained encoder submodules). Raises a
    UserError naming any other parameter missing from or left over in the checkpoint
    (another layer count) or of another shape (another model size).
    """
    if "encoder" not in pretrained:
        raise UserError("The checkpoint has no 'encoder' parameters; is it a MoleBLEND checkpoint?")
    source, target = pretrained["encoder"], params["encoder"]
    dropped = sorted((set(source) - set(target)) & set(THREE_D_SUBMODULES + TWO_D_SUBMODULES))
    source = {k: v for k, v in source.items() if k not in dropped}
    require_same_params(
        source,
        target,
        "the checkpoint's encoder",
        "fine-tune with the model config it was pretrained with (num_layers, hidden_dim)",
    )
    encoder = jax.tree.map(lambda saved, current: jnp.asarray(saved, current.dtype), source, target)
    return {**params, "encoder": encoder}, dropped
