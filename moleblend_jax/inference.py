"""Embeddings of new molecules from a pretrained checkpoint or a fine-tuned workdir.

  from moleblend_jax.inference import Embedder
  embedder = Embedder.from_pretrained("small-moses")                    # the shipped encoder
  embedder = Embedder.from_checkpoint("PRETRAIN_WORKDIR/checkpoints")   # or a fine-tuning workdir
  embedder = Embedder.from_random_init(config.model, seed=0)           # untrained, for baselines
  graph = embedder.embed(["CCO", "c1ccccc1O"])                         # [M, D] float32
  result = embedder.embed_rows(input_rows.featurize_rows(items), atoms=True)  # graph, atoms, valid

The embedding is the encoder's last-layer graph token [D] (atom-level: its atom states [N, D]).
A pretrained encoder runs 2D-only (`conformers="none"`, the default) or 3D-only on conformers
("rdkit": ETKDG + MMFF; "file": an SDF's coordinates), as fine-tuning does; a fine-tuned
workdir's encoder runs with the modality it was trained with. Molecules are batched by size
bucket into fixed [batch_size, bucket] batches, so each bucket compiles once; SMILES are
canonicalised (`data.input_rows`), so a molecule's embedding does not depend on its spelling or
on the other molecules of its batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax import traverse_util

from moleblend_jax import pretrained
from moleblend_jax.data import input_rows
from moleblend_jax.data.batching import map_batches, model_inputs
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import predictor
from moleblend_jax.model import MoleBlendEncoder
from moleblend_jax.model.config import ModelConfig
from moleblend_jax.schema import CONFORMER_MODES
from moleblend_jax.train.paths import as_path
from moleblend_jax.train.programs import dummy_batch
from moleblend_jax.train.step import jit_apply

DEFAULT_BUCKETS = (32, 64, 128, 256)
MODEL_CONFIG_FILE = pretrained.loader.MODEL_CONFIG_FILE  # Beside a pretraining checkpoint.


class EncoderOnly(nn.Module):
    """[batch] -> (graph token [B, D], atom states [B, N, D]) of `MoleBlendEncoder` "encoder"."""

    config: ModelConfig
    use_2d: bool = True
    use_3d: bool = False

    @nn.compact
    def __call__(self, batch):
        encoder = MoleBlendEncoder(
            config=self.config, use_2d=self.use_2d, use_3d=self.use_3d, name="encoder"
        )
        out = encoder(batch, False)
        return out.graph_repr, out.atom_repr


@dataclasses.dataclass(frozen=True)
class Embeddings:
    """graph [M, D] float32 (NaN rows where invalid), atoms [M] of [N_i, D] arrays (None where
    invalid or not asked for), valid [M] bool, errors [M] ("" where valid)."""

    graph: np.ndarray
    atoms: list[np.ndarray | None]
    valid: np.ndarray
    errors: list[str]


def _encoder_params(model: EncoderOnly, saved: dict, where: str) -> dict:
    """The checkpoint's encoder params that `model` uses, checked: UserError when one is
    missing (another modality) or has another shape (a checkpoint of another model size)."""
    from moleblend_jax.train.checkpoint import require_same_params

    if "encoder" not in saved:
        raise UserError(f"{where} has no 'encoder' parameters; is it a MoleBLEND checkpoint?")
    dummy = dummy_batch(1, 8)
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy))["params"]
    wanted = nn.unbox(abstract)["encoder"]
    require_same_params(
        saved["encoder"],
        wanted,
        f"{where}: the encoder",
        "pass the config it was trained with (another model size or modality)",
        allow_extra=True,  # Modules of the modality this encoder does not run.
    )
    have = traverse_util.flatten_dict(saved["encoder"])
    out = {
        k: np.asarray(have[k], spec.dtype) for k, spec in traverse_util.flatten_dict(wanted).items()
    }
    return {"encoder": traverse_util.unflatten_dict(out)}


class Embedder:
    """A frozen encoder: `embed(smiles)` / `embed_rows(featurized)` (see the module docstring)."""

    def __init__(
        self,
        model: EncoderOnly,
        params: dict,
        conformers: str = "none",
        max_atoms: int = DEFAULT_BUCKETS[-1],
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        batch_size: int = 32,
    ):
        self.model, self.params, self.conformers = model, params, conformers
        self.max_atoms, self.batch_size = int(max_atoms), int(batch_size)
        self.buckets = tuple(b for b in buckets if b < max_atoms) + (int(max_atoms),)
        self._apply = jit_apply(model)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_dim

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        conformers: str | None = None,
        model_config=None,
        batch_size: int = 32,
        step: int | None = None,
    ) -> Embedder:
        """`path`: a pretraining workdir or its `checkpoints` directory (model sizes from the
        model_config.json beside it, else `model_config`: config.model), an imported
        checkpoint's directory, a fine-tuning workdir (its predictor.json; first seed), or any
        other init spec `from_pretrained` takes (pretrained:NAME, .pt, .npz).
        conformers: None = "none" for a pretrained encoder, a fine-tuned one's own mode.
        step: a pretraining checkpoint's step (None: the newest)."""
        spec, path = os.fspath(path), as_path(path)
        if predictor.is_finetune_workdir(path):
            if step is not None:
                raise UserError(f"{path} is a fine-tuning workdir; step= is for pretraining ones")
            manifest, run_dir = predictor.read_manifest(path)
            model = EncoderOnly(
                ModelConfig.coerce(ml_collections.ConfigDict(manifest["model"])),
                use_2d=manifest["use_2d"],
                use_3d=manifest["use_3d"],
            )
            saved = predictor.load_seed_params(manifest, run_dir, manifest["seeds"][0])
            params = _encoder_params(model, saved, str(path))
            mode = conformers or ("rdkit" if manifest["use_3d"] else "none")
            if manifest["use_3d"] == (mode == "none"):
                raise UserError(
                    f"{path} was fine-tuned {'3D' if manifest['use_3d'] else '2D'}; "
                    f"conformers={mode!r} does not fit it"
                )
            return cls(model, params, mode, manifest["max_atoms"], manifest["buckets"], batch_size)
        # The spec as given: "pretrained:NAME" is a name, not a path below the working directory.
        return cls.from_pretrained(spec, conformers, model_config, batch_size, step)

    @classmethod
    def from_pretrained(
        cls,
        spec: str | os.PathLike,
        conformers: str | None = None,
        model_config=None,
        batch_size: int = 32,
        step: int | None = None,
    ) -> Embedder:
        """The encoder an init spec names (`pretrained.load`): a registered name ("small-moses"
        or "pretrained:small-moses"), the original's .pt file, a weights .npz, an orbax
        checkpoints directory or pretraining workdir; a fine-tuning workdir goes to
        `from_checkpoint`. Model sizes from the weights (`model_config` where they hold none).
        conformers: "none" (2D, the default) or "rdkit" / "file" (3D)."""
        spec = os.fspath(spec)
        if predictor.is_finetune_workdir(spec):
            return cls.from_checkpoint(spec, conformers, model_config, batch_size, step)
        mode = conformers or "none"
        if mode not in CONFORMER_MODES:
            raise UserError(f"conformers={mode!r}; use one of {CONFORMER_MODES}")
        init = pretrained.load(spec, step)
        if model_config is None and init.model_config is None:
            raise UserError(
                f"{spec}: no {MODEL_CONFIG_FILE} beside the checkpoint; pass the config it was "
                "pretrained with (--config=configs/base.py:tiny or configs/base.py)"
            )
        if model_config is None:
            model_config = ml_collections.ConfigDict(init.model_config)
        else:  # Sizes given and recorded: they must agree (fields named when they do not).
            pretrained.require_matching_config(init, model_config, "model_config")
        config = ModelConfig.coerce(model_config)
        model = EncoderOnly(config, use_2d=mode == "none", use_3d=mode != "none")
        return cls(model, _encoder_params(model, init.params, spec), mode, batch_size=batch_size)

    @classmethod
    def from_random_init(
        cls, model_config, seed: int = 0, conformers: str = "none", batch_size: int = 32
    ) -> Embedder:
        """An untrained encoder (config.model sizes, params initialised from `seed` as
        training would): the baseline a pretrained encoder's embeddings are compared with."""
        if conformers not in CONFORMER_MODES:
            raise UserError(f"conformers={conformers!r}; use one of {CONFORMER_MODES}")
        model = EncoderOnly(
            ModelConfig.coerce(model_config),
            use_2d=conformers == "none",
            use_3d=conformers != "none",
        )
        dummy = dummy_batch(1, 8)
        params = nn.unbox(model.init(jax.random.PRNGKey(seed), dummy)["params"])
        return cls(model, jax.device_get(params), conformers, batch_size=batch_size)

    def featurize(self, items, workers: int = 1, progress: bool = False):
        """Source items -> `input_rows.Featurized` with this encoder's settings; molecules
        without coordinates are invalid for a 3D encoder."""
        return input_rows.featurize_rows(
            items, self.conformers, self.max_atoms, workers, progress, self.model.use_3d
        )

    def embed_rows(
        self, rows: input_rows.Featurized, atoms: bool = False, progress: bool = False
    ) -> Embeddings:
        """Featurised rows -> Embeddings (one per row, in order)."""
        records = [r for r in rows.records if r is not None]

        def fn(batch):
            graph, atom = self._apply(self.params, model_inputs(batch))
            return {"graph": graph, "atoms": atom} if atoms else {"graph": graph}

        outputs = iter(map_batches(fn, records, self.batch_size, self.buckets, progress))
        graph = np.full((len(rows.records), self.dim), np.nan, np.float32)
        atom_list: list[np.ndarray | None] = [None] * len(rows.records)
        for i, record in enumerate(rows.records):
            if record is None:
                continue
            out = next(outputs)
            graph[i] = out["graph"]
            if atoms:
                atom_list[i] = np.asarray(out["atoms"][: len(record["atom_features"])])
        return Embeddings(graph, atom_list, np.asarray(rows.valid), list(rows.errors))

    def embed(self, smiles: Sequence[str], atoms: bool = False):
        """SMILES [M] -> graph embeddings [M, D] float32 (NaN rows for invalid SMILES); with
        `atoms`, the `Embeddings` instead."""
        result = self.embed_rows(self.featurize(input_rows.smiles_items(smiles)), atoms)
        return result if atoms else result.graph
