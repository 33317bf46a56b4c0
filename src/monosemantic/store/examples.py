"""The feature store's examples and vocab tables (see `feature_store.py` for the schema): bulk
inserts of pre-encoded rows, and reads that decode the BLOB arrays and token strings back."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from monosemantic.store.schema import EXAMPLE_COLUMNS, blob_list, example_record


class ExampleTables:
    """Methods of `FeatureStore` on its `examples` and `vocab` tables (a part of its class, split
    out for size): they use the store's connection, lock and vocab cache below, and its
    `transaction()`, `_rows()` and `list_features()`."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    _vocab: dict[int, str] | None

    def add_examples(self, dictionary_id: int, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert examples; each row has `feature`, `kind` and any of the example columns."""
        rows = list(rows)
        self.add_vocab(
            (i, t)
            for r in rows
            if r.get("token_ids") is not None and r.get("tokens") is not None
            for i, t in zip(r["token_ids"], r["tokens"], strict=True)
        )
        return self.add_example_records(dictionary_id, map(example_record, rows))

    def add_vocab(self, pairs: Iterable[tuple[int, str]]) -> None:
        """Record the display string of token ids (later strings for an id replace earlier ones)."""
        pairs = dict(pairs)
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO vocab VALUES (?, ?)", pairs.items())
        if self._vocab is not None:
            self._vocab.update(pairs)

    def _strings(self, ids: list[int]) -> list[str]:
        vocab = self.vocab()
        try:
            return list(map(vocab.__getitem__, ids))
        except KeyError:  # an id nobody recorded: show it as <id>
            return [vocab[i] if i in vocab else f"<{i}>" for i in ids]

    def vocab(self) -> dict[int, str]:
        """Token id -> display string, for the ids the examples use."""
        if self._vocab is None:
            self._vocab = {int(r[0]): r[1] for r in self._rows("SELECT id, token FROM vocab")}
        return self._vocab

    def add_example_records(self, dictionary_id: int, records: Iterable[tuple[Any, ...]]) -> int:
        """Insert pre-encoded examples (`example_record`'s tuples; the analysis builds them in bulk)."""
        count = [0]

        def values() -> Iterator[tuple[Any, ...]]:
            for rec in records:
                count[0] += 1
                yield (dictionary_id, *rec)

        with self.transaction() as db:
            db.executemany(
                f"INSERT INTO examples (dictionary_id, feature, {', '.join(EXAMPLE_COLUMNS)}) "
                f"VALUES (?, ?, {', '.join('?' * len(EXAMPLE_COLUMNS))})",
                values(),
            )
        return count[0]

    _EXAMPLE_ORDER = "CASE kind WHEN 'top' THEN 0 WHEN 'quantile' THEN 1 ELSE 2 END, bin DESC, rank"

    @staticmethod
    def _examples_query(where: str, params: list[Any], kind: str | None) -> str:
        """`SELECT` of the examples matching `where` (and `kind`), without its ORDER BY."""
        sql = f"SELECT * FROM examples WHERE {where}"
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        return sql

    def examples(
        self, dictionary_id: int, feature: int, kind: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """A feature's examples (`kind`: top | quantile | negative | None for all), ordered by kind,
        bin, then rank. Each has `tokens` (strings), `token_ids`, `activations` (one per token),
        `peak` (index of the peak within the window), `position` (of the peak in its sequence)."""
        params: list[Any] = [dictionary_id, feature]
        sql = self._examples_query("dictionary_id = ? AND feature = ?", params, kind)
        sql += f" ORDER BY {self._EXAMPLE_ORDER} LIMIT ?"
        params.append(-1 if limit is None else int(limit))
        return [self._example(r) for r in self._rows(sql, params)]

    def features_with_examples(
        self, dictionary_id: int, kind: str | None = None, chunk: int = 4096
    ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Every feature of a dictionary (by index) with its examples, as `examples` gives them,
        read in one ordered scan instead of a query per feature (exports walk whole dictionaries)."""
        params: list[Any] = [dictionary_id]
        sql = self._examples_query("dictionary_id = ?", params, kind)
        with self._lock:
            cursor = self._db.execute(f"{sql} ORDER BY feature, {self._EXAMPLE_ORDER}", params)

        def rows() -> Iterator[sqlite3.Row]:
            while True:
                with self._lock:
                    batch = cursor.fetchmany(chunk)
                if not batch:
                    return
                yield from batch

        stream = rows()
        nxt = next(stream, None)
        for f in self.list_features(dictionary_id, order_by="idx"):
            mine = []
            while nxt is not None and nxt["feature"] <= f["idx"]:
                if nxt["feature"] == f["idx"]:
                    mine.append(nxt)
                nxt = next(stream, None)
            yield f, [self._example(r) for r in mine]

    def _example(self, row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["token_ids"] = blob_list("i", d["token_ids"])
        if d["tokens"] is not None:
            d["tokens"] = json.loads(d["tokens"])
        elif d["token_ids"] is not None:
            d["tokens"] = self._strings(d["token_ids"])
        d["activations"] = blob_list("d", d["activations"])
        attended = d.get("attended")  # absent from a read-only store written before the column
        d["attended"] = json.loads(attended) if attended is not None else None
        return d
