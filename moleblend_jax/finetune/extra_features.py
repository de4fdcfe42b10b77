"""Molecule-level descriptors concatenated to the graph token before the fine-tuning head
(`--config.extra_features=morgan_counts,rdkit_2d`, either or both; chemprop's
`--features-generators`).

- `morgan_counts`: Morgan count vector, radius 2, 2048 bins (`chem.descriptors`), as raw counts.
- `rdkit_2d`: every descriptor of rdkit.Chem.Descriptors' list (217 in RDKit 2026.09),
  normalised with statistics of the seed's train split only: x -> sign(x) log(1 + |x|) (tames
  heavy tails such as Ipc's), then (x - mean) / std, missing or non-finite values -> 0 (the
  train mean), clipped to +-CLIP. The statistics are saved per seed in predictor.json and
  reapplied at prediction (`FeatureScaling`).

Raw values are computed once per run (`raw_features`), each seed fits its own scaling, and the
feature matrix [M, F] float32 of a batch is looked up by record id (`FeatureTable`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from moleblend_jax.chem import descriptors
from moleblend_jax.errors import UserError

KINDS = ("morgan_counts", "rdkit_2d")
CLIP = 6.0
BATCH_KEY = "extra_features"  # [B, F] float32 in a batch, zeros for filler molecules.


def parse(spec: str) -> tuple[str, ...]:
    """ "morgan_counts,rdkit_2d" -> ("morgan_counts", "rdkit_2d"); "" -> (). UserError for an
    unknown or repeated name."""
    names = tuple(name.strip() for name in (spec or "").split(",") if name.strip())
    unknown = [name for name in names if name not in KINDS]
    if unknown or len(set(names)) != len(names):
        raise UserError(
            f"config.extra_features={spec!r}; give one or both of {','.join(KINDS)}, "
            "comma-separated (empty: none)"
        )
    return tuple(kind for kind in KINDS if kind in names)  # One order whatever the spelling.


def feature_size(kinds: Sequence[str]) -> int:
    """F, the features per molecule of `kinds`."""
    morgan = descriptors.MORGAN_SIZE if "morgan_counts" in kinds else 0
    return morgan + (len(descriptors.rdkit_2d_names()) if "rdkit_2d" in kinds else 0)


@dataclasses.dataclass(frozen=True)
class RawFeatures:
    """Unscaled features of molecules [M] (in `ids` order): Morgan counts [M, 2048] uint8 and
    RDKit 2D values [M, R] float64 (NaN where missing), each None when not asked for."""

    ids: np.ndarray  # [M] int64
    morgan: np.ndarray | None
    rdkit: np.ndarray | None

    def rows(self, ids: Sequence[int]) -> np.ndarray:
        """Positions of `ids` in this table; KeyError for an id it lacks."""
        order = np.argsort(self.ids, kind="stable")
        wanted = np.asarray(ids, np.int64)
        where = np.searchsorted(self.ids[order], wanted)
        where = np.minimum(where, len(order) - 1)
        found = order[where]
        if len(wanted) and not np.array_equal(self.ids[found], wanted):
            raise KeyError(f"no features for ids {sorted(set(wanted) - set(self.ids))[:5]}")
        return found

    def subset(self, ids: Sequence[int]) -> RawFeatures:
        """The features of `ids` only, in that order."""
        rows = self.rows(ids)
        pick = lambda values: None if values is None else values[rows]  # noqa: E731
        return RawFeatures(self.ids[rows], pick(self.morgan), pick(self.rdkit))


def raw_features(records: Sequence[dict], kinds: Sequence[str]) -> RawFeatures:
    """Records (with "id" and canonical "smiles") -> their unscaled features."""
    ids = np.array([int(r["id"]) for r in records], np.int64)
    mols = descriptors.mols_from_smiles([str(r["smiles"]) for r in records])
    logging.info("Extra features %s for %d molecules", ",".join(kinds), len(mols))
    return RawFeatures(
        ids=ids,
        morgan=descriptors.morgan_counts(mols) if "morgan_counts" in kinds else None,
        rdkit=descriptors.rdkit_2d(mols) if "rdkit_2d" in kinds else None,
    )


def _squash(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


@dataclasses.dataclass(frozen=True)
class FeatureScaling:
    """What turns raw features into the model's: the kinds, and for rdkit_2d the descriptor
    names and the train split's mean / std [R] of the squashed values."""

    kinds: tuple[str, ...]
    rdkit_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @classmethod
    def fit(cls, kinds: Sequence[str], train: RawFeatures) -> FeatureScaling:
        """Statistics of the train molecules only (NaN ignored; a constant or all-missing
        descriptor gets mean 0 / std 1 where undefined)."""
        if train.rdkit is None:
            return cls(tuple(kinds))
        squashed = _squash(train.rdkit)
        present = np.isfinite(squashed)
        count = present.sum(axis=0)
        filled = np.where(present, squashed, 0.0)
        mean = np.divide(filled.sum(axis=0), count, out=np.zeros(count.shape), where=count > 0)
        square = np.where(present, (squashed - mean) ** 2, 0.0).sum(axis=0)
        std = np.sqrt(np.divide(square, count, out=np.zeros(count.shape), where=count > 0))
        std = np.where(std > 0, std, 1.0)
        return cls(
            tuple(kinds),
            tuple(descriptors.rdkit_2d_names()),
            tuple(float(v) for v in mean),
            tuple(float(v) for v in std),
        )

    @property
    def size(self) -> int:
        """F, the features per molecule."""
        return feature_size(self.kinds)

    def apply(self, raw: RawFeatures, rows: np.ndarray) -> np.ndarray:
        """Raw features of the molecules at `rows` -> [len(rows), F] float32."""
        parts = []
        if "morgan_counts" in self.kinds:
            parts.append(raw.morgan[rows].astype(np.float32))
        if "rdkit_2d" in self.kinds:
            scaled = (_squash(raw.rdkit[rows]) - np.asarray(self.mean)) / np.asarray(self.std)
            scaled = np.where(np.isfinite(scaled), scaled, 0.0)
            parts.append(np.clip(scaled, -CLIP, CLIP).astype(np.float32))
        return np.concatenate(parts, axis=1)

    def to_json(self) -> dict:
        return {
            "kinds": list(self.kinds),
            "morgan_radius": descriptors.MORGAN_RADIUS,
            "morgan_size": descriptors.MORGAN_SIZE,
            "rdkit_2d_names": list(self.rdkit_names),
            "rdkit_2d_mean": list(self.mean),
            "rdkit_2d_std": list(self.std),
        }

    @classmethod
    def from_json(cls, saved: dict, where: str = "predictor.json") -> FeatureScaling:
        """The saved scaling; UserError when this RDKit's descriptor list or the Morgan
        settings differ from the ones it was fitted with (the features would not line up)."""
        if "rdkit_2d" in saved["kinds"] and saved["rdkit_2d_names"] != descriptors.rdkit_2d_names():
            raise UserError(
                f"{where}: fitted on {len(saved['rdkit_2d_names'])} RDKit 2D descriptors, this "
                f"RDKit has {len(descriptors.rdkit_2d_names())} or in another order; predict "
                "with the RDKit version the run was fine-tuned with"
            )
        if (saved["morgan_radius"], saved["morgan_size"]) != (
            descriptors.MORGAN_RADIUS,
            descriptors.MORGAN_SIZE,
        ):
            raise UserError(f"{where}: Morgan settings differ from this version's")
        return cls(
            tuple(saved["kinds"]),
            tuple(saved["rdkit_2d_names"]),
            tuple(saved["rdkit_2d_mean"]),
            tuple(saved["rdkit_2d_std"]),
        )


@dataclasses.dataclass(frozen=True)
class FeatureTable:
    """Raw features and one seed's scaling: `add_to(batch)` puts [B, F] float32 under
    BATCH_KEY, looked up by the batch's record ids (zeros for filler rows, id -1)."""

    raw: RawFeatures
    scaling: FeatureScaling

    def add_to(self, batch: dict) -> dict:
        ids = np.asarray(batch["id"])
        real = ids >= 0
        features = np.zeros((len(ids), self.scaling.size), np.float32)
        if real.any():
            features[real] = self.scaling.apply(self.raw, self.raw.rows(ids[real]))
        return {**batch, BATCH_KEY: features}
