"""Compact on-disk record: a tf.train.Example of small-int byte arrays, TFRecord-framed.

Encoded and decoded here in plain Python (no TF needed to write or to read records back), and
parsed with `tf.io.parse_example` in `moleblend_jax.data.pipeline`. Layout (docs/data.md):

| feature | type | content |
|---|---|---|
| id, n_atoms, n_bonds, has_coords | int64_list | scalars |
| smiles | bytes | UTF-8 canonical SMILES |
| atom_features | bytes | uint8 [N, 9] raw OGB ids |
| bond_features | bytes | uint8 [E, 3] raw OGB ids |
| bond_atoms | bytes | uint8 [E, 2] |
| spd | bytes | uint8 [N, N] hops; off-diagonal 0 = unreachable |
| via | bytes | uint8 [N, N] Floyd-Warshall intermediate atom of i -> j, i if none (path bonds) |
| coords | bytes | float32 little-endian [N, 3] |
| labels | bytes | float32 little-endian [T] (only when the source has labels) |
| name | bytes | UTF-8 name (.smi name column, SDF title; only when the molecule has one) |
"""

from __future__ import annotations

import os
import struct

import google_crc32c
import numpy as np
from etils import epath

from moleblend_jax.chem.paths import floyd_warshall, path_bonds_from_via
from moleblend_jax.schema import (
    MAX_SUPPORTED_ATOMS,
    NUM_ATOM_FEATURES,
    NUM_BOND_FEATURES,
    UNREACHABLE_SPD,
)

INT_FEATURES = ("has_coords", "id", "n_atoms", "n_bonds")
BYTES_FEATURES = (
    "atom_features",
    "bond_atoms",
    "bond_features",
    "coords",
    "labels",
    "name",
    "smiles",
    "spd",
    "via",
)


class CorruptRecordError(ValueError):
    """A shard file is truncated or fails its checksums."""


# ---------------------------------------------------------------- protobuf (proto3 wire format)
def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL_VARINTS[value]
    value &= (1 << 64) - 1  # Negative int64 as two's complement, as protobuf does.
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


_SMALL_VARINTS = [bytes([v]) for v in range(128)]


def _field(number: int, payload: bytes) -> bytes:
    """Length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(key: str, feature: bytes) -> bytes:
    """One Features.feature map entry {1: key, 2: Feature}, wrapped as field 1 of Features."""
    return _field(1, _KEY_FIELDS[key] + _field(2, feature))


_KEY_FIELDS = {k: _field(1, k.encode()) for k in INT_FEATURES + BYTES_FEATURES}


def encode_record(record: dict, via: np.ndarray | None = None) -> bytes:
    """Record dict (docs/batch_format.md) -> serialized tf.train.Example (deterministic bytes).

    The record's `path_bonds` are stored as `via` ([N, N], from `chem.paths.floyd_warshall`,
    which they are a function of; docs/data.md): pass it if known, else it is recomputed from
    `bond_atoms`.
    """
    n = len(record["atom_features"])
    if n > MAX_SUPPORTED_ATOMS:
        raise ValueError(f"{n} atoms > {MAX_SUPPORTED_ATOMS} supported by the shard format")
    spd = np.asarray(record["spd"])
    stored_spd = np.where(spd == UNREACHABLE_SPD, 0, spd)
    if via is None:
        via = floyd_warshall(n, record["bond_atoms"])[1]
    ints = dict(
        has_coords=int(record["has_coords"]),
        id=int(record["id"]),
        n_atoms=n,
        n_bonds=len(record["bond_features"]),
    )
    blobs = dict(
        atom_features=np.asarray(record["atom_features"], np.uint8).tobytes(),
        bond_atoms=np.asarray(record["bond_atoms"], np.uint8).tobytes(),
        bond_features=np.asarray(record["bond_features"], np.uint8).tobytes(),
        coords=np.asarray(record["coords"], "<f4").tobytes(),
        smiles=record["smiles"].encode(),
        spd=stored_spd.astype(np.uint8).tobytes(),
        via=np.asarray(via, np.uint8).tobytes(),
    )
    if "labels" in record:
        blobs["labels"] = np.asarray(record["labels"], "<f4").tobytes()
    if record.get("name"):
        blobs["name"] = record["name"].encode()
    # Feature.int64_list is field 3 (packed Int64List.value); bytes_list is field 1.
    entries = {k: _field(3, _field(1, _varint(v))) for k, v in ints.items()}
    entries.update({k: _field(1, _field(1, v)) for k, v in blobs.items()})
    features = b"".join(_entry(k, entries[k]) for k in sorted(entries))
    return _field(1, features)  # Example.features(1).


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yields (field number, payload) of length-delimited / varint fields of one message."""
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        wire = tag & 7
        if wire == 2:
            size, pos = _read_varint(buf, pos)
            yield tag >> 3, buf[pos : pos + size]
            pos += size
        elif wire == 0:
            value, pos = _read_varint(buf, pos)
            yield tag >> 3, value
        else:
            raise CorruptRecordError(f"unexpected protobuf wire type {wire}")


def _parse_features(example: bytes) -> dict:
    out = {}
    for number, features in _fields(example):
        if number != 1:
            continue
        for _, entry in _fields(features):
            key = value = None
            for num, part in _fields(entry):
                if num == 1:
                    key = part.decode()
                elif num == 2:
                    value = part
            (kind, inner), *_ = list(_fields(value))
            if kind == 1:  # BytesList.
                out[key] = b"".join(v for _, v in _fields(inner))
            elif kind == 3:  # Int64List, packed or not.
                out[key] = _packed_int(inner)
    return out


def _packed_int(inner) -> int:
    (num, payload), *_ = list(_fields(inner))
    value = payload if isinstance(payload, int) else _read_varint(payload, 0)[0]
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_record(example: bytes) -> dict:
    """Serialized Example (from `encode_record`) -> record dict of docs/batch_format.md."""
    f = _parse_features(example)
    n, e = f["n_atoms"], f["n_bonds"]
    spd = np.frombuffer(f["spd"], np.uint8).reshape(n, n).astype(np.int32)
    spd = np.where((spd == 0) & ~np.eye(n, dtype=bool), UNREACHABLE_SPD, spd).astype(np.int32)
    bond_atoms = np.frombuffer(f["bond_atoms"], np.uint8).reshape(e, 2).astype(np.int32)
    via = np.frombuffer(f["via"], np.uint8).reshape(n, n).astype(np.int32)
    record = dict(
        id=np.int64(f["id"]),
        smiles=f["smiles"].decode(),
        atom_features=np.frombuffer(f["atom_features"], np.uint8)
        .reshape(n, NUM_ATOM_FEATURES)
        .astype(np.int32),
        bond_features=np.frombuffer(f["bond_features"], np.uint8)
        .reshape(e, NUM_BOND_FEATURES)
        .astype(np.int32),
        bond_atoms=bond_atoms,
        spd=spd,
        path_bonds=path_bonds_from_via(spd, via, bond_atoms),
        coords=np.frombuffer(f["coords"], "<f4").reshape(n, 3).astype(np.float32),
        has_coords=np.int32(f["has_coords"]),
    )
    if "labels" in f:
        record["labels"] = np.frombuffer(f["labels"], "<f4").astype(np.float32)
    if "name" in f:
        record["name"] = f["name"].decode()
    return record


# ---------------------------------------------------------------- TFRecord framing
def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: uint64 length, masked crc32c(length), data, masked crc32c(data)."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", _masked_crc(length))
        + data
        + struct.pack("<I", _masked_crc(data))
    )


def read_frames(path: str | os.PathLike):
    """Yields the payloads of a TFRecord file, checking every checksum.

    Raises CorruptRecordError naming the file on truncation or checksum mismatch.
    """
    with epath.Path(path).open("rb") as f:
        offset = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise CorruptRecordError(f"{path}: truncated record header at byte {offset}")
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != _masked_crc(header[:8]):
                raise CorruptRecordError(f"{path}: corrupt record length at byte {offset}")
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise CorruptRecordError(f"{path}: truncated record at byte {offset}")
            if struct.unpack("<I", footer)[0] != _masked_crc(data):
                raise CorruptRecordError(f"{path}: corrupt record (crc mismatch) at byte {offset}")
            offset += 16 + length
            yield data
