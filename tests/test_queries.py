import numpy as np

from autointerp.store.queries import WindowQueries


def test_windows_match_truth(filled_store):
    store, truth = filled_store
    q = WindowQueries(store, window_len=4)
    latent = 3
    aw = q.activating(latent)
    expected_windows = {q.window_of(np.array([p]))[0] for (lat, p) in truth if lat == latent}
    assert set(aw.window_ids.tolist()) == expected_windows
    wins = q.fetch(aw, aw.window_ids)
    seqs = store.sequences(range(store.n_sequences()))
    for w in wins:
        assert len(w.tokens) == 4
        np.testing.assert_array_equal(w.tokens, seqs[w.seq][w.start : w.start + 4])
        for i, a in enumerate(w.acts):
            g = w.seq * 16 + w.start + i
            assert a == np.float32(truth.get((latent, g), 0.0))
        assert w.max_act > 0


def test_top_random_stratified_nonactivating(filled_store):
    store, _ = filled_store
    q = WindowQueries(store, window_len=4)
    aw = q.activating(1)
    top = q.top(aw, 3)
    maxes = dict(zip(aw.window_ids.tolist(), aw.max_acts.tolist()))
    assert [maxes[w] for w in top] == sorted(maxes.values(), reverse=True)[:3]
    a = q.random(aw, 5, np.random.default_rng(7))
    b = q.random(aw, 5, np.random.default_rng(7))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == len(a)
    bins = q.decile_bins(aw, 4)
    assert sum(len(b) for b in bins) == len(aw.window_ids)
    # Bins are ordered by strength: every window of a bin is at most as strong as the next bin's.
    for lo, hi in zip(bins, bins[1:]):
        assert max(maxes[w] for w in lo) <= min(maxes[w] for w in hi)
    strat = q.stratified(aw, 1, np.random.default_rng(0), n_bins=4, exclude=top)
    assert all(len(s) <= 1 for s in strat) and not set(np.concatenate(strat).tolist()) & set(top.tolist())
    non = q.non_activating(aw, 10, np.random.default_rng(0))
    assert len(non) > 0
    assert not set(non.tolist()) & set(aw.window_ids.tolist())
    for w in q.fetch(aw, non):
        assert w.max_act == 0 and not w.acts.any()
