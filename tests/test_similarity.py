"""`autointerp similarity A.db B.db`: latents of two databases matched by the similarity of their explanations, with
the real embedding model (all-MiniLM-L6-v2) and real SQLite files whose right answer is known: a copy of a database,
and a copy whose explanations were moved to other latents by a known permutation."""

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch

from autointerp.engine.commands.similarity import (
    Matcher,
    SimilarityError,
    best_matches,
    format_similarity,
    similarity,
)
from autointerp.engine.interpretation.embedding import Embedder
from autointerp.store.browse import Browser
from autointerp.store.synthetic import make_synthetic_db

N_LATENTS = 150


class CachingEmbedder:
    """The real model, each distinct text encoded once for the whole module (several runs embed the same texts)."""

    def __init__(self, embedder: Embedder):
        self.inner, self.name, self.seen = embedder, embedder.name, {}

    def encode(self, texts):
        new = [t for t in dict.fromkeys(texts) if t not in self.seen]
        if new:
            self.seen.update(zip(new, self.inner.encode(new)))
        return np.stack([self.seen[t] for t in texts])


@pytest.fixture(scope="module")
def embedder():
    return CachingEmbedder(Embedder())


@pytest.fixture(scope="module")
def db_a(tmp_path_factory):
    return make_synthetic_db(tmp_path_factory.mktemp("a") / "a.db", N_LATENTS, explained=0.9, seed=1)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy(src, dst, *statements, params=()):
    """A copy of `src` with some SQL applied (every store closed, so the file is the whole database)."""
    shutil.copy(src, dst)
    conn = sqlite3.connect(dst)
    with conn:
        for sql in statements:
            conn.execute(sql)
        for sql, rows in params:
            conn.executemany(sql, rows)
    conn.close()
    return dst


def texts_of(path) -> dict[int, str]:
    conn = sqlite3.connect(path)
    rows = conn.execute("select latent, text from explanations where explainer = 'default' and text is not null")
    out = dict(rows.fetchall())
    conn.close()
    return out


def permuted_copy(src, dst, seed=7):
    """`src` with the explanation of its j-th explained latent moved to the perm[j]-th; returns (path, {a: b})."""
    texts = texts_of(src)
    latents = np.array(sorted(texts))
    perm = np.random.default_rng(seed).permutation(len(latents))
    moved = [(texts[int(latents[j])], int(latents[perm[j]])) for j in range(len(latents))]
    copy(src, dst, params=[("update explanations set text = ? where latent = ? and explainer = 'default'", moved)])
    return dst, dict(zip(latents.tolist(), latents[perm].tolist()))


def run(a, b, embedder, **kw):
    kw.setdefault("store", False)
    return similarity(a, b, embedder=embedder, **kw)


def assert_matches(result, texts_a, texts_b, expected: dict[int, int]):
    """Every A latent matched to `expected[latent]` with similarity 1, except that latents sharing a text may be
    matched within their group of identical texts (any such permutation is optimal)."""
    counts: dict[str, int] = {}
    for t in texts_a.values():
        counts[t] = counts.get(t, 0) + 1
    assert result.latents.tolist() == sorted(texts_a)
    assert len(set(result.match.tolist())) == len(result.match) and (result.match >= 0).all()
    for latent, match, sim in zip(result.latents.tolist(), result.match.tolist(), result.match_similarity.tolist()):
        assert sim == pytest.approx(1.0, abs=1e-5)
        if counts[texts_a[latent]] == 1:
            assert match == expected[latent]
        else:
            assert texts_b[match] == texts_a[latent]


def test_synthetic_explanations_are_diverse(db_a, embedder):
    # The matching tests mean something only if most texts differ: count them, and check the embeddings of
    # different texts are not all alike (the random-pairs control must sit well below 1).
    texts = list(texts_of(db_a).values())
    assert len(texts) > 0.8 * N_LATENTS and len(set(texts)) >= 0.95 * len(texts)
    e = embedder.encode(sorted(set(texts)))
    off = (e @ e.T)[~np.eye(len(e), dtype=bool)]
    assert off.max() < 0.999 and off.mean() < 0.8


def test_two_copies_match_one_to_one(db_a, embedder, tmp_path):
    b = copy(db_a, tmp_path / "b.db")
    result = run(db_a, b, embedder)
    texts = texts_of(db_a)
    assert_matches(result, texts, texts, {k: k for k in texts})
    s = result.summary
    assert s["matching"]["method"] == "exact" and not s["matching"]["approximate"]
    assert s["matching"]["pairs"] == len(texts) and s["matching"]["unmatched_a"] == 0
    assert s["matching"]["above"]["0.9"] == len(texts)
    for side in ("a_to_b", "b_to_a"):
        assert s[side]["n"] == len(texts) and s[side]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(result.best_similarity, 1.0, atol=1e-5)
    assert all(texts[best] == texts[la] for la, best in zip(result.latents.tolist(), result.best.tolist()))
    # Chance is far below: random pairs of these template explanations.
    control = s["random_pairs"]
    assert control["n"] == len(texts) and control["mean"] < 0.9 and control["above"]["0.9"] < len(texts) / 10
    assert sum(control["histogram"]) == len(texts) and sum(s["matching"]["histogram"]) == len(texts)
    assert s["warnings"] == [] and s["same_space"]
    assert s["decoder"]["available"] is False and "cannot load the coder" in s["decoder"]["reason"]
    assert np.isnan(result.decoder_cosine).all()


def test_permuted_explanations_are_matched_back(db_a, embedder, tmp_path):
    b, perm = permuted_copy(db_a, tmp_path / "b.db")
    result = run(db_a, b, embedder)
    assert_matches(result, texts_of(db_a), texts_of(b), perm)
    assert result.summary["matching"]["method"] == "exact"
    assert sum(m != la for la, m in zip(result.latents.tolist(), result.match.tolist())) > 0.9 * len(perm)


@pytest.mark.parametrize("permuted", [False, True])
def test_blocked_matching_over_the_exact_limit(db_a, embedder, tmp_path, permuted):
    b, expected = permuted_copy(db_a, tmp_path / "b.db") if permuted else (db_a, None)
    texts = texts_of(db_a)
    result = run(db_a, b, embedder, exact_limit=32, block_size=40)  # 135^2 pairs > 32^2: blocks of 4 rows
    m = result.summary["matching"]
    assert m["method"] == "blocked" and m["approximate"] and m["passes"] >= 1
    assert_matches(result, texts, texts_of(b), expected or {k: k for k in texts})


def test_blocked_matching_is_close_to_the_exact_optimum():
    # Random unit vectors with hubs (a third as many distinct A texts as latents) and B near A's texts: many rows
    # compete for the same partners, the hard case for the blocked approximation. Compared with scipy's exact one.
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(0)
    dim, n_a, n_b = 16, 600, 500
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    ea = unit(rng.normal(size=(n_a // 3, dim)))
    eb = unit(ea[rng.integers(0, len(ea), n_b // 2)] + 0.3 * rng.normal(size=(n_b // 2, dim)))
    a_text, b_text = rng.permutation(np.arange(n_a) % len(ea)), rng.permutation(np.arange(n_b) % len(eb))
    full = ea[a_text] @ eb[b_text].T
    r, c = linear_sum_assignment(full, maximize=True)
    top_v, top_i, _, _ = best_matches(torch.from_numpy(ea), torch.from_numpy(eb), 64, 8)
    matcher = Matcher(torch.from_numpy(ea), torch.from_numpy(eb), a_text, b_text, 64, 8, 64, None)
    matcher.blocked(top_i, top_v[:, 0])
    got = matcher.match >= 0
    assert got.sum() == n_b and len(set(matcher.match[got].tolist())) == n_b  # one to one, B used up
    assert np.allclose(matcher.match_sim[got], full[np.flatnonzero(got), matcher.match[got]], atol=1e-5)
    assert matcher.match_sim[got].sum() >= 0.9 * full[r, c].sum()


def test_stored_rows_equal_the_returned_pairs(db_a, embedder, tmp_path):
    a = copy(db_a, tmp_path / "a.db")
    b, perm = permuted_copy(db_a, tmp_path / "b.db")
    result = run(a, b, embedder, store=True, seed=3, block_size=64)
    assert result.run == 1 and result.summary["run"] == 1
    conn = sqlite3.connect(a)
    rows = conn.execute(
        'select latent, best, best_similarity, "match", match_similarity, decoder_cosine from similarity'
        " where run = 1 order by latent"
    ).fetchall()
    assert rows == list(result.pairs()) and len(rows) == len(texts_of(a))
    other_path, fingerprint, explainer, other_explainer, settings, summary = conn.execute(
        "select other_path, other_fingerprint, explainer, other_explainer, settings, summary from similarity_runs"
    ).fetchone()
    conn.close()
    assert other_path == str(b.resolve()) and explainer == other_explainer == "default"
    settings = json.loads(settings)
    assert settings["block_size"] == 64 and settings["seed"] == 3 and "all-MiniLM-L6-v2" in settings["embedding_model"]
    assert json.loads(fingerprint)["model"] == "synthetic"
    summary = json.loads(summary)
    assert summary["matching"] == result.summary["matching"] and summary["random_pairs"]["n"] == len(rows)

    # The browser reads the newest run: a second run (A against itself) replaces what the detail view shows.
    latent = int(result.latents[0])
    browser = Browser.open(a)
    try:
        first = browser.similar(latent)
        assert first["run"] == 1 and first["match"] == perm[latent] and first["best_similarity"] == rows[0][2]
        assert browser.similar(next(i for i in range(N_LATENTS) if i not in perm)) is None  # never explained
    finally:
        browser.close()
    assert run(a, a, embedder, store=True).run == 2
    browser = Browser.open(a)
    try:
        detail = browser.detail(latent)
        assert detail.similar["run"] == 2 and detail.similar["match"] == latent
    finally:
        browser.close()
    from rich.console import Console

    from autointerp.tui.detail import detail_renderable

    console = Console(width=120, record=True)
    console.print(detail_renderable(detail, mono=True))
    shown = console.export_text()
    assert "similar latents in a.db" in shown and f"matched  {latent:>7}  similarity 1.000" in shown


def test_a_real_decoder_gives_the_cosine_of_matched_pairs(db_a, embedder, tmp_path):
    """Both files point at the embedded SAE (as a cache of it would): the matched pairs' decoder cosine is the cosine
    of the two latents' rows of W_dec, read here straight from the checkpoint."""
    from safetensors.torch import load_file

    from autointerp.engine.activations.coders import load_coder
    from autointerp.engine.defaults import embedded_sae

    folder = embedded_sae()
    coder_hash = load_coder(folder, "sparsify").content_hash
    real = (
        f"update provenance set coder_path = '{folder}', coder_kind = 'sparsify', coder_hash = '{coder_hash}',"
        " d_in = 576"
    )
    a = copy(db_a, tmp_path / "a.db", real)
    b, perm = permuted_copy(a, tmp_path / "b.db")
    result = run(a, b, embedder)
    w = load_file(folder / "sae.safetensors")["W_dec"].float()
    w = w / w.norm(dim=1, keepdim=True)
    for latent, match, cos in zip(result.latents.tolist(), result.match.tolist(), result.decoder_cosine.tolist()):
        assert cos == pytest.approx(float(w[latent] @ w[match]), abs=1e-4)
    dec = result.summary["decoder"]
    assert dec["available"] and dec["reason"] is None
    assert dec["matched"]["n"] == dec["random_pairs"]["n"] == len(perm)
    # Against itself every matched latent is its own direction.
    same = run(a, a, embedder)
    assert np.allclose(same.decoder_cosine, 1.0, atol=1e-5)

    # Another model: explanations are still compared, directions are not (a warning says so).
    other = copy(b, tmp_path / "other.db", "update provenance set model = 'other'")
    result = run(a, other, embedder)
    assert len(result.summary["warnings"]) == 1 and "different models" in result.summary["warnings"][0]
    assert not result.summary["decoder"]["available"] and "different model" in result.summary["decoder"]["reason"]
    assert_matches(result, texts_of(a), texts_of(other), perm)


def test_bad_input_raises_and_writes_nothing(db_a, embedder, tmp_path):
    a = copy(db_a, tmp_path / "a.db")
    before = digest(a)
    failed = copy(db_a, tmp_path / "failed.db", "update explanations set text = null, error = 'timeout'")
    for kwargs, needle in (
        ({"explainer": "cot"}, "no explanations of the 'cot' explainer (it has default); choose one with --explainer"),
        ({"other_explainer": "cot"}, "choose one with --other-explainer"),
    ):
        with pytest.raises(SimilarityError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            run(a, a, embedder, store=True, **kwargs)
    with pytest.raises(SimilarityError, match="every attempt failed"):
        run(a, failed, embedder, store=True)
    empty = copy(db_a, tmp_path / "empty.db", "delete from explanations")
    with pytest.raises(SimilarityError, match="empty.db holds no explanations; run `autointerp explain` first"):
        run(a, empty, embedder, store=True)
    with pytest.raises(SimilarityError, match="'bogus' is not a device torch knows"):
        run(a, a, embedder, store=True, device="bogus")
    assert digest(a) == before


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "autointerp.engine.commands.cli", "similarity", *map(str, args)],
        capture_output=True,
        text=True,
    )


def test_cli_bad_input_is_one_error_line(db_a, tmp_path):
    a = copy(db_a, tmp_path / "a.db")
    empty = copy(db_a, tmp_path / "empty.db", "delete from explanations")
    for x, y, needle in (
        (a, tmp_path / "missing.db", "does not exist"),
        (empty, a, "holds no explanations; run `autointerp explain` first"),
    ):
        before = {p: digest(p) for p in (x, y) if p.exists()}
        res = cli(x, y)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
        assert {p: digest(p) for p in (x, y) if p.exists()} == before
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only file: nothing to refuse")
def test_cli_refuses_an_unwritable_a_unless_no_store(db_a, tmp_path):
    a = copy(db_a, tmp_path / "a.db")
    a.chmod(0o444)
    before = digest(a)
    res = cli(a, a)
    assert res.returncode == 2 and "--no-store" in res.stderr and len(res.stderr.splitlines()) == 1
    res = cli(a, a, "--no-store", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["run"] is None
    assert digest(a) == before


def test_cli_end_to_end_json_and_table(db_a, tmp_path):
    a = copy(db_a, tmp_path / "a.db")
    b, perm = permuted_copy(db_a, tmp_path / "b.db")
    res = cli(a, b, "--json", "--device", "cpu", "--seed", "5")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["run"] == 1 and summary["settings"]["seed"] == 5 and summary["settings"]["device"] == "cpu"
    assert summary["matching"]["pairs"] == len(perm) and summary["matching"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert summary["random_pairs"]["mean"] < 0.9
    conn = sqlite3.connect(a)
    stored = dict(conn.execute('select latent, "match" from similarity where run = 1').fetchall())
    conn.close()
    texts = texts_of(a)
    unique = [k for k, t in texts.items() if list(texts.values()).count(t) == 1]
    assert len(stored) == len(perm) and len(unique) > 0.9 * len(perm)
    assert all(stored[k] == perm[k] for k in unique)
    # The same summary as a table, as the command prints it without --json.
    from rich.console import Console

    console = Console(width=140, record=True)
    console.print(format_similarity(summary))
    shown = console.export_text()
    for needle in ("best match A -> B", "one-to-one matching", "random pairs (control)", "exact (Hungarian"):
        assert needle in shown
    assert "stored in" in shown and "similarity run 1" in shown
