"""Packing of activations into blobs: staged rows (one chunk x one band of latents, written while caching) and
segments (one latent's activations over many chunks, written by compaction).

Every array is split into byte planes (all low bytes, then the next, ...). A segment (`packed` 2, since 2026-12)
compresses each plane on its own with zstd level 1 (magicless frames, no content size: the row's `n` is the size),
storing a plane raw where zstd does not shrink it; rows of `packed` 1 (the planes of a row in one zstd frame) and 0
(raw) still read. Each plane alone gets its own entropy table: the low byte of a position delta or of a float16 is
near-uniform and the high bytes are skewed, and one table over all planes fits none of them. Measured on the
embedded cache's segments (bytes per activation, encode M act/s; README "How the cache is stored"): zstd-1 over
all planes 2.72, blosc2-zstd-1 with shuffle 2.42, blosc2 with bitshuffle 2.57, positions bit-packed at their
minimum width 2.98, zstd-1 per plane 2.34 (order-0 entropy of the planes 2.20). blosc2 compresses the shuffled
byte streams apart too, but its 32-byte headers cost more than they save here and it is a second binary
dependency; the per-plane split is a few numpy lines. Staged rows, which compaction deletes, keep one frame per row
(the writer's speed matters more there than their size).
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

CODEC = "zstd1-planes-v2"
LEGACY_CODEC = "zlib-delta-byteplanes-v1"  # schema <= 6: one row per (latent, chunk); read only to migrate
LEVEL = 1

# `packed` of a segment row: how its data is stored (store/schema_current.py, segments).
RAW, ONE_FRAME, PER_PLANE = 0, 1, 2

# zstd contexts are not thread-safe: each thread keeps its own (making one costs ~20 us, a segment's packing
# a few), so the writer thread, compaction and a reader never share one.
_local = threading.local()


def _contexts():
    ctx = getattr(_local, "zstd", None)
    if ctx is None:
        bare = zstandard.ZstdCompressionParameters.from_level(
            LEVEL, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=0, write_dict_id=0, write_checksum=0
        )
        ctx = _local.zstd = (
            zstandard.ZstdCompressor(compression_params=bare),
            zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS),
        )
    return ctx


def _compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=LEVEL).compress(raw)


def _decompress(blob: bytes) -> np.ndarray:
    return np.frombuffer(zstandard.ZstdDecompressor().decompress(blob), np.uint8)


def planes(a: np.ndarray) -> np.ndarray:
    """[itemsize, n] uint8: the byte planes of a 1-D array (little-endian)."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint8).reshape(-1, a.itemsize).T


def unplanes(raw: np.ndarray, dtype, n: int) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return np.ascontiguousarray(raw[: size * n].reshape(size, n).T).view(dtype).ravel()


def pack_each_plane(m: np.ndarray) -> bytes:
    """[k, n] uint8 planes as k - 1 uint32 lengths, then each plane: a magicless zstd frame, or the n raw bytes
    where zstd is not smaller (a stored length of n says raw: a frame is kept only when shorter)."""
    comp = _contexts()[0]
    n = m.shape[1]
    parts = []
    for plane in m:
        raw = plane.tobytes()
        z = comp.compress(raw)
        parts.append(z if len(z) < n else raw)
    return np.array([len(p) for p in parts[:-1]], "<u4").tobytes() + b"".join(parts)


def unpack_each_plane(blob: bytes, k: int, n: int) -> np.ndarray:
    """The [k * n] uint8 planes of `pack_each_plane`'s blob."""
    dec = _contexts()[1]
    head = 4 * (k - 1)
    lens = np.frombuffer(blob, "<u4", k - 1).tolist()
    lens.append(len(blob) - head - sum(lens))
    out = np.empty((k, n), np.uint8)
    at = head
    for i, size in enumerate(lens):
        part = blob[at : at + size]
        at += size
        plane = part if size == n else dec.decompress(part, max_output_size=n)
        if len(plane) != n:
            raise ValueError(f"a packed plane holds {len(plane)} bytes, expected {n}")
        out[i] = np.frombuffer(plane, np.uint8)
    return out.ravel()


# ---- staged rows: one committed chunk's activations of one band of latents ------------------------------------


def encode_staged_rows(local: np.ndarray, offsets: np.ndarray, values: np.ndarray, starts: np.ndarray):
    """The staged rows of a whole chunk at once: the arrays hold each row's activations one after another, `starts`
    the first index of each row. Packs every row's planes in one vectorised pass (per-row numpy calls were the
    writer's cost at 131k latents); yields one blob per row."""
    deltas = np.diff(offsets.astype(np.int64), prepend=0)
    deltas[starts] = offsets[starts]  # each row's first delta is from 0, not from the previous row's last offset
    m = np.empty((6, len(local)), np.uint8)
    m[0:2] = planes(local.astype(np.uint16))
    m[2:4] = planes(deltas.astype(np.uint16))
    m[4:6] = planes(values.astype(np.float16))
    ends = np.append(starts[1:], len(local))
    comp = zstandard.ZstdCompressor(level=LEVEL)
    for s, e in zip(starts.tolist(), ends.tolist()):
        yield comp.compress(m[:, s:e].tobytes())


def decode_staged(blob: bytes, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latent ids within the band uint16, offsets int64, values float16) of a staged row of n activations."""
    raw = _decompress(blob).reshape(6, n)
    local = np.ascontiguousarray(raw[0:2].T).view(np.uint16).ravel()
    offsets = np.cumsum(np.ascontiguousarray(raw[2:4].T).view(np.uint16).ravel(), dtype=np.int64)
    values = np.ascontiguousarray(raw[4:6].T).view(np.float16).ravel()
    return local, offsets, values


# ---- segments: one latent's activations, global positions ascending ---------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A packed segment row: `data` holds the position deltas (from `first_pos`, `width` bytes each) and the
    float16 values, as planes; `packed` says how (RAW, ONE_FRAME from before 2026-12, PER_PLANE)."""

    n: int
    max_act: float
    first_pos: int
    width: int
    packed: int
    data: bytes


def delta_width(max_delta: int) -> int:
    return 2 if max_delta < 1 << 16 else 4 if max_delta < 1 << 32 else 8


def segment_planes(positions: np.ndarray, values: np.ndarray) -> tuple[int, np.ndarray]:
    """(delta width, [width + 2, n] uint8 planes) of ascending global positions (int64) and their values."""
    deltas = np.diff(positions, prepend=positions[0])
    width = delta_width(int(deltas.max()))
    return width, np.concatenate([planes(deltas.astype(f"<u{width}")), planes(values.astype(np.float16))], axis=0)


def encode_segment(positions: np.ndarray, values: np.ndarray) -> Segment:
    """One segment from ascending global positions (int64) and their values: each plane packed alone, or the
    whole row raw when that is no larger (tiny segments)."""
    width, m = segment_planes(positions, values)
    packed = pack_each_plane(m)
    small = len(packed) < m.size
    return Segment(
        n=len(positions),
        max_act=float(values.max()),
        first_pos=int(positions[0]),
        width=width,
        packed=PER_PLANE if small else RAW,
        data=packed if small else m.tobytes(),
    )


def encode_segment_one_frame(positions: np.ndarray, values: np.ndarray) -> Segment:
    """A segment as autointerp wrote it before PER_PLANE (all planes in one zstd frame): kept so tests can make
    the rows an older file holds and check that they still read."""
    width, m = segment_planes(positions, values)
    raw = m.tobytes()
    packed = _compress(raw)
    small = len(packed) < len(raw)
    return Segment(
        n=len(positions),
        max_act=float(values.max()),
        first_pos=int(positions[0]),
        width=width,
        packed=ONE_FRAME if small else RAW,
        data=packed if small else raw,
    )


def decode_segment(first_pos: int, width: int, packed: int, n: int, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(global positions int64, values float16) of a segment row of any `packed` kind."""
    if packed == PER_PLANE:
        raw = unpack_each_plane(data, width + 2, n)
    elif packed == ONE_FRAME:
        raw = _decompress(data)
    elif packed == RAW:
        raw = np.frombuffer(data, np.uint8)
    else:
        raise ValueError(f"segment packed as {packed!r}: written by a newer autointerp")
    deltas = unplanes(raw, f"<u{width}", n)
    positions = np.cumsum(deltas, dtype=np.int64)
    positions += first_pos
    values = unplanes(raw[width * n :], np.float16, n)
    return positions, values


# ---- the layout of schema <= 6, read only by the migration ------------------------------------------------------


def _legacy_unplanes(blob: bytes, dtype) -> np.ndarray:
    raw = np.frombuffer(zlib.decompress(blob), np.uint8)
    size = np.dtype(dtype).itemsize
    return raw.reshape(size, -1).T.copy().view(dtype).ravel()


def legacy_decode_offsets(blob: bytes) -> np.ndarray:
    return np.cumsum(_legacy_unplanes(blob, np.uint16), dtype=np.int64)


def legacy_decode_values(blob: bytes) -> np.ndarray:
    return _legacy_unplanes(blob, np.float16)


def legacy_encode(offsets: np.ndarray, values: np.ndarray) -> tuple[bytes, bytes]:
    """A schema-6 (latent, chunk) row's two blobs: kept so tests can make an old database to migrate."""

    def pack(a: np.ndarray) -> bytes:
        return zlib.compress(a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes(), 6)

    deltas = np.diff(offsets.astype(np.int64), prepend=0).astype(np.uint16)
    return pack(deltas), pack(np.ascontiguousarray(values, dtype=np.float16))
