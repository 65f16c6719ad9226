"""Generation scoring with latents that fire on known tokens.

A real sparsify checkpoint is planted at `blocks.0.hook_resid_pre` (the token embedding, which no other
token's context changes): latent 0 fires on the tokens spelling "king" (king, King, kings, ...), latent 1 on
those spelling "money", and on nothing else in the 49,152-token vocabulary (a linear separator fitted here and
checked over the whole vocabulary). The real cache stage runs the embedded SmolLM2 and this coder over the
embedded corpus; the real embedded LLM (llama.cpp) writes the texts. Which texts must fire is then known
from the tokenizer alone, without the subject model or the coder.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch
from helpers.llm_stage import share_subject, write_stand_in_explanation
from safetensors.torch import save_file

from autointerp.engine.activations.cache import run_cache
from autointerp.engine.activations.probe import MAX_PROBE_TOKENS
from autointerp.engine.activations.setup import prepare
from autointerp.engine.config import CacheConfig, Config, SampleConfig, ScoreConfig
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.engine.interpretation.llm import make_backend
from autointerp.store.db import ActivationStore

HOOK = "blocks.0.hook_resid_pre"
WORDS = {0: "king", 1: "money"}  # latent -> the word it fires on
EXPLANATIONS = {0: 'the word "king" (King, kings)', 1: 'the word "money"'}
N_LATENTS, N_TEXTS = 4, 4  # latents 2 and 3 never fire


def spelled(tok, word: str) -> set[int]:
    return {i for i in range(len(tok)) if tok.decode([i]).strip().lower() in (word, word + "s")}


def separator(emb: torch.Tensor, positive: set[int]) -> tuple[torch.Tensor, float]:
    """A hyperplane with every `positive` embedding on one side and every other token's on the other
    (hinge loss, positives weighted up; deterministic on the CPU)."""
    y = -torch.ones(len(emb))
    y[sorted(positive)] = 1.0
    weight = torch.where(y > 0, len(emb) / (2 * len(positive)), 1.0)
    w = torch.zeros(emb.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(300):
        loss = (weight * torch.relu(1 - y * (emb @ w + b))).mean() + 1e-4 * w.square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), float(b.detach())


@pytest.fixture(scope="module")
def subject(subject_model):
    return subject_model


@pytest.fixture(scope="module")
def planted(subject, tmp_path_factory):
    """(checkpoint folder, {latent: token ids it fires on}) after checking the planted latents are exact."""
    tok = subject.tokenizer
    ids = torch.arange(len(tok))
    # Each token after the start token, read at the hook the way the cache reads it.
    emb = torch.cat(
        [
            subject.hook_activations(torch.stack([torch.full_like(part, subject.start_id), part], 1), HOOK)[:, 1]
            for part in ids.split(8192)
        ]
    )
    enc = torch.zeros(N_LATENTS, emb.shape[1])
    bias = torch.full((N_LATENTS,), -1.0)
    fires = {}
    for latent, word in WORDS.items():
        fires[latent] = spelled(tok, word)
        enc[latent], bias[latent] = separator(emb, fires[latent])
        score = emb @ enc[latent] + bias[latent]
        on = torch.zeros(len(tok), dtype=torch.bool)
        on[sorted(fires[latent])] = True
        assert score[on].min() > 0 > score[~on].max(), word  # exact over the whole vocabulary
    dec = torch.randn(N_LATENTS, emb.shape[1], generator=torch.Generator().manual_seed(0))
    dec[: len(WORDS)] = enc[: len(WORDS)]
    folder = tmp_path_factory.mktemp("planted") / HOOK
    folder.mkdir()
    (folder / "cfg.json").write_text(
        json.dumps(
            {"num_latents": N_LATENTS, "k": N_LATENTS, "activation": "topk", "d_in": emb.shape[1], "transcode": False}
        )
    )
    save_file(
        {
            "encoder.weight": enc.contiguous(),
            "encoder.bias": bias,
            "b_dec": torch.zeros(emb.shape[1]),
            "W_dec": (dec / dec.norm(dim=1, keepdim=True)).contiguous(),
        },
        str(folder / "sae.safetensors"),
    )
    return folder, fires


@pytest.fixture(scope="module")
def cached(planted, subject, tmp_path_factory):
    folder, _ = planted
    db = tmp_path_factory.mktemp("planted-db") / "planted.db"
    cfg = CacheConfig(coder=str(folder), hook=HOOK, seq_len=64, n_tokens=16_384, chunk_tokens=8192, batch_size=16)
    run_cache(cfg, str(db), parts=prepare(cfg, subject))  # the module's model, not a second load
    with ActivationStore.open(db) as store:
        for latent, text in EXPLANATIONS.items():
            write_stand_in_explanation(store.results, latent, text)
    return db, cfg


def test_the_cache_holds_exactly_the_planted_tokens(cached, planted):
    db, _ = cached
    _, fires = planted
    with ActivationStore.open(db, readonly=True) as store:
        seq_len = store.provenance["seq_len"]
        tokens = np.concatenate([s for _, s in sorted(store.sequences(range(store.n_sequences())).items())])
        for latent, ids in fires.items():
            expected = np.flatnonzero(np.isin(tokens, sorted(ids)) & (np.arange(len(tokens)) % seq_len != 0))
            positions, values = store.latent_activations(latent)
            assert len(expected) >= 5, WORDS[latent]  # the corpus holds the word: the latent is live
            assert np.array_equal(positions, expected) and (values > 0).all()
        for dead in range(len(WORDS), N_LATENTS):
            assert len(store.latent_activations(dead)[0]) == 0


@pytest.fixture(scope="module")
def scored(cached, subject_model):
    db, cache_cfg = cached
    cfg = Config(
        db=str(db),
        cache=cache_cfg,
        sample=SampleConfig(n_explain=2, activating_per_decile=1, n_deciles=2, n_non_activating=4, min_windows=2),
        score=ScoreConfig(scorers=["generation"], generation_texts=N_TEXTS),
    )
    backend = make_backend(cfg.llm)
    with ActivationStore.open(db) as store:
        interp = share_subject(Interpreter(cfg, store, backend), subject_model)
        try:
            tally = asyncio.run(interp.run_stage("score", sorted(WORDS)))
            rows = {(r["latent"], r["control"]): r for r in interp.results.scores()}
            yield tally, rows, interp.resources.probe
        finally:
            interp.close()
            asyncio.run(backend.aclose())


def test_the_probe_fires_exactly_on_the_planted_tokens(scored, planted, subject):
    *_, probe = scored
    _, fires = planted
    texts = ["The King of France and two kings met.", "Money, money: the kingdom's money is gone.", "", "plain text"]
    for latent, ids in fires.items():
        got = probe.activations(texts, latent)
        assert got[2] is None  # no tokens: nothing to run
        for text, acts in zip(texts, got):
            if acts is not None:
                tokens = subject.tokenizer(text, add_special_tokens=False)["input_ids"]
                assert [int(t in ids) for t in tokens] == (acts > 0).astype(int).tolist(), (WORDS[latent], text)


def test_generation_counts_the_written_texts_that_hold_the_planted_token(scored, planted, subject):
    tally, rows, *_ = scored
    _, fires = planted
    assert tally.done == len(WORDS) and set(rows) == {(lat, c) for lat in WORDS for c in (0, 1)}
    recall = {}
    for (latent, control), r in rows.items():
        assert r["n"] == N_TEXTS and r["n_calls"] == 1 and r["output_tokens"] > 0
        assert r["explanation"] == EXPLANATIONS[latent if not control else 1 - latent]
        assert sum(r["errors"].values()) == r["n_failed"]
        texts = [t["text"] for t in r["details"]["texts"]]
        # Fires iff the tokenizer puts a planted token in the text: known without the model or the coder.
        ids = [subject.tokenizer(x, add_special_tokens=False)["input_ids"][:MAX_PROBE_TOKENS] for x in texts]
        holds = [any(t in fires[latent] for t in x) for x in ids if x]
        scored_preds = [o["prediction"] for o in r["outcomes"] if not o["failed"]]
        assert scored_preds == [int(h) for h in holds], (latent, control, texts)
        assert r["n_scored"] == len(holds) and r["n_failed"] == N_TEXTS - len(holds)
        if holds:
            assert r["recall"] == pytest.approx(sum(holds) / len(holds))
        recall[latent, control] = r["recall"]
    # Even the 135M model writes the word it is asked for: the true explanation beats the control.
    for latent in WORDS:
        assert recall[latent, 0] is not None and recall[latent, 0] > (recall[latent, 1] or 0.0), recall
