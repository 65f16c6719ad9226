"""Vocabulary and decoder-direction annotations on a real cache (embedded SmolLM2 + shipped SAE)."""

import json
import sqlite3

import pytest
from helpers.cli import run_cli
from helpers.databases import copy_db
from helpers.schema import to_schema_6_layout
from helpers.stores import fill_store
from safetensors.torch import load_file

from autointerp.engine.activations.annotate import annotate, needs_annotation
from autointerp.engine.activations.coders.neurons import NeuronCoder
from autointerp.engine.activations.lens import LogitLens
from autointerp.engine.activations.model import gguf_as_safetensors
from autointerp.engine.activations.setup import prepare
from autointerp.engine.config import BatchConfig, CacheConfig, Config
from autointerp.engine.defaults import embedded_sae, smollm2_gguf
from autointerp.store.db import ActivationStore
from autointerp.store.directions import missing_directions, read_vocab
from autointerp.store.schema import SCHEMA_VERSION

LATENTS = [0, 1, 777, 2048, 3071]


@pytest.fixture(scope="module")
def parts(real_cache_db, subject_model):
    with ActivationStore.open(real_cache_db, readonly=True) as store:
        cfg = CacheConfig(**json.loads(store.provenance["config"]))
    return prepare(cfg, model=subject_model)


@pytest.fixture(scope="module")
def weights():
    """W_U, the final norm's gain and the SAE decoder read straight from the files, not through our loaders."""
    folder, _ = gguf_as_safetensors(smollm2_gguf())
    m = load_file(str(folder / "model.safetensors"))
    w_u = m.get("lm_head.weight", m["model.embed_tokens.weight"]).float().T  # SmolLM2 ties its embeddings
    w_dec = load_file(str(embedded_sae() / "sae.safetensors"))["W_dec"].float()
    return w_u, m["model.norm.weight"].float(), w_dec


def directions(path, latents=None) -> dict[int, dict]:
    conn = sqlite3.connect(path)
    rows = conn.execute("select latent, promoted, suppressed, neighbours from directions").fetchall()
    conn.close()
    return {
        r[0]: {"promoted": json.loads(r[1]), "suppressed": json.loads(r[2]), "neighbours": json.loads(r[3])}
        for r in rows
        if latents is None or r[0] in latents
    }


def make_v3(src, dst, explanations=()):
    """What a database written by the schema-3 autointerp looks like: no v4 tables, triggers or index."""
    copy_db(src, dst)
    conn = sqlite3.connect(dst)
    for trigger in ("explanations_ai", "explanations_ad", "explanations_au"):
        conn.execute(f"drop trigger {trigger}")
    for table in ("explanations_fts", "vocab", "directions", "audits"):
        conn.execute(f"drop table {table}")
    conn.execute("drop index scores_by_scorer")
    for column in ("correlation", "details", "n_retry"):  # v5's and v6's columns
        conn.execute(f"alter table scores drop column {column}")
    conn.execute("drop table stages")  # v6
    to_schema_6_layout(conn)  # v7
    conn.executemany(
        "insert into explanations (latent, explainer, text, created_at) values (?, 'default', ?, 't')", explanations
    )
    conn.execute("update meta set value = '3' where key = 'schema_version'")
    conn.commit()
    conn.close()
    return dst


def test_vocab_renders_cached_tokens_like_the_tokenizer(real_cache_db, parts):
    tok = parts.model.tokenizer
    with ActivationStore.open(real_cache_db, readonly=True) as store:
        vocab = read_vocab(store.db)
        assert len(vocab) == int(store.provenance["vocab_size"]) == 49152
        assert store.db.execute("select count(*) from vocab").fetchone()[0] == len(vocab)
        seqs = store.sequences(range(store.n_sequences()))
    ascii_ids = next(ids.tolist() for ids in seqs.values() if tok.decode(ids.tolist()).isascii())
    joined = "".join(vocab[i] for i in ascii_ids)
    assert joined == tok.decode(ascii_ids, clean_up_tokenization_spaces=False)
    assert len(joined) > 500 and " the " in joined


def test_every_latent_annotated_by_the_cache(real_cache_db):
    with ActivationStore.open(real_cache_db, readonly=True) as store:
        n = int(store.provenance["num_latents"])
        assert missing_directions(store.db, n) == []
        assert store.db.execute("select count(*) from directions").fetchone()[0] == n == 3072
        assert not needs_annotation(store)
        assert any(e["kind"] == "annotate" and "3,072 latents" in e["message"] for e in store.events(20))
        # The passes after the forward say how far they are (each event is also the run's heartbeat): at least
        # at their end, and every 10 s on the way.
        progress = [e["message"] for e in store.events(20) if e["kind"] == "progress"]
        assert (
            "compaction and statistics: 3,072/3,072 latents" in progress
            and "annotation: 3,072/3,072 latents" in progress
        )


def test_logit_lens_equals_direct_computation(real_cache_db, weights, parts):
    w_u, gain, w_dec = weights
    dtype = parts.model.bridge.W_U.dtype  # bf16 on a GPU: the stored lens saw the weights at that precision
    w_u, gain = w_u.to(dtype).float(), gain.to(dtype).float()
    stored = directions(real_cache_db, LATENTS)
    lens = LogitLens.of_model(parts.model, parts.coder.decoder_directions())
    for latent in LATENTS:
        logits = (w_dec[latent] * gain) @ w_u
        top, bottom = logits.topk(10), logits.topk(10, largest=False)
        got_top, got_bottom = stored[latent]["promoted"], stored[latent]["suppressed"]
        assert [t for t, _ in got_top] == top.indices.tolist()
        assert [t for t, _ in got_bottom] == bottom.indices.tolist()
        assert [v for _, v in got_top] == pytest.approx(top.values.tolist(), abs=2e-4)
        assert [v for _, v in got_bottom] == pytest.approx(bottom.values.tolist(), abs=2e-4)
        assert got_bottom[0][1] < 0 < got_top[0][1]
        # The explainer's lens (logit_lens explainer) shows the same tokens.
        assert lens.promoted(latent) == [parts.model.tokenizer.decode([t]) for t, _ in got_top]


def test_neighbours_equal_direct_cosine(real_cache_db, weights):
    _, _, w_dec = weights
    w = w_dec / w_dec.norm(dim=1, keepdim=True)
    stored = directions(real_cache_db, LATENTS)
    for latent in LATENTS:
        cos = w @ w[latent]
        cos[latent] = float("-inf")
        want = cos.topk(10)
        got = stored[latent]["neighbours"]
        assert [i for i, _ in got] == want.indices.tolist() and latent not in [i for i, _ in got]
        assert [c for _, c in got] == pytest.approx(want.values.tolist(), abs=2e-4)
        assert all(a >= b for (_, a), (_, b) in zip(got, got[1:]))


def test_annotate_is_resumable_and_idempotent(real_cache_db, parts, tmp_path):
    path = copy_db(real_cache_db, tmp_path / "a.db")
    before = directions(path)
    with ActivationStore.open(path) as store:
        again = annotate(store, parts.model, parts.coder)
        assert (again.vocab_written, again.latents_written) == (0, 0)
        # A run killed part way: some latents lack their row. Only those are computed, in small batches.
        store.db.execute("delete from directions where latent in (3, 600, 601, 3071)")
        store.db.conn.commit()
        assert missing_directions(store.db, 3072) == [3, 600, 601, 3071]
        resumed = annotate(store, parts.model, parts.coder, batch=3)
        assert (resumed.vocab_written, resumed.latents_written) == (0, 4)
    after = directions(path)
    assert after.keys() == before.keys()
    for latent in (3, 600, 601, 3071):
        for key in ("promoted", "suppressed", "neighbours"):
            assert [i for i, _ in after[latent][key]] == [i for i, _ in before[latent][key]]


def test_coder_without_decoder_gets_vocab_and_a_warning(tmp_path, parts):
    store, _ = fill_store(tmp_path / "n.db", vocab_size=300, coder_kind="neurons")
    events = []
    with store:
        result = annotate(
            store,
            parts.model,
            NeuronCoder(8, "blocks.0.mlp.hook_post", 4),
            on_event=lambda kind, msg: events.append((kind, msg)),
        )
        assert (result.vocab_written, result.latents_written) == (300, 0)
        assert read_vocab(store.db)[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        assert store.db.execute("select count(*) from directions").fetchone()[0] == 0
        assert not needs_annotation(store)  # neurons never get directions: nothing to redo on the next batch
    assert [k for k, _ in events] == ["warning"] and "decoder directions" in events[0][1]


def test_v3_database_upgrades_and_annotates_through_the_cli(real_cache_db, tmp_path):
    path = make_v3(
        real_cache_db, tmp_path / "v3.db", [(5, "dates and times in news reports"), (7, "names of biblical kings")]
    )
    res = run_cli("upgrade", str(path))
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{path}: schema v{SCHEMA_VERSION}\n"
    with ActivationStore.open(path, readonly=True) as store:  # readonly refuses any other version
        hits = store.db.execute(
            "select rowid, text from explanations_fts where explanations_fts match ?", ["biblical"]
        ).fetchall()
        latent = store.db.execute("select latent from explanations where rowid = ?", [hits[0][0]]).fetchone()[0]
        assert len(hits) == 1 and latent == 7
        assert store.n_tokens() > 0 and store.db.execute("select count(*) from explanations").fetchone()[0] == 2
        assert store.db.execute("select count(*) from vocab").fetchone()[0] == 0
        assert needs_annotation(store)

    res = run_cli("annotate", str(path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 1 and "annotated 3,072 latents" in res.stdout, res.stdout
    with ActivationStore.open(path, readonly=True) as store:
        assert store.db.execute("select count(*) from vocab").fetchone()[0] == 49152
        assert missing_directions(store.db, 3072) == []
    fresh, original = directions(path, LATENTS), directions(real_cache_db, LATENTS)
    for latent in LATENTS:
        for key in ("promoted", "suppressed", "neighbours"):
            assert [i for i, _ in fresh[latent][key]] == [i for i, _ in original[latent][key]]


def test_batch_annotates_a_complete_cache_made_before_v4(real_cache_db, parts, tmp_path, monkeypatch):
    from autointerp.engine.activations import cache
    from autointerp.engine.commands.batch import BatchRunner

    path = make_v3(real_cache_db, tmp_path / "old.db")
    with ActivationStore.open(real_cache_db, readonly=True) as store:
        cache_cfg = CacheConfig(**json.loads(store.provenance["config"]))
    loads = []
    monkeypatch.setattr(cache, "prepare", lambda cfg, **kw: loads.append(cfg) or parts)  # the model is loaded already
    cfg = Config(db=str(path), cache=cache_cfg, batch=BatchConfig(stages=["cache"]))
    stats_before = sqlite3.connect(path).execute("select * from latents order by latent").fetchall()
    assert BatchRunner(cfg).run() == 0
    assert loads == [cache_cfg]
    with ActivationStore.open(path, readonly=True) as store:
        assert not needs_annotation(store)
        assert store.db.execute("select count(*) from chunks").fetchone()[0] == 2  # nothing recached
        # the statistics were complete (the migration marked them so): kept, not recomputed
        assert store.db.execute("select * from latents order by latent").fetchall() == stats_before
        events = [
            e
            for e in store.events(10)
            if e["stage"] == "cache"
            and e["kind"] != "filters"
            and not e["message"].startswith(("filters", "compaction and statistics"))
        ]  # the filters (new in schema 8) are computed too, by the one pass (rows kept as they were, checked above)
        # newest first; the statistics were kept, so only the annotation reported progress (its heartbeat)
        assert [e["kind"] for e in events][:4] == ["end", "annotate", "progress", "start"]
        assert events[2]["message"] == "annotation: 3,072/3,072 latents"
        assert store.stage("cache")["done_at"] is not None
    # Complete and annotated: the next batch loads nothing.
    assert BatchRunner(cfg).run() == 0 and len(loads) == 1


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_annotate_bad_input_is_one_error_line(tmp_path, make):
    path = tmp_path / "x.db"
    if make == "empty":
        ActivationStore.open(path, create=True).close()
    res = run_cli("annotate", str(path))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0], res.stderr
    assert path.exists() == (make == "empty")
