"""Synthetic databases for the TUI's tests and benchmark, written through the real store code.

Real caches of 100k latents take hours on a CPU; browsing speed depends only on the file's shape, so this
writes a file of any size with the real schema: planted activations (each latent fires mostly on its own
"home" token), statistics, explanations that name the home token, scores with controls, directions, a vocab
with markup-like and whitespace tokens, and a finished batch run with progress and events. Every value comes
from the seed, and time stamps are fixed, so the same call makes the same file.

Score rows hold outcomes as the score stage stores them: cached windows of the latent (one activating window per
decile, weakest decile first, and random windows where it never fires), each with its label, the scorer's answer
and probability (none failed: tests plant their own failures), and every metric computed from those outcomes as
engine/interpretation/metrics.py computes them (tests/test_export_delphi.py checks the two agree).
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import sqlite_utils

from .columns import pack_score_columns, pack_stat_columns
from .compact import compact
from .db import ActivationStore, ChunkInfo
from .queries import WindowQueries
from .scorer_meta import ScorerMeta, primary_metrics, record_scorers
from .stages import CACHE, CACHE_STATS

STAMP = "2026-01-02T03:04:05+00:00"
SPECIAL = ["\n", "  ", "\t", "[bold red]", "[/]", "[link=x]", " the", " of", "\\", "[", "]"]
SCORERS = ("detection", "fuzzing", "embedding")
# What those scorers declare, recorded as the score stage records it: without it every reader would look for the
# primary metric in the scores themselves (a scan of the whole table at 1M latents, ~0.7 s of the TUI's first paint).
SCORER_METAS = (
    ScorerMeta("detection"),
    ScorerMeta("fuzzing", evidence="marks"),
    ScorerMeta("embedding", primary_metric="auroc"),
)
N_DECILES = 10  # the sample config's default: one scored activating window per decile
N_NON_ACTIVATING = 10  # windows where the latent never fires, per detection / embedding row
FUZZ_INCORRECT = 2 / 7  # fuzzing's share of activating windows shown with wrong marks (engine's default)


def _vocab(size: int) -> list[str]:
    words = [f" w{i}" for i in range(size - len(SPECIAL) - 1)]
    return ["<bos>", *SPECIAL, *words][:size]


def home_token(latent: int, vocab_size: int) -> int:
    return 1 + (latent * 7919) % (vocab_size - 1)


def synthetic_provenance(
    *,
    num_latents: int,
    seq_len: int,
    chunk_seqs: int,
    n_tokens_target: int,
    vocab_size: int,
    d_in: int = 16,
    seed: int = 0,
    config: dict | None = None,
    **fields,
) -> dict:
    """The provenance of a synthetic cache, for `ActivationStore.claim`: the fields a real cache records
    (engine/activations/setup.py `provenance`), so every synthetic file (the TUI's, `bench scale`'s, the tests') has
    the same ones. `fields` sets any other field (a coder kind, a hook); an unknown name is refused.

    A synthetic cache ran no model, so what the model would say of its forward (forward, forward_reason,
    forward_sites, model_type, start_rule) is null unless given: those keys are left out, which `claim` stores as
    null, so the row also fits a table of an older schema (migration tests)."""
    prov = {
        "model": "synthetic",
        "model_hash": "0",
        "hook": "blocks.0.hook_resid_post",
        "forward": None,
        "forward_reason": None,
        "forward_sites": None,
        "model_type": None,
        "start_rule": None,
        "coder_kind": "synthetic",
        "coder_path": "-",
        "coder_hash": "0",
        "num_latents": num_latents,
        "d_in": d_in,
        "corpus": "synthetic",
        "corpus_hash": str(seed),
        "seq_len": seq_len,
        "n_tokens_target": n_tokens_target,
        "chunk_seqs": chunk_seqs,
        "token_dtype": "uint16" if vocab_size <= 1 << 16 else "uint32",
        "vocab_size": vocab_size,
        "bos_token_id": 0,
        "seed": seed,
        "versions": {},  # package versions of the writer: none wrote it
        "config": {"window_len": 32, "seq_len": seq_len} if config is None else config,  # the cache config
    }
    unknown = set(fields) - set(prov)
    if unknown:
        raise TypeError(f"not provenance fields: {sorted(unknown)}")
    prov.update(fields)
    return {k: v for k, v in prov.items() if v is not None}


def make_synthetic_db(
    path: str | Path,
    n_latents: int = 200,
    *,
    n_chunks: int = 2,
    chunk_seqs: int = 128,
    seq_len: int = 64,
    vocab_size: int = 4096,
    acts_per_latent: int = 24,
    explained: float = 0.9,
    seed: int = 0,
) -> Path:
    path = Path(path)
    rng = np.random.default_rng(seed)
    vocab = _vocab(vocab_size)
    prov = synthetic_provenance(
        num_latents=n_latents,
        seq_len=seq_len,
        chunk_seqs=chunk_seqs,
        n_tokens_target=n_chunks * chunk_seqs * seq_len,
        vocab_size=vocab_size,
        seed=seed,
    )
    store = ActivationStore.open(path, create=True)
    store.claim(prov)
    tokens_per_chunk = chunk_seqs * seq_len
    all_lat, all_pos, all_val = [], [], []
    for c in range(n_chunks):
        seqs = rng.integers(1, vocab_size, size=(chunk_seqs, seq_len))
        seqs[:, 0] = 0
        per = max(1, acts_per_latent // n_chunks)
        lat = np.repeat(np.arange(n_latents, dtype=np.int32), per)
        off = rng.integers(0, tokens_per_chunk, size=len(lat))
        off = np.where(off % seq_len == 0, off + 1, off)  # position 0 is the start token: never fires
        # Two thirds of each latent's activations sit on its home token, planted into the text.
        home = rng.random(len(lat)) < 2 / 3
        flat = seqs.reshape(-1)
        flat[off[home]] = [home_token(int(x), vocab_size) for x in lat[home]]
        val = np.where(home, rng.uniform(2.0, 8.0, len(lat)), rng.uniform(0.1, 2.0, len(lat))).astype(np.float16)
        # One activation per (latent, token): drop duplicates.
        key = lat.astype(np.int64) * tokens_per_chunk + off
        _, first = np.unique(key, return_index=True)
        lat, off, val = lat[first], off[first], val[first]
        store.write_chunk(
            ChunkInfo(c, c * chunk_seqs, chunk_seqs, chunk_seqs * (seq_len - 1), len(val)),
            seqs,
            lat,
            off.astype(np.uint16),
            val,
            0.0,
        )
        all_lat.append(lat)
        all_pos.append(off + c * tokens_per_chunk)
        all_val.append(val.astype(np.float32))
    compact(store)  # a finished cache is compacted
    lat, pos, val = np.concatenate(all_lat), np.concatenate(all_pos), np.concatenate(all_val)
    n_tokens = store.n_tokens()
    db = store.db
    with db.conn:
        db["vocab"].insert_all(({"id": i, "token": t} for i, t in enumerate(vocab)), batch_size=5000)
        db["latents"].insert_all(_stats(lat, pos, val, n_latents, n_tokens, seq_len), batch_size=2000)
        db["directions"].insert_all(_directions(rng, n_latents, vocab_size), batch_size=2000)
        ids = np.flatnonzero(rng.random(n_latents) < explained)
        insert_results(db, rng, ids, vocab)
        _run(db, n_latents, len(ids))
        # A finished cache, as the cache stage marks one (window_len 32, as the statistics above count windows).
        store.set_stage(CACHE_STATS, store.stats_fingerprint(32), {"next_latent": n_latents}, True)
        store.set_stage(CACHE, store.chunk_fingerprint(), {"config": prov["config"]}, True)
        # The sort columns a finished statistics pass and score stage pack (store/columns.py).
        pack_stat_columns(db.conn, store.stats_fingerprint(32))
    pack_results(db.conn)
    store.close()
    return path


def insert_results(db: sqlite_utils.Database, rng: np.random.Generator, latents, vocab: list[str]) -> None:
    """Explanations naming each latent's home token, and every SCORERS score with its control, for `latents`, their
    outcomes on the file's own cached windows (so it must hold a finished cache); in the caller's transaction."""
    db["explanations"].insert_all(explanation_rows(rng, latents, vocab, len(vocab)), batch_size=2000)
    db["scores"].insert_all(score_rows(rng, latents, _window_queries(db)), batch_size=2000)
    record_scorers(db.conn, SCORER_METAS)


def _window_queries(db: sqlite_utils.Database) -> WindowQueries:
    """The file's windows as the engine reads them (store/queries.py), at the cache's window length."""
    store = ActivationStore(db, Path(""), readonly=True)  # on the caller's connection: its transaction's rows
    config = json.loads(store.provenance["config"] or "{}")
    return WindowQueries(store, int(config.get("window_len", 32)))


def pack_results(conn: sqlite3.Connection, explainer: str = "default") -> None:
    """Each scorer's sort column, as the score stage's end packs it (store/columns.py), by its primary metric."""
    pack_score_columns(conn, explainer, primary_metrics(conn, SCORERS))


def _stats(lat, pos, val, n_latents, n_tokens, seq_len):
    order = np.lexsort((pos, lat))
    lat, pos, val = lat[order], pos[order], val[order]
    bounds = np.searchsorted(lat, np.arange(n_latents + 1))
    for latent in range(n_latents):
        v = val[bounds[latent] : bounds[latent + 1]]
        p = pos[bounds[latent] : bounds[latent + 1]]
        if len(v) == 0:
            continue
        counts, edges = np.histogram(v, bins=10, range=(0, float(v.max())))
        yield {
            "latent": latent,
            "count": len(v),
            "frequency": len(v) / n_tokens,
            "max_act": float(v.max()),
            "mean_act": float(v.mean()),
            "n_windows": len(np.unique(p // 32)),
            "deciles": json.dumps(np.round(np.quantile(v, np.linspace(0.1, 0.9, 9)), 4).tolist()),
            "hist_edges": json.dumps(np.round(edges, 4).tolist()),
            "hist_counts": json.dumps(counts.tolist()),
        }


def _directions(rng, n_latents, vocab_size):
    for latent in range(n_latents):
        promoted = [[home_token(latent, vocab_size), 3.0]] + [
            [int(t), round(2.0 - 0.1 * i, 4)] for i, t in enumerate(rng.integers(1, vocab_size, 9))
        ]
        suppressed = [[int(t), round(-1.0 - 0.1 * i, 4)] for i, t in enumerate(rng.integers(1, vocab_size, 10))]
        others = rng.choice(n_latents - 1, size=min(10, n_latents - 1), replace=False)
        others = others + (others >= latent)
        cos = np.sort(rng.uniform(0.1, 0.9, len(others)))[::-1]
        yield {
            "latent": latent,
            "promoted": json.dumps(promoted),
            "suppressed": json.dumps(suppressed),
            "neighbours": json.dumps([[int(o), round(float(c), 4)] for o, c in zip(others, cos)]),
            "created_at": STAMP,
        }


def explanation_rows(rng, ids, vocab, vocab_size):
    topics = ["animals", "numbers", "code", "legal text", "names", "punctuation", "weather", "sport"]
    for latent in ids:
        word = vocab[home_token(int(latent), vocab_size)].strip() or "space"
        text = f'the token "{word}" in {topics[int(latent) % len(topics)]}'
        yield {
            "latent": int(latent),
            "explainer": "default",
            "text": text,
            "error": None,
            "raw": text,
            "model": "synthetic",
            "backend": "synthetic",
            "prompt_sha": "0",
            "seed": 0,
            "settings": "{}",
            "n_examples": 20,
            "extras": "{}",
            "n_calls": 1,
            "n_failed_calls": 0,
            "prompt_tokens": 900,
            "cached_tokens": 0,
            "output_tokens": 20,
            "llm_seconds": 0.5,
            "created_at": STAMP,
        }


def score_rows(rng: np.random.Generator, ids, queries: WindowQueries):
    for latent in ids:
        activating, non_activating = _scored_windows(rng, queries, int(latent))
        # The items each scorer scores, as (window, label, decile): detection and embedding the same excerpts,
        # fuzzing the activating ones, some shown with wrong marks (label 0, decile kept, as the engine stores it).
        wrong = set(rng.permutation(len(activating))[: int(round(FUZZ_INCORRECT * len(activating)))].tolist())
        items = {
            "detection": [(w, 1, d) for w, d in activating] + [(w, 0, 0) for w in non_activating],
            "fuzzing": [(w, int(i not in wrong), d) for i, (w, d) in enumerate(activating)],
        }
        items["embedding"] = items["detection"]
        for scorer in SCORERS:
            for control in (0, 1):
                centre = 0.5 if control else rng.uniform(0.45, 0.95)  # the share of right answers
                outcomes = _outcomes(rng, items[scorer], centre, similarity=scorer == "embedding")
                m = _metrics(outcomes)
                yield {
                    "latent": int(latent),
                    "explainer": "default",
                    "scorer": scorer,
                    "control": control,
                    "explanation_latent": int(latent),
                    "explanation": "",
                    **m,
                    "outcomes": json.dumps(outcomes),
                    "errors": "{}",
                    "n_calls": 2,
                    "n_failed_calls": 0,
                    "prompt_tokens": 2000,
                    "cached_tokens": 1500,
                    "output_tokens": 40,
                    "llm_seconds": 1.0,
                    "model": "synthetic",
                    "backend": "synthetic",
                    "prompt_sha": "0",
                    "seed": 0,
                    "settings": "{}",
                    "created_at": STAMP,
                }


def _scored_windows(rng, queries: WindowQueries, latent: int) -> tuple[list[tuple[int, int]], list[int]]:
    """One random activating window per decile bin (store/queries.py's bins, weakest first) as (window, decile),
    and N_NON_ACTIVATING windows where the latent never fires."""
    aw = queries.activating(latent)
    activating = [(int(rng.choice(ids)), d + 1) for d, ids in enumerate(queries.decile_bins(aw, N_DECILES)) if len(ids)]
    non = queries.non_activating(aw, N_NON_ACTIVATING, rng)
    return activating, [int(w) for w in non]


def _outcomes(rng, items, right: float, *, similarity: bool) -> list[dict]:
    """The outcome of each (window, label, decile): an answer right with probability `right` and a probability
    leaning the answer's way; or (`similarity`: the embedding scorer) no answer, only a similarity that is higher on
    label 1 the better the explanation."""
    out = []
    for window, label, decile in items:
        o = {"label": label, "decile": decile, "prediction": None, "probability": None, "failed": False}
        if similarity:
            o["probability"] = round(float(rng.normal(0.2 + 0.6 * (right - 0.5) * label, 0.1)), 4)
        else:
            o["prediction"] = label if rng.random() < right else 1 - label
            o["probability"] = round(float(rng.uniform(0.5, 1.0) if o["prediction"] else rng.uniform(0.0, 0.5)), 3)
        out.append({**o, "window": window})
    return out


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _metrics(outcomes: list[dict]) -> dict:
    """A score row's metric columns from its outcomes, as engine/interpretation/metrics.py
    `classification_metrics` computes them (the store cannot import the engine)."""
    scored = [o for o in outcomes if not o["failed"] and o["prediction"] is not None]
    count = {(y, p): sum(o["label"] == y and o["prediction"] == p for o in scored) for y in (0, 1) for p in (0, 1)}
    tp, fp, tn, fn = count[1, 1], count[0, 1], count[0, 0], count[1, 0]
    precision, recall, specificity = _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    ranked = [
        o for o in outcomes if not o["failed"] and o["probability"] is not None and math.isfinite(o["probability"])
    ]
    pos = [o["probability"] for o in ranked if o["label"] == 1]
    neg = [o["probability"] for o in ranked if o["label"] == 0]
    # AUROC as the Mann-Whitney statistic (ties count half): what sklearn's roc_auc_score gives, without its import.
    auroc = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg)) if pos and neg else None
    per_decile = []
    for d in range(1, N_DECILES + 1):
        hits = [o["prediction"] for o in scored if o["label"] == 1 and o["decile"] == d]
        per_decile.append(sum(hits) / len(hits) if hits else None)
    return {
        "n": len(outcomes),
        "n_scored": len(scored),
        "n_failed": sum(o["failed"] for o in outcomes),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": _ratio(tp + tn, len(scored)),
        "balanced_accuracy": (recall + specificity) / 2 if recall is not None and specificity is not None else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": float(auroc) if auroc is not None else None,
        "n_auroc": len(ranked),
        "recall_per_decile": json.dumps(per_decile),
    }


def _run(db: sqlite_utils.Database, n_latents: int, n_explained: int) -> None:
    db["runs"].insert(
        {
            "id": 1,
            "started_at": STAMP,
            "updated_at": STAMP,
            "ended_at": STAMP,
            "status": "done",
            "message": "done",
            "host": "synthetic",
            "pid": 1,
            "argv": "[]",
            "selection": "all",
            "n_latents": n_latents,
            "config": "{}",
        }
    )
    for stage, unit, total in (("explain", "latents", n_latents), ("score", "latents", n_explained)):
        db["progress"].insert(
            {
                "run": 1,
                "stage": stage,
                "unit": unit,
                "total": total,
                "done": total,
                "skipped": 0,
                "failed": n_latents - n_explained if stage == "explain" else 0,
                "prompts": total,
                "prompt_tokens": 900 * total,
                "cached_tokens": 0,
                "output_tokens": 20 * total,
                "backend_s": 0.5 * total,
                "wall_s": 0.6 * total,
                "started_at": STAMP,
                "updated_at": STAMP,
                "ended_at": STAMP,
            }
        )
        db["events"].insert(
            {"at": STAMP, "stage": stage, "kind": "end", "message": f"{stage}: {total} latents", "data": "{}", "run": 1}
        )
