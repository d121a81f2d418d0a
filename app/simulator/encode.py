"""Vectorised hashing and string building for the simulator.

Millions of clicks cannot afford a Python string per field. Every string column is built here as
one Arrow ``StringArray`` straight from numpy byte matrices: each part of a string (a constant
prefix, fixed-width digits, an IP octet, a hex group) is a ``(rows, width)`` byte matrix with a
per-row length, and the parts are laid side by side and packed with a mask.

Also here: a counter-based hash (SplitMix64) that gives every user, IP and actor its attributes
without storing them, and Kafka's murmur2 partitioner, vectorised, so the live publisher can pick
partitions itself exactly as the Java client (and aiokafka's default partitioner) would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

__all__ = [
    "splitmix64",
    "uhash",
    "unit",
    "digits",
    "ids",
    "pool",
    "format_ips",
    "rfc3339_ms",
    "murmur2",
    "kafka_partition",
]

_U64 = np.uint64
_MASK32 = np.uint64(0xFFFFFFFF)


# --------------------------------------------------------------------------------------------------
# Hashing: attributes without state
# --------------------------------------------------------------------------------------------------


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser over a uint64 array (wrap-around arithmetic is intended)."""
    z = np.asarray(x, dtype=_U64) + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def uhash(seed: int, salt: int, x: np.ndarray | int) -> np.ndarray:
    """A 64-bit hash of ``x`` that depends on the run's seed and on a salt naming the attribute."""
    key = splitmix64(np.array([(seed * 0x1000193 + salt) & 0xFFFFFFFFFFFFFFFF], dtype=_U64))[0]
    with np.errstate(over="ignore"):
        return splitmix64(np.asarray(x, dtype=np.int64).astype(_U64) ^ key)


def unit(seed: int, salt: int, x: np.ndarray | int) -> np.ndarray:
    """A float in [0, 1) per element of ``x``, hash-derived (53 bits)."""
    return (uhash(seed, salt, x) >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))


# --------------------------------------------------------------------------------------------------
# Strings from byte matrices
# --------------------------------------------------------------------------------------------------

Part = tuple[np.ndarray, np.ndarray | None]  # (rows x width bytes, per-row length or None = full)


def _pack(parts: Sequence[Part], n: int) -> pa.StringArray:
    """Lay the parts side by side and keep, per row, the first ``length`` bytes of each part."""
    mats = [np.broadcast_to(m, (n, m.shape[1])) for m, _ in parts]
    full = np.concatenate(mats, axis=1) if len(mats) > 1 else np.ascontiguousarray(mats[0])
    if all(lens is None for _, lens in parts):
        width = full.shape[1]
        data = full.tobytes()
        offsets = np.arange(n + 1, dtype=np.int32) * width
    else:
        masks = []
        for m, lens in parts:
            w = m.shape[1]
            if lens is None:
                masks.append(np.ones((n, w), dtype=bool))
            else:
                masks.append(np.arange(w)[None, :] < np.asarray(lens)[:, None])
        mask = np.concatenate(masks, axis=1)
        data = full[mask].tobytes()
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(mask.sum(axis=1), out=offsets[1:])
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative integers as a ``(rows, width)`` byte matrix."""
    v = np.asarray(values).astype(_U64)
    out = np.empty((v.shape[0], width), dtype=np.uint8)
    ten = _U64(10)
    for k in range(width - 1, -1, -1):
        out[:, k] = (v % ten).astype(np.uint8) + 48
        v = v // ten
    return out


def _const(text: bytes) -> np.ndarray:
    return np.frombuffer(text, dtype=np.uint8)[None, :]


def ids(prefix: str, *fields: tuple[np.ndarray, int]) -> pa.StringArray:
    """``prefix`` followed by each ``(values, width)`` field zero-padded, e.g. ``u0000012345``."""
    n = np.shape(fields[0][0])[0]
    parts: list[Part] = [(_const(prefix.encode()), None)]
    parts += [(digits(values, width), None) for values, width in fields]
    return _pack(parts, n)


def pool(strings: Sequence[str]) -> pa.StringArray:
    """A small dictionary of strings to ``take`` from with index arrays."""
    return pa.array(list(strings), type=pa.string())


# Decimal octets 0..255 as 3-byte rows with their lengths; hex groups 0..ffff as 4-byte rows.
_OCTET = np.zeros((256, 3), dtype=np.uint8)
_OCTET_LEN = np.zeros(256, dtype=np.int64)
for _i in range(256):
    _s = str(_i).encode()
    _OCTET[_i, : len(_s)] = np.frombuffer(_s, dtype=np.uint8)
    _OCTET_LEN[_i] = len(_s)
_HEX = np.zeros((65536, 4), dtype=np.uint8)
_HEX_LEN = np.zeros(65536, dtype=np.int64)
_hexdig = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_g = np.arange(65536)
_HEX_LEN[:] = 1 + (_g >= 0x10) + (_g >= 0x100) + (_g >= 0x1000)
for _k in range(4):
    # digit k (from the left) of a group with L hex digits is nibble (L-1-k)
    _shift = (_HEX_LEN - 1 - _k) * 4
    _nib = np.where(_shift >= 0, (_g >> np.maximum(_shift, 0)) & 0xF, 0)
    _HEX[:, _k] = np.where(_shift >= 0, _hexdig[_nib], 0)
del _i, _s, _g, _k, _shift, _nib


def format_ips(hi: np.ndarray, lo: np.ndarray, v6: np.ndarray) -> pa.StringArray:
    """IPv4 (``lo`` holds the 32-bit address) or IPv6 (``hi``:``lo``) as compressed text.

    IPv6 addresses must have no all-zero 16-bit group (the simulator only makes such addresses), so
    the compressed form is the eight groups without leading zeros and never needs ``::``. A test
    checks the output against :mod:`ipaddress`.
    """
    n = lo.shape[0]
    v6 = np.asarray(v6, dtype=bool)
    dot = _const(b".")
    colon = _const(b":")
    parts: list[Part] = []
    # IPv4 rows use the first 4 octet parts (+3 dots); IPv6 rows the 8 group parts (+7 colons).
    # Both are laid out in the same 8 slots: a slot is an octet for v4 rows and a group for v6 rows.
    lo = np.asarray(lo, dtype=_U64)
    hi = np.asarray(hi, dtype=_U64)
    for slot in range(8):
        if slot < 4:
            g6 = ((hi >> _U64(48 - 16 * slot)) & _U64(0xFFFF)).astype(np.int64)
            o4 = ((lo >> _U64(24 - 8 * slot)) & _U64(0xFF)).astype(np.int64)
        else:
            g6 = ((lo >> _U64(48 - 16 * (slot - 4))) & _U64(0xFFFF)).astype(np.int64)
            o4 = np.zeros(n, dtype=np.int64)
        mat = np.where(v6[:, None], _HEX[g6], np.pad(_OCTET[o4], ((0, 0), (0, 1))))
        lens = np.where(v6, _HEX_LEN[g6], np.where(slot < 4, _OCTET_LEN[o4], 0))
        parts.append((mat, lens))
        if slot < 7:
            sep = np.where(v6[:, None], colon, dot)
            sep_len = np.where(v6, 1, 1 if slot < 3 else 0)
            parts.append((sep, sep_len))
    return _pack(parts, n)


def rfc3339_ms(epoch_ms: np.ndarray) -> list[str]:
    """Epoch milliseconds -> ``2026-11-22T10:00:00.123Z`` strings (same form as events.format_time)."""
    text = np.datetime_as_string(np.asarray(epoch_ms, dtype="datetime64[ms]"), unit="ms")
    return [s + "Z" for s in text.tolist()]


# --------------------------------------------------------------------------------------------------
# Kafka's default partitioner, vectorised
# --------------------------------------------------------------------------------------------------


def murmur2(keys: pa.StringArray | pa.BinaryArray) -> np.ndarray:
    """Kafka's murmur2 (seed 0x9747b28c) of every key's bytes, as uint32 values."""
    n = len(keys)
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int32)[keys.offset : keys.offset + n + 1]
    data = (
        np.frombuffer(keys.buffers()[2], dtype=np.uint8)
        if keys.buffers()[2] is not None
        else np.zeros(0, np.uint8)
    )
    starts = offsets[:-1].astype(np.int64)
    lens = (offsets[1:] - offsets[:-1]).astype(np.int64)
    maxlen = int(lens.max()) if n else 0
    width = (maxlen + 3) // 4 * 4 + 4
    padded = np.zeros((n, width), dtype=np.uint8)
    col = np.arange(width)[None, :]
    valid = col < lens[:, None]
    padded[valid] = data[(starts[:, None] + col)[valid]]
    m = _U64(0x5BD1E995)
    h = (_U64(0x9747B28C) ^ lens.astype(_U64)) & _MASK32
    words = lens // 4
    with np.errstate(over="ignore"):
        for i in range(width // 4):
            b = padded[:, 4 * i : 4 * i + 4].astype(_U64)
            k = b[:, 0] | (b[:, 1] << _U64(8)) | (b[:, 2] << _U64(16)) | (b[:, 3] << _U64(24))
            k = (k * m) & _MASK32
            k ^= k >> _U64(24)
            k = (k * m) & _MASK32
            hh = ((h * m) & _MASK32) ^ k
            h = np.where(i < words, hh, h)
        extra = lens % 4
        base = (words * 4)[:, None]
        tail = np.take_along_axis(padded, base + np.arange(3)[None, :], axis=1).astype(_U64)
        h = np.where(extra >= 3, h ^ (tail[:, 2] << _U64(16)), h)
        h = np.where(extra >= 2, h ^ (tail[:, 1] << _U64(8)), h)
        h = np.where(extra >= 1, ((h ^ tail[:, 0]) * m) & _MASK32, h)
        h ^= h >> _U64(13)
        h = (h * m) & _MASK32
        h ^= h >> _U64(15)
    return h.astype(np.uint32)


def kafka_partition(keys: pa.StringArray | pa.BinaryArray, partitions: int) -> np.ndarray:
    """The partition Kafka's default partitioner picks for each key (``murmur2 & 0x7fffffff % n``)."""
    return ((murmur2(keys).astype(np.int64) & 0x7FFFFFFF) % partitions).astype(np.int32)
