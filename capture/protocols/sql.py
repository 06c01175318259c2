"""SQL text helpers shared by the SQL protocols (PostgreSQL, MySQL): the statement's operation and table.

Reads only the first keyword and the first table-like name; it is no SQL parser.
"""
from __future__ import annotations

import re

_KEYWORD = re.compile(r"\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*([A-Za-z]+)", re.S)
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|TABLE(?:\s+IF\s+(?:NOT\s+)?EXISTS)?|JOIN)\s+([\w.\"`]+)", re.I)
_WITH_TABLE = {"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "TRUNCATE", "COPY"}


def sql_summary(query: str) -> tuple[str, str]:
    """(operation, collection) of a SQL statement: ("SELECT", "accounts"); "" when unknown."""
    m = _KEYWORD.match(query)
    op = m.group(1).upper() if m else ""
    t = _TABLE.search(query[:2048])
    table = t.group(1).strip('"`') if t and op in _WITH_TABLE else ""
    return op, table
