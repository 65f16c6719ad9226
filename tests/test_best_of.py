"""Best-of-N explanations (`explain.candidates`): N seeded draws, each scored on the explainer's side of the sample
set only, the best kept, the others stored with their scores, and the first draw scored on the held-out examples
beside the kept one so the report can say what the pick gained.

The LLM is a scripted local HTTP server: a real model cannot be made to write a good and a bad explanation on cue.
The store is a real cache made by the embedded model."""

import re
import threading

import pytest
from helpers.databases import copy_db
from helpers.fake_llm import completion, fake_server, reply
from helpers.llm_stage import FAULT_SAMPLE_SIZES, llm_stage_config, run_llm_stage

from autointerp.engine.config import Config, ConfigError, ExplainConfig, SampleConfig, check_choices
from autointerp.engine.interpretation.examples import plain
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.store.db import ActivationStore

TEXTS = {0: "words of every kind", 1: "the planted good answer", 2: "nothing at all"}  # by draw (LLM seed 0, 1, 2)
GOOD = 1


class Oracle:
    """Writes explanation number `seed`, and as a detection scorer labels an excerpt 1 when: the explanation is the
    good one and the excerpt activates the latent; "words of every kind": always; "nothing at all": never."""

    def __init__(self, activating: set[str]):
        self.activating = activating
        self.seen: list[tuple[str, str]] = []  # (explanation, excerpt) of every detection prompt
        self.lock = threading.Lock()

    def __call__(self, body, headers):
        user = body["messages"][-1]["content"]
        if not user.startswith("Explanation: "):
            return reply(body=completion('{"explanation": "%s"}' % TEXTS[body["seed"]]))
        explanation = user.split("\n", 1)[0].removeprefix("Explanation: ")
        excerpt = re.search(r"Excerpt 1: (.*)\Z", user, re.S).group(1)
        with self.lock:
            self.seen.append((explanation, excerpt))
        if explanation == TEXTS[GOOD]:
            label = int(excerpt in self.activating)
        else:
            label = int(explanation == TEXTS[0])
        return reply(body=completion('{"labels": [%d]}' % label))


def role_texts(interp, s, *roles) -> set[str]:
    return {plain(ex) for role in roles for ex in interp.role_examples(s, role)}


@pytest.fixture(scope="module")
def best_of_run(tmp_path_factory, real_cache_db):
    """Explain then score two latents with three candidates each; -> (db, latents, oracle, seen while explaining,
    texts per latent and role)."""
    db = copy_db(real_cache_db, tmp_path_factory.mktemp("bo") / "b.db")
    cfg = llm_stage_config(db, ["http://unused"], max_concurrency=1)
    cfg.explain = ExplainConfig(candidates=3, candidate_temperature=0.7)
    roles = {}
    with ActivationStore.open(db) as store:
        interp = Interpreter(cfg, store, None)
        latents = interp.select("top:2")
        for x in latents:  # drawn here (and stored) so the oracle knows which excerpts activate
            s = interp.sample_set(x)
            roles[x] = {r: role_texts(interp, s, r) for r in ("explain", "explain_non", "activating", "non_activating")}
            roles[x]["explainer"] = roles[x]["explain"] | roles[x]["explain_non"]
            roles[x]["held_out"] = roles[x]["activating"] | roles[x]["non_activating"]
        interp.close()
    oracle = Oracle(set().union(*(r["explain"] | r["activating"] for r in roles.values())))
    with fake_server(oracle) as fake:
        cfg.llm.base_urls = [fake.url]
        seen_explaining, tallies = {}, []
        for x in latents:  # one at a time, so each excerpt shown is known to be this latent's
            start = len(oracle.seen)
            tallies.append(run_llm_stage(cfg, "explain", [x]))
            seen_explaining[x] = oracle.seen[start:]
        explain_tally = tallies[0]
        explain_tally.done += tallies[1].done
        explain_tally.failed += tallies[1].failed
        score_tally = run_llm_stage(cfg, "score", latents)
    return db, latents, oracle, seen_explaining, roles, explain_tally, score_tally


def oracle_balanced_accuracy(oracle, positives: set[str], negatives: set[str]) -> float:
    """What the good answer's labels score on these excerpts, worked out from the oracle's rule (a negative of one
    latent can be an activating excerpt of the other, which the oracle, seeing no latent, labels 1)."""
    tpr = sum(e in oracle.activating for e in positives) / len(positives)
    tnr = sum(e not in oracle.activating for e in negatives) / len(negatives)
    return (tpr + tnr) / 2


def test_the_best_candidate_is_kept_and_the_others_stored_with_their_scores(best_of_run):
    db, latents, oracle, _, roles, explain_tally, _ = best_of_run
    with ActivationStore.open(db, readonly=True) as store:
        for x in latents:
            row = store.results.explanation(x, "default")
            cands = store.results.candidates(x, "default")
            assert row["text"] == TEXTS[GOOD] and row["extras"]
            assert [c["text"] for c in cands] == [TEXTS[i] for i in range(3)]
            assert [c["chosen"] for c in cands] == [0, 1, 0]
            assert [c["llm_seed"] for c in cands] == [0, 1, 2] and {c["temperature"] for c in cands} == {0.7}
            # "Always 1" and "never" are chance on balanced accuracy; the good answer is right where the oracle knows.
            good = oracle_balanced_accuracy(oracle, roles[x]["explain"], roles[x]["explain_non"])
            assert good > 0.5 and [c["score"] for c in cands] == [0.5, pytest.approx(good), 0.5]
            assert all(c["n_failed"] == 0 and c["n_scored"] > 0 for c in cands)
            # The explanation's row carries every call the pick cost: three draws and each one's scoring.
            assert row["n_calls"] == sum(c["n_calls"] for c in cands) == 3 + 3 * cands[0]["n_scored"]
    assert explain_tally.done == 2 and explain_tally.failed == 0


def test_candidates_are_picked_on_the_explainers_side_only(best_of_run):
    _, latents, _, seen_explaining, roles, _, _ = best_of_run
    for x in latents:
        excerpts = {e for _, e in seen_explaining[x]}
        assert excerpts == roles[x]["explainer"]  # every explainer-side excerpt, for each candidate
        assert not excerpts & roles[x]["held_out"]  # and never a held-out one


def test_the_first_candidate_is_scored_on_the_held_out_examples_for_the_gain(best_of_run):
    db, latents, oracle, seen_explaining, roles, _, score_tally = best_of_run
    scoring = oracle.seen[sum(map(len, seen_explaining.values())) :]
    with ActivationStore.open(db, readonly=True) as store:
        for x in latents:
            real = store.results.scores(x, "default")
            kept = next(r for r in real if r["scorer"] == "detection" and r["control"] == 0)
            first = store.results.candidates(x, "default")[0]
            want = oracle_balanced_accuracy(oracle, roles[x]["activating"], roles[x]["non_activating"])
            assert kept["balanced_accuracy"] == pytest.approx(want) and want > 0.5
            assert set(first["heldout"]) == {"detection"}
            assert first["heldout"]["detection"]["value"] == 0.5  # "always 1" on the same held-out items
            assert first["heldout"]["detection"]["n_calls"] == kept["n_calls"] > 0
            assert len(real) == 2  # real and control: the first candidate's scoring is not a score row
    # The first draw was shown the kept explanation's held-out excerpts (the same items: a paired comparison).
    shown_first = {e for t, e in scoring if t == TEXTS[0]}
    shown_kept = {e for t, e in scoring if t == TEXTS[GOOD]}
    for x in latents:
        assert roles[x]["held_out"] <= shown_first and roles[x]["held_out"] <= shown_kept
    assert score_tally.done == 2 and score_tally.failed == 0


def test_a_rerun_scores_nothing_again(best_of_run):
    db, latents, oracle, *_ = best_of_run
    cfg = llm_stage_config(db, ["http://unused"], max_concurrency=1)
    cfg.explain = ExplainConfig(candidates=3, candidate_temperature=0.7)
    with fake_server(oracle) as fake:
        cfg.llm.base_urls = [fake.url]
        before = len(oracle.seen)
        tally = run_llm_stage(cfg, "score", latents)
    assert tally.skipped == 2 and tally.reasons["already scored"] == 2 and len(oracle.seen) == before


@pytest.mark.parametrize(
    "explain, message",
    [
        (ExplainConfig(candidates=0), "explain.candidates"),
        (ExplainConfig(candidates=2, candidate_temperature=0.0), "explain.candidate_temperature"),
        (ExplainConfig(candidates=2, explainer="intervention"), "explain.candidates"),
        (ExplainConfig(candidates=2, candidate_scorer="simulation"), "explain.candidate_scorer"),
    ],
)
def test_bad_candidate_settings_are_refused_in_one_line(explain, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_choices(Config(explain=explain, sample=SampleConfig(**FAULT_SAMPLE_SIZES)))


def test_the_report_says_what_the_pick_gained_on_held_out_scores(best_of_run):
    from autointerp.engine.commands.report.summary import batch_report

    db, latents, *_ = best_of_run
    with ActivationStore.open(db, readonly=True) as store:
        section = batch_report(store, "default")["best_of"]
        kept = [
            r["balanced_accuracy"]
            for x in latents
            for r in store.results.scores(x, "default")
            if r["scorer"] == "detection" and r["control"] == 0
        ]
        first = [store.results.candidates(x, "default")[0]["heldout"]["detection"]["value"] for x in latents]
    assert section["latents"] == 2 and section["chosen_first"] == 0 and section["by_draw"] == {GOOD: 2}
    d = section["scorers"]["detection"]
    assert d["n"] == 2 and d["missing"] == 0
    assert d["gain"] == pytest.approx(sum(kept) / 2 - sum(first) / 2) and d["gain"] > 0
    assert d["first"] == pytest.approx(0.5)
    assert section["rescoring"]["calls"] > 0


def test_the_dry_run_counts_every_draw_and_bounds_the_pick(best_of_run):
    from autointerp.engine.commands.estimate import plan
    from autointerp.engine.config import BatchConfig

    db, latents, *_ = best_of_run
    cfg = llm_stage_config(db, ["http://unused"])
    cfg.explain = ExplainConfig(candidates=3, candidate_temperature=0.7)
    cfg.batch = BatchConfig(latents="top:4", stages=["explain"])
    stages = plan(cfg)["llm_stages"]
    n = stages["explain"]["latents"]  # (this config's cache settings differ from the file's: nominal counts)
    assert n and stages["explain"]["calls"] == n * 3
    with ActivationStore.open(db, readonly=True) as store:
        made = [sum(c["n_calls"] - 1 for c in store.results.candidates(x, "default")) for x in latents]
    # Per latent: each draw's detection calls over its explainer examples and negatives (an upper bound).
    assert stages["explain/pick:detection"]["calls"] >= n * max(made) and not stages["explain/pick:detection"]["exact"]


def test_the_browser_shows_every_candidate_with_its_pick_score(best_of_run):
    from autointerp.store.browse import Browser
    from autointerp.tui.detail import candidates_text

    db, latents, *_ = best_of_run
    browser = Browser.open(db)
    try:
        detail = browser.detail(latents[0])
    finally:
        browser.close()
    assert [(c["idx"], c["chosen"]) for c in detail.candidates] == [(0, 0), (1, 1), (2, 0)]
    lines = candidates_text(detail.candidates).plain.splitlines()
    assert lines[0].startswith("3 candidates (default), picked by detection")
    assert lines[1].startswith("   #0 0.500") and TEXTS[0] in lines[1]
    assert lines[2].startswith(" * #1 ") and TEXTS[GOOD] in lines[2]
