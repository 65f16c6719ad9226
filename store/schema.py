"""The one place that owns the database schema and its version.

A database records its schema version in `meta`. A new file is made from the current schema, written out once in
store/schema_current.py; opening one made by a newer autointerp is refused, an older one is migrated forward by the
additive steps in `MIGRATIONS` (frozen history: a released step never changes). A change to the schema is a new
step here and the same change in schema_current.py; tests/test_store.py checks that the two paths agree.
"""

from __future__ import annotations

import numpy as np
import sqlite_utils

from .codec import CODEC, LEGACY_CODEC, legacy_decode_offsets, legacy_decode_values
from .errors import UserError
from .schema_current import NEW_FILE_PRAGMAS, SCHEMA, statements
from .scorer_meta import backfill_before_schema_12
from .stages import CACHE_STATS

SCHEMA_VERSION = 14


class SchemaError(UserError):
    """The file is not an autointerp database this version can use."""


def read_version(db: sqlite_utils.Database) -> int:
    """The schema version a file records; 0 for a file with no tables at all (a new database).

    The one place that tells an autointerp database from any other file: raises SchemaError, in one line,
    for a foreign SQLite file, a `meta` table without a version, or a version that is not a number."""
    tables = set(db.table_names())
    if not tables:
        return 0
    if "meta" not in tables:
        raise SchemaError("not an autointerp database (it has tables but no 'meta' table)")
    row = db.execute("select value from meta where key = 'schema_version'").fetchone()
    if row is None:
        raise SchemaError("not an autointerp database (its 'meta' table records no schema_version)")
    try:
        version = int(row[0])
    except (TypeError, ValueError):
        raise SchemaError(f"not an autointerp database (schema_version {row[0]!r} is not a number)") from None
    if version < 1:
        raise SchemaError(f"not an autointerp database (schema_version {version})")
    return version


def check_version(version: int, path, *, readonly: bool) -> None:
    """Refuse a version this autointerp cannot use as asked: newer ones always, older ones when reading
    only (migrating is a write; `autointerp upgrade` does it)."""
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {version} is newer than this autointerp understands ({SCHEMA_VERSION}); "
            "upgrade autointerp"
        )
    if readonly and version < SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {version} is older than this autointerp's ({SCHEMA_VERSION}); "
            f"run `autointerp upgrade {path}` (additive: every row is kept)"
        )


def _create_v1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db.execute("insert into meta (key, value) values ('codec', ?)", [LEGACY_CODEC])  # v7 moves to CODEC
    # One activation cache per database: its identity and provenance, a single row (id = 1).
    db["provenance"].create(
        {
            "id": int,
            "created_at": str,
            "model": str,
            "model_hash": str,
            "hook": str,
            "coder_kind": str,
            "coder_path": str,
            "coder_hash": str,
            "num_latents": int,
            "d_in": int,
            "corpus": str,
            "corpus_hash": str,
            "seq_len": int,
            "n_tokens_target": int,
            "chunk_seqs": int,
            "token_dtype": str,
            "vocab_size": int,
            "bos_token_id": int,
            "seed": int,
            "versions": str,  # JSON: package versions of the writer
            "config": str,  # JSON: the full cache config
        },
        pk="id",
    )
    # Token ids of each cached sequence, stored once, packed (uint16 when the vocabulary fits).
    db["sequences"].create({"id": int, "chunk": int, "tokens": bytes}, pk="id")
    # A chunk row is written in the same transaction as its activations: present == committed.
    db["chunks"].create(
        {
            "id": int,
            "first_seq": int,
            "n_seqs": int,
            "n_tokens": int,
            "nnz": int,
            "seconds": float,
            "committed_at": str,
        },
        pk="id",
    )
    # Latent-major activations: one row per (latent, chunk) holding packed arrays, never one
    # row per activation. `offsets` are the uint16 token offsets from the chunk's first token,
    # `acts` the float16 values, sorted by offset; both packed by store/codec.py.
    db["activations"].create(
        {"latent": int, "chunk": int, "offsets": bytes, "acts": bytes},
        not_null={"latent", "chunk", "offsets", "acts"},
    )
    db["activations"].create_index(["latent", "chunk"], unique=True)
    db["latents"].create(
        {
            "latent": int,
            "count": int,
            "frequency": float,
            "max_act": float,
            "mean_act": float,
            "n_windows": int,
            "deciles": str,  # JSON: activation values at the 10th..90th percentiles
            "hist_edges": str,  # JSON
            "hist_counts": str,  # JSON
        },
        pk="latent",
    )
    # Notable happenings and throttled progress of any stage, for monitors in other processes.
    db["events"].create(
        {"id": int, "at": str, "stage": str, "kind": str, "message": str, "data": str},
        pk="id",
    )


_LLM_ACCOUNTING = {
    # Summed over the LLM calls behind a row (explanation or score).
    "n_calls": int,
    "n_failed_calls": int,
    "prompt_tokens": int,
    "cached_tokens": int,  # prompt tokens the backend served from its prefix cache (-1: backend does not say)
    "output_tokens": int,
    "llm_seconds": float,  # time inside the backend
}


def _create_v2(db: sqlite_utils.Database) -> None:
    """Explain and score: which windows each latent showed whom, explanations, scores."""
    # One row per latent whose examples were drawn: the seed and settings that reproduce the draw.
    db["sample_sets"].create(
        {
            "latent": int,
            "seed": int,
            "n_windows": int,  # activating windows the latent has
            "config": str,  # JSON: the sampling settings used
            "skipped": str,  # why the latent has no examples (too few windows), else null
            "created_at": str,
        },
        pk="latent",
    )
    # Every drawn window with its role. The primary key (latent, window) makes the explainer's and
    # the scorers' examples disjoint in the file itself, not just by construction.
    db["samples"].create(
        {
            "latent": int,
            "window": int,  # global window index (see store/queries.py)
            "role": str,  # explain | activating | non_activating
            "decile": int,  # 1..n for activating windows (1 = weakest), 0 otherwise
            "source": str,  # top | random | stratified | neighbours | coactivation | embedding
            "idx": int,  # order within the role
        },
        pk=("latent", "window"),
    )
    db["explanations"].create(
        {
            "latent": int,
            "explainer": str,
            "text": str,  # null when every attempt failed
            "error": str,  # why it failed, else null
            "raw": str,  # the model's answer as returned
            "model": str,
            "backend": str,
            "prompt_sha": str,  # hash of the template files used
            "seed": int,  # the sampling seed (see sample_sets)
            "settings": str,  # JSON: LLM seed, temperature and the other knobs the answer depended on
            "n_examples": int,
            "extras": str,  # JSON: what the explainer showed besides examples (e.g. logit-lens tokens)
            **_LLM_ACCOUNTING,
            "created_at": str,
        },
        pk=("latent", "explainer"),
    )
    db["scores"].create(
        {
            "latent": int,
            "explainer": str,
            "scorer": str,
            "control": int,  # 1: the explanation scored is another latent's (the random-explanation control)
            "explanation_latent": int,  # whose explanation was scored
            "explanation": str,
            "n": int,
            "n_scored": int,
            "n_failed": int,  # examples whose call failed or answer did not parse: excluded, not wrong
            "tp": int,
            "fp": int,
            "tn": int,
            "fn": int,
            "accuracy": float,
            "balanced_accuracy": float,
            "precision": float,
            "recall": float,
            "f1": float,
            "auroc": float,
            "n_auroc": int,
            "recall_per_decile": str,  # JSON list, null entries where a decile had no example
            "outcomes": str,  # JSON: per example window, label, decile, prediction, probability, failed
            "errors": str,  # JSON: distinct failure messages with counts
            **_LLM_ACCOUNTING,
            "model": str,
            "backend": str,
            "prompt_sha": str,
            "seed": int,
            "settings": str,  # JSON: LLM seed, temperature, excerpts per prompt, profile, ...
            "created_at": str,
        },
        pk=("latent", "explainer", "scorer", "control"),
    )


def _create_v3(db: sqlite_utils.Database) -> None:
    """Batch runs: who is (or was) working on this file, and each stage's progress, for monitors."""
    db["runs"].create(
        {
            "id": int,
            "started_at": str,
            "updated_at": str,  # heartbeat: rewritten with every progress write
            "ended_at": str,
            "status": str,  # running | done | stopped (clean stop: outage, full disk, Ctrl-C) | failed
            "message": str,  # why it stopped, or the closing summary
            "host": str,
            "pid": int,
            "argv": str,  # JSON
            "selection": str,  # the latent selection as configured
            "n_latents": int,
            "config": str,  # JSON: the whole config the run used
        },
        pk="id",
    )
    # One row per (run, stage), rewritten at most every few seconds while the stage runs.
    db["progress"].create(
        {
            "run": int,
            "stage": str,  # cache | explain | score
            "unit": str,  # tokens (cache) | latents
            "total": int,
            "done": int,  # units finished, including those found already done
            "skipped": int,
            "failed": int,  # failed explanations / failed examples
            "prompts": int,
            "prompt_tokens": int,
            "cached_tokens": int,
            "output_tokens": int,
            "backend_s": float,
            "wall_s": float,
            "started_at": str,
            "updated_at": str,
            "ended_at": str,
        },
        pk=("run", "stage"),
    )
    db["events"].add_column("run", int)


def _create_v4(db: sqlite_utils.Database) -> None:
    """Browsing and audits: token text, what each decoder direction says, full-text search, human ratings."""
    # The subject model's vocabulary as text (tokenizer.decode of each id alone), so readers such as
    # the TUI show examples without loading a tokenizer. Filled by `autointerp annotate` / the cache stage.
    db["vocab"].create({"id": int, "token": str}, pk="id")
    # Per latent: tokens its decoder direction promotes / suppresses through the unembedding (logit lens)
    # and its nearest latents by decoder cosine. JSON lists of [token id, value] / [latent, cosine].
    db["directions"].create(
        {"latent": int, "promoted": str, "suppressed": str, "neighbours": str, "created_at": str}, pk="latent"
    )
    # One researcher's verdict on one explanation (audit mode). rating: correct | partly | wrong | null.
    db["audits"].create(
        {
            "latent": int,
            "explainer": str,
            "rating": str,
            "explanation": str,  # the researcher's own explanation, if they wrote one
            "note": str,
            "flagged": int,
            "explanation_seen": str,  # the explanation text as it was when rated
            "created_at": str,
            "updated_at": str,
        },
        pk=("latent", "explainer"),
    )
    # FTS5 over explanation text, kept in step by triggers (sqlite-utils' enable_fts runs executescript,
    # which would commit the migration's transaction half way, so the statements are spelled out here).
    db.execute("create virtual table explanations_fts using fts5(text, content='explanations', content_rowid='rowid')")
    db.execute(
        "create trigger explanations_ai after insert on explanations begin"
        " insert into explanations_fts(rowid, text) values (new.rowid, new.text); end"
    )
    db.execute(
        "create trigger explanations_ad after delete on explanations begin"
        " insert into explanations_fts(explanations_fts, rowid, text) values ('delete', old.rowid, old.text); end"
    )
    db.execute(
        "create trigger explanations_au after update on explanations begin"
        " insert into explanations_fts(explanations_fts, rowid, text) values ('delete', old.rowid, old.text);"
        " insert into explanations_fts(rowid, text) values (new.rowid, new.text); end"
    )
    db.execute("insert into explanations_fts(explanations_fts) values ('rebuild')")
    # Sorting the latent browser by a scorer's metric reads scores by (scorer, control).
    db.execute("create index if not exists scores_by_scorer on scores (explainer, scorer, control, latent)")


def _create_v5(db: sqlite_utils.Database) -> None:
    """Scorers whose result is not only a classification: simulation's correlation, per-scorer details."""
    # Pearson correlation of simulated and true activations pooled over all tokens (simulation scorer).
    db["scores"].add_column("correlation", float)
    # JSON, scorer-specific: intervention's strength and metrics per KL target, simulation's per-example
    # mean correlation, generation's texts, surprisal's base model, ...
    db["scores"].add_column("details", str)


def _create_v6(db: sqlite_utils.Database) -> None:
    """Explicit completion of every stage, and which failed examples a rerun may fix."""
    # One row per stage of work over the whole file ("cache.stats", "cache"). `fingerprint` says what the
    # stage's output was computed from (the committed chunks); `detail` (JSON) holds resume state while it
    # runs (done_at null) and what it was done with once it ends. A stage is complete only when its row has
    # a done_at and a fingerprint matching the file now: a row count can never be mistaken for completion.
    db["stages"].create({"name": str, "fingerprint": str, "detail": str, "done_at": str}, pk="name")
    # Examples whose failure a rerun may fix (a call error or an unparseable answer), as opposed to failures
    # no rerun changes (a steering target out of reach). A row with n_retry > 0 is scored again on rerun.
    db["scores"].add_column("n_retry", int)
    db.execute("update scores set n_retry = n_failed")  # older rows: every failure is worth another try
    _backfill_stages(db)


def chunk_fingerprint(db: sqlite_utils.Database) -> str:
    """What a stage computed over the cache was computed from: the committed chunks, tokens and activations."""
    n, tokens, nnz = db.execute(
        "select count(*), coalesce(sum(n_tokens), 0), coalesce(sum(nnz), 0) from chunks"
    ).fetchone()
    return f"chunks={n};tokens={tokens};nnz={nnz}"


def _backfill_stages(db: sqlite_utils.Database) -> None:
    for row in implied_stages(db):
        db.execute("insert into stages (name, fingerprint, detail, done_at) values (?, ?, ?, ?)", row)


def implied_stages(db: sqlite_utils.Database) -> list[tuple[str, str, str, str]]:
    """The stage rows a cache made before they existed earns: its statistics count as complete only when every
    latent has a row (a run killed inside the statistics pass left fewer, and they are recomputed); the cache
    stage only when its vocabulary and directions are complete too. Read-only."""
    import json

    prov = db.execute("select num_latents, config, vocab_size, coder_kind from provenance where id = 1").fetchone()
    if prov is None:
        return []
    num_latents, config, vocab_size, coder_kind = prov
    if db.execute("select count(*) from latents").fetchone()[0] != num_latents:
        return []
    cfg = json.loads(config or "{}")
    fp = f"{chunk_fingerprint(db)};window_len={int(cfg.get('window_len', 32))}"
    rows = [(CACHE_STATS, fp, json.dumps({"next_latent": num_latents}), "migrated")]
    tables = set(db.table_names())
    n_vocab = db.execute("select count(*) from vocab").fetchone()[0] if "vocab" in tables else 0
    n_dirs = db.execute("select count(*) from directions").fetchone()[0] if "directions" in tables else 0
    if n_vocab >= vocab_size and (coder_kind == "neurons" or n_dirs >= num_latents):
        rows.append(("cache", chunk_fingerprint(db), json.dumps({"config": cfg}), "migrated"))
    return rows


def _create_v7(db: sqlite_utils.Database) -> None:
    """Activations in two tables whose row counts do not grow as latents x chunks (see store/layout.py)."""
    # While caching: one row per (band of 4,096 latents, committed chunk), n activations packed (store/codec.py).
    db["staged"].create({"band": int, "chunk": int, "n": int, "data": bytes}, pk=("band", "chunk"))
    # After compaction: one latent's activations, SEGMENT at most per row, global positions ascending by seg.
    # The small columns come first, so statistics read counts and maxima without touching the packed data.
    db["segments"].create(
        {
            "latent": int,
            "seg": int,
            "n": int,
            "max_act": float,
            "first_pos": int,  # the first activation's global position; `data` holds deltas from it
            "width": int,  # bytes per position delta (2, 4 or 8)
            "packed": int,  # 1: data is zstd-compressed; 0: stored raw (tiny segments)
            "data": bytes,
        },
        pk=("latent", "seg"),
    )
    _migrate_activations(db)
    db.execute("drop table activations")
    db.execute("insert or replace into meta (key, value) values ('codec', ?)", [CODEC])


def _migrate_activations(db: sqlite_utils.Database) -> None:
    """Rewrite schema-6 (latent, chunk) rows as segments: one ordered scan, one latent held at a time. The
    positions and values are the same numbers, so every later result is unchanged."""
    from .layout import INSERT_SEGMENT, segment_record, segment_rows

    prov = db.execute("select seq_len from provenance where id = 1").fetchone()
    if prov is None:
        return
    seq_len = prov[0]
    first_token = {c: f * seq_len for c, f in db.execute("select id, first_seq from chunks")}
    current: int | None = None
    positions: list[np.ndarray] = []
    values: list[np.ndarray] = []

    def flush() -> None:
        if current is not None:
            pos, val = np.concatenate(positions), np.concatenate(values)
            rows = [segment_record(*r) for r in segment_rows(current, 0, pos, val)]
            db.conn.executemany(INSERT_SEGMENT, rows)

    for latent, chunk, off_blob, act_blob in db.execute(
        "select latent, chunk, offsets, acts from activations order by latent, chunk"
    ):
        if latent != current:
            flush()
            current, positions, values = latent, [], []
        positions.append(legacy_decode_offsets(off_blob) + first_token[chunk])
        values.append(legacy_decode_values(act_blob))
    flush()


def _create_v8(db: sqlite_utils.Database) -> None:
    """Where a resumed cache picks the corpus up, which forward made the activations, and the latent filters."""
    # After a chunk commits: how many raw documents the corpus reader had consumed, and the tokens it had read but
    # not yet packed into a sequence (uint32). A resumed cache starts there instead of tokenising everything again.
    # Null for chunks written before schema 8 (a resume then re-reads the corpus from the start).
    db["chunks"].add_column("next_doc", int)
    db["chunks"].add_column("carry", bytes)
    # Which forward computed the activations: "plain" (a hook on the HF module, stopping at the layer) or
    # "bridge" (TransformerLens's own forward). The two differ in the last bits of float32, so a cache resumes
    # with the forward that began it. Caches made before schema 8 were all made through the bridge.
    db["provenance"].add_column("forward", str)
    db.execute("update provenance set forward = 'bridge'")
    # Per-latent sort columns packed one blob each (store/columns.py): `version` is what a column was packed from
    # (the scores-written counter, or the statistics' fingerprint); a reader uses it only while that still holds.
    db["columns"].create({"name": str, "version": str, "n": int, "data": bytes}, pk="name")
    # Per latent, the heuristics that explain it before any LLM is paid (store/filters.py): positional MI, and the
    # distinct tokens among its top activations, verified through the subject model for the few-token candidates.
    db["latent_filters"].create(
        {
            "latent": int,
            "positional_mi": float,  # chance-adjusted normalised MI between firing and position, in [0, 1]
            "positional": int,  # 1: positional_mi at or above the threshold
            "top_tokens": int,  # distinct tokens among the top activations (max_tokens + 1: more)
            "unigram_candidate": int,
            "unigram_tokens": str,  # JSON [[token id, count], ...] for candidates, else null
            "unigram_fire": float,  # share of scrambled sentences in which it still fired (null: not verified)
            "unigram": int,  # 1: a verified unigram latent; null: a candidate not verified yet
        },
        pk="latent",
    )


def _create_v9(db: sqlite_utils.Database) -> None:
    """Several raters per explanation, best-of-N explanation candidates, and latents matched across two databases."""
    # Audits keyed by rater as well: several researchers rate the same explanation, and their agreement is reported.
    # SQLite cannot change a primary key in place, so the table is rebuilt; ratings made before schema 9 have no
    # rater on record and keep the name "unknown".
    db["audits_v9"].create(
        {
            "latent": int,
            "explainer": str,
            "rater": str,
            "rating": str,
            "explanation": str,
            "note": str,
            "flagged": int,
            "explanation_seen": str,
            "created_at": str,
            "updated_at": str,
        },
        pk=("latent", "explainer", "rater"),
        not_null={"rater"},
    )
    db.execute(
        "insert into audits_v9 (latent, explainer, rater, rating, explanation, note, flagged, explanation_seen,"
        " created_at, updated_at) select latent, explainer, 'unknown', rating, explanation, note, flagged,"
        " explanation_seen, created_at, updated_at from audits"
    )
    db.execute("drop table audits")
    db.execute("alter table audits_v9 rename to audits")
    # Best-of-N: every explanation drawn for a latent, with the cheap score it got on the explainer's own examples
    # (never the held-out ones). The chosen one is also the latent's row in `explanations`.
    db["explanation_candidates"].create(
        {
            "latent": int,
            "explainer": str,
            "idx": int,  # 0: the first draw (what a single-candidate run would have kept)
            "text": str,  # null when every attempt failed
            "error": str,
            "raw": str,
            "llm_seed": int,
            "temperature": float,
            "scorer": str,  # the cheap scorer used to pick
            "score": float,  # its metric on the explainer's examples; null: not scorable (failed or all calls failed)
            "n_scored": int,
            "n_failed": int,
            "chosen": int,  # 1: kept as the latent's explanation
            # JSON {scorer: {value (its primary metric), n_scored, n_failed, LLM accounting}} of the FIRST candidate
            # on the held-out examples, scored beside the chosen one when it was not chosen itself, so the report can
            # say what best-of-N gained
            "heldout": str,
            **_LLM_ACCOUNTING,
            "created_at": str,
        },
        pk=("latent", "explainer", "idx"),
    )
    # `autointerp similarity A.db B.db`: one row per comparison of this database's latents with another's, and per
    # latent its best match by explanation embedding and its partner in the one-to-one matching.
    db["similarity_runs"].create(
        {
            "id": int,
            "other_path": str,
            "other_fingerprint": str,  # the other file's provenance identity (model, hook, coder hash)
            "explainer": str,
            "other_explainer": str,
            "settings": str,  # JSON: embedding model, block size, seed
            "summary": str,  # JSON: distribution of best-match similarity, matching size and mean
            "created_at": str,
        },
        pk="id",
    )
    db["similarity"].create(
        {
            "run": int,
            "latent": int,
            "best": int,  # the other database's latent with the most similar explanation
            "best_similarity": float,
            "match": int,  # partner in the one-to-one (Hungarian) matching, null if unmatched
            "match_similarity": float,
            "decoder_cosine": float,  # cosine of the matched pair's decoder directions (null: not the same space)
        },
        pk=("run", "latent"),
    )


def _create_v10(db: sqlite_utils.Database) -> None:
    """The workers of a scaled-out batch (`autointerp batch --ray`), for the monitor's cluster view."""
    # One row per (run, worker), rewritten by the run's RunLog whenever the worker changes state or reports progress.
    db["workers"].create(
        {
            "run": int,  # runs.id
            "worker": str,  # a name such as "cache-0" or "llm-1", or an LLM replica's URL
            "role": str,  # cache | llm
            "node": str,  # the host or IP it runs on
            "pid": int,
            "state": str,  # starting | busy | idle | dead | restarting | done
            "unit": str,  # what it is on now ("chunk 12", "latent 4312"), null when on nothing
            "done": int,  # units it finished
            "rate": float,  # its throughput, in rate_unit ("tok/s", "latents/min")
            "rate_unit": str,
            "rerun": int,  # units taken from it and run again elsewhere after it died
            "error": str,  # why it died
            "updated_at": str,
        },
        pk=("run", "worker"),
        not_null={"run", "worker", "role", "state", "done", "rerun", "updated_at"},
        defaults={"done": 0, "rerun": 0},
    )


def _create_v11(db: sqlite_utils.Database) -> None:
    """How a cache's forward was chosen, per model family (the Gemma-2/3 and OLMo-2 fix of the plain path)."""
    # config.model_type of the subject model (gemma2, gpt2, ...); null for caches made before schema 11 until
    # `autointerp upgrade` reads it from the model's config.
    db["provenance"].add_column("model_type", str)
    # One line: why the recorded forward serves the hook (engine/activations/model.py `forward_choice`).
    db["provenance"].add_column("forward_reason", str)
    # The version of the plain path's sites the cache was made with; null: before the post-norm fix.
    db["provenance"].add_column("forward_sites", str)
    # How position 0 of every sequence was chosen ("bos: <s>", "eos (no BOS token): ...").
    db["provenance"].add_column("start_rule", str)
    # Set by `autointerp upgrade` when the activations come from a site the plain path read wrongly before the fix:
    # the one line every reader (info, batch, the TUI) shows. Null: nothing known to be wrong.
    db["provenance"].add_column("forward_stale", str)


def _create_v12(db: sqlite_utils.Database) -> None:
    """What each scorer is (primary metric, its fallback, outcome, evidence), recorded when it scores
    (store/scorer_meta.py); a file that already holds scores gets what its scorers declared then."""
    db.execute(
        "create table scorers (name text primary key, primary_metric text not null, fallback_metric text,"
        " outcome text not null, evidence text not null)"
    )
    backfill_before_schema_12(db.conn)


def _create_v13(db: sqlite_utils.Database) -> None:
    """Error bars on every score (scores.ci), retests beside the originals (retest_*), probed sentences kept as audit
    evidence (audit_probes). Rows scored before this step get their intervals from `autointerp upgrade`."""
    db["scores"].add_column("ci", str)
    for statement in SCHEMA_13_TABLES:
        db.execute(statement)


# Frozen copies of the tables schema 13 added (their commented text is in store/schema_current.py).
SCHEMA_13_TABLES = (
    """
CREATE TABLE audit_probes (
    latent INTEGER,
    explainer TEXT,
    rater TEXT NOT NULL,
    text TEXT NOT NULL,
    tokens TEXT,
    activations TEXT,
    max_activation REAL,
    created_at TEXT,
    PRIMARY KEY (latent, explainer, rater, text)
);
""",
    """
CREATE TABLE retest_draws (
    draw INTEGER PRIMARY KEY,
    seed INTEGER,
    explainer TEXT,
    scorers TEXT,
    config TEXT,
    created_at TEXT,
    done_at TEXT
);
""",
    """
CREATE TABLE retest_samples (
    draw INTEGER,
    latent INTEGER,
    window INTEGER,
    role TEXT,
    decile INTEGER,
    source TEXT,
    idx INTEGER,
    PRIMARY KEY (draw, latent, window)
);
""",
    """
CREATE TABLE retest_explanations (
    draw INTEGER,
    latent INTEGER,
    explainer TEXT,
    text TEXT,
    error TEXT,
    raw TEXT,
    model TEXT,
    backend TEXT,
    prompt_sha TEXT,
    seed INTEGER,
    settings TEXT,
    n_examples INTEGER,
    extras TEXT,
    n_calls INTEGER,
    n_failed_calls INTEGER,
    prompt_tokens INTEGER,
    cached_tokens INTEGER,
    output_tokens INTEGER,
    llm_seconds REAL,
    created_at TEXT,
    PRIMARY KEY (draw, latent, explainer)
);
""",
    """
CREATE TABLE retest_scores (
    draw INTEGER,
    latent INTEGER,
    explainer TEXT,
    scorer TEXT,
    control INTEGER,
    explanation_latent INTEGER,
    explanation TEXT,
    n INTEGER,
    n_scored INTEGER,
    n_failed INTEGER,
    tp INTEGER,
    fp INTEGER,
    tn INTEGER,
    fn INTEGER,
    accuracy REAL,
    balanced_accuracy REAL,
    precision REAL,
    recall REAL,
    f1 REAL,
    auroc REAL,
    n_auroc INTEGER,
    recall_per_decile TEXT,
    outcomes TEXT,
    errors TEXT,
    n_calls INTEGER,
    n_failed_calls INTEGER,
    prompt_tokens INTEGER,
    cached_tokens INTEGER,
    output_tokens INTEGER,
    llm_seconds REAL,
    model TEXT,
    backend TEXT,
    prompt_sha TEXT,
    seed INTEGER,
    settings TEXT,
    created_at TEXT,
    correlation REAL,
    details TEXT,
    n_retry INTEGER,
    ci TEXT,
    PRIMARY KEY (draw, latent, explainer, scorer, control)
);
""",
)


def _create_v14(db: sqlite_utils.Database) -> None:
    """The co-activation sketches, stored once per band of latents (store/sketches.py). A file compacted before
    this step has none: its first reader builds and stores them."""
    for statement in SCHEMA_14_TABLES:
        db.execute(statement)


# Frozen copy of the table schema 14 added (its commented text is in store/schema_current.py).
SCHEMA_14_TABLES = (
    """
CREATE TABLE coactivation_sketches (
    band INTEGER PRIMARY KEY,
    fingerprint TEXT,
    latents INTEGER,
    data BLOB
)
""",
)

# MIGRATIONS[v] brings a database at version v-1 to version v. Only older files take these steps; a new one is made
# from store/schema_current.py.
MIGRATIONS = {
    1: _create_v1,
    2: _create_v2,
    3: _create_v3,
    4: _create_v4,
    5: _create_v5,
    6: _create_v6,
    7: _create_v7,
    8: _create_v8,
    9: _create_v9,
    10: _create_v10,
    11: _create_v11,
    12: _create_v12,
    13: _create_v13,
    14: _create_v14,
}


def check_codec(db: sqlite_utils.Database, version: int) -> None:
    """Refuse a file whose packed arrays this autointerp cannot read (schema 6 and older: the legacy codec, which
    the migration reads once)."""
    expected = CODEC if version >= 7 else LEGACY_CODEC
    row = db.execute("select value from meta where key = 'codec'").fetchone()
    if row is None or row[0] != expected:
        found = row[0] if row else "none recorded"
        raise SchemaError(f"database packs activations with codec {found!r}; this autointerp reads {expected!r}")


def _create_current(db: sqlite_utils.Database) -> None:
    """A new file's tables, indexes, triggers and meta rows, straight from the current schema."""
    values = {"codec": CODEC, "schema_version": str(SCHEMA_VERSION)}
    for statement in statements(SCHEMA):
        db.execute(statement, values)


def ensure_schema(db: sqlite_utils.Database) -> int:
    """Create or migrate the schema; returns the version. Raises SchemaError, writing nothing."""
    version = read_version(db)
    check_version(version, "", readonly=False)
    if version:
        check_codec(db, version)  # before anything is migrated: a foreign codec is refused, nothing written
    if version == SCHEMA_VERSION:
        return version
    if version == 0:
        for statement in statements(NEW_FILE_PRAGMAS):  # outside the transaction: SQLite ignores them inside
            db.execute(statement)
    # One explicit transaction: a failed creation or migration leaves the file as it was.
    db.execute("begin immediate")
    try:
        if version == 0:
            _create_current(db)
        else:
            for v in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[v](db)
            db.execute(
                "insert or replace into meta (key, value) values ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )
        db.execute("commit")
    except BaseException:
        db.execute("rollback")
        raise
    return SCHEMA_VERSION
