"""The feature store's SQLite schema and how rows are encoded in it (see `store.py`)."""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS dictionaries (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, path TEXT, architecture TEXT,
    hook_name TEXT, hook_name_out TEXT, d_in INTEGER, d_sae INTEGER, model TEXT, cfg TEXT
);
CREATE TABLE IF NOT EXISTS features (
    dictionary_id INTEGER NOT NULL REFERENCES dictionaries(id), idx INTEGER NOT NULL,
    density REAL, max_activation REAL, mean_activation REAL, n_active INTEGER,
    quantiles TEXT, histogram TEXT,
    logit_top TEXT, logit_bottom TEXT, input_top TEXT, neighbours TEXT,
    explanation TEXT, explanation_source TEXT,
    score_detection REAL, score_fuzzing REAL, scores TEXT, scorer TEXT,
    concept TEXT, concept_auroc REAL, concept_f1 REAL,
    PRIMARY KEY (dictionary_id, idx)
);
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY, dictionary_id INTEGER NOT NULL, feature INTEGER NOT NULL,
    kind TEXT NOT NULL, bin INTEGER, rank INTEGER, sequence INTEGER, position INTEGER,
    peak INTEGER, max_activation REAL, tokens TEXT, token_ids BLOB, activations BLOB, attended TEXT
);
CREATE INDEX IF NOT EXISTS examples_feature ON examples (dictionary_id, feature, kind);
CREATE TABLE IF NOT EXISTS vocab (id INTEGER PRIMARY KEY, token TEXT);
CREATE TABLE IF NOT EXISTS graphs (
    id INTEGER PRIMARY KEY, name TEXT, prompt TEXT, json TEXT, created TEXT
);
"""

# Feature columns holding JSON, decoded on read.
JSON_FEATURE = ("quantiles", "histogram", "logit_top", "logit_bottom", "input_top", "neighbours", "scores")
FEATURE_COLUMNS = (
    "density", "max_activation", "mean_activation", "n_active", "quantiles", "histogram",
    "logit_top", "logit_bottom", "input_top", "neighbours", "explanation", "explanation_source",
    "score_detection", "score_fuzzing", "scores", "scorer", "concept", "concept_auroc", "concept_f1",
)  # fmt: skip
EXAMPLE_COLUMNS = (
    "kind", "bin", "rank", "sequence", "position", "peak", "max_activation", "tokens", "token_ids",
    "activations", "attended",
)  # fmt: skip
# Nullable columns added after a table's first release: `FeatureStore` adds any that an older file
# lacks when it opens it (ALTER TABLE ... ADD COLUMN), so old stores keep opening at the same
# `SCHEMA_VERSION`; a reader of a file it cannot write gets None for them.
ADDED_COLUMNS = {"examples": (("attended", "TEXT"),)}
# Columns `list_features` may sort by (user input is checked against this list, never interpolated).
ORDERABLE = (
    "idx", "density", "max_activation", "mean_activation", "n_active", "score_detection",
    "score_fuzzing", "concept_auroc", "concept_f1",
)  # fmt: skip


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def enc(value: Any) -> Any:
    return None if value is None else json.dumps(value)


def _array_blob(code: str, values: Any) -> bytes | None:
    """A list as a little-endian `array` BLOB ('i' int32, 'd' float64); None stays NULL."""
    if values is None:
        return None
    a = array(code, values)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def blob_list(code: str, blob: bytes | None) -> list[Any] | None:
    if blob is None:
        return None
    a = array(code)
    a.frombytes(blob)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tolist()


def example_record(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """An example row (`feature`, `kind`, lists for `tokens`/`token_ids`/`activations`, ...) as the
    tuple `add_example_records` takes: the example columns after `feature`, encoded. Strings of
    rows with ids belong in `vocab` (`add_examples` puts them there), so `tokens` is kept only
    for rows without ids. `attended` (sequence-level kinds, Lorsa): `[[index, weight], ...]`, the
    key positions a head attends to from the peak, indexed like `peak` (negative: before the
    window), with their attention weights."""
    encode = {
        "tokens": lambda v: enc(v) if row.get("token_ids") is None else None,
        "token_ids": lambda v: _array_blob("i", v),
        "activations": lambda v: _array_blob("d", v),
        "attended": enc,
    }
    return (
        int(row["feature"]),
        *(encode[c](row.get(c)) if c in encode else row.get(c) for c in EXAMPLE_COLUMNS),
    )
