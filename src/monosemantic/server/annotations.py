"""Notes readers attach to graphs and features: the one table the server writes.

`annotations(id, target, key, text, created)` lives in `features.db` beside what it annotates
(so a copied store keeps its notes), created by the first note. `target` is `graph` (key: the
graph id) or `feature` (key: `DICTIONARY_ID/IDX`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from monosemantic.store.feature_store import FeatureStore

_CREATE = (
    "CREATE TABLE IF NOT EXISTS annotations (id INTEGER PRIMARY KEY, target TEXT NOT NULL, "
    "key TEXT NOT NULL, text TEXT NOT NULL, created TEXT NOT NULL)"
)


def add_annotation(store: FeatureStore, target: str, key: str, text: str) -> int:
    """Store a note and return its id."""
    with store.transaction() as db:
        db.execute(_CREATE)
        cur = db.execute(
            "INSERT INTO annotations (target, key, text, created) VALUES (?, ?, ?, ?)",
            (target, key, text, datetime.now(timezone.utc).isoformat(timespec="seconds")),
        )
    return int(cur.lastrowid)


def annotations(
    store: FeatureStore, target: str | None = None, key: str | None = None
) -> list[dict[str, Any]]:
    """Notes, oldest first; only those of `target` (and `key`) when given."""
    with store.transaction() as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='annotations'").fetchone():
            return []
        sql, params = "SELECT id, target, key, text, created FROM annotations WHERE 1", []
        if target is not None:
            sql, params = sql + " AND target = ?", [*params, target]
        if key is not None:
            sql, params = sql + " AND key = ?", [*params, key]
        return [dict(r) for r in db.execute(sql + " ORDER BY id", params).fetchall()]
