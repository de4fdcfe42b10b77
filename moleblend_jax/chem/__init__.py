"""RDKit -> OGB features, shortest paths, path bonds and conformers (numpy only, no jax)."""

from moleblend_jax.chem.features import mol_to_graph
from moleblend_jax.chem.paths import shortest_paths
from moleblend_jax.chem.records import SkipMolecule, mol_to_record, smiles_to_record

__all__ = ["SkipMolecule", "mol_to_graph", "mol_to_record", "shortest_paths", "smiles_to_record"]
