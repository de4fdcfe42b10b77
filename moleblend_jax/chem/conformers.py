"""Heavy-atom coordinates in graph atom order (SPEC 1).

Sources: a conformer already on the mol (SDF, PCQM4Mv2 DFT), coordinates given by the caller
(QM9 DFT), or an RDKit conformer (ETKDGv3, then MMFF94 where it converges). RDKit embedding is
seeded from the molecule's canonical SMILES (`molecule_seed`) and single-threaded, so it is
deterministic, independent of the worker that runs it, and the same for a molecule on any row.

RDKit conformers come in an arbitrary orientation; they are turned into their principal-axes
frame, as the DFT programs' standard orientation puts QM9 and PCQM4Mv2. The 3D-direction
target (SPEC 5) is a vector in the input frame, so with arbitrary orientations it could not be
predicted from the rotation-invariant encoder.
"""

from __future__ import annotations

import hashlib

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem, rdDistGeom, rdMolTransforms

# Reasons recorded per molecule (counted in metadata.json "conformers").
FROM_FILE = "file"
GIVEN = "given"
ETKDG_MMFF = "etkdg+mmff"
ETKDG = "etkdg"  # MMFF missing parameters or did not converge: ETKDG coordinates kept.
RANDOM_MMFF = "etkdg_random_coords+mmff"
RANDOM = "etkdg_random_coords"
EMBED_FAILED = "embed_failed"  # No 3D coordinates: has_coords = 0.
NONE = "none"

EMBED_TIMEOUT_S = 10
MMFF_MAX_ITERS = 500
FRAGMENT_GAP = 4.0  # Angstrom between the bounding boxes of separately embedded fragments.


def coords_from_conformer(mol: Chem.Mol) -> np.ndarray:
    """[N, 3] float32 positions of the mol's first conformer (atoms in mol order)."""
    if mol.GetNumConformers() == 0:
        raise ValueError("molecule has no conformer")
    return np.asarray(mol.GetConformer().GetPositions(), np.float32).reshape(-1, 3)


def molecule_seed(mol: Chem.Mol, seed: int = 0) -> int:
    """ETKDG's random seed for `mol`: a hash of `seed` and its canonical SMILES, never its row,
    so two rows holding one molecule get the same conformer."""
    key = f"{int(seed)}:{Chem.MolToSmiles(mol)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") % 2**31


def _embed(mol_h: Chem.Mol, seed: int, random_coords: bool) -> bool:
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = 1
    params.useRandomCoords = random_coords
    params.timeout = EMBED_TIMEOUT_S
    return rdDistGeom.EmbedMolecule(mol_h, params) == 0


def _separate_fragments(mol_h: Chem.Mol, gap: float = FRAGMENT_GAP) -> None:
    """ETKDG embeds fragments (salts, mixtures) separately, all around the origin, so atoms of
    different fragments can coincide. Lay the fragments out along x, `gap` Angstrom apart."""
    fragments = Chem.GetMolFrags(mol_h)
    if len(fragments) < 2:
        return
    conf = mol_h.GetConformer()
    positions = conf.GetPositions()
    edge = None
    for atoms in fragments:
        atoms = list(atoms)
        frag = positions[atoms] - positions[atoms].mean(axis=0)
        if edge is not None:
            frag[:, 0] += edge + gap - frag[:, 0].min()
        edge = frag[:, 0].max()
        positions[atoms] = frag
    for i, p in enumerate(positions):
        conf.SetAtomPosition(i, p.tolist())


def _mmff(mol_h: Chem.Mol) -> bool:
    """MMFF94-optimise in place; False (positions restored) unless it converged."""
    if not AllChem.MMFFHasAllMoleculeParams(mol_h):
        return False
    conf = mol_h.GetConformer()
    before = conf.GetPositions()
    try:
        converged = AllChem.MMFFOptimizeMolecule(mol_h, maxIters=MMFF_MAX_ITERS) == 0
    except (RuntimeError, ValueError):
        converged = False
    if not converged:
        for i, p in enumerate(before):
            conf.SetAtomPosition(i, p.tolist())
    return converged


def rdkit_conformer(mol: Chem.Mol, seed: int) -> tuple[np.ndarray | None, str]:
    """ETKDGv3 (+MMFF) conformer of a heavy-atom mol.

    Returns ([N, 3] float32 heavy-atom coordinates in mol atom order, or None, reason). Falls back
    to ETKDG from random coordinates; if that fails too, returns (None, EMBED_FAILED).
    """
    n = mol.GetNumAtoms()
    # AddHs appends hydrogens after the existing atoms, so atoms [0, N) keep graph order.
    mol_h = Chem.AddHs(mol)
    for random_coords, with_mmff, without_mmff in (
        (False, ETKDG_MMFF, ETKDG),
        (True, RANDOM_MMFF, RANDOM),
    ):
        try:
            ok = _embed(mol_h, seed, random_coords)
        except (RuntimeError, ValueError):
            ok = False
        if ok:
            _separate_fragments(mol_h)
            reason = with_mmff if _mmff(mol_h) else without_mmff
            rdMolTransforms.CanonicalizeConformer(mol_h.GetConformer())
            coords = np.asarray(mol_h.GetConformer().GetPositions()[:n], np.float32)
            if np.isfinite(coords).all():
                return coords, reason
        mol_h.RemoveAllConformers()
    return None, EMBED_FAILED


def parse_xyz_block(xyz: str, num_atoms: int) -> np.ndarray:
    """'[[x,y,z],[x,y,z],...]' text (qm9pack's XYZ_Ang column) -> [num_atoms, 3] float32."""
    table = str.maketrans("[],'", "    ")
    coords = np.array(xyz.translate(table).split(), np.float64).reshape(-1, 3)
    if len(coords) != num_atoms:
        raise ValueError(f"expected {num_atoms} positions, got {len(coords)}")
    return coords.astype(np.float32)
