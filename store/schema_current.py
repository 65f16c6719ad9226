"""The current schema written out once: what a database made by this autointerp holds, and how a new one is made.

`ensure_schema` (store/schema.py) creates a new file from these two scripts; an older file reaches the same schema
through `MIGRATIONS`, the frozen history beside it. A change to the schema is both a new migration and the same change
here; tests/test_store.py checks that a file made fresh and one migrated from schema 1 hold the same tables, columns,
keys, indexes, triggers and meta rows. Column order follows the migrations (a column a migration added comes last), so
the two agree column for column.
"""

from __future__ import annotations

import sqlite3

# Run before the transaction that creates the tables: SQLite takes them only on a file with no tables, outside a
# transaction.
NEW_FILE_PRAGMAS = """
-- Compaction deletes staged rows as it writes segments: incremental auto-vacuum lets it hand the freed pages back to
-- the file system at its end.
PRAGMA auto_vacuum = INCREMENTAL;
"""

# Bound when run: :codec (store/codec.py CODEC) and :schema_version (store/schema.py SCHEMA_VERSION).
SCHEMA = """
-- Settings of the file as key/value pairs: schema_version, codec (how packed arrays are encoded), and later
-- scores_written (a counter bumped with every write of score rows, see store/columns.py).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT
);

---- The activation cache ------------------------------------------------------------------------------------------

-- One activation cache per database: its identity and provenance, a single row (id = 1).
CREATE TABLE provenance (
    id INTEGER PRIMARY KEY,
    created_at TEXT,
    model TEXT,
    model_hash TEXT,
    hook TEXT,
    coder_kind TEXT,
    coder_path TEXT,
    coder_hash TEXT,
    num_latents INTEGER,
    d_in INTEGER,
    corpus TEXT,
    corpus_hash TEXT,
    seq_len INTEGER,
    n_tokens_target INTEGER,
    chunk_seqs INTEGER,  -- sequences per chunk
    token_dtype TEXT,  -- numpy dtype of sequences.tokens (uint16 when the vocabulary fits)
    vocab_size INTEGER,
    bos_token_id INTEGER,
    seed INTEGER,
    versions TEXT,  -- JSON: package versions of the writer
    config TEXT,  -- JSON: the full cache config
    -- Which forward computed the activations: "plain" (a hook on the HF module, stopping at the layer) or "bridge"
    -- (TransformerLens's own forward). The two differ in the last bits of float32, so a cache resumes with the
    -- forward that began it.
    forward TEXT,
    model_type TEXT,  -- config.model_type of the subject model (gemma2, gpt2, ...)
    forward_reason TEXT,  -- one line: why the recorded forward serves the hook
    forward_sites TEXT,  -- version of the plain path's sites the cache was made with; null: before the post-norm fix
    start_rule TEXT,  -- how position 0 of every sequence was chosen ("bos: <s>", "eos (no BOS token): ...")
    -- Set by `autointerp upgrade` when the activations come from a site the plain path read wrongly before the fix:
    -- the one line every reader shows. Null: nothing known to be wrong.
    forward_stale TEXT
);

-- Token ids of each cached sequence, stored once, packed as provenance.token_dtype.
CREATE TABLE sequences (
    id INTEGER PRIMARY KEY,
    chunk INTEGER,
    tokens BLOB
);

-- A chunk row is written in the same transaction as its activations: present == committed.
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    first_seq INTEGER,
    n_seqs INTEGER,
    n_tokens INTEGER,
    nnz INTEGER,  -- activations the chunk added
    seconds REAL,
    committed_at TEXT,
    -- Where a resumed cache picks the corpus up: raw documents the corpus reader had consumed, and the tokens it had
    -- read but not yet packed into a sequence (uint32). Null for chunks written before schema 8.
    next_doc INTEGER,
    carry BLOB
);

-- While caching: one row per (band of 4,096 latents, committed chunk), n activations packed (store/codec.py,
-- store/layout.py).
CREATE TABLE staged (
    band INTEGER,
    chunk INTEGER,
    n INTEGER,
    data BLOB,
    PRIMARY KEY (band, chunk)
);

-- After compaction: one latent's activations, SEGMENT at most per row, global positions ascending by seg. The small
-- columns come first, so statistics read counts and maxima without touching the packed data.
CREATE TABLE segments (
    latent INTEGER,
    seg INTEGER,
    n INTEGER,
    max_act REAL,
    first_pos INTEGER,  -- the first activation's global position; data holds deltas from it
    width INTEGER,  -- bytes per position delta (2, 4 or 8)
    packed INTEGER,  -- 1: data is zstd-compressed; 0: stored raw (tiny segments)
    data BLOB,
    PRIMARY KEY (latent, seg)
);

-- Per-latent statistics of the cache (store/stats.py).
CREATE TABLE latents (
    latent INTEGER PRIMARY KEY,
    count INTEGER,
    frequency REAL,
    max_act REAL,
    mean_act REAL,
    n_windows INTEGER,
    deciles TEXT,  -- JSON: activation values at the 10th..90th percentiles
    hist_edges TEXT,  -- JSON
    hist_counts TEXT  -- JSON
);

-- The subject model's vocabulary as text (tokenizer.decode of each id alone), so readers show examples without
-- loading a tokenizer.
CREATE TABLE vocab (
    id INTEGER PRIMARY KEY,
    token TEXT
);

-- Per latent: tokens its decoder direction promotes / suppresses through the unembedding (logit lens) and its
-- nearest latents by decoder cosine. JSON lists of [token id, value] / [latent, cosine].
CREATE TABLE directions (
    latent INTEGER PRIMARY KEY,
    promoted TEXT,
    suppressed TEXT,
    neighbours TEXT,
    created_at TEXT
);

-- Per latent, the heuristics that explain it before any LLM is paid (store/filters.py).
CREATE TABLE latent_filters (
    latent INTEGER PRIMARY KEY,
    positional_mi REAL,  -- chance-adjusted normalised MI between firing and position, in [0, 1]
    positional INTEGER,  -- 1: positional_mi at or above the threshold
    top_tokens INTEGER,  -- distinct tokens among the top activations (max_tokens + 1: more)
    unigram_candidate INTEGER,
    unigram_tokens TEXT,  -- JSON [[token id, count], ...] for candidates, else null
    unigram_fire REAL,  -- share of scrambled sentences in which it still fired (null: not verified)
    unigram INTEGER  -- 1: a verified unigram latent; null: a candidate not verified yet
);

-- Per-latent sort columns packed one blob each (store/columns.py).
CREATE TABLE columns (
    name TEXT PRIMARY KEY,
    version TEXT,  -- what it was packed from (meta scores_written, or the statistics' fingerprint)
    n INTEGER,
    data BLOB
);

-- One row per whole-file stage of work (store/stages.py). A stage is complete only when its row has a done_at and a
-- fingerprint matching the file now.
CREATE TABLE stages (
    name TEXT PRIMARY KEY,
    fingerprint TEXT,  -- what the stage's output was computed from (the committed chunks)
    detail TEXT,  -- JSON: resume state while it runs, what it was done with once it ends
    done_at TEXT
);

-- Per band of 4,096 latents: the co-activation sketch of each latent (store/sketches.py), a one-permutation MinHash
-- of its activating windows, built by compaction (or by the first reader of a file compacted before schema 14) and
-- read by every process that samples co-activating examples.
CREATE TABLE coactivation_sketches (
    band INTEGER PRIMARY KEY,  -- latents band * 4096 .. band * 4096 + latents - 1
    fingerprint TEXT,  -- what they were built from: the committed chunks, the window length, buckets and hash
    latents INTEGER,  -- rows in data (the last band may be short)
    data BLOB  -- uint32 little-endian [latents, buckets]; 0xFFFFFFFF: an empty bucket
);

---- Explain and score ---------------------------------------------------------------------------------------------

-- One row per latent whose examples were drawn: the seed and settings that reproduce the draw.
CREATE TABLE sample_sets (
    latent INTEGER PRIMARY KEY,
    seed INTEGER,
    n_windows INTEGER,  -- activating windows the latent has
    config TEXT,  -- JSON: the sampling settings used
    skipped TEXT,  -- why the latent has no examples (too few windows), else null
    created_at TEXT
);

-- Every drawn window with its role. The primary key makes the explainer's and the scorers' examples disjoint in the
-- file itself, not just by construction.
CREATE TABLE samples (
    latent INTEGER,
    window INTEGER,  -- global window index (see store/queries.py)
    role TEXT,  -- explain | activating | non_activating
    decile INTEGER,  -- 1..n for activating windows (1 = weakest), 0 otherwise
    source TEXT,  -- top | random | stratified | neighbours | coactivation | embedding
    idx INTEGER,  -- order within the role
    PRIMARY KEY (latent, window)
);

-- A latent's explanation by one explainer (with best-of-N: the chosen candidate).
CREATE TABLE explanations (
    latent INTEGER,
    explainer TEXT,
    text TEXT,  -- null when every attempt failed
    error TEXT,  -- why it failed, else null
    raw TEXT,  -- the model's answer as returned
    model TEXT,
    backend TEXT,
    prompt_sha TEXT,  -- hash of the template files used
    seed INTEGER,  -- the sampling seed (see sample_sets)
    settings TEXT,  -- JSON: LLM seed, temperature and the other knobs the answer depended on
    n_examples INTEGER,
    extras TEXT,  -- JSON: what the explainer showed besides examples (e.g. logit-lens tokens)
    n_calls INTEGER,  -- this and the next five: summed over the LLM calls behind the row
    n_failed_calls INTEGER,
    prompt_tokens INTEGER,
    cached_tokens INTEGER,  -- prompt tokens the backend served from its prefix cache (-1: backend does not say)
    output_tokens INTEGER,
    llm_seconds REAL,  -- time inside the backend
    created_at TEXT,
    PRIMARY KEY (latent, explainer)
);

-- Full-text search over explanation text, kept in step by the three triggers.
CREATE VIRTUAL TABLE explanations_fts using fts5(text, content='explanations', content_rowid='rowid');

CREATE TRIGGER explanations_ai after insert on explanations begin
    insert into explanations_fts(rowid, text) values (new.rowid, new.text);
end;

CREATE TRIGGER explanations_ad after delete on explanations begin
    insert into explanations_fts(explanations_fts, rowid, text) values ('delete', old.rowid, old.text);
end;

CREATE TRIGGER explanations_au after update on explanations begin
    insert into explanations_fts(explanations_fts, rowid, text) values ('delete', old.rowid, old.text);
    insert into explanations_fts(rowid, text) values (new.rowid, new.text);
end;

-- Best-of-N: every explanation drawn for a latent, with the cheap score it got on the explainer's own examples (never
-- the held-out ones). The chosen one is also the latent's row in explanations.
CREATE TABLE explanation_candidates (
    latent INTEGER,
    explainer TEXT,
    idx INTEGER,  -- 0: the first draw (what a single-candidate run would have kept)
    text TEXT,  -- null when every attempt failed
    error TEXT,
    raw TEXT,
    llm_seed INTEGER,
    temperature REAL,
    scorer TEXT,  -- the cheap scorer used to pick
    score REAL,  -- its metric on the explainer's examples; null: not scorable (failed or all calls failed)
    n_scored INTEGER,
    n_failed INTEGER,
    chosen INTEGER,  -- 1: kept as the latent's explanation
    -- JSON {scorer: {value (its primary metric), n_scored, n_failed, LLM accounting}} of the FIRST candidate on the
    -- held-out examples, scored beside the chosen one when it was not chosen itself (what best-of-N gained)
    heldout TEXT,
    n_calls INTEGER,  -- LLM accounting as in explanations
    n_failed_calls INTEGER,
    prompt_tokens INTEGER,
    cached_tokens INTEGER,
    output_tokens INTEGER,
    llm_seconds REAL,
    created_at TEXT,
    PRIMARY KEY (latent, explainer, idx)
);

-- One scorer's verdict on one latent's explanation, or on another latent's (the random-explanation control).
CREATE TABLE scores (
    latent INTEGER,
    explainer TEXT,
    scorer TEXT,
    control INTEGER,  -- 1: the explanation scored is another latent's
    explanation_latent INTEGER,  -- whose explanation was scored
    explanation TEXT,
    n INTEGER,
    n_scored INTEGER,
    n_failed INTEGER,  -- examples whose call failed or answer did not parse: excluded, not wrong
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
    recall_per_decile TEXT,  -- JSON list, null entries where a decile had no example
    outcomes TEXT,  -- JSON: per example window, label, decile, prediction, probability, failed
    errors TEXT,  -- JSON: distinct failure messages with counts
    n_calls INTEGER,  -- LLM accounting as in explanations
    n_failed_calls INTEGER,
    prompt_tokens INTEGER,
    cached_tokens INTEGER,
    output_tokens INTEGER,
    llm_seconds REAL,
    model TEXT,
    backend TEXT,
    prompt_sha TEXT,
    seed INTEGER,
    settings TEXT,  -- JSON: LLM seed, temperature, excerpts per prompt, profile, ...
    created_at TEXT,
    correlation REAL,  -- Pearson correlation of simulated and true activations over all tokens (simulation)
    details TEXT,  -- JSON, scorer-specific (intervention's KL targets, generation's texts, ...)
    n_retry INTEGER,  -- failed examples a rerun may fix (a call error, an unparseable answer); > 0: scored again
    -- JSON {metric: [low, high]}: the 95% interval of each defined metric (engine/interpretation/intervals.py); null
    -- for rows scored before schema 13 until `autointerp upgrade` computes it from outcomes
    ci TEXT,
    PRIMARY KEY (latent, explainer, scorer, control)
);

-- Sorting the latent browser by a scorer's metric reads scores by (scorer, control).
CREATE INDEX scores_by_scorer on scores (explainer, scorer, control, latent);

-- What each scorer is, recorded when it scores (store/scorer_meta.py).
CREATE TABLE scorers (
    name text primary key,
    primary_metric text not null,  -- what it is sorted and summarised by (a metric column of scores)
    fallback_metric text,  -- shown for a latent whose primary metric is undefined
    outcome text not null,  -- what one scored item is: window | text | prompt
    evidence text not null  -- how its evidence renders: labels | marks | predictions | groups | texts | steering
);

---- Runs and monitoring -------------------------------------------------------------------------------------------

-- Batch runs: who is (or was) working on this file.
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT,
    updated_at TEXT,  -- heartbeat: rewritten with every progress write
    ended_at TEXT,
    status TEXT,  -- running | done | stopped (clean stop: outage, full disk, Ctrl-C) | failed
    message TEXT,  -- why it stopped, or the closing summary
    host TEXT,
    pid INTEGER,
    argv TEXT,  -- JSON
    selection TEXT,  -- the latent selection as configured
    n_latents INTEGER,
    config TEXT  -- JSON: the whole config the run used
);

-- One row per (run, stage), rewritten at most every few seconds while the stage runs.
CREATE TABLE progress (
    run INTEGER,
    stage TEXT,  -- cache | explain | score
    unit TEXT,  -- tokens (cache) | latents
    total INTEGER,
    done INTEGER,  -- units finished, including those found already done
    skipped INTEGER,
    failed INTEGER,  -- failed explanations / failed examples
    prompts INTEGER,
    prompt_tokens INTEGER,
    cached_tokens INTEGER,
    output_tokens INTEGER,
    backend_s REAL,
    wall_s REAL,
    started_at TEXT,
    updated_at TEXT,
    ended_at TEXT,
    PRIMARY KEY (run, stage)
);

-- The workers of a scaled-out batch (`autointerp batch --ray`), one row per (run, worker), for the cluster view.
CREATE TABLE workers (
    run INTEGER NOT NULL,  -- runs.id
    worker TEXT NOT NULL,  -- a name such as "cache-0" or "llm-1", or an LLM replica's URL
    role TEXT NOT NULL,  -- cache | llm
    node TEXT,  -- the host or IP it runs on
    pid INTEGER,
    state TEXT NOT NULL,  -- starting | busy | idle | dead | restarting | done
    unit TEXT,  -- what it is on now ("chunk 12", "latent 4312"), null when on nothing
    done INTEGER NOT NULL DEFAULT 0,  -- units it finished
    rate REAL,  -- its throughput, in rate_unit ("tok/s", "latents/min")
    rate_unit TEXT,
    rerun INTEGER NOT NULL DEFAULT 0,  -- units taken from it and run again elsewhere after it died
    error TEXT,  -- why it died
    updated_at TEXT NOT NULL,
    PRIMARY KEY (run, worker)
);

-- Notable happenings and throttled progress of any stage, for monitors in other processes.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at TEXT,
    stage TEXT,
    kind TEXT,
    message TEXT,
    data TEXT,  -- JSON
    run INTEGER  -- runs.id; null outside a run
);

---- Audits and comparisons ----------------------------------------------------------------------------------------

-- One researcher's verdict on one explanation (audit mode); several raters may rate the same explanation.
CREATE TABLE audits (
    latent INTEGER,
    explainer TEXT,
    rater TEXT NOT NULL,  -- "unknown" for ratings made before schema 9
    rating TEXT,  -- correct | partly | wrong | null
    explanation TEXT,  -- the researcher's own explanation, if they wrote one
    note TEXT,
    flagged INTEGER,
    explanation_seen TEXT,  -- the explanation text as it was when rated
    created_at TEXT,
    updated_at TEXT,
    PRIMARY KEY (latent, explainer, rater)
);

-- A sentence a rater probed (`autointerp probe`, the TUI's probe pane) and kept as evidence on an audit.
CREATE TABLE audit_probes (
    latent INTEGER,
    explainer TEXT,
    rater TEXT NOT NULL,
    text TEXT NOT NULL,
    tokens TEXT,  -- JSON list of the token strings, as the subject model read them
    activations TEXT,  -- JSON list: the latent's activation at each token
    max_activation REAL,
    created_at TEXT,
    PRIMARY KEY (latent, explainer, rater, text)
);

-- `autointerp similarity A.db B.db`: one row per comparison of this database's latents with another's.
CREATE TABLE similarity_runs (
    id INTEGER PRIMARY KEY,
    other_path TEXT,
    other_fingerprint TEXT,  -- the other file's provenance identity (model, hook, coder hash)
    explainer TEXT,
    other_explainer TEXT,
    settings TEXT,  -- JSON: embedding model, block size, seed
    summary TEXT,  -- JSON: distribution of best-match similarity, matching size and mean
    created_at TEXT
);

-- Per comparison and latent: its best match by explanation embedding and its partner in the one-to-one matching.
CREATE TABLE similarity (
    run INTEGER,  -- similarity_runs.id
    latent INTEGER,
    best INTEGER,  -- the other database's latent with the most similar explanation
    best_similarity REAL,
    match INTEGER,  -- partner in the one-to-one (Hungarian) matching, null if unmatched
    match_similarity REAL,
    decoder_cosine REAL,  -- cosine of the matched pair's decoder directions (null: not the same space)
    PRIMARY KEY (run, latent)
);

---- Retests: the same latents explained and scored again from other draws (`autointerp retest`) -------------------

-- One row per repeat draw; the original results (draw 0) stay in samples, explanations and scores, never replaced.
CREATE TABLE retest_draws (
    draw INTEGER PRIMARY KEY,  -- 1, 2, ...
    seed INTEGER,  -- the sampling seed of this draw (the LLM seed is derived from it too)
    explainer TEXT,
    scorers TEXT,  -- JSON list of the scorers run
    config TEXT,  -- JSON: the sampling and LLM settings used
    created_at TEXT,
    done_at TEXT  -- null while it runs; a killed retest resumes the draws not done
);

-- Shaped as samples, per draw: the disjointness of explainer and scorer examples holds within each draw.
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

-- Shaped as explanations, per draw.
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

-- Shaped as scores (same columns, same meaning), per draw.
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

---- What a new file holds -----------------------------------------------------------------------------------------

INSERT INTO meta (key, value) VALUES ('codec', :codec), ('schema_version', :schema_version);

-- Writes the empty index's record, as every file made so far has it.
INSERT INTO explanations_fts(explanations_fts) VALUES ('rebuild');
"""


def statements(script: str) -> list[str]:
    """The script's statements one by one, without their comments, so they run inside the caller's transaction
    (executescript would commit first). sqlite3.complete_statement says where each ends, the semicolons inside a
    trigger's body included.

    The comments stay here: SQLite stores a CREATE statement's text as written, and its DROP COLUMN of a table's last
    column cuts that text back to the previous comma, which may be one inside a comment."""
    found, pending = [], []
    for line in script.splitlines():
        code, dashes, _ = line.partition("--")
        if dashes and (code.count("'") % 2 or code.count('"') % 2):
            raise ValueError(f"'--' inside a quoted name or string, not a comment: {line!r}")
        if code.strip():
            pending.append(code.rstrip())
            if sqlite3.complete_statement("\n".join(pending)):
                found.append("\n".join(pending))
                pending = []
    if pending:
        raise ValueError(f"the schema ends inside a statement: {pending[0]!r}")
    return found
