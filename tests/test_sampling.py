"""Sampling invariants on a real store: disjoint sets, one example per decile slot, seeded draws."""

import sqlite3

import pytest
import torch
from helpers.stores import fill_store

from autointerp.engine.activations.neighbours import CoactivationIndex, DecoderNeighbours
from autointerp.engine.config import Config, SampleConfig, resolve_profile
from autointerp.engine.interpretation.sampling import ExampleSampler, NegativeSources
from autointerp.store.queries import WindowQueries
from autointerp.store.results import SampleSet

N_LATENTS = 64


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    # 64 sequences of 64 tokens, windows of 8: 512 windows; each latent fires in ~100 of them.
    store, _ = fill_store(
        tmp_path_factory.mktemp("s") / "s.db",
        n_chunks=4,
        seq_len=64,
        chunk_seqs=16,
        num_latents=N_LATENTS,
        n_tokens_target=4096,
    )
    yield WindowQueries(store, window_len=8)
    store.close()


def cfg(**kw) -> SampleConfig:
    base = dict(n_explain=20, activating_per_decile=3, n_deciles=5, n_non_activating=30, min_windows=10)
    base.update(kw)
    return SampleConfig(**base)


def windows(s: SampleSet, role: str) -> list[int]:
    return [w for w, _, _ in s.role(role)]


@pytest.mark.parametrize("strategy", ["top", "random", "stratified", "mix"])
def test_explainer_and_scorer_sets_are_disjoint(queries, strategy):
    sampler = ExampleSampler(queries, cfg(explain_strategy=strategy))
    for latent in range(0, N_LATENTS, 7):
        s = sampler.draw(latent)
        active = set(queries.activating(latent).window_ids.tolist())
        ex, act, non = windows(s, "explain"), windows(s, "activating"), windows(s, "non_activating")
        assert len(ex) == 20 and len(non) == 30
        # Deciles are those of the held-out windows: even "top", which takes the strongest windows for the
        # explainer, leaves every decile its 3 slots (the strongest one included).
        assert len(act) == 15
        per_decile = [d for _, d, _ in s.role("activating")]
        assert all(per_decile.count(d) == 3 for d in range(1, 6)), per_decile
        assert len(set(ex + act + non)) == len(ex) + len(act) + len(non)  # no window in two roles
        assert set(ex) <= active and set(act) <= active
        assert not set(non) & active  # non-activating windows really are silent for this latent


@pytest.mark.parametrize("strategy", ["top", "random", "stratified", "mix"])
@pytest.mark.parametrize("negatives", [False, True])
def test_sample_sizes_predicts_every_draw_exactly(queries, strategy, negatives):
    """The dry run counts LLM calls from `sample_sizes`; it must equal what `draw` does, for sparse, small and
    dense latents (min_windows low enough that latents with few windows are drawn too)."""
    from autointerp.engine.interpretation.sampling import sample_sizes

    c = cfg(explain_strategy=strategy, min_windows=2, n_explain=40, activating_per_decile=7, n_non_activating=450)
    sampler = ExampleSampler(queries, c, explainer_negatives=negatives)
    for latent in range(N_LATENTS):
        n = len(queries.activating(latent).window_ids)
        want = sample_sizes(c, n, queries.n_windows(), negatives)
        s = sampler.draw(latent)
        if s.skipped:
            assert want is None
            continue
        got = {role: len(s.role(role)) for role in ("explain", "activating", "explain_non", "non_activating")}
        assert got == want, (latent, n)


def test_one_scoring_example_per_decile_slot_and_deciles_follow_strength(queries):
    s = ExampleSampler(queries, cfg()).draw(3)
    aw = queries.activating(3)
    strength = dict(zip(aw.window_ids.tolist(), aw.max_acts.tolist()))
    by_decile = {}
    for w, d, _ in s.role("activating"):
        by_decile.setdefault(d, []).append(strength[w])
    assert sorted(by_decile) == [1, 2, 3, 4, 5]
    assert all(len(v) == 3 for v in by_decile.values())
    for d in range(1, 5):  # every window of a weaker decile is no stronger than any of the next
        assert max(by_decile[d]) <= min(by_decile[d + 1])


def test_draws_are_reproducible_from_the_seed(queries):
    a = ExampleSampler(queries, cfg(seed=5)).draw(11)
    b = ExampleSampler(queries, cfg(seed=5)).draw(11)
    c = ExampleSampler(queries, cfg(seed=6)).draw(11)
    assert a.windows == b.windows
    assert a.windows != c.windows


def test_explainer_takes_at_most_half_and_small_latents_are_skipped(queries):
    n = len(queries.activating(2).window_ids)
    s = ExampleSampler(queries, cfg(n_explain=10_000)).draw(2)
    assert len(windows(s, "explain")) == n // 2
    skipped = ExampleSampler(queries, cfg(min_windows=n + 1)).draw(2)
    assert skipped.skipped and "activating windows" in skipped.skipped and not skipped.windows


def test_hard_negative_sources_stay_non_activating(queries):
    decoder = torch.randn(N_LATENTS, 16, generator=torch.Generator().manual_seed(0))
    sources = NegativeSources(
        neighbours=DecoderNeighbours(decoder, k=5),
        coactivating=CoactivationIndex(queries, N_LATENTS, k=5),
        by_embedding=lambda pool, ref: pool[::-1],  # any ordering: the sampler must keep the first n
    )
    for source in ("neighbours", "coactivation", "embedding"):
        s = ExampleSampler(queries, cfg(non_activating_source=source), sources).draw(9)
        active = set(queries.activating(9).window_ids.tolist())
        non = s.role("non_activating")
        assert len(non) == 30 and not {w for w, _, _ in non} & active
        assert {src for _, _, src in non} <= {source, "random"}
        assert any(src == source for _, _, src in non)


def test_decoder_neighbours_are_the_most_similar_directions():
    d = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    assert DecoderNeighbours(d, k=2).similar(0)[0][0] == 1
    assert DecoderNeighbours(d, k=3)(0)[-1] == 3


def test_contrastive_negatives_are_a_fourth_disjoint_role(queries):
    s = ExampleSampler(queries, cfg(), explainer_negatives=True).draw(4)
    roles = ["explain", "explain_non", "activating", "non_activating"]
    all_w = [w for r in roles for w in windows(s, r)]
    assert len(windows(s, "explain_non")) == 10 and len(all_w) == len(set(all_w))


def test_sample_sets_round_trip_and_the_store_rejects_a_window_in_two_roles(queries):
    results = queries.store.results
    s = ExampleSampler(queries, cfg()).draw(6)
    results.write_sample_set(s)
    back = results.sample_set(6)
    assert back.windows == s.windows and back.seed == s.seed and back.config["n_deciles"] == 5
    bad = SampleSet(7, 0, 1, {}, windows={"explain": [(3, 1, "top")], "activating": [(3, 1, "stratified")]})
    with pytest.raises(sqlite3.IntegrityError):
        results.write_sample_set(bad)
    assert results.sample_set(7) is None  # nothing half-written


def test_profiles_fill_only_unset_fields():
    paper = resolve_profile(Config(), cpu_embedded=False)
    cpu = resolve_profile(Config(sample=SampleConfig(n_explain=33)), cpu_embedded=True)
    assert paper.profile == "paper" and paper.score.examples_per_prompt == 5
    assert (paper.sample.n_explain, paper.sample.activating_per_decile, paper.sample.n_non_activating) == (40, 10, 100)
    assert (cpu.profile, cpu.sample.n_explain, cpu.sample.activating_per_decile) == ("cpu", 33, 2)
    assert cpu.score.examples_per_prompt == 1
    forced = resolve_profile(Config(profile="paper"), cpu_embedded=True)
    assert forced.profile == "paper" and forced.sample.n_explain == 40
    assert Config().sample.n_explain is None  # the original is not modified


def test_coactivation_sketch_finds_planted_partners_with_their_exact_similarity(tmp_path):
    """Above `candidates` latents the index ranks by MinHash sketch, then measures exactly: latent 2i+1 fires
    wherever 2i does (Jaccard 1.0), among 600 latents firing at random."""
    import numpy as np

    from autointerp.store.compact import compact
    from autointerp.store.db import ChunkInfo

    store, _ = fill_store(
        tmp_path / "c.db", n_chunks=0, seq_len=64, chunk_seqs=64, num_latents=600, n_tokens_target=4096
    )
    rng = np.random.default_rng(0)
    tokens = np.array([o for o in range(64 * 64) if o % 64], np.int64)
    lat, off = [], []
    for i in range(300):  # pair (2i, 2i+1): for even i the second copies the first, for odd i both fire at random
        first = rng.choice(tokens, 12 if i % 2 == 0 else 40, replace=False)
        second = first if i % 2 == 0 else rng.choice(tokens, 40, replace=False)
        lat += [2 * i] * len(first) + [2 * i + 1] * len(second)
        off += first.tolist() + second.tolist()
    order = np.argsort(off, kind="stable")
    lat, off = np.array(lat, np.int32)[order], np.array(off, np.uint16)[order]
    seqs = np.ones((64, 64), np.int64)
    store.write_chunk(ChunkInfo(0, 0, 64, 64 * 63, len(lat)), seqs, lat, off, np.ones(len(lat), np.float16), 0.0)
    compact(store)
    q = WindowQueries(store, window_len=8)
    sketched = CoactivationIndex(q, 600, k=3, candidates=20)
    exhaustive = CoactivationIndex(q, 600, k=600, candidates=1000)
    for latent in (0, 4, 8, 400):
        got = sketched.similar(latent)
        assert got[0] == (latent + 1, 1.0)
        exact = dict(exhaustive.similar(latent))
        assert all(exact[o] == v for o, v in got)  # what it returns are exact similarities
        assert [v for _, v in got] == sorted(exact.values(), reverse=True)[:3]
    store.close()


def test_decoder_neighbours_in_blocks_equal_one_full_cosine_matrix():
    d = torch.randn(1000, 24, generator=torch.Generator().manual_seed(1)) * torch.rand(1000, 1) * 5
    ids = torch.tensor([0, 7, 500, 999])
    full = torch.nn.functional.normalize(d, dim=1)
    sims = full[ids] @ full.T
    sims[torch.arange(4), ids] = -2.0
    want_v, want_i = sims.topk(10, dim=1)
    got_v, got_i = DecoderNeighbours(d, k=10, block=97).nearest(ids)  # 11 blocks, the last one short
    assert torch.equal(got_i, want_i)
    torch.testing.assert_close(got_v, want_v)
