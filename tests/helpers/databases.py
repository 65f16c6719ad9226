"""Reading and comparing whole databases: what a run computed, without what differs run to run."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path

# What differs between two runs that computed the same thing: when, how long, how much the prefix cache served.
VOLATILE_COLUMNS = {"created_at", "updated_at", "done_at", "committed_at", "seconds", "llm_seconds", "cached_tokens"}


# Run bookkeeping (one row per process, so a resumed run has more), and the full-text index's own tables (rowids
# follow insertion order, which two concurrent latents may swap).
SKIPPED_TABLES = {"runs", "progress", "events", "columns", "workers"}


# `columns` holds packed copies of other tables' columns (store/columns.py), versioned by the `scores_written`
# counter, which counts write transactions (a resumed run may make more): both are checked against the rows they
# copy where they are made (test_batch, test_browse_order), not compared here.
SKIPPED_META_KEYS = {"scores_written"}


JSON_COLUMNS = {
    "outcomes",
    "errors",
    "settings",
    "details",
    "ci",
    "recall_per_decile",
    "extras",
    "config",
    "detail",
    "deciles",
    "hist_edges",
    "hist_counts",
    "promoted",
    "suppressed",
    "neighbours",
    "versions",
}


def copy_db(src, dst):

    shutil.copy(src, dst)
    return dst


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute(sql).fetchall()


def results(db: Path) -> dict:
    """Everything a run computes, without times, cache-hit counts or timestamps (which differ run to run)."""
    scores = []
    for r in rows(
        db,
        "select latent, explainer, scorer, control, explanation_latent, explanation, n, n_scored,"
        " n_failed, tp, fp, tn, fn, auroc, outcomes, n_calls, prompt_tokens, output_tokens, seed"
        " from scores order by latent, scorer, control",
    ):
        outcomes = [(o["window"], o["label"], o["prediction"], o["failed"]) for o in json.loads(r[14])]
        scores.append((*r[:13], None if r[13] is None else round(r[13], 3), outcomes, *r[15:]))
    return {
        "chunks": rows(db, "select id, first_seq, n_seqs, n_tokens, nnz from chunks order by id"),
        "activations": rows(db, "select latent, seg, n, first_pos, width, packed, data from segments order by 1, 2"),
        "staged": rows(db, "select band, chunk, n, data from staged order by band, chunk"),
        "latents": rows(db, "select latent, count, max_act, n_windows, deciles from latents order by latent"),
        "sample_sets": rows(db, "select latent, seed, n_windows, config, skipped from sample_sets order by latent"),
        "samples": rows(db, "select latent, window, role, decile, source, idx from samples order by latent, window"),
        "explanations": rows(
            db,
            "select latent, explainer, text, error, raw, n_examples, seed, prompt_sha, n_calls,"
            " prompt_tokens, output_tokens from explanations order by latent",
        ),
        "scores": scores,
    }


def database_tables(db: Path) -> dict[str, list[dict]]:
    """Every table's rows (by primary key order), volatile columns left out, JSON columns parsed."""
    out = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        names = [r[0] for r in c.execute("select name from sqlite_master where type = 'table' order by name")]
        for name in names:
            if name in SKIPPED_TABLES or name.startswith("explanations_fts"):
                continue
            cols = [r[1] for r in c.execute(f"pragma table_info('{name}')")]
            keep = [col for col in cols if col not in VOLATILE_COLUMNS]
            order = [r[1] for r in sorted(c.execute(f"pragma table_info('{name}')"), key=lambda r: r[5]) if r[5]]
            sql = f"select {', '.join(keep)} from {name}" + (f" order by {', '.join(order)}" if order else "")
            table = []
            for row in c.execute(sql):
                rec = dict(zip(keep, row))
                if name == "meta" and rec.get("key") in SKIPPED_META_KEYS:
                    continue
                for col in JSON_COLUMNS & rec.keys():
                    if isinstance(rec[col], str):
                        rec[col] = json.loads(rec[col])
                table.append(rec)
            if not order:
                table.sort(key=repr)
            out[name] = table
    return out


def same_values(a, b, where: str) -> None:
    """Equal, floats within 1e-3 (logprob-derived values move in the last digits when llama.cpp's prefix cache
    splits a prompt differently)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-3), (where, a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (where, sorted(a), sorted(b))
        for k in a:
            same_values(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), (where, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            same_values(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def assert_same_database(got: Path, want: Path) -> None:
    """Two databases hold the same results, table by table and row by row (see VOLATILE_COLUMNS)."""
    a, b = database_tables(got), database_tables(want)
    assert a.keys() == b.keys()
    for name in a:
        same_values(a[name], b[name], name)
