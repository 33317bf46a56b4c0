"""QK attributions computed on demand for a stored graph, kept beside it in `features.db`.

`graph_qk(graph_id, layer, head, query, key, top, json, created)`, created by the first one (like
`annotations`): a viewer asking again for the same head and pair gets the stored entry, and a
copied store keeps them. The graph's own `qk` list (written by `circuit` with `circuit.heads`) is
looked at first.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from monosemantic.store.feature_store import FeatureStore

_CREATE = (
    "CREATE TABLE IF NOT EXISTS graph_qk (graph_id INTEGER NOT NULL, layer INTEGER NOT NULL, "
    "head INTEGER NOT NULL, query INTEGER NOT NULL, key INTEGER NOT NULL, top INTEGER NOT NULL, "
    "json TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (graph_id, layer, head, query, key))"
)


def stored_qk(
    store: FeatureStore, graph: dict, gid: int, pair: tuple[int, int, int, int], top: int
) -> dict | None:
    """The entry for (layer, head, query, key), from the graph's `qk` list or the table, if it lists
    at least `top` pairs (or all there are)."""
    layer, head, query, key = pair
    for e in graph.get("qk") or []:
        if (e["layer"], e["head"], e["query"], e["key"]) == pair and len(e["pairs"]) >= top:
            return e
    with store.transaction() as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='graph_qk'").fetchone():
            return None
        row = db.execute(
            "SELECT json, top FROM graph_qk WHERE graph_id=? AND layer=? AND head=? AND query=? AND key=?",
            (gid, layer, head, query, key),
        ).fetchone()
    if row is None:
        return None
    entry = json.loads(row[0])
    return entry if row[1] >= top or len(entry["pairs"]) < row[1] else None


def save_qk(store: FeatureStore, gid: int, entry: dict[str, Any], top: int) -> None:
    with store.transaction() as db:
        db.execute(_CREATE)
        db.execute(
            "INSERT OR REPLACE INTO graph_qk VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                gid,
                entry["layer"],
                entry["head"],
                entry["query"],
                entry["key"],
                top,
                json.dumps(entry),
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
            ),
        )
