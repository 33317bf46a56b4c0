"""Search every dictionary of a feature store at once: SQLite FTS5 over explanations, concepts and
top tokens (logit-lens and input-side tokens).

The index is a TEMP table of the reading connection, built on the first search. Searching
therefore never writes `features.db` (a server that only reads the store can search it), and a
reopened store (after `analyze` replaced it or `explain` updated it) indexes what it holds now.
Building it reads every feature row once: about a second per 100k features.
"""

from __future__ import annotations

import json
import re
import weakref
from typing import Any

from monosemantic.store.dead import live_clause
from monosemantic.store.feature_store import FeatureStore

__all__ = ["search_features"]

_TABLE = "feature_search"


def _tokens(text: str | None) -> str:
    return " ".join(str(t.get("token", "")) for t in json.loads(text)) if text else ""


_built: weakref.WeakKeyDictionary[FeatureStore, object] = weakref.WeakKeyDictionary()


def _ensure_index(store: FeatureStore, version: object) -> None:
    with store.transaction() as db:
        exists = db.execute("SELECT 1 FROM sqlite_temp_master WHERE name = ?", (_TABLE,)).fetchone()
        if exists and _built.get(store) == version:
            return
        db.execute(f"DROP TABLE IF EXISTS temp.{_TABLE}")
        rows = db.execute(
            "SELECT dictionary_id, idx, explanation, concept, logit_top, input_top FROM features"
        ).fetchall()
        db.execute(
            f"CREATE VIRTUAL TABLE temp.{_TABLE} USING fts5("
            "explanation, concept, tokens, dictionary_id UNINDEXED, idx UNINDEXED)"
        )
        db.executemany(
            f"INSERT INTO temp.{_TABLE} VALUES (?, ?, ?, ?, ?)",
            [(r[2] or "", r[3] or "", f"{_tokens(r[4])} {_tokens(r[5])}", r[0], r[1]) for r in rows],
        )
    _built[store] = version


def fts_query(query: str) -> str | None:
    """The FTS5 MATCH expression for a user's text: every word, as a quoted prefix, must occur.
    Quoting makes FTS5 operators (`AND`, `NEAR`, `*`, `"`) plain text. None when no word."""
    words = re.findall(r"\w+", query)
    return " ".join(f'"{w}"*' for w in words) if words else None


def search_features(
    store: FeatureStore,
    query: str,
    limit: int = 50,
    offset: int = 0,
    version: object = None,
    include_dead: bool = False,
    min_density: float | None = None,
    max_density: float | None = None,
) -> list[dict[str, Any]]:
    """Features of every dictionary matching `query`, best BM25 match first, as
    `{dictionary_id, dictionary, idx, explanation, concept, density}`; dead features (`store.dead`)
    only with `include_dead`, and within [min_density, max_density] when given. The index is
    rebuilt when `version` differs from the one it was built for (a caller that knows the store
    changed)."""
    match = fts_query(query)
    if match is None:
        return []
    _ensure_index(store, version)
    where, params = [f"{_TABLE} MATCH ?"], [match]
    if not include_dead:
        where.append(live_clause("f.density"))
    if min_density is not None:
        where.append("f.density >= ?")
        params.append(min_density)
    if max_density is not None:
        where.append("f.density <= ?")
        params.append(max_density)
    with store.transaction() as db:
        rows = db.execute(
            f"SELECT s.dictionary_id, d.name AS dictionary, s.idx, f.explanation, f.concept, f.density "
            f"FROM temp.{_TABLE} s JOIN features f ON f.dictionary_id = s.dictionary_id AND f.idx = s.idx "
            f"JOIN dictionaries d ON d.id = s.dictionary_id WHERE {' AND '.join(where)} "
            f"ORDER BY bm25({_TABLE}), s.dictionary_id, s.idx LIMIT ? OFFSET ?",
            (*params, int(limit), int(offset)),
        ).fetchall()
    return [dict(r) for r in rows]
