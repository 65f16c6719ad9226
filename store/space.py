"""Where a database's bytes go: pages per table (its indexes folded in), free pages, and the packed activations'
own bytes, so a benchmark can say whether a file is large because of its codec, its row layout or its other tables."""

from __future__ import annotations

from pathlib import Path

from .connection import connect

FTS5_SHADOWS = {"data", "idx", "docsize", "config", "content"}


def space_by_table(db: Path) -> dict[str, int]:
    """Bytes of each table's pages (indexes counted with their table; `sqlite_autoindex_T_1` and an FTS5 table's
    shadow tables `T_data`, ... with T), `free` (pages on the free list) and `ptrmap`: these add up to the file's
    pages. Beside them `segments.data`, the segment blobs' own bytes (the segments' pages less this is row, index
    and page-fill overhead). Uses SQLite's dbstat table; checkpoint the write-ahead log first to see it all."""
    conn = connect(f"file:{db}?mode=ro", uri=True)
    try:
        owner = dict(conn.execute("select name, tbl_name from sqlite_master where type = 'index'").fetchall())
        out: dict[str, int] = {}
        for name, size in conn.execute("select name, sum(pgsize) from dbstat group by name"):
            table = owner.get(name, name)
            base, _, suffix = table.rpartition("_")
            if suffix in FTS5_SHADOWS and base.endswith("_fts"):
                table = base
            out[table] = out.get(table, 0) + int(size)
        page = conn.execute("pragma page_size").fetchone()[0]
        out["free"] = conn.execute("pragma freelist_count").fetchone()[0] * page
        # What dbstat does not list: auto-vacuum's pointer-map pages (one per ~800 pages).
        out["ptrmap"] = conn.execute("pragma page_count").fetchone()[0] * page - sum(out.values())
        out["segments.data"] = conn.execute("select coalesce(sum(length(data)), 0) from segments").fetchone()[0]
        return out
    finally:
        conn.close()
