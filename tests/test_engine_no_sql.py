"""engine/ runs no SQL of its own: every read and write goes through a store/ function named for what it serves
(store/report_reads.py, export_reads.py, plan_reads.py, figure_reads.py, ...), so a query exists once, next to the
schema it depends on, and a schema change is a store/ change.

engine/ may still hold a connection to commit a transaction around store calls (`with store.db.conn:`) and import
sqlite3 for its exception types; what it may not do is name SQL or run it."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.sql import sql_offence

ENGINE = Path(__file__).parents[1] / "engine"
RUNS_SQL = {"execute", "executemany", "executescript", "query", "rows_where"}  # sqlite3's and sqlite-utils' calls
# Files allowed to hold SQL, with why. Empty: keep it so.
ALLOWED: dict[str, str] = {}


def offences(source: str, name: str) -> list[str]:
    """Where a module's source holds SQL text, runs a statement, or opens its own sqlite3 connection."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if offence := sql_offence(node, where, RUNS_SQL):
            found.append(offence)
        elif isinstance(node, ast.Attribute) and node.attr == "connect" and getattr(node.value, "id", "") == "sqlite3":
            found.append(f"{where}: sqlite3.connect(")
    return found


def test_engine_holds_no_sql():
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) >= 40
    found = [
        o
        for f in files
        if str(f.relative_to(ENGINE)) not in ALLOWED
        for o in offences(f.read_text(), str(f.relative_to(ENGINE)))
    ]
    assert found == []


def test_the_check_sees_each_kind_of_offence():
    # The checker itself, on the kinds of lines engine/ once held (so an empty result above means something).
    old = """
rows = store.db.execute("select latent, n_windows from latents where latent between ? and ?", span)
store.db.conn.executemany("update latent_filters set unigram_fire = ? where latent = ?", rows)
where = "latent in (select value from json_each(?))"
n = db.query(f"select count(*) from ({IDS})")
with sqlite3.connect(path) as c:
    pass
"""
    found = offences(old, "old.py")
    assert any(".execute(" in o for o in found) and any(".executemany(" in o for o in found)
    assert any(".query(" in o for o in found) and any("sqlite3.connect(" in o for o in found)
    assert any("SQL text 'select latent, n_windows from latents" in o for o in found)
    assert any("SQL text 'update latent_filters set" in o for o in found)
    assert any("SQL text 'latent in (select value from json_each" in o for o in found)
    assert any("SQL text 'select count(*) from (" in o for o in found)
    # What the engine says to users is not SQL, even with words SQL also uses; a transaction around store calls
    # and sqlite3's exception types are allowed.
    fine = """
click.echo("select a latent; update the config")
with store.db.conn:
    write_verdicts(store, fingerprint, rows, last)
if isinstance(e, sqlite3.DatabaseError):
    pass
"""
    assert offences(fine, "ok.py") == []
