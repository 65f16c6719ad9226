"""The scorer registry is the one place a scorer is declared: a toy scorer registered with one line runs through
the real score stage on a real cache (rows with its metric, and its control) and the report, config check and dry
run pick it up; the registered scorers' seed streams are pinned (stored results are reproduced bit for bit)."""

from __future__ import annotations

import asyncio
import re
import sqlite3

import numpy as np
import pytest
from helpers.databases import copy_db
from helpers.llm_stage import FAULT_SAMPLE_SIZES, write_stand_in_explanation

from autointerp.engine.config import CHOICES, CacheConfig, Config, ConfigError, SampleConfig, ScoreConfig, load_config
from autointerp.engine.interpretation.examples import Example, plain
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.engine.interpretation.metrics import ExampleOutcome
from autointerp.engine.interpretation.scorers import SCORERS, Needs, Scored, Scorer, needs_llm
from autointerp.engine.interpretation.scorers.base import Item, ScoredRun
from autointerp.store.browse import Browser
from autointerp.store.db import ActivationStore
from autointerp.store.scorer_meta import BEFORE_SCHEMA_12, read_scorers, scorer_meta


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


class WordOverlap(Scorer):
    """Predicts that an excerpt fires the latent when it contains a word of the explanation. No LLM."""

    name = "word_overlap"
    stream = 77
    needs = Needs(llm=False)
    primary_metric = "f1"

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> list[Item]:
        items = [Item(ex.window, plain(ex), 1, ex.decile) for ex in act] + [
            Item(ex.window, plain(ex), 0, 0) for ex in non
        ]
        return [items[i] for i in rng.permutation(len(items))]

    async def run(self, ctx, explanation, items) -> Scored:
        wanted = words(explanation)
        run = ScoredRun([], list(items))
        for it in items:
            found = len(wanted & words(it.text))
            run.outcomes.append(ExampleOutcome(it.label, it.decile, int(found > 0), found / max(len(wanted), 1)))
        return Scored(run, "word-overlap", "none", "", {"words": sorted(wanted)})


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(SCORERS, WordOverlap.name, WordOverlap())  # the one line a new scorer adds
    return WordOverlap.name


def test_a_registered_scorer_runs_through_the_score_stage_and_the_report(toy, real_cache_db, tmp_path):
    from autointerp.engine.commands.estimate import plan
    from autointerp.engine.commands.report.summary import batch_report

    db = copy_db(real_cache_db, tmp_path / "toy.db")
    cfg = Config(db=str(db), sample=SampleConfig(**FAULT_SAMPLE_SIZES), score=ScoreConfig(scorers=[toy]))
    assert not needs_llm(cfg.score.scorers)  # the stage needs no backend
    with ActivationStore.open(db) as store:
        interp = Interpreter(cfg, store, None)
        try:
            latents = interp.select("top:2")
            for latent in latents:  # the word at the peak of the latent's first explainer example: some excerpts hit
                ex = interp.role_examples(interp.sample_set(latent), "explain")[0]
                write_stand_in_explanation(store.results, latent, ex.tokens[int(np.argmax(ex.acts))])
            tally = asyncio.run(interp.run_stage("score", latents))
            assert tally.done == 2 and tally.prompts == 0 and tally.failed == 0

            hits = 0
            for latent in latents:
                rows = {r["control"]: r for r in store.results.scores(latent=latent) if r["scorer"] == toy}
                assert set(rows) == {0, 1}, "the explanation and its random control are both scored"
                assert rows[1]["explanation_latent"] != latent and rows[1]["explanation_latent"] in latents
                s = store.results.sample_set(latent)
                held_out = sorted(w for role in ("activating", "non_activating") for w, _, _ in s.role(role))
                for r in rows.values():
                    assert r["model"] == "word-overlap" and r["n_calls"] == 0 and r["seed"] == s.seed
                    assert sorted(o["window"] for o in r["outcomes"]) == held_out
                    # each stored prediction is the toy's rule applied to that window's text, recomputed here
                    texts = {e.window: plain(e) for e in interp.examples(latent, held_out)}
                    wanted = words(r["explanation"])
                    assert [o["prediction"] for o in r["outcomes"]] == [
                        int(bool(wanted & words(texts[o["window"]]))) for o in r["outcomes"]
                    ]
                    tp = sum(o["label"] and o["prediction"] for o in r["outcomes"])
                    fp = sum(not o["label"] and o["prediction"] for o in r["outcomes"])
                    fn = sum(o["label"] and not o["prediction"] for o in r["outcomes"])
                    assert (r["tp"], r["fp"], r["fn"]) == (tp, fp, fn)
                    assert r["f1"] == (
                        None if not tp + fp or not tp + fn else pytest.approx(2 * tp / (2 * tp + fp + fn))
                    )
                    hits += tp if not r["control"] else 0
                    assert r["settings"] == {"words": sorted(wanted)}
                assert rows[0]["n"] == len(held_out) > 0
            assert hits > 0, "the explanations' words are found in some activating excerpts"
        finally:
            interp.close()

        summary = batch_report(store, "default", latents)["scores"][toy]
        # the stage recorded what the toy is; the readers (report, browser, TUI) take its metric from the file
        assert read_scorers(store.db.conn)[toy] == WordOverlap().meta
    assert summary["primary_metric"] == "f1"
    browser = Browser.open(db)
    try:
        assert browser.scorers()[toy] == "f1"
        detail = browser.detail(latents[0])
        (entry,) = [e for e in detail.scores if e["scorer"] == toy]
        assert entry["meta"].primary_metric == "f1" and entry["meta"].evidence == "labels"
    finally:
        browser.close()
    assert summary["real"]["n_latents"] == summary["control"]["n_latents"] == 2

    # the dry run over this cache (as conftest's real_cache_db made it): both latents scored, and no LLM call
    cfg.cache = CacheConfig(n_tokens=8192, chunk_tokens=4096, batch_size=8)
    cfg.batch.stages, cfg.batch.latents = ["score"], "top:2"
    dry = plan(cfg)
    assert dry["cache"]["complete"] and dry["llm_stages"][f"score/{toy}"] == {
        "latents": 0,
        "calls": 0,
        "prompt_tokens": 0,
        "max_output_tokens": 0,
        "basis": "no LLM",
        "exact": True,
    }


def test_the_config_accepts_exactly_the_registrys_scorer_names(toy, tmp_path):
    assert tuple(CHOICES["score.scorers"]) == tuple(SCORERS) and toy in tuple(SCORERS)
    for name in SCORERS:
        path = tmp_path / f"{name}.toml"
        path.write_text(f'[score]\nscorers = ["{name}"]\n')
        assert load_config(path).score.scorers == [name]
    path = tmp_path / "bad.toml"
    path.write_text('[score]\nscorers = ["detection", "no_such_scorer"]\n')
    with pytest.raises(ConfigError, match="'no_such_scorer' is not one of " + ", ".join(SCORERS)):
        load_config(path)


def test_an_unregistered_scorer_is_refused_by_the_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'[score]\nscorers = ["{WordOverlap.name}"]\n')
    with pytest.raises(ConfigError, match="'word_overlap' is not one of"):
        load_config(path)


# The seed stream of each scorer that has stored results: changing one changes which excerpts it shows.
PINNED_STREAMS = {
    "detection": 1,
    "fuzzing": 2,
    "embedding": 1,
    "surprisal": 1,
    "simulation": 3,
    "intruder": 4,
    "generation": 5,
    "intervention": 6,
    "saebench": 7,
}
SAME_EXCERPTS = {"detection", "embedding", "surprisal"}  # share a stream on purpose: the same plain excerpts


def test_every_scorer_declares_its_own_stream_and_the_stored_ones_are_pinned():
    assert {name: SCORERS[name].stream for name in PINNED_STREAMS} == PINNED_STREAMS
    by_stream: dict[int, set[str]] = {}
    for name, scorer in SCORERS.items():
        assert scorer.name == name and isinstance(scorer.stream, int) and scorer.stream > 0
        by_stream.setdefault(scorer.stream, set()).add(name)
    assert [names for names in by_stream.values() if len(names) > 1] == [SAME_EXCERPTS]

    # those that share a stream prepare the same excerpts from it
    act = [Example(10 + i, ["a", f" w{i}"], np.array([0.0, 1.0 + i], np.float32), 1 + i % 3) for i in range(6)]
    non = [Example(50 + i, ["b", f" n{i}"], np.zeros(2, np.float32), 0) for i in range(5)]
    drawn = {
        name: SCORERS[name].prepare(None, 3, None, act, non, np.random.default_rng([0, 3, 1]))["items"]
        for name in SAME_EXCERPTS
    }
    first = drawn["detection"]
    assert len(first) == 11 and all(d == first for d in drawn.values())


def test_each_scorer_names_a_metric_the_scores_table_has_and_what_it_needs():
    from autointerp.engine.interpretation.metrics import METRIC_NAMES

    for scorer in SCORERS.values():
        assert scorer.primary_metric in METRIC_NAMES
        assert isinstance(scorer.needs, Needs)
    assert not needs_llm(["embedding", "surprisal"]) and needs_llm(["embedding", "detection"])


def test_files_scored_before_schema_12_get_what_their_scorers_declared():
    # BEFORE_SCHEMA_12 is frozen history (what the schema-12 migration writes into older files); it was taken from
    # these scorers: a later change to a built-in scorer's metadata drops that scorer from this comparison.
    assert {m.name: m for m in BEFORE_SCHEMA_12} == {m.name: SCORERS[m.name].meta for m in BEFORE_SCHEMA_12}
    assert "saebench" not in {m.name for m in BEFORE_SCHEMA_12}  # added after schema 12: no older file holds it


def test_readers_fall_back_to_balanced_accuracy_else_auroc_for_a_scorer_without_metadata(tmp_path):
    from autointerp.store.synthetic import make_synthetic_db

    db = make_synthetic_db(tmp_path / "s.db", 20, seed=1)
    with sqlite3.connect(db) as conn:
        conn.execute("delete from scorers")
        recorded = read_scorers(conn)
        assert scorer_meta(conn, "detection", recorded).primary_metric == "balanced_accuracy"
        conn.execute("update scores set balanced_accuracy = null where scorer = 'detection'")
        assert scorer_meta(conn, "detection", recorded).primary_metric == "auroc"


def test_the_synthetic_files_record_what_the_engines_scorers_declare():
    """store/synthetic.py writes scores without the engine; the metadata it records must be the scorers' own."""
    from autointerp.engine.interpretation.scorers import SCORERS
    from autointerp.store.synthetic import SCORER_METAS

    assert [SCORERS[m.name].meta for m in SCORER_METAS] == list(SCORER_METAS)
