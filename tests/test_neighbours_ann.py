"""Decoder neighbours above the exact threshold: an HNSW index (faiss) whose answers are re-scored exactly.

The index is exercised on small decoders by lowering `approximate_above`; the default threshold's own switch is
checked without building anything. A GPU (exact there) is not available to these tests."""

import torch

from autointerp.engine.activations.neighbours import ANN_ABOVE, DecoderNeighbours
from autointerp.engine.commands.bench.scale import clustered_decoder


def brute_force(d: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    unit = torch.nn.functional.normalize(d.double(), dim=1)
    sims = unit[ids] @ unit.T
    sims[torch.arange(len(ids)), ids] = -2.0
    return sims.topk(k, dim=1)


def decoder(n: int, d: int = 64, seed: int = 0) -> torch.Tensor:
    return clustered_decoder(n, d, torch.Generator().manual_seed(seed))


def test_index_recall_values_and_self_on_a_clustered_decoder():
    d = decoder(6000)
    near = DecoderNeighbours(d, k=10, approximate_above=1000)
    assert near.approximate and near.describe()["exact"] is False
    ids = torch.arange(0, 6000, 7)
    got_v, got_i = near.nearest(ids)
    want_v, want_i = brute_force(d, ids, 10)
    hits = sum(len(set(g) & set(w)) for g, w in zip(got_i.tolist(), want_i.tolist()))
    assert hits / want_i.numel() >= 0.95
    assert not (got_i == ids[:, None]).any()  # never itself
    unit = torch.nn.functional.normalize(d.double(), dim=1)
    true = (unit[ids, None, :] * unit[got_i]).sum(-1)  # the exact cosine of every pair returned
    torch.testing.assert_close(got_v.double(), true, atol=1e-5, rtol=0)
    assert (got_v[:, :-1] >= got_v[:, 1:]).all()  # descending
    assert (got_v <= want_v.float() + 1e-5).all()  # no pair beats the true i-th nearest


def test_two_builds_give_the_same_rows():
    d = decoder(3000, seed=3)
    ids = torch.arange(3000)
    a = DecoderNeighbours(d, k=10, approximate_above=100).nearest(ids)
    b = DecoderNeighbours(d, k=10, approximate_above=100).nearest(ids)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])


def test_exact_at_or_below_the_threshold_equals_brute_force():
    d = torch.randn(3072, 576, generator=torch.Generator().manual_seed(5))  # the embedded SAE's shape
    near = DecoderNeighbours(d, k=10, approximate_above=ANN_ABOVE)
    assert not near.approximate and near.describe()["exact"] is True
    ids = torch.tensor([0, 1, 1500, 3071])
    got_v, got_i = near.nearest(ids)
    want_v, want_i = brute_force(d, ids, 10)
    assert torch.equal(got_i, want_i)
    torch.testing.assert_close(got_v.double(), want_v, atol=1e-5, rtol=0)
    # The switch itself, without building an index: one latent more than the threshold is searched by the graph.
    assert not DecoderNeighbours(torch.randn(ANN_ABOVE, 2), approximate_above=ANN_ABOVE).approximate
    assert DecoderNeighbours(torch.randn(ANN_ABOVE + 1, 2), approximate_above=ANN_ABOVE).approximate
    assert not DecoderNeighbours(torch.randn(ANN_ABOVE + 1, 2)).approximate  # callers that did not ask: exact


def test_a_latent_the_graph_gives_too_few_others_falls_back_to_exact():
    d = decoder(400, d=16, seed=7)
    near = DecoderNeighbours(d, k=10, approximate_above=10)
    near.settings = type(near.settings)(candidates=5)  # fewer candidates than k: every row must go exact
    got_v, got_i = near.nearest(torch.arange(0, 400, 9))
    want_v, want_i = brute_force(d, torch.arange(0, 400, 9), 10)
    assert torch.equal(got_i, want_i)
