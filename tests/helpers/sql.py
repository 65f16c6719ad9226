"""What counts as SQL text in a module's source, for the tests that keep SQL inside store/ (test_tui_no_sql.py,
test_engine_no_sql.py): a statement's shape, not a word SQL also uses ("select a latent" is not SQL)."""

from __future__ import annotations

import re

SQL_TEXT = re.compile(
    r"\bselect\b.+\bfrom\b|\binsert\s+(or\s+\w+\s+)?into\b|\bupdate\s+\w+\s+set\b|\bdelete\s+from\b"
    r"|\bpragma\b|\bcreate\s+(table|index|view)\b|\bmax\(\w+\)|\bcount\(\*\)",
    re.I | re.S,
)


def sql_offence(node, where: str, calls: set[str]) -> str | None:
    """What both no-SQL tests refuse in one AST node: a string constant shaped as SQL, or a call of one of `calls`
    (a driver's method that runs a statement); None if neither."""
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_TEXT.search(node.value):
        return f"{where}: SQL text {node.value[:60]!r}"
    if isinstance(node, ast.Attribute) and node.attr in calls:
        return f"{where}: .{node.attr}("
    return None
