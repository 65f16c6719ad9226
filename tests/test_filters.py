"""Latent filters before any LLM is paid: positional MI and unigram latents, stored per latent, used by selections,
counted by the dry run and the report. Planted cases through the real store, and one real tiny cache."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from autointerp.engine.commands.cli import main
from autointerp.engine.config import CacheConfig, Config
from autointerp.engine.interpretation.interpret import Interpreter, InterpretError
from autointerp.engine.interpretation.selection import SelectionError, parse_selection
from autointerp.store.compact import compact
from autointerp.store.db import ActivationStore, ChunkInfo
from autointerp.store.filters import FilterSettings, compute_filters, flagged, positional_mi
from autointerp.store.stats import compute_latent_stats

SEQ_LEN, CHUNK_SEQS, N_CHUNKS, VOCAB = 64, 64, 2, 1000
POSITIONAL, RANDOM, ONE_TOKEN, MANY_TOKENS = 0, 1, 2, 3
N_LATENTS = 6  # 4 and 5 fire at random places too (padding for the selection)


def planted_db(path):
    """A cache whose latents are planted: 0 fires only at position 5, 1 at random places, 2 only on token 7 (put in
    the text at random places), 3 on 50 different tokens; 4 and 5 at random places."""
    rng = np.random.default_rng(0)
    prov = {
        "model": "planted",
        "model_hash": "0",
        "hook": "h",
        "coder_kind": "synthetic",
        "coder_path": "-",
        "coder_hash": "0",
        "num_latents": N_LATENTS,
        "d_in": 4,
        "corpus": "planted",
        "corpus_hash": "0",
        "seq_len": SEQ_LEN,
        "n_tokens_target": N_CHUNKS * CHUNK_SEQS * SEQ_LEN,
        "chunk_seqs": CHUNK_SEQS,
        "token_dtype": "uint16",
        "vocab_size": VOCAB,
        "bos_token_id": 0,
        "seed": 0,
        "versions": "{}",
        "config": json.dumps({"window_len": 16, "seq_len": SEQ_LEN}),
    }
    store = ActivationStore.open(path, create=True)
    store.claim(prov)
    per_chunk = CHUNK_SEQS * SEQ_LEN
    many = np.arange(100, 150)  # latent 3's 50 tokens
    for c in range(N_CHUNKS):
        seqs = rng.integers(200, VOCAB, size=(CHUNK_SEQS, SEQ_LEN))
        seqs[:, 0] = 0
        lat, off = [], []

        def random_places(n):
            o = rng.choice(per_chunk, size=n, replace=False)
            return o[o % SEQ_LEN != 0]

        o = np.arange(CHUNK_SEQS) * SEQ_LEN + 5
        lat.append(np.full(len(o), POSITIONAL)), off.append(o)
        for latent in (RANDOM, 4, 5):
            o = random_places(300)
            lat.append(np.full(len(o), latent)), off.append(o)
        o = random_places(200)
        seqs.reshape(-1)[o] = many[np.arange(len(o)) % len(many)]
        lat.append(np.full(len(o), MANY_TOKENS)), off.append(o)
        o = random_places(200)  # planted last: its token is never overwritten
        seqs.reshape(-1)[o] = 7
        lat.append(np.full(len(o), ONE_TOKEN)), off.append(o)
        latents, offsets = np.concatenate(lat).astype(np.int32), np.concatenate(off)
        values = rng.uniform(1.0, 5.0, len(offsets)).astype(np.float16)
        info = ChunkInfo(c, c * CHUNK_SEQS, CHUNK_SEQS, CHUNK_SEQS * (SEQ_LEN - 1), len(values))
        store.write_chunk(info, seqs, latents, offsets.astype(np.uint16), values, 0.0)
    compact(store)
    compute_latent_stats(store, 16)
    return store


@pytest.fixture
def planted(tmp_path):
    store = planted_db(tmp_path / "p.db")
    compute_filters(store, FilterSettings())
    yield store
    store.close()


def rows(store):
    return {r["latent"]: r for r in store.db["latent_filters"].rows}


def test_position_only_latent_is_positional_random_one_is_not(planted):
    r = rows(planted)
    assert r[POSITIONAL]["positional_mi"] == pytest.approx(1.0) and r[POSITIONAL]["positional"] == 1
    for latent in (RANDOM, ONE_TOKEN, MANY_TOKENS, 4, 5):
        assert r[latent]["positional_mi"] < 0.05 and r[latent]["positional"] == 0, r[latent]
    assert flagged(planted, "positional") == {POSITIONAL}


def test_positional_mi_is_chance_adjusted():
    rng = np.random.default_rng(1)
    # 10 firings at random positions: raw MI / H(Y) would be ~0.3; adjusted for chance it is ~0
    counts = np.bincount(rng.integers(0, 255, 10), minlength=255)
    assert positional_mi(counts, 512) < 0.05
    rare_at_one_place = np.zeros(255)
    rare_at_one_place[4] = 10
    assert positional_mi(rare_at_one_place, 512) > 0.05
    assert positional_mi(np.zeros(255), 512) == 0.0 and positional_mi(np.full(255, 512), 512) == 0.0


def test_single_token_latent_is_a_unigram_candidate_fifty_token_one_is_not(planted):
    r = rows(planted)
    assert r[ONE_TOKEN]["unigram_candidate"] == 1 and r[ONE_TOKEN]["top_tokens"] == 1
    assert json.loads(r[ONE_TOKEN]["unigram_tokens"])[0][0] == 7
    assert r[ONE_TOKEN]["unigram"] is None  # a candidate, not verified yet
    assert r[MANY_TOKENS]["unigram_candidate"] == 0 and r[MANY_TOKENS]["top_tokens"] == 21  # "more than 20"
    assert r[MANY_TOKENS]["unigram"] == 0 and r[MANY_TOKENS]["unigram_tokens"] is None


def test_filters_resume_and_recompute_only_when_settings_change(planted):
    assert compute_filters(planted, FilterSettings()) == 0  # done for these settings over these chunks
    assert compute_filters(planted, FilterSettings(unigram_max_tokens=60)) == N_LATENTS
    assert rows(planted)[MANY_TOKENS]["unigram_candidate"] == 1


def interp_for(store, tmp_path):
    cfg = Config(db=str(store.path))
    cfg.sample.min_windows = 1
    return Interpreter(cfg, store, None)


def test_selection_exclusions(planted, tmp_path):
    interp = interp_for(planted, tmp_path)
    try:
        assert interp.select("live") == list(range(N_LATENTS))
        assert interp.select("live,-positional") == [x for x in range(N_LATENTS) if x != POSITIONAL]
        latents, skipped = interp.resolve_counted(parse_selection("0-3, -positional"))
        assert latents == [1, 2, 3] and skipped == {"positional": 1}
        assert POSITIONAL not in interp.select("top:5,-positional") and len(interp.select("top:5,-positional")) == 5
        # the unigram verification has not run: a selection that needs it is refused, naming the command
        with pytest.raises(InterpretError, match="autointerp filters"):
            interp.select("live,-unigram")
        with planted.db.conn:  # as the verification would mark it
            planted.db.execute("update latent_filters set unigram_fire = 1.0, unigram = 1 where latent = ?", [2])
            planted.set_stage("cache.unigram", FilterSettings().unigram_fingerprint(planted), {}, True)
        latents, skipped = interp.resolve_counted(parse_selection("live,-positional,-unigram"))
        assert latents == [1, 3, 4, 5] and skipped == {"positional": 1, "unigram": 1}
        assert len(interp.select("random:3,-unigram,-positional")) == 3
    finally:
        interp.close()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("live,-bogus", "unknown exclusion -bogus (known: -positional, -unigram)"),
        ("-positional", "exclusions need a selection first"),
        ("live,-positional,3", "exclusions (,-name) come last"),
        ("live,-positional,-", "unknown exclusion -"),
        ("1,-unigram,2", "exclusions (,-name) come last"),
    ],
)
def test_bad_exclusions_are_refused_in_one_line(text, expected):
    with pytest.raises(SelectionError) as e:
        parse_selection(text)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_bad_exclusion_on_the_command_line(tmp_path):
    r = CliRunner().invoke(main, ["batch", "--db", str(tmp_path / "x.db"), "--latents", "live,-bogus", "--dry-run"])
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and lines[-1].startswith("error: ") and "unknown exclusion -bogus" in lines[-1], r.output


def test_filter_settings_are_checked():
    from autointerp.engine.config import ConfigError, check_choices

    cfg = Config()
    cfg.cache.unigram_top_fraction = 1.5
    with pytest.raises(ConfigError, match="cache.unigram_top_fraction"):
        check_choices(cfg)


# ---- the real embedded model -------------------------------------------------------------------------------


def test_real_cache_verifies_unigram_candidates_consistently_with_a_probe(tmp_path, subject_model):
    from autointerp.engine.activations.cache import cache_is_complete, run_cache
    from autointerp.engine.activations.filters import random_vocab, run_filters, scrambled_sentences
    from autointerp.engine.activations.probe import LatentProbe
    from autointerp.engine.activations.setup import prepare
    from autointerp.store.filters import filters_current

    cfg = CacheConfig(
        seq_len=64,
        n_tokens=64 * 6,
        chunk_tokens=128,
        batch_size=2,
        unigram_trials_per_token=1,
        unigram_min_activations=32,
    )
    parts = prepare(cfg, model=subject_model)
    db = tmp_path / "real.db"
    run_cache(cfg, str(db), parts=parts)
    with ActivationStore.open(db) as store:
        assert cache_is_complete(store, cfg)
        # The cache stage measured positions and found candidates; the model's verification waits to be asked for.
        assert filters_current(store, "positional") and not filters_current(store, "unigram")
        assert store.db.execute("select count(*) from latent_filters where unigram_fire is not null").fetchone()[0] == 0
        result = run_filters(store, parts.model, parts.coder, FilterSettings.of(cfg))
        assert result.computed == 0 and result.verified > 0  # the store's pass was already done
        assert filters_current(store, "unigram")
        verified = list(
            store.db.execute(
                "select latent, unigram_tokens, unigram_fire, unigram from latent_filters where unigram_fire is not null"
                " order by latent"
            )
        )
        assert verified, "no unigram candidate in the tiny cache"
        n_candidates = store.db.execute("select count(*) from latent_filters where unigram_candidate").fetchone()[0]
        assert len(verified) == n_candidates
        for _, _, fire, unigram in verified:
            assert 0.0 <= fire <= 1.0 and unigram == int(fire >= cfg.unigram_min_fire_fraction)
        # The stored share for one candidate, recomputed with the probe from the same sentences.
        latent, blob, fire, _ = max(verified, key=lambda r: len(json.loads(r[1])))
        settings = FilterSettings.of(cfg)
        sentences, where = scrambled_sentences(
            latent,
            [t for t, _ in json.loads(blob)],
            settings,
            random_vocab(parts.model, int(store.provenance["vocab_size"])),
        )
        probe = LatentProbe(parts.model, parts.coder, parts.hook)
        probe.token_ids = lambda text: [int(t) for t in text.split()]  # sentences as ids, not text
        acts = probe.activations([" ".join(map(str, s)) for s in sentences], latent)
        direct = np.mean([a[w] > 0 for a, w in zip(acts, where)])
        assert fire == pytest.approx(direct)
        r = CliRunner().invoke(main, ["report", str(db), "--json"])
        assert r.exit_code == 0, r.output
        report = json.loads(r.output)["filters"]
        assert report["unigram_verified"] == n_candidates and report["unigram_candidates"] == n_candidates


def test_dry_run_says_how_many_each_exclusion_skipped(planted):
    import dataclasses

    from autointerp.engine.commands.estimate import format_plan, plan

    cfg = Config(db=str(planted.path))
    cfg.cache = dataclasses.replace(cfg.cache, seq_len=SEQ_LEN, window_len=16)
    cfg.batch.latents = "live,-positional,-unigram"
    with planted.db.conn:  # a finished cache, as the cache stage marks one, with its unigram pass done
        planted.set_stage("cache.unigram", FilterSettings().unigram_fingerprint(planted), {}, True)
        planted.set_stage("cache", planted.chunk_fingerprint(), {"config": dataclasses.asdict(cfg.cache)}, True)
    p = plan(cfg)
    assert p["cache"]["complete"] and p["excluded"] == {"positional": 1, "unigram": 0}
    assert p["latents"] == N_LATENTS - 1
    assert "skipped  1 positional latents (-positional)" in format_plan(p)


def test_the_browser_shows_each_latents_filters(planted):
    from autointerp.store.browse import Browser
    from autointerp.tui.detail import filters_text

    browser = Browser.open(planted.path)
    try:
        shown = {x: browser.detail(x) for x in (POSITIONAL, ONE_TOKEN, MANY_TOKENS)}
    finally:
        browser.close()
    assert shown[POSITIONAL].filters["positional"] == 1
    assert "POSITIONAL (MI 1.000)" in filters_text(shown[POSITIONAL].filters).plain
    one = filters_text(shown[ONE_TOKEN].filters).plain
    assert "not positional" in one and "unigram candidate, not verified" in one
    assert (
        shown[ONE_TOKEN].filters["unigram_tokens"][0][1] == json.loads(rows(planted)[ONE_TOKEN]["unigram_tokens"])[0][1]
    )
    assert "not unigram (21 distinct top tokens)" in filters_text(shown[MANY_TOKENS].filters).plain
