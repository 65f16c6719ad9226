import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autointerp.engine.activations.corpus import (
    CorpusError,
    CorpusSpec,
    SequencePacker,
    corpus_hash,
    iter_documents,
    pack_sequences,
)


class CharTokenizer:
    """Stands in for a HF tokenizer in packing tests: one token per character."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[10 + (ord(c) % 50) for c in t] for t in texts]}


class Recording(CharTokenizer):
    """Remembers every text it was asked to tokenise."""

    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, texts, add_special_tokens=False):
        self.seen.extend(texts)
        return super().__call__(texts, add_special_tokens)


def docs(source, **kw):
    return list(iter_documents(CorpusSpec(str(source), **kw)))


def test_formats(tmp_path):
    (tmp_path / "a.txt").write_text("alpha doc")
    assert docs(tmp_path / "a.txt") == ["alpha doc"]
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    assert docs(tmp_path / "d.jsonl") == ["one", "two"]
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    assert docs(tmp_path / "c.jsonl", text_field="body") == ["x"]
    pq.write_table(pa.table({"text": ["p1", None, "p2"]}), tmp_path / "t.parquet")
    assert docs(tmp_path / "t.parquet") == ["p1", "p2"]


def test_saved_hf_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["h1", "h2"]}).save_to_disk(str(tmp_path / "ds"))
    assert docs(tmp_path / "ds") == ["h1", "h2"]


def test_bad_corpora(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe broken")
    with pytest.raises(CorpusError, match="not UTF-8"):
        docs(bad)
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(CorpusError, match="line 2 is not JSON"):
        docs(tmp_path / "bad.jsonl")
    (tmp_path / "nofield.jsonl").write_text('{"body": "a"}\n')
    with pytest.raises(CorpusError, match="no 'text' field"):
        docs(tmp_path / "nofield.jsonl")
    with pytest.raises(CorpusError, match="does not exist"):
        corpus_hash(CorpusSpec(str(tmp_path / "missing.txt")))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(CorpusError, match="unsupported file type"):
        docs(tmp_path / "x.csv")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CorpusError, match="no text"):
        list(pack_sequences(iter(docs(tmp_path / "empty.txt")), CharTokenizer(), 8, 1, 2))


def test_packing_invariants():
    texts = ["abcdefghij", "klmnop", "qrstuvwxyz" * 3]
    seqs = list(pack_sequences(iter(texts), CharTokenizer(), 8, start_id=1, sep_id=2))
    stream = []
    for t in texts:
        stream += CharTokenizer()([t])["input_ids"][0] + [2]
    assert all(len(s) == 8 and s[0] == 1 for s in seqs)
    body = np.concatenate([s[1:] for s in seqs]).tolist()
    assert body == stream[: len(body)] and len(stream) - len(body) < 7


def test_corpus_hash_tracks_content(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    h1 = corpus_hash(CorpusSpec(str(f)))
    f.write_text("two")
    assert corpus_hash(CorpusSpec(str(f))) != h1


def test_hf_hash_covers_everything_that_picks_the_text():
    """Split, configuration, revision, text field and seed each give another hash (no cache reuse across
    them); a spec without configuration or revision keeps the hash it had before they existed."""
    base = CorpusSpec("hf:owner/data")
    variants = [
        CorpusSpec("hf:owner/data:validation"),
        CorpusSpec("hf:owner/data", hf_config="en"),
        CorpusSpec("hf:owner/data", hf_revision="v1.0"),
        CorpusSpec("hf:owner/data", text_field="body"),
        CorpusSpec("hf:owner/data", seed=1),
        CorpusSpec("hf:owner/data", hf_config="en", hf_revision="v1.0"),
    ]
    hashes = {corpus_hash(s) for s in [base, *variants]}
    assert len(hashes) == 1 + len(variants)
    import hashlib

    assert corpus_hash(base) == hashlib.sha256(b"hf:owner/data|text|0").hexdigest()[:16]


def test_embedded_corpus_mixes_bbc_and_kjv():
    d = docs("embedded")
    assert len(d) > 3000
    assert any("Genesis 1\n" in x for x in d) and any("BBC" in x or "Blair" in x for x in d)
    assert d == list(iter_documents(CorpusSpec("embedded")))  # seeded: same order every time


def test_hf_by_name_path_offline(tmp_path, monkeypatch):
    """`hf:NAME[:SPLIT]` goes through datasets.load_dataset (streaming); a local data folder stands in
    for a hub name here, and an unknown name fails in one line while offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hubish"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(5)))
    assert docs(f"hf:{folder}", text_field="body") == [f"doc {i}" for i in range(5)]
    assert docs(f"hf:{folder}:train", text_field="body")[:2] == ["doc 0", "doc 1"]
    with pytest.raises(CorpusError, match="cannot load Hugging Face dataset 'no-such-org/no-such-dataset'"):
        docs("hf:no-such-org/no-such-dataset")


def test_a_packer_resumed_from_any_position_hands_out_the_same_sequences_reading_nothing_before_it():
    texts = ["abcdefghij", "", "klmnop", "   ", "qrstuvwxyz" * 3, "x", "hello world", "zzzz" * 5, "end"]
    whole = list(pack_sequences(iter(texts), CharTokenizer(), 8, start_id=1, sep_id=2, batch_docs=2))
    assert len(whole) >= 8
    packer = SequencePacker(iter(texts), CharTokenizer(), 8, 1, 2, batch_docs=2)
    stream = iter(packer)
    for k in range(1, len(whole) + 1):
        next(stream)
        at = packer.position()
        recording = Recording()
        rest = list(SequencePacker(iter(texts), recording, 8, 1, 2, batch_docs=2, start=at))
        assert [s.tolist() for s in rest] == [s.tolist() for s in whole[k:]], k
        assert not set(recording.seen) & set(texts[: at.next_doc]), k  # nothing before the position is tokenised again
