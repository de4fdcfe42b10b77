"""QM9, described once: its 12 targets (qm9pack column, unit conversion, report unit) and its
DFT geometry put into the SMILES graph's atom order.

Plain data and numpy + RDKit (no TF, no jax), so the QM9 source (`data/sources.py`) and
fine-tuning (`finetune/catalog.py`) both import it. Labels leave the source in label units
(energies in eV); nothing rescales them afterwards.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from rdkit import Chem

from moleblend_jax.chem.conformers import parse_xyz_block
from moleblend_jax.chem.records import SkipMolecule

HARTREE_TO_EV = 27.211386  # CODATA 2018, 27.211386245988 eV per Hartree.
MAX_BOND = 2.0  # Angstrom; longer SMILES bonds mean the XYZ atom order differs.
NUM_MOLECULES = 130_831  # qm9pack drops the 3,054 molecules that failed the consistency check.
FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")  # In qm9pack's data folder.


class Target(NamedTuple):
    """One QM9 target (SPEC 7, Transformer-M protocol)."""

    name: str  # Task name: label name in shards, results and reports.
    column: str  # qm9pack CSV column (qm9pack stores energies in Hartree, see qm9pack.helper).
    factor: float  # File unit -> label unit.
    unit: str  # Label unit.
    report_scale: float = 1.0  # Label unit -> report unit (SPEC 7: HOMO/LUMO/gap MAE in meV).
    report_unit: str = ""  # "" = the label unit.


TARGETS = (
    Target("mu", "Dipole_debye", 1.0, "D"),
    Target("alpha", "Polarizability_bohr3", 1.0, "a0^3"),
    Target("homo", "HOMO_au", HARTREE_TO_EV, "eV", 1000.0, "meV"),
    Target("lumo", "LUMO_au", HARTREE_TO_EV, "eV", 1000.0, "meV"),
    Target("gap", "HOMO_LUMO_gap_au", HARTREE_TO_EV, "eV", 1000.0, "meV"),
    Target("r2", "R2_bohr2", 1.0, "a0^2"),
    Target("zpve", "ZPVE_au", HARTREE_TO_EV, "eV"),
    Target("u0", "InternalEnergy_0K_au", HARTREE_TO_EV, "eV"),
    Target("u298", "InternalEnergy_298K_au", HARTREE_TO_EV, "eV"),
    Target("h298", "Enthalphy_298K_au", HARTREE_TO_EV, "eV"),  # Sic: qm9pack's spelling.
    Target("g298", "GibbsFreeEnergy_298K_au", HARTREE_TO_EV, "eV"),
    Target("cv", "Heatcapacity_Cv_cal_mol_K", 1.0, "cal/mol/K"),
)
TASKS = tuple(t.name for t in TARGETS)
COLUMNS = tuple(t.column for t in TARGETS)
LABEL_UNITS = {t.name: t.unit for t in TARGETS}
REPORT_UNITS = {t.name: t.report_unit or t.unit for t in TARGETS}
_FACTORS = np.array([t.factor for t in TARGETS], np.float64)
_REPORT_SCALE = {t.name: t.report_scale for t in TARGETS}


def to_label_units(values: np.ndarray) -> np.ndarray:
    """[M, 12] float64 targets in qm9pack's units (`COLUMNS` order) -> label units."""
    return np.asarray(values, np.float64) * _FACTORS


def to_report_units(task: str, value):
    """An MAE (or value) in label units -> the unit SPEC 7 reports (meV for HOMO/LUMO/gap)."""
    return value * _REPORT_SCALE.get(task, 1.0)


def parse_geometry(elements: str, xyz: str) -> tuple[list[str], np.ndarray]:
    """qm9pack's "['C','H',...]" and "[[x,y,z],...]" strings -> (symbols [n], float32 [n, 3] A)."""
    symbols = [s.strip(" '\"") for s in elements.strip("[] ").split(",") if s.strip(" '\"")]
    return symbols, parse_xyz_block(xyz, len(symbols))


def heavy_atom_coords(mol: Chem.Mol, elements: str, xyz: str) -> np.ndarray:
    """[N, 3] float32 heavy-atom DFT coordinates of a QM9 entry in the SMILES mol's atom order.

    QM9's XYZ lists heavy atoms in SMILES order for almost all entries; for the rest (~0.3%)
    the order is recovered by matching the SMILES graph onto the XYZ connectivity. Raises
    SkipMolecule("qm9_coords_mismatch") when no match exists, ValueError on malformed text.
    """
    symbols, positions = parse_geometry(elements, xyz)
    heavy = [i for i, s in enumerate(symbols) if s != "H"]
    heavy_symbols, heavy_positions = [symbols[i] for i in heavy], positions[heavy]
    mol_symbols = [mol.GetAtomWithIdx(i).GetSymbol() for i in range(mol.GetNumAtoms())]
    if mol_symbols == heavy_symbols:
        bonds = [mol.GetBondWithIdx(i) for i in range(mol.GetNumBonds())]
        ends = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in bonds], int)
        ends = ends.reshape(-1, 2)
        lengths = np.linalg.norm(heavy_positions[ends[:, 0]] - heavy_positions[ends[:, 1]], axis=-1)
        # Same elements but a bond far too long: the order differs (e.g. C#CC#C), match it.
        if not len(lengths) or lengths.max() < MAX_BOND:
            return heavy_positions
    match = match_by_connectivity(mol, heavy_symbols, heavy_positions)
    if match is None:
        raise SkipMolecule("qm9_coords_mismatch")
    return heavy_positions[list(match)]


def match_by_connectivity(
    mol: Chem.Mol, symbols: list[str], positions: np.ndarray
) -> tuple[int, ...] | None:
    """Maps mol atoms onto XYZ atoms whose bonds are guessed from covalent radii, or None.

    Returns, for each mol atom in order, the index of its XYZ atom.
    """
    if sorted(symbols) != sorted(a.GetSymbol() for a in mol.GetAtoms()):
        return None
    table = Chem.GetPeriodicTable()
    target = Chem.RWMol()
    for s in symbols:
        target.AddAtom(Chem.Atom(s))
    radii = np.array([table.GetRcovalent(s) for s in symbols])
    dist = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    bonded = np.triu(dist < 1.25 * (radii[:, None] + radii[None]), 1)
    for i, j in zip(*np.nonzero(bonded), strict=True):
        target.AddBond(int(i), int(j), Chem.BondType.SINGLE)
    query = Chem.RWMol(mol)
    for atom in query.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetIsAromatic(False)
        atom.SetNoImplicit(True)
    for bond in query.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    match = target.GetSubstructMatch(query)
    return match if len(match) == mol.GetNumAtoms() else None
