"""RDKit mol / SMILES -> one record of docs/batch_format.md (numpy, no TF, no jax)."""

from __future__ import annotations

import numpy as np
from rdkit import Chem, RDLogger

from moleblend_jax.chem import conformers as conformer_lib
from moleblend_jax.chem.features import mol_to_graph
from moleblend_jax.chem.paths import floyd_warshall, path_bonds_from_via
from moleblend_jax.schema import CONFORMER_MODES, LABEL_KEY, MAX_SUPPORTED_ATOMS, NAME_KEY

# RDKit prints parse and sanitisation errors to stderr; we count them by reason instead.
RDLogger.DisableLog("rdApp.*")
# Coordinates no molecule has (Angstrom): the record is skipped as implausible_coordinates.
MAX_ABS_COORDINATE = 1e3
MAX_BOND_LENGTH = 5.0  # The longest covalent bonds between heavy atoms are about 3 A.


class SkipMolecule(Exception):
    """A molecule that cannot be turned into a record; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def parse_smiles(smiles: str) -> Chem.Mol:
    """SMILES -> sanitised heavy-atom mol (as `Chem.MolFromSmiles`, which OGB uses).

    Raises SkipMolecule with reason invalid_smiles, valence_error, kekulize_error or
    sanitize_error.
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is not None:
        return mol
    # Diagnose why: parse without sanitising, then sanitise to get the exception type.
    raw = Chem.MolFromSmiles(smiles, sanitize=False)
    if raw is None:
        raise SkipMolecule("invalid_smiles", smiles)
    try:
        Chem.SanitizeMol(raw)
    except Chem.AtomValenceException:
        raise SkipMolecule("valence_error", smiles) from None
    except Chem.KekulizeException:
        raise SkipMolecule("kekulize_error", smiles) from None
    except Exception:  # noqa: BLE001 - any other RDKit sanitisation failure.
        pass
    raise SkipMolecule("sanitize_error", smiles)


def _require_plausible(xyz: np.ndarray, bond_atoms: np.ndarray) -> None:
    """[N, 3] coordinates (Angstrom), [E, 2] bonded atoms; raises SkipMolecule
    ("implausible_coordinates") for a coordinate or a bond beyond any real molecule's."""
    if np.abs(xyz).max() > MAX_ABS_COORDINATE:
        raise SkipMolecule("implausible_coordinates", f"a coordinate of {np.abs(xyz).max():g} A")
    if len(bond_atoms):
        lengths = np.linalg.norm(xyz[bond_atoms[:, 0]] - xyz[bond_atoms[:, 1]], axis=-1)
        if lengths.max() > MAX_BOND_LENGTH:
            raise SkipMolecule("implausible_coordinates", f"a bond of {lengths.max():.3g} A")


def build_record(
    mol: Chem.Mol,
    mol_id: int,
    conformers: np.ndarray | str = conformer_lib.FROM_FILE,
    labels=None,
    max_atoms: int = MAX_SUPPORTED_ATOMS,
    seed: int = 0,
    via_only: bool = False,
    name: str = "",
) -> tuple[dict, str]:
    """RDKit mol (heavy atoms, no explicit H) -> (record dict of docs/batch_format.md, how its
    coordinates were obtained: a `moleblend_jax.chem.conformers` reason string).

    conformers: where the coordinates come from, `schema.CONFORMER_MODES` as the shard writer's
    --conformers: 'file' (the mol's 3D conformer if any, else has_coords = 0; a SMILES has
    none); 'rdkit' (ETKDG + MMFF, seeded by `seed` and the canonical SMILES); 'none'
    (has_coords = 0); or an [N, 3] array (given, graph atom order). labels: optional [T]
    floats (NaN = missing). name: kept as the record's "name" when not empty. With `via_only`
    the record holds the Floyd-Warshall intermediates `via` [N, N] (chem.paths) instead of
    `path_bonds` (the shard writer's fast path: shards store `via`). Raises
    SkipMolecule(reason).
    """
    if mol is None:
        raise SkipMolecule("invalid_molecule")
    n = mol.GetNumAtoms()
    if n == 0:
        raise SkipMolecule("no_atoms")
    if n > min(max_atoms, MAX_SUPPORTED_ATOMS):
        raise SkipMolecule("too_many_atoms", str(n))
    graph = mol_to_graph(mol)
    spd, via = floyd_warshall(n, graph["bond_atoms"])
    if via_only:
        paths = dict(via=via)
    else:
        paths = dict(path_bonds=path_bonds_from_via(spd, via, graph["bond_atoms"]))

    if isinstance(conformers, np.ndarray | list | tuple):
        xyz, source = np.asarray(conformers, np.float32), conformer_lib.GIVEN
    elif conformers == conformer_lib.FROM_FILE:
        has_3d = mol.GetNumConformers() > 0 and mol.GetConformer().Is3D()
        xyz, source = (
            (conformer_lib.coords_from_conformer(mol), conformer_lib.FROM_FILE)
            if has_3d
            else (None, conformer_lib.NONE)
        )
    elif conformers == "rdkit":
        xyz, source = conformer_lib.rdkit_conformer(
            mol, seed=conformer_lib.molecule_seed(mol, seed)
        )
    elif conformers == conformer_lib.NONE:
        xyz, source = None, conformer_lib.NONE
    else:
        raise ValueError(
            f"conformers must be an [N, 3] array or one of {CONFORMER_MODES}, got {conformers!r}"
        )
    if xyz is not None:
        if xyz.shape != (n, 3):
            raise SkipMolecule("coords_shape_mismatch", f"{xyz.shape} for {n} atoms")
        if not np.isfinite(xyz).all():
            raise SkipMolecule("nonfinite_coords")
        _require_plausible(xyz, graph["bond_atoms"])

    record = dict(
        id=np.int64(mol_id),
        smiles=Chem.MolToSmiles(mol),
        atom_features=graph["atom_features"],
        bond_features=graph["bond_features"],
        bond_atoms=graph["bond_atoms"],
        spd=spd,
        **paths,
        coords=xyz if xyz is not None else np.zeros((n, 3), np.float32),
        has_coords=np.int32(xyz is not None),
    )
    if labels is not None:
        record[LABEL_KEY] = np.asarray(labels, np.float32).reshape(-1)
    if name:
        record[NAME_KEY] = str(name)
    return record, source


def mol_to_record(mol: Chem.Mol, mol_id: int, **options) -> dict:
    """The record of `build_record` (its keyword options), without the conformer reason."""
    return build_record(mol, mol_id, **options)[0]


def smiles_to_record(smiles: str, mol_id: int, **options) -> dict:
    """SMILES -> record (`build_record`'s keyword options); raises SkipMolecule(reason) on bad
    input."""
    return mol_to_record(parse_smiles(smiles), mol_id, **options)
