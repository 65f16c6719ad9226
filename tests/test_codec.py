import numpy as np
import pytest

from autointerp.store.codec import decode_offsets, decode_values, encode_offsets, encode_values


@pytest.mark.parametrize("offsets", [[], [0], [65535], [0, 1, 2, 3], [5, 70, 65000, 65535], list(range(0, 65536, 7))])
def test_offsets_roundtrip(offsets):
    a = np.array(offsets, np.uint16)
    np.testing.assert_array_equal(decode_offsets(encode_offsets(a)), a.astype(np.int64))


def test_values_roundtrip_bit_exact():
    v = np.random.default_rng(0).exponential(3, 5000).astype(np.float16)
    v[:3] = [np.float16(65504), np.float16(6e-8), np.float16(0.0)]
    out = decode_values(encode_values(v))
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out.view(np.uint16), v.view(np.uint16))


def test_sorted_offsets_compress():
    a = np.sort(np.random.default_rng(1).choice(65536, 700, replace=False)).astype(np.uint16)
    assert len(encode_offsets(a)) < 1.2 * len(a)  # vs 2 bytes raw


def test_row_deltas_of_a_whole_chunk_encode_exactly_as_row_by_row():
    """The writer computes every row's deltas in one pass: the stored bytes are those of one np.diff per row."""
    from autointerp.store.codec import encode_deltas, row_deltas

    rng = np.random.default_rng(3)
    rows = [np.sort(rng.choice(65536, size=n, replace=False)) for n in (1, 2, 7, 300, 1, 5000)]
    offsets = np.concatenate(rows).astype(np.uint16)
    starts = np.cumsum([0] + [len(r) for r in rows[:-1]])
    deltas = row_deltas(offsets, starts)
    ends = list(starts[1:]) + [len(offsets)]
    assert [encode_deltas(deltas[s:e]) for s, e in zip(starts, ends)] == [encode_offsets(r) for r in rows]
    assert [list(decode_offsets(encode_deltas(deltas[s:e]))) for s, e in zip(starts, ends)] == [list(r) for r in rows]
