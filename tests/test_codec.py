import numpy as np
import pytest
from helpers.stores import fill_store

from autointerp.store.codec import (
    ONE_FRAME,
    PER_PLANE,
    RAW,
    decode_segment,
    decode_staged,
    encode_segment,
    encode_segment_one_frame,
    encode_staged_rows,
    legacy_decode_offsets,
    legacy_decode_values,
    legacy_encode,
)
from autointerp.store.compact import compact
from autointerp.store.layout import SEGMENT, segment_bounds
from autointerp.store.space import space_by_table


def realistic_segment(n: int, mean_gap: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A latent's activations as an SAE makes them: geometric gaps between positions, log-normal float16 values."""
    rng = np.random.default_rng(seed)
    positions = np.cumsum(rng.geometric(1 / mean_gap, n)).astype(np.int64) + 1000
    return positions, (rng.lognormal(0, 0.6, n) * 7).astype(np.float16)


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
    assert seg.width == 2 and seg.packed == PER_PLANE and len(seg.data) < 0.1 * 4 * len(dense)
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


@pytest.mark.parametrize(("n", "mean_gap"), [(1, 5), (3, 40), (60, 2), (5000, 3), (5000, 300), (SEGMENT, 900)])
def test_rows_written_the_old_way_and_the_new_way_decode_to_the_same_arrays(n, mean_gap):
    """A file holds segments of every kind once it is written by two versions: each decodes to the same arrays."""
    positions, values = realistic_segment(n, mean_gap)
    new, old = encode_segment(positions, values), encode_segment_one_frame(positions, values)
    assert new.packed in (RAW, PER_PLANE) and old.packed in (RAW, ONE_FRAME)
    assert (new.n, new.max_act, new.first_pos, new.width) == (old.n, old.max_act, old.first_pos, old.width)
    for seg in (new, old):
        pos, val = decode_segment(seg.first_pos, seg.width, seg.packed, seg.n, seg.data)
        np.testing.assert_array_equal(pos, positions)
        np.testing.assert_array_equal(val.view(np.uint16), values.view(np.uint16))
    if n >= 5000:  # planes packed apart: each gets its own entropy table, one frame fits none of them well
        assert new.packed == PER_PLANE and len(new.data) < 0.95 * len(old.data)
    if n == 1:
        assert new.packed == RAW and len(new.data) == 4


def test_a_plane_zstd_cannot_shrink_is_stored_raw_and_still_reads():
    """Uniform random low bytes: zstd leaves them as large as they are, so the plane is kept raw beside packed ones."""
    rng = np.random.default_rng(1)
    positions = np.cumsum(rng.integers(1, 256, 4000)).astype(np.int64)  # low byte uniform, high byte near constant
    values = np.full(4000, 3.0, np.float16)
    seg = encode_segment(positions, values)
    assert seg.packed == PER_PLANE
    lengths = np.frombuffer(seg.data, "<u4", seg.width + 1).tolist()
    assert lengths[0] == 4000 and all(x < 4000 for x in lengths[1:])
    pos, val = decode_segment(seg.first_pos, seg.width, seg.packed, seg.n, seg.data)
    np.testing.assert_array_equal(pos, positions)
    np.testing.assert_array_equal(val, values)


def test_a_packed_kind_this_version_does_not_know_is_refused():
    seg = encode_segment(*realistic_segment(100, 5))
    with pytest.raises(ValueError, match="newer autointerp"):
        decode_segment(seg.first_pos, seg.width, 7, seg.n, seg.data)


def test_a_store_whose_segments_were_written_the_old_way_reads_identically(tmp_path):
    """Rewrite a compacted store's rows as the previous version packed them: every latent reads the same, and the
    file compaction leaves has no free pages (the staged rows' pages go back to the file system)."""
    store, _ = fill_store(tmp_path / "a.db", n_chunks=4, num_latents=8, seq_len=64, chunk_seqs=8)
    assert compact(store) > 0
    assert store.db.execute("pragma freelist_count").fetchone()[0] == 0
    store.db.execute("pragma wal_checkpoint(truncate)")
    space = space_by_table(tmp_path / "a.db")
    assert sum(v for k, v in space.items() if k != "segments.data") == (tmp_path / "a.db").stat().st_size
    assert space["free"] == 0 and 0 < space["segments.data"] <= space["segments"]
    before = {lat: store.latent_activations(lat) for lat in range(8)}
    rows = store.db.execute("select latent, seg, first_pos, width, packed, n, data from segments").fetchall()
    assert {r[4] for r in rows} <= {RAW, PER_PLANE} and PER_PLANE in {r[4] for r in rows}
    with store.db.conn:
        for latent, seg, first_pos, width, packed, n, data in rows:
            old = encode_segment_one_frame(*decode_segment(first_pos, width, packed, n, data))
            store.db.execute(
                "update segments set packed = ?, data = ? where latent = ? and seg = ?",
                [old.packed, old.data, latent, seg],
            )
    assert ONE_FRAME in {r[0] for r in store.db.execute("select packed from segments")}
    for lat, (pos, val) in before.items():
        got_pos, got_val = store.latent_activations(lat)
        np.testing.assert_array_equal(got_pos, pos)
        np.testing.assert_array_equal(got_val, val)
    store.close()
