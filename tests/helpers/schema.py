"""Schema downgraders: a database as an older autointerp left it, made from one this autointerp wrote."""

from __future__ import annotations

import numpy as np

PROVENANCE_V11 = ("model_type", "forward_reason", "forward_sites", "start_rule", "forward_stale")


def to_schema_13(conn) -> None:
    """Undo schema 14's addition (the stored co-activation sketches), as a schema-13 file had it."""
    conn.execute("drop table coactivation_sketches")
    conn.execute("update meta set value = '13' where key = 'schema_version'")


def to_schema_12(conn) -> None:
    """Undo schema 14's and 13's additions (intervals, retests, probed sentences), as a schema-12 file had them."""
    to_schema_13(conn)
    for table in ("retest_draws", "retest_samples", "retest_explanations", "retest_scores", "audit_probes"):
        conn.execute(f"drop table {table}")
    conn.execute("alter table scores drop column ci")
    conn.execute("update meta set value = '12' where key = 'schema_version'")


def to_schema_11(conn) -> None:
    """Undo schema 13's and 12's additions (each scorer's recorded metadata), as a schema-11 file had it."""
    to_schema_12(conn)
    conn.execute("drop table scorers")
    conn.execute("update meta set value = '11' where key = 'schema_version'")


def to_schema_10(conn) -> None:
    """Undo schema 12's and 11's additions (how the forward was chosen per model family), as a schema-10 file had
    them."""
    to_schema_11(conn)
    for col in PROVENANCE_V11:
        conn.execute(f"alter table provenance drop column {col}")
    conn.execute("update meta set value = '10' where key = 'schema_version'")


def to_schema_9(conn) -> None:
    """Undo schema 11's and 10's additions (the workers of a scaled-out run), as a schema-9 file had them."""
    to_schema_10(conn)
    conn.execute("drop table workers")
    conn.execute("update meta set value = '9' where key = 'schema_version'")


def to_schema_8(conn) -> None:
    """Undo schema 10's and 9's additions (raters, explanation candidates, similarity), as a schema-8 file had them."""
    to_schema_9(conn)
    if conn.execute("select 1 from sqlite_master where name = 'audits'").fetchone():  # not a file taken to v3
        conn.execute(
            "create table audits_v8 (latent integer, explainer text, rating text, explanation text, note text,"
            " flagged integer, explanation_seen text, created_at text, updated_at text,"
            " primary key (latent, explainer))"
        )
        conn.execute(
            "insert or replace into audits_v8 select latent, explainer, rating, explanation, note, flagged,"
            " explanation_seen, created_at, updated_at from audits order by rater"
        )
        conn.execute("drop table audits")
        conn.execute("alter table audits_v8 rename to audits")
    for table in ("explanation_candidates", "similarity", "similarity_runs"):
        conn.execute(f"drop table {table}")
    conn.execute("update meta set value = '8' where key = 'schema_version'")


def to_schema_7(conn) -> None:
    """Undo schema 10's, 9's and 8's additions (the corpus resume point, the forward, the latent filters), as a
    schema-7 file had them."""
    to_schema_8(conn)
    conn.execute("alter table chunks drop column next_doc")
    conn.execute("alter table chunks drop column carry")
    conn.execute("alter table provenance drop column forward")
    conn.execute("drop table columns")
    conn.execute("delete from meta where key = 'scores_written'")
    conn.execute("drop table latent_filters")
    if conn.execute("select 1 from sqlite_master where name = 'stages'").fetchone():  # a file taken further back
        conn.execute("delete from stages where name in ('cache.filters', 'cache.unigram')")
    conn.execute("update meta set value = '7' where key = 'schema_version'")


def to_schema_6_layout(conn) -> None:
    """Rewrite a current database's activations as schema 6 and older stored them (one legacy-codec row per
    (latent, chunk)), so a test can make a faithful older file for the migration to bring forward."""
    from autointerp.store.codec import LEGACY_CODEC, decode_segment, legacy_encode

    to_schema_7(conn)
    seq_len = conn.execute("select seq_len from provenance").fetchone()[0]
    chunks = conn.execute("select id, first_seq from chunks order by id").fetchall()
    starts = np.array([first * seq_len for _, first in chunks], np.int64)
    conn.execute(
        "create table activations (latent integer not null, chunk integer not null, offsets blob not null,"
        " acts blob not null)"
    )
    conn.execute("create unique index idx_activations_latent_chunk on activations (latent, chunk)")
    for (latent,) in conn.execute("select distinct latent from segments").fetchall():
        parts = [
            decode_segment(*r)
            for r in conn.execute(
                "select first_pos, width, packed, n, data from segments where latent = ? order by seg", [latent]
            )
        ]
        pos, val = np.concatenate([p for p, _ in parts]), np.concatenate([v for _, v in parts])
        which = np.searchsorted(starts, pos, side="right") - 1
        for i in np.unique(which):
            mine = which == i
            conn.execute(
                "insert into activations values (?, ?, ?, ?)",
                [latent, chunks[i][0], *legacy_encode(pos[mine] - starts[i], val[mine])],
            )
    conn.execute("drop table segments")
    conn.execute("drop table staged")
    conn.execute("update meta set value = ? where key = 'codec'", [LEGACY_CODEC])
