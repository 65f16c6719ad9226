import numpy as np
import pytest

from autointerp.store.codec import (
    decode_segment,
    decode_staged,
    encode_segment,
    encode_staged_rows,
    legacy_decode_offsets,
    legacy_decode_values,
    legacy_encode,
)
from autointerp.store.layout import SEGMENT, segment_bounds


@pytest.mark.parametrize("gaps", [[0], [1, 1, 1], [70000, 3], [2**33, 1, 2**17], list(range(1, 3000, 7))])
def test_segment_roundtrip_exact_at_every_delta_width(gaps):
    positions = np.cumsum(np.array(gaps, np.int64)) + 12345
    values = np.random.default_rng(0).exponential(3, len(positions)).astype(np.float16)
    values[0] = np.float16(65504)
    seg = encode_segment(positions, values)
    assert seg.n == len(positions) and seg.max_act == float(values.max()) and seg.first_pos == positions[0]
    pos, val = decode_segment(seg.first_pos, seg.width, seg.packed, seg.n, seg.data)
    np.testing.assert_array_equal(pos, positions)
    assert val.dtype == np.float16
    np.testing.assert_array_equal(val.view(np.uint16), values.view(np.uint16))


def test_segment_width_follows_the_largest_gap_and_dense_ones_compress():
    dense = np.arange(0, 40000, 2, dtype=np.int64)
    seg = encode_segment(dense, np.ones(len(dense), np.float16))
    assert seg.width == 2 and seg.packed == 1 and len(seg.data) < 0.1 * 4 * len(dense)
    rare = np.array([0, 2**20, 2**21], np.int64)
    assert encode_segment(rare, np.ones(3, np.float16)).width == 4
    assert encode_segment(np.array([0, 2**40]), np.ones(2, np.float16)).width == 8


def test_staged_rows_of_a_whole_chunk_roundtrip_row_by_row():
    """The writer packs all of a chunk's band rows in one vectorised pass; each row decodes to its own arrays."""
    rng = np.random.default_rng(3)
    sizes = (1, 2, 7, 300, 1, 5000)
    rows = [
        (
            rng.integers(0, 4096, n).astype(np.uint16),
            np.sort(rng.choice(65536, n, replace=False)),
            rng.exponential(2, n).astype(np.float16),
        )
        for n in sizes
    ]
    starts = np.cumsum([0, *sizes[:-1]])
    blobs = list(encode_staged_rows(*(np.concatenate([r[i] for r in rows]) for i in range(3)), starts))
    assert len(blobs) == len(rows)
    for blob, (local, offsets, values), n in zip(blobs, rows, sizes):
        got = decode_staged(blob, n)
        np.testing.assert_array_equal(got[0], local)
        np.testing.assert_array_equal(got[1], offsets)
        np.testing.assert_array_equal(got[2].view(np.uint16), values.view(np.uint16))


def test_segment_bounds_split_runs_at_latent_changes_and_at_segment_size():
    latents = np.array([0] * 3 + [5] * (2 * SEGMENT + 1) + [9], np.uint16)
    starts, ends = segment_bounds(latents)
    assert starts.tolist() == [0, 3, 3 + SEGMENT, 3 + 2 * SEGMENT, 4 + 2 * SEGMENT]
    assert ends.tolist() == [*starts[1:].tolist(), len(latents)]


def test_legacy_rows_still_decode_for_the_migration():
    offsets = np.array([5, 70, 65000, 65535], np.uint16)
    values = np.array([1.5, 2, 0, 65504], np.float16)
    off_blob, val_blob = legacy_encode(offsets, values)
    np.testing.assert_array_equal(legacy_decode_offsets(off_blob), offsets.astype(np.int64))
    np.testing.assert_array_equal(legacy_decode_values(val_blob), values)
