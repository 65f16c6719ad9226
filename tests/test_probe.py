"""`autointerp probe`: test your own text on a cache's real model and coder (the embedded SmolLM2 and SAE).

The per-token activations of a window of the cached corpus, fed back as text, are the activations the cache
stored for it (every latent, every token); the top latents are sorted and right; --json's shape; the --serve line
protocol in a real process; bad input is one `error:` line, exit 2, the database byte for byte as it was."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.databases import copy_db
from helpers.llm_stage import write_stand_in_explanation

from autointerp.engine.commands.cli import main
from autointerp.engine.commands.probe import ProbeSession, serve
from autointerp.store.db import ActivationStore

WINDOW = 40  # tokens of a cached sequence probed (from its start: causal, so the prefix is all they saw)


@pytest.fixture(scope="module")
def db(real_cache_db, tmp_path_factory) -> Path:
    """A copy of the real cache with one stand-in explanation (so the answers carry one)."""
    path = copy_db(real_cache_db, tmp_path_factory.mktemp("probe") / "c.db")
    with ActivationStore.open(path) as store:
        write_stand_in_explanation(store.results, 7, "stand-in explanation of latent 7")
    return path


@pytest.fixture(scope="module")
def session(db, subject_model):
    s = ProbeSession(str(db), model=subject_model)
    yield s
    s.close()


@pytest.fixture(scope="module")
def window(db, session):
    """A cached sequence whose first WINDOW tokens decode to a text that tokenizes back to the same ids, with every
    cached (token, latent, value) in them: (seq, ids, text, {(token index, latent): value})."""
    tok = session.probe.model.tokenizer
    with ActivationStore.open(db, readonly=True) as store:
        prov = store.provenance
        seq_len, sep = int(prov["seq_len"]), session.probe.model.sep_id
        seqs = store.sequences(range(store.n_sequences()))
        heads = {s: [int(t) for t in tokens[1 : WINDOW + 1]] for s, tokens in sorted(seqs.items())}
        texts = {s: tok.decode(ids, clean_up_tokenization_spaces=False) for s, ids in heads.items()}
        fits = [s for s, ids in heads.items() if sep not in ids and session.probe.token_ids(texts[s]) == ids]
        assert fits, "no cached sequence round-trips through the tokenizer"
        seq = fits[0]
        ids, text = heads[seq], texts[seq]
        lo, hi = seq * seq_len + 1, seq * seq_len + WINDOW + 1
        cached = {}
        for latent, positions, values in store.scan_segments(0, int(prov["num_latents"])):
            hit = (positions >= lo) & (positions < hi)
            for p, v in zip(positions[hit], values[hit]):
                cached[(int(p - lo), int(latent))] = float(v)
    assert cached, "the window holds no cached activations"
    return seq, ids, text, cached


def test_a_corpus_window_fed_as_text_gets_the_cached_activations(session, window):
    _, ids, text, cached = window
    result = session.run(text, [], top=0)
    assert result["token_ids"] == ids
    enc = session.probe.encode_text(text)
    got = {(int(r), int(la)): float(v) for r, la, v in zip(enc.rows, enc.latents, enc.values)}
    # Top-k coders: a latent at the k-th place may swap with its neighbour when sums are added in another order
    # (a 256-token batch then, one 40-token row now); those are the smallest activations of their token.
    strong = {k: v for k, v in cached.items() if v > 0.2 * max(c for (t, _), c in cached.items() if t == k[0])}
    assert set(strong) <= set(got), sorted(set(strong) - set(got))[:5]
    shared = sorted(set(cached) & set(got))
    assert len(shared) >= 0.97 * len(cached), (len(shared), len(cached))
    a, b = np.array([got[k] for k in shared]), np.array([cached[k] for k in shared])
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-2)  # the cache stores float16


def test_chosen_latents_per_token_equal_the_coder_and_the_cache(session, window):
    _, ids, text, cached = window
    counts: dict[int, int] = {}
    for _, latent in cached:
        counts[latent] = counts.get(latent, 0) + 1
    chosen = sorted(counts, key=lambda x: -counts[x])[:3]
    result = session.run(text, chosen, top=5)
    assert [c["latent"] for c in result["latents"]] == chosen
    for c in result["latents"]:
        acts = np.array(c["activations"])
        assert len(acts) == len(ids) and c["max"] == pytest.approx(acts.max())
        want = np.array([cached.get((i, c["latent"]), 0.0) for i in range(len(ids))])
        np.testing.assert_allclose(acts, want, rtol=2e-3, atol=2e-2)
        # the same as the generation scorer's one-latent probe of the same text
        np.testing.assert_array_equal(acts.astype(np.float32), session.probe.activations([text], c["latent"])[0])


def test_the_top_latents_are_the_largest_maxima_in_order(session, window):
    _, ids, text, _ = window
    result = session.run(text, [], top=10)
    enc = session.probe.encode_text(text)
    best = np.zeros(session.num_latents, np.float32)
    np.maximum.at(best, enc.latents, enc.values)
    top = result["top"]
    assert len(top) == 10
    maxima = [r["max"] for r in top]
    assert maxima == sorted(maxima, reverse=True)
    assert maxima[-1] >= np.sort(best)[-10]  # no latent outside the list fires higher
    for r in top:
        acts = enc.of(r["latent"])
        assert r["max"] == pytest.approx(float(acts.max()))
        assert r["position"] == int(np.argmax(acts)) and r["token"] == result["tokens"][r["position"]]
        with ActivationStore.open(session.db, readonly=True) as store:
            assert r["latent_max"] == pytest.approx(store.latent_stats(r["latent"])["max_act"])


@pytest.fixture
def preloaded(monkeypatch, subject_model):
    """The command in this process on the session's loaded model (the same weights it would load)."""
    from autointerp.engine.activations.model import SubjectModel

    monkeypatch.setattr(SubjectModel, "load", classmethod(lambda cls, *a, **k: subject_model))


def test_json_shape_and_the_printed_table(db, session, preloaded):
    text = "The minister said the economy grew in London."
    before = digest(db)
    r = CliRunner().invoke(main, ["probe", str(db), text, "--latents", "7,12", "--top", "4", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out) == {"db", "text", "tokens", "token_ids", "truncated", "latents", "top"}
    assert out["text"] == text and not out["truncated"] and len(out["tokens"]) == len(out["token_ids"])
    assert [c["latent"] for c in out["latents"]] == [7, 12] and len(out["top"]) == 4
    assert out["latents"][0]["explanation"] == "stand-in explanation of latent 7"
    for c in out["latents"]:
        assert set(c) == {"latent", "activations", "max", "latent_max", "explanation"}
        assert len(c["activations"]) == len(out["tokens"])
    assert set(out["top"][0]) == {"latent", "max", "position", "token", "latent_max", "explanation"}
    assert out == {"db": str(db), **session.run(text, [7, 12], 4)}
    printed = CliRunner().invoke(main, ["probe", str(db), text, "--latents", "7"])
    assert printed.exit_code == 0 and "latent 7" in printed.stdout and "' London'" in printed.stdout
    assert str(out["top"][0]["latent"]) in printed.stdout and "top 10 latents" in printed.stdout
    assert digest(db) == before


def test_the_line_protocol(session):
    lines = io.StringIO(
        '{"text": "The cat sat.", "latent": 7}\nnot json\n\n{"text": " "}\n{"text": "x", "latent": 99999}\n'
    )
    out = io.StringIO()
    serve(session, lines, out, top=10, explainer="default")
    answers = [json.loads(x) for x in out.getvalue().splitlines()]
    assert answers[0] == {"ready": True, "num_latents": session.num_latents, "hook": session.probe.hook}
    first = answers[1]
    assert first["tokens"] == ["The", " cat", " sat", "."] and len(first["top"]) == 10
    assert first["latents"][0]["latent"] == 7 and first["latents"][0]["explanation"].startswith("stand-in")
    assert first["ms"] > 0
    assert [a.get("error", "")[:20] for a in answers[2:]] == [
        "not JSON (Expecting ",
        "the text is empty: g",
        "latent 99999 does no",
    ]


def test_the_server_process_answers_and_ends_when_its_input_closes(db):
    """The real `--serve` process: ready line, answers, and it ends by itself at the end of its input (the way it
    ends when the TUI dies without stopping it). Prints its per-sentence latency after warm-up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "autointerp.engine.commands.cli", "probe", str(db), "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        assert json.loads(proc.stdout.readline())["ready"] is True
        times = []
        for i in range(6):
            t0 = time.perf_counter()
            proc.stdin.write(json.dumps({"text": f"Sentence number {i} about the markets.", "latent": 7}) + "\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            times.append(time.perf_counter() - t0)
            assert answer["latents"][0]["latent"] == 7 and len(answer["top"]) == 10
        print(f"probe server: {1000 * float(np.median(times[1:])):.0f} ms per sentence after warm-up")
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- bad input ----------------------------------------------------------------------------------------------------


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def refused(args: list[str], watched: Path) -> str:
    before = digest(watched)
    r = CliRunner().invoke(main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
    assert r.exit_code == 2, (args, r.exit_code, r.output)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and r.stdout == "", (args, r.output)
    assert digest(watched) == before
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["", "--json"], "the text is empty"),
        (["   \n"], "the text is empty"),
        ([], "the text is empty"),
        (["hi", "--latents", "abc"], "'abc' is not a latent id"),
        (["hi", "--latents", "random:5"], "give latent ids"),
        (["hi", "--latents", "3-1"], "reversed"),
        (["hi", "--latents", "0-99999"], "at most 1,024"),
        (["hi", "--latents", "3072"], "latent 3072 does not exist"),
        (["hi", "--top", "-1"], "--top"),
        (["hi", "--serve"], "--serve reads"),
        (["--serve", "--latents", "3"], "--serve reads"),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_database_as_it_was(db, extra, needle):
    line = refused(["probe", str(db), *extra], db)
    assert needle in line, line


def test_bad_databases(db, tmp_path):
    missing = tmp_path / "missing.db"
    assert "does not exist" in refused(["probe", str(missing), "hi"], missing) and not missing.exists()
    ActivationStore.open(tmp_path / "new.db", create=True).close()
    assert "no activation cache" in refused(["probe", str(tmp_path / "new.db"), "hi"], tmp_path / "new.db")
    assert "no activation cache" in refused(["probe", str(tmp_path / "new.db"), "--serve"], tmp_path / "new.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    refused(["probe", str(junk), "hi"], junk)
