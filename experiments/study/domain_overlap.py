"""How far the fine-tuning sets are from the pretraining corpus (docs/results.md, issue 16).

  python experiments/study/domain_overlap.py --corpus=50000 \
      --out=benchmarks/study/domain_overlap.json

For the first --corpus molecules of the bundled MOSES subset (the study's corpus) and each
data set in --datasets (whole, as bundled): heavy-atom counts (median and the 10th / 90th
percentiles), the fraction of molecules inside the corpus's heavy-atom range, the fraction
holding an element the corpus never shows, and each molecule's nearest corpus neighbour by
Tanimoto similarity of Morgan fingerprints (radius 2, 2,048 bits): median and the fraction
at >= 0.4 (a close analogue). SMILES RDKit cannot parse are counted, not scored.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import app, flags

from moleblend_jax.data.public_sets import moses_source
from moleblend_jax.finetune.catalog import load_dataset

_CORPUS = flags.DEFINE_integer("corpus", 50_000, "Molecules of the bundled MOSES subset.")
_DATASETS = flags.DEFINE_list(
    "datasets", ["esol", "freesolv", "lipophilicity", "b3db"], "Bundled data sets."
)
_OUT = flags.DEFINE_string("out", None, "JSON to write.", required=True)

ANALOGUE_SIMILARITY = 0.4  # Tanimoto (Morgan r=2) at which two molecules are close analogues.


def describe(smiles: Sequence[str]) -> dict:
    """-> {"unparsed": count, and for the M parsed molecules "heavy_atoms": [M] int array,
    "elements": [M] sets of element symbols, "fingerprints": [M] RDKit bit vectors}."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    parsed = [m for m in mols if m is not None]
    return {
        "unparsed": len(mols) - len(parsed),
        "heavy_atoms": np.array([m.GetNumHeavyAtoms() for m in parsed]),
        "elements": [{a.GetSymbol() for a in m.GetAtoms()} for m in parsed],
        "fingerprints": [generator.GetFingerprint(m) for m in parsed],
    }


def overlap(data: dict, corpus: dict) -> dict:
    """One data set's distance from the corpus (the module docstring's numbers)."""
    from rdkit import DataStructs

    low, high = int(corpus["heavy_atoms"].min()), int(corpus["heavy_atoms"].max())
    corpus_elements = set().union(*corpus["elements"])
    atoms = data["heavy_atoms"]
    nearest = np.array(
        [
            max(DataStructs.BulkTanimotoSimilarity(fp, corpus["fingerprints"]))
            for fp in data["fingerprints"]
        ]
    )
    return {
        "molecules": int(atoms.size),
        "unparsed": data["unparsed"],
        "heavy_atoms_p10_median_p90": np.percentile(atoms, [10, 50, 90]).tolist(),
        "in_corpus_atom_range": float(np.mean((atoms >= low) & (atoms <= high))),
        "with_element_not_in_corpus": float(
            np.mean([bool(e - corpus_elements) for e in data["elements"]])
        ),
        "nearest_corpus_similarity_median": float(np.median(nearest)),
        f"nearest_corpus_similarity_ge_{ANALOGUE_SIMILARITY}": float(
            np.mean(nearest >= ANALOGUE_SIMILARITY)
        ),
    }


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    items = itertools.islice(moses_source().items(), _CORPUS.value)
    corpus = describe([item.smiles for item in items])
    atoms = corpus["heavy_atoms"]
    report = {
        "corpus": {
            "molecules": int(atoms.size),
            "heavy_atoms_p10_median_p90": np.percentile(atoms, [10, 50, 90]).tolist(),
            "heavy_atom_range": [int(atoms.min()), int(atoms.max())],
            "elements": sorted(set().union(*corpus["elements"])),
        },
        "fingerprint": "Morgan radius 2, 2048 bits; similarity: Tanimoto",
    }
    for name in _DATASETS.value:
        report[name] = overlap(describe(load_dataset(name)[0]), corpus)
        print(name, json.dumps(report[name]))
    Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    Path(_OUT.value).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
