"""Source items -> serialized records, chunk by chunk in worker processes, in source order:
the one featurisation of the shard writer (`shards`), the Beam writer (`beam_shards`) and
inference (`input_rows`).
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing

from moleblend_jax.data import serialize
from moleblend_jax.data.sources import SourceItem

CHUNK_SIZE = 128  # Source items per worker task.


def item_to_record(item: SourceItem, conformers: str, max_atoms: int, seed: int = 0):
    """One source item -> (record with `via` instead of `path_bonds`, conformer reason);
    raises SkipMolecule(reason)."""
    from rdkit import Chem

    from moleblend_jax.chem import qm9
    from moleblend_jax.chem.records import SkipMolecule, build_record, parse_smiles

    if item.skip_reason:
        raise SkipMolecule(item.skip_reason)
    if item.mol_block:
        mol = Chem.MolFromMolBlock(item.mol_block, removeHs=True)
        if mol is None:
            raise SkipMolecule("sdf_parse_error")
    else:
        mol = parse_smiles(item.smiles)  # "file": no conformer unless xyz (QM9, Uni-Mol).
        if item.xyz and conformers == "file":
            if mol.GetNumAtoms() > max_atoms:
                raise SkipMolecule("too_many_atoms")
            try:
                conformers = qm9.heavy_atom_coords(mol, item.elements, item.xyz)
            except ValueError as err:
                raise SkipMolecule("qm9_bad_xyz", str(err)) from None
    return build_record(
        mol, item.id, conformers, item.labels, max_atoms, seed, via_only=True, name=item.name
    )


def process_chunk(items: list[SourceItem], conformers: str, max_atoms: int, seed: int) -> list:
    """Worker task: items -> [("ok", id, bytes, n_atoms, conformer) | ("skip", id, reason)]."""
    from moleblend_jax.chem.records import SkipMolecule

    out = []
    for item in items:
        try:
            record, conformer = item_to_record(item, conformers, max_atoms, seed)
            data = serialize.encode_record(record, record.pop("via"))
            out.append(("ok", item.id, data, len(record["atom_features"]), conformer))
        except SkipMolecule as skip:
            out.append(("skip", item.id, skip.reason))
        except Exception as err:  # noqa: BLE001 - RDKit can fail in many ways; count, go on.
            out.append(("skip", item.id, f"error_{type(err).__name__}"))
    return out


def source_chunks(items, size: int, limit: int | None, offset: int = 0):
    """Lists of `size` source items, from entry `offset` on, at most `limit` in all."""
    chunk = []
    for count, item in enumerate(itertools.islice(items, offset, None)):
        if limit is not None and count >= limit:
            break
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def ordered_map(fn, chunks, workers: int, args: tuple):
    """Ordered results of fn(chunk, *args) with at most 4 * workers chunks in flight."""
    chunks = iter(chunks)
    head = list(itertools.islice(chunks, 2))
    if workers <= 1 or len(head) < 2:  # One chunk: not worth starting processes.
        for chunk in itertools.chain(head, chunks):
            yield fn(chunk, *args)
        return
    # forkserver: safe when the caller already runs threads (jax, TF); workers import only
    # numpy/RDKit.
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        pending = collections.deque()
        for chunk in itertools.chain(head, chunks):
            pending.append(pool.apply_async(fn, (chunk, *args)))
            if len(pending) >= 4 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def featurize_items(
    items,
    conformers: str,
    max_atoms: int,
    seed: int = 0,
    workers: int = 2,
    limit: int | None = None,
    offset: int = 0,
):
    """Source items -> `process_chunk` results, one list per chunk of `CHUNK_SIZE` items, in
    source order, computed by `workers` processes (the shard writer's and inference's one
    featurisation)."""
    chunks = source_chunks(items, CHUNK_SIZE, limit, offset)
    yield from ordered_map(process_chunk, chunks, workers, (conformers, max_atoms, seed))
