"""Analytic FLOPs of the pretraining model: the numerator of MFU.

Counts the multiply-adds of every matmul the model does per molecule (2 FLOPs each), from
the config and the padded atom count alone: what the model needs, not what a compiler emits
(XLA's own count, `hfu`'s numerator, adds elementwise work and any recomputation). Gathers,
softmax, norms and activations are not counted, as in PaLM's and MaxText's MFU.
"""

from moleblend_jax.model.config import ModelConfig

# One backward pass costs two forwards: the gradient of each matmul's input and of its weight.
TRAIN_FLOPS_PER_FORWARD_FLOP = 3


def encoder_flops_per_molecule(config: ModelConfig, num_atoms: int, use_3d: bool = True) -> int:
    """Matmul FLOPs of one `MoleBlendEncoder` forward for one molecule padded to `num_atoms`
    (`forward_flops_per_molecule`'s 3D bias, centrality and layers; 2D terms are gathers)."""
    cfg = ModelConfig.coerce(config)
    n, t = num_atoms, num_atoms + 1
    d, f, h, k = cfg.hidden_dim, cfg.ffn_dim, cfg.num_heads, cfg.num_kernels
    bias_3d = 2 * n * n * k * (k + h)
    centrality = 2 * n * k * d
    layers = cfg.num_layers * (8 * t * d * d + 4 * t * t * d + 4 * t * d * f)
    return layers + (bias_3d + centrality if use_3d else 0)


def forward_flops_per_molecule(config: ModelConfig, num_atoms: int) -> int:
    """Matmul FLOPs of one `MoleBlend` forward for one molecule padded to `num_atoms` (N).

    Terms, with T = N + 1 tokens, D hidden, F ffn, K Gaussian kernels, P pair_head_dim:
      3D bias        2 N^2 K (K + H)          Linear(K->K), Linear(K->H) on every pair
      centrality     2 N K D                  Linear(K->D) on the summed basis
      per layer      8 T D^2 + 4 T^2 D + 4 T D F   q, k, v, out; scores and context; FFN
      pair heads     per head: 4 N D P + 2 N P^2 O + 2 N^2 P O  (O = 11, 5 x 24, 3)
      denoising      6 N D^2 + 2 N^2 D + 8 N^2 D + 6 N D   q, k, v; scores; 4 moments; x, y, z
    """
    cfg = ModelConfig.coerce(config)
    n, d, p = num_atoms, cfg.hidden_dim, cfg.pair_head_dim
    head_outputs = (cfg.num_spd_classes, cfg.max_path_hops * cfg.num_edge_classes, 3)
    pair_heads = sum(4 * n * d * p + 2 * n * p * p * o + 2 * n * n * p * o for o in head_outputs)
    denoise = 6 * n * d * d + 2 * n * n * d + 8 * n * n * d + 6 * n * d
    return encoder_flops_per_molecule(cfg, n) + pair_heads + denoise


def train_step_flops(config: ModelConfig, batch_size: int, num_atoms: int) -> int:
    """Model FLOPs of one pretraining step (forward and backward) on a [batch_size, num_atoms]
    batch: 3 forwards, whatever rematerialisation recomputes."""
    per_molecule = forward_flops_per_molecule(config, num_atoms)
    return TRAIN_FLOPS_PER_FORWARD_FLOP * batch_size * per_molecule


def finetune_step_flops(config: ModelConfig, batch_size: int, num_atoms: int, use_3d: bool) -> int:
    """Model FLOPs of one fine-tuning step: 3 encoder forwards (the prediction head on the graph
    token, 2 D (D + tasks) per molecule, is under 0.1% and left out)."""
    per_molecule = encoder_flops_per_molecule(config, num_atoms, use_3d)
    return TRAIN_FLOPS_PER_FORWARD_FLOP * batch_size * per_molecule
