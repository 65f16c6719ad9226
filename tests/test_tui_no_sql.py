"""tui/ runs no SQL of its own: every read goes through store/ by name (store/browse.py's Browser), so a query
exists once, next to the schema it depends on, and the Browser's thread checks see every use of a connection."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.sql import sql_offence

TUI = Path(__file__).parents[1] / "tui"
EXECUTE = {"execute", "executemany", "executescript"}
DB_MODULES = {"sqlite3", "sqlite_utils", "apsw"}


def offences(source: str, name: str) -> list[str]:
    """Where a module's source holds SQL text, a call of execute*, a `.conn` (or `._conn`), or a database driver."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if offence := sql_offence(node, where, EXECUTE):
            found.append(offence)
        elif isinstance(node, ast.Attribute) and node.attr.lstrip("_") == "conn":
            found.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in DB_MODULES]
    return found


def test_tui_holds_no_sql_and_no_connection():
    files = sorted(TUI.glob("*.py"))
    assert len(files) >= 8  # app, audit, bench, detail, heatmap, latent_list, launch, monitor, ...
    found = [o for f in files for o in offences(f.read_text(), f.name)]
    assert found == []


def test_the_check_sees_each_kind_of_offence():
    # The checker itself, on the kinds of lines the TUI once held (so an empty result above means something).
    old = """
import sqlite3
heartbeat = self._monitor_db.conn.execute("select max(updated_at) from runs").fetchone()[0]
n = self.browser._conn
rows = db.executemany(f"insert into audits values ({marks})", args)
"""
    found = offences(old, "old.py")
    assert any("imports sqlite3" in o for o in found)
    assert any("SQL text 'select max(updated_at) from runs'" in o for o in found)
    assert any(".conn" in o for o in found) and any("._conn" in o for o in found)
    assert any(".execute(" in o for o in found) and any(".executemany(" in o for o in found)
    assert any("SQL text 'insert into audits values (" in o for o in found)
    # What the TUI says to users is not SQL, even with words SQL also uses.
    assert offences('Text("select a latent"); s.update("no latents match")', "ok.py") == []
