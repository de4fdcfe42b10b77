"""The paper's pretraining recipe (SPEC sections 2-6).

Usage:
  python experiments/pretrain.py --config=configs/base.py --workdir=DIR
  python experiments/pretrain.py --config=configs/base.py:tiny --workdir=DIR   # CPU-sized model
  python experiments/pretrain.py --config=configs/base.py:small --workdir=DIR  # CPU study model
Every field can be overridden on the command line, e.g. `--config.optimizer.peak_lr=2e-4`.
"""

import ml_collections

VARIANTS = ("base", "small", "tiny")


def model_config() -> ml_collections.ConfigDict:
    """The Transformer-M backbone, the blend and the prediction heads (SPEC 1-5)."""
    m = ml_collections.ConfigDict()
    # Encoder (SPEC 2).
    m.num_layers = 12
    m.hidden_dim = 768
    m.ffn_dim = 768  # Transformer-M uses FFN = hidden, not 4x.
    m.num_heads = 32
    m.layer_norm_eps = 1e-5
    m.init_std = 0.02
    m.embedding_dropout = 0.0
    m.residual_dropout = 0.0
    m.attention_dropout = 0.1
    m.activation_dropout = 0.1
    m.stochastic_depth = 0.1  # Max drop rate; rises linearly 0 -> this over layers.
    # "token": the original's DropPath mask, one per token position shared by the batch;
    # "molecule": one per molecule (docs/model.md).
    m.stochastic_depth_mask = "token"
    # Matmul operands: bf16 operands, fp32 accumulation and results; params, optimizer state,
    # softmax, norms and losses stay float32 (model/precision.py).
    m.dtype = "bfloat16"
    # Recompute each encoder layer in the backward pass instead of keeping its activations
    # (jax.checkpoint): ~1/3 more FLOPs for a fraction of the activation memory.
    m.remat = False
    # Input vocabularies (SPEC 1). Ids are shifted by +1; 0 is padding. The 9 atom and 3 bond
    # features per record are the record schema's (moleblend_jax/schema.py), not settings.
    m.atom_vocab_size = 512  # One table per atom feature, 512 rows each as the original.
    m.bond_vocab_size = 16
    m.num_spd_ids = 512  # Shifted SPD ids: 0 pad, hops + 1, unreachable 511 (schema).
    m.num_degree_ids = 512
    m.max_path_hops = 5
    # 3D encodings (SPEC 3).
    m.num_kernels = 128
    m.gaussian_std_floor = 0.01
    m.centrality_scale = 0.01
    # Blend and noise (SPEC 4).
    m.blend_probs = (0.2, 0.2, 0.6)  # (SPD, edge, 3D) per ordered atom pair.
    m.blend_per_molecule = False  # Released code: one [N, N] mask per step for the whole batch.
    m.node_blend_probs = (0.4, 0.6)  # (degree, 3D centrality) per atom; they sum to 1.
    m.coord_noise_std = 0.2  # Angstrom.
    # Heads (SPEC 5).
    m.pair_head_dim = 32
    m.head_layer_norm_eps = 1e-12
    m.num_spd_classes = 11
    m.num_edge_classes = 24
    m.direction_hidden_dim = 256
    m.tied_denoise_head = False  # True: exactly rotation-equivariant denoising head.
    m.denoise_attention_dropout = 0.1  # Attention-prob dropout in the denoising head (original).
    return m


def mesh_config() -> ml_collections.ConfigDict:
    """A (data, fsdp) device mesh and the logical-axis rules that map params onto it."""
    mesh = ml_collections.ConfigDict()
    # Data parallel across slices over DCN (multi-slice TPU); None = the number of slices.
    mesh.dcn_data = ml_collections.FieldReference(None, field_type=int)
    mesh.data = -1  # Within a slice; -1 takes the devices fsdp leaves.
    mesh.fsdp = 1
    # ZeRO-1: the optimizer state split over the data axis, so each device updates its share
    # of the moments and parameters and the new parameters are all-gathered (the update moves
    # 7 x 4 bytes per parameter per step otherwise; benchmarks/README.md, "Bytes, not FLOPs").
    mesh.shard_optimizer_state = True
    # Logical axis name -> mesh axis (flax lm1b's logical_axis_rules). Params shard their
    # "embed" (hidden) dimension over fsdp and are replicated otherwise; the batch dimension of
    # every input goes over (data, fsdp) (train/sharding.py). Override as a whole, e.g.
    # --config.mesh.rules="(('embed', None),)".
    mesh.rules = (
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
    )
    return mesh


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    variant = variant or "base"
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r} of configs/base.py; choose from {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = model_config()

    # Loss weights (SPEC 5, released script).
    config.loss_weights = ml_collections.ConfigDict(
        dict(spd=0.1, edge=0.1, direction=0.5, denoise=6.0)
    )

    # Optimisation (SPEC 6).
    config.batch_size = 4096  # Global, over all devices and hosts.
    # Microbatches per step, scanned inside the one compiled step (their gradients averaged):
    # the paper's batch of 4096 on fewer devices; activation memory is one microbatch's.
    config.grad_accum_steps = 1
    config.total_steps = 200_000
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.peak_lr = 1e-5
    config.optimizer.warmup_steps = 20_000
    config.optimizer.end_lr = 0.0
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    # "fairseq": eps added to sqrt(v) before the bias correction, as the original's Adam (its
    # trajectory step for step, docs/interop.md); "optax": after it, as optax.adamw.
    config.optimizer.eps_placement = "fairseq"
    config.optimizer.weight_decay = 0.0
    config.optimizer.grad_clip_norm = 5.0

    # Data. `data.dir=None` builds shards of the bundled QM9 (qm9pack) under WORKDIR/data once.
    config.data = ml_collections.ConfigDict()
    config.data.dir = ml_collections.FieldReference(None, field_type=str)
    config.data.default_source = "qm9"
    config.data.max_atoms = 256
    config.data.buckets = (16, 32, 64, 128, 256)  # Padded atom counts; one compile each.
    # Molecules above the largest bucket refuse the run; True drops them (counted in
    # metrics.jsonl as oversize_dropped).
    config.data.drop_oversize = False
    config.data.shuffle_buffer = 10_000  # Records; tf.data shuffle after the file shuffle.
    # Default shards only: build them from the first max_molecules of the source (0 = all).
    config.data.max_molecules = 0
    # Held-out shards for the eval loss. None with default data: the eval_molecules source
    # entries after the training prefix (none when max_molecules = 0).
    config.data.eval_dir = ml_collections.FieldReference(None, field_type=str)
    config.data.eval_molecules = 10_000
    config.data.num_prep_workers = 2

    config.mesh = mesh_config()

    # Logging, held-out loss and checkpoints.
    config.log_every = 100
    # Held-out loss every eval_every steps (a multiple of log_every; 0 = only at the end)
    # over eval_batches global batches, the same ones each time (0 = never).
    config.eval_every = 5_000
    config.eval_batches = 16
    config.checkpoint_every = 5_000
    config.keep_checkpoints = 3
    # Stop (checkpointing) after this many steps of one invocation, e.g. to fit a job's time
    # limit; rerunning resumes. 0 = run to total_steps.
    config.max_steps_per_run = 0
    # (START, COUNT): a jax.profiler trace of steps START .. START + COUNT - 1 (1-based) in
    # WORKDIR/profile, e.g. --config.profile_steps="(100, 5)". (0, 0): none.
    config.profile_steps = (0, 0)

    if variant == "tiny":
        _make_tiny(config)
    if variant == "small":
        _make_small(config)
    return config


def _make_tiny(config: ml_collections.ConfigDict) -> None:
    """A model and schedule that train in minutes on a 2-core CPU."""
    m = config.model
    m.num_layers = 4
    m.hidden_dim = 128
    m.ffn_dim = 128
    m.num_heads = 8
    m.num_kernels = 32
    # fp32: the reference curves and tests; bf16 is 1.16x faster here (benchmarks/README.md).
    m.dtype = "float32"
    config.batch_size = 32
    config.total_steps = 600
    config.optimizer.peak_lr = 3e-4
    config.optimizer.warmup_steps = 60
    config.optimizer.weight_decay = 0.0
    config.data.max_atoms = 32
    config.data.buckets = (16, 32)
    config.data.max_molecules = 20_000  # Prefix of the bundled QM9 to preprocess.
    config.data.eval_molecules = 1_000  # QM9 molecules 20,000-20,999.
    config.eval_every = 200
    config.eval_batches = 8
    config.log_every = 20
    config.checkpoint_every = 200


def _make_small(config: ml_collections.ConfigDict) -> None:
    """The CPU study's model (docs/results.md): 4.4M parameters, pretrained on the first 50,000
    molecules of the bundled drug-like MOSES subset with RDKit conformers (9-27 heavy atoms:
    one bucket of 32). A step of batch 32 took 0.26 s alone on the 2-core machine (bf16
    operands), so 10,000 steps are ~45 min with held-out evaluations and checkpoints:
    320,000 molecules seen, 6.4 epochs of the corpus."""
    m = config.model
    m.num_layers = 6
    m.hidden_dim = 256
    m.ffn_dim = 256
    m.num_heads = 8
    m.num_kernels = 64
    # dtype stays the base's bf16 operands with fp32 accumulation: the study's pretraining and
    # all its fine-tuning runs (configs/finetune.py:small copies this model section).
    config.batch_size = 32
    config.total_steps = 10_000
    config.optimizer.peak_lr = 3e-4
    config.optimizer.warmup_steps = 500
    config.data.default_source = "moses"
    config.data.max_atoms = 32
    config.data.buckets = (32,)
    config.data.max_molecules = 50_000  # Prefix of the bundled MOSES subset (a random sample).
    config.data.eval_molecules = 1_000  # MOSES subset lines 50,000-50,999.
    config.log_every = 50
    config.eval_every = 1_000
    config.checkpoint_every = 500
