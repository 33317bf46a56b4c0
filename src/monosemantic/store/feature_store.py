"""The feature store: one SQLite file (`features.db`) holding everything an analysis found.

The dashboard exporter, the web server and the circuits stage read only from here, so the read
API below is the contract. Tables (schema `SCHEMA_VERSION`, recorded in `meta`):

- `meta(key, value)`: `schema_version`, `created`, `monosemantic_version`, and analysis facts
  (`cache`, `n_tokens`, ...), values JSON-encoded.
- `dictionaries(id, name, path, architecture, hook_name, hook_name_out, d_in, d_sae, model, cfg)`.
- `features(dictionary_id, idx, ...)`: per-feature statistics (density, max/mean activation,
  quantile edges, histogram), logit-lens and input-side tokens, decoder-cosine neighbours,
  explanation (+ its source), scores (+ scorer) and the best storyworld concept with its AUROC.
- `examples(dictionary_id, feature, kind, bin, rank, ...)`: contexts around a peak with per-token
  activations; kind is `top` (highest activating, one per sequence), `quantile` (reservoir
  samples per activation-quantile bin) or `negative` (a context where the feature is silent).
  `token_ids` (int32) and `activations` (float64) are little-endian arrays in BLOBs and token
  strings come from `vocab`: an analysis writes hundreds of thousands of examples, and
  formatting them as JSON cost several times the analysis pass itself. `tokens` (a JSON list)
  is filled only for examples given as strings without ids. `attended` (JSON, Lorsa heads and
  any kind with `Dictionary.attended_keys`): the key positions the latent attends to from the
  peak, `[[index, weight], ...]`, indexed like `peak`; a nullable column added later, which
  opening an older store adds (`schema.ADDED_COLUMNS`).
- `vocab(id, token)`: display string of each token id the examples use.
- `graphs(id, name, prompt, json, created)`: attribution graphs (Neuronpedia/circuit-tracer JSON).
- `annotations(id, target, key, text, created)`: notes a reader attached to a graph or feature
  (the only table `serve` writes; created on its first note, see `serve/annotations.py`).

The examples and vocab tables' methods are in `examples.py`; search across every dictionary
(SQLite FTS5) is in `search.py`.

A fresh analysis is built in a temporary file that is renamed into place only when complete
(`FeatureStore.fresh`), so readers never see half an analysis; later updates (explanations,
scores, graphs) are transactions on the live file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monosemantic.store.dead import live_clause
from monosemantic.store.examples import ExampleTables
from monosemantic.store.schema import (
    ADDED_COLUMNS,
    FEATURE_COLUMNS,
    JSON_FEATURE,
    ORDERABLE,
    SCHEMA,
    SCHEMA_VERSION,
    enc,
    example_record,
    now,
)
from monosemantic.utils.errors import DataError, MonosemanticError
from monosemantic.utils.files import atomic_path
from monosemantic.utils.readers import check_sqlite, sqlite_error

__all__ = ["ORDERABLE", "SCHEMA_VERSION", "FeatureStore", "example_record"]


STORE_FILE = "features.db"


def feature_store_path(analysis_out: str | Path, override: str | Path | None = None) -> Path:
    """Where a verb finds the feature store: its own `db` setting if given, else `features.db`
    in `[analyze].out`. Every reader (explain, export, circuit, serve) and analyze itself ask here."""
    return Path(override) if override is not None else Path(analysis_out) / STORE_FILE


class FeatureStore(ExampleTables):
    """Typed access to `features.db`. Thread-safe (one connection guarded by a lock)."""

    def __init__(self, path: str | Path, create: bool = False, timeout: float = 30.0) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise DataError(
                f"feature store {str(self.path)!r} does not exist; run `monosemantic analyze CONFIG` first"
            )
        fix = "run `monosemantic analyze CONFIG` to rebuild it"
        if not create:  # sqlite3 would silently turn an empty or foreign file into a new database
            check_sqlite(self.path, "feature store", fix)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._vocab: dict[int, str] | None = None  # loaded on first use
        # `timeout`: how long a statement waits for another process's lock before raising
        # sqlite3.OperationalError('database is locked'); a server wants to fail fast
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=timeout)
        self._db.row_factory = sqlite3.Row
        if not create:
            self._check_is_store()
        try:
            with self._db:
                self._db.executescript(SCHEMA)
                row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    self._db.execute("INSERT INTO meta VALUES ('created', ?)", (json.dumps(now()),))
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise sqlite_error(self.path, e, "feature store", fix) from None
        if row is not None and int(row[0]) != SCHEMA_VERSION:
            self._db.close()
            raise DataError(
                f"feature store {self.path} has schema version {row[0]}, this version reads "
                f"{SCHEMA_VERSION}; run `monosemantic analyze CONFIG` again to rebuild it"
            )
        self._add_columns()

    def _add_columns(self) -> None:
        """Give a store written before a nullable column existed (`ADDED_COLUMNS`) that column, so
        old stores open at the same schema version; a file this process cannot write reads None."""
        for table, columns in ADDED_COLUMNS.items():
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name in have:
                    continue
                try:
                    with self._db:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError:  # read-only file or directory: readers use .get
                    return

    def _check_is_store(self) -> None:
        """An SQLite file without our `meta` table is someone else's database: never add tables to it."""
        try:
            found = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise DataError(
                f"{self.path} is not a readable feature store ({e}); run `monosemantic analyze` again"
            ) from None
        if found is None:
            self._db.close()
            raise DataError(
                f"{self.path} is an SQLite file but not a feature store (no meta table); point at the "
                "features.db that `monosemantic analyze` wrote"
            )

    # -- lifecycle -------------------------------------------------------------------------------
    @classmethod
    @contextmanager
    def fresh(cls, path: str | Path) -> Iterator[FeatureStore]:
        """A new, empty store built at a temporary name and renamed onto `path` only on success."""
        with atomic_path(path) as tmp:
            tmp.unlink(missing_ok=True)
            store = cls(tmp, create=True)
            # the file is private until renamed: no rollback journal or fsyncs are needed (a crash
            # leaves only the temporary, which the next run removes)
            store._db.execute("PRAGMA journal_mode = OFF")
            store._db.execute("PRAGMA synchronous = OFF")
            try:
                yield store
            finally:
                store.close()  # before the rename

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.ProgrammingError:
                pass

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together or not at all."""
        with self._lock, self._db:
            yield self._db

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # -- meta ------------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return int(self._rows("SELECT value FROM meta WHERE key='schema_version'")[0][0])

    def meta(self) -> dict[str, Any]:
        """Every meta entry (values decoded from JSON; `schema_version` as an int)."""
        return {r["key"]: json.loads(r["value"]) for r in self._rows("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        with self.transaction() as db:
            for k, v in values.items():
                if k == "schema_version":
                    raise MonosemanticError("schema_version is managed by the store; it cannot be set")
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, json.dumps(v, default=str)))

    # -- dictionaries ----------------------------------------------------------------------------
    def add_dictionary(
        self,
        name: str,
        *,
        path: str | Path | None = None,
        architecture: str | None = None,
        hook_name: str | None = None,
        hook_name_out: str | None = None,
        d_in: int | None = None,
        d_sae: int | None = None,
        model: str | None = None,
        cfg: Mapping[str, Any] | None = None,
    ) -> int:
        """Register a dictionary and return its id (a name already present is an error)."""
        try:
            with self.transaction() as db:
                cur = db.execute(
                    "INSERT INTO dictionaries (name, path, architecture, hook_name, hook_name_out, d_in, "
                    "d_sae, model, cfg) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, None if path is None else str(path), architecture, hook_name, hook_name_out,
                     d_in, d_sae, model, enc(dict(cfg) if cfg is not None else None)),
                )  # fmt: skip
        except sqlite3.IntegrityError:
            raise MonosemanticError(
                f"dictionary {name!r} is already in {self.path}; names must be unique"
            ) from None
        return int(cur.lastrowid)

    def dictionaries(self) -> list[dict[str, Any]]:
        """All dictionaries, by id, with `cfg` decoded and `n_features` (rows in `features`)."""
        rows = self._rows(
            "SELECT d.*, (SELECT COUNT(*) FROM features f WHERE f.dictionary_id = d.id) AS n_features "
            "FROM dictionaries d ORDER BY d.id"
        )
        return [self._dictionary_row(r) for r in rows]

    def dictionary(self, key: int | str) -> dict[str, Any]:
        """One dictionary by id or name; an unknown one raises MonosemanticError listing the names."""
        for d in self.dictionaries():
            if d["id"] == key or d["name"] == key:
                return d
        names = ", ".join(d["name"] for d in self.dictionaries()) or "none"
        raise MonosemanticError(f"no dictionary {key!r} in {self.path} (it holds: {names})")

    def dictionary_at(self, path: str | Path, name: str | None = None) -> dict[str, Any] | None:
        """The row of the checkpoint at `path` (the path `analyze` recorded, resolved), else the
        row named `name`; None when the store does not hold it."""
        rows = self.dictionaries()
        want = str(Path(path).resolve())
        for r in rows:
            if r.get("path") and str(Path(r["path"]).resolve()) == want:
                return r
        return next((r for r in rows if name is not None and r["name"] == name), None)

    @staticmethod
    def _dictionary_row(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["cfg"] = json.loads(d["cfg"]) if d["cfg"] else {}
        return d

    # -- features --------------------------------------------------------------------------------
    def upsert_features(self, dictionary_id: int, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert or update features; each row has `idx` and any of the feature columns.

        Only the columns a row names are written, so a later stage can fill in (say) `neighbours`
        without touching the statistics. Returns the number of rows written.
        """
        n = 0
        with self.transaction() as db:
            for row in rows:
                cols = [c for c in row if c != "idx"]
                bad = [c for c in cols if c not in FEATURE_COLUMNS]
                if bad:
                    raise MonosemanticError(
                        f"unknown feature column(s) {bad}; valid: {', '.join(FEATURE_COLUMNS)}"
                    )
                values = [enc(row[c]) if c in JSON_FEATURE else row[c] for c in cols]
                db.execute(
                    "INSERT OR IGNORE INTO features (dictionary_id, idx) VALUES (?, ?)",
                    (dictionary_id, int(row["idx"])),
                )
                if cols:
                    sets = ", ".join(f"{c} = ?" for c in cols)
                    db.execute(
                        f"UPDATE features SET {sets} WHERE dictionary_id = ? AND idx = ?",
                        (*values, dictionary_id, int(row["idx"])),
                    )
                n += 1
        return n

    @staticmethod
    def _feature_row(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        for c in JSON_FEATURE:
            if d.get(c) is not None:
                d[c] = json.loads(d[c])
        return d

    def feature(self, dictionary_id: int, idx: int) -> dict[str, Any]:
        """One feature's row, JSON columns decoded. Examples are separate: `examples(...)`."""
        rows = self._rows("SELECT * FROM features WHERE dictionary_id = ? AND idx = ?", (dictionary_id, idx))
        if not rows:
            raise MonosemanticError(f"feature {idx} of dictionary {dictionary_id} is not in {self.path}")
        return self._feature_row(rows[0])

    def _where(
        self, dictionary_id: int, search: str | None, min_density: float | None,
        max_density: float | None = None, include_dead: bool = True,
    ) -> tuple[str, list]:  # fmt: skip
        clauses, params = ["dictionary_id = ?"], [dictionary_id]
        if search:
            # a literal substring: % and _ in the query are not wildcards
            like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append(
                "(explanation LIKE ? ESCAPE '\\' OR concept LIKE ? ESCAPE '\\' OR logit_top LIKE ? ESCAPE '\\' "
                "OR input_top LIKE ? ESCAPE '\\' OR CAST(idx AS TEXT) = ?)"
            )
            params += [like, like, like, like, search.strip()]
        if min_density is not None:
            clauses.append("density >= ?")
            params.append(min_density)
        if max_density is not None:
            clauses.append("density <= ?")
            params.append(max_density)
        if not include_dead:
            clauses.append(live_clause())
        return " AND ".join(clauses), params

    def list_features(
        self,
        dictionary_id: int,
        order_by: str = "idx",
        descending: bool | None = None,
        search: str | None = None,
        min_density: float | None = None,
        limit: int | None = None,
        offset: int = 0,
        max_density: float | None = None,
        include_dead: bool = True,
    ) -> list[dict[str, Any]]:
        """Features of a dictionary, sorted by a column of `ORDERABLE` (descending by default except
        for `idx`), optionally filtered by a substring of the explanation, concept or top tokens (or
        an exact index), a density range, and without the dead ones (`store.dead`). Missing values
        sort last."""
        if order_by not in ORDERABLE:
            raise MonosemanticError(
                f"cannot order features by {order_by!r}; use one of {', '.join(ORDERABLE)}"
            )
        desc = (order_by != "idx") if descending is None else descending
        where, params = self._where(dictionary_id, search, min_density, max_density, include_dead)
        sql = (
            f"SELECT * FROM features WHERE {where} ORDER BY {order_by} IS NULL, {order_by} "
            f"{'DESC' if desc else 'ASC'}, idx LIMIT ? OFFSET ?"
        )
        rows = self._rows(sql, [*params, -1 if limit is None else int(limit), int(offset)])
        return [self._feature_row(r) for r in rows]

    def count_features(
        self,
        dictionary_id: int,
        search: str | None = None,
        min_density: float | None = None,
        max_density: float | None = None,
        include_dead: bool = True,
    ) -> int:
        where, params = self._where(dictionary_id, search, min_density, max_density, include_dead)
        return int(self._rows(f"SELECT COUNT(*) FROM features WHERE {where}", params)[0][0])

    def feature_summaries(self, dictionary_id: int) -> list[dict[str, Any]]:
        """The few columns a choice among features needs (no JSON decoded): idx, density, n_active,
        the two scores and the explanation's source, by index."""
        rows = self._rows(
            "SELECT idx, density, n_active, score_detection, score_fuzzing, explanation_source FROM features "
            "WHERE dictionary_id = ? ORDER BY idx",
            (dictionary_id,),
        )
        return [dict(r) for r in rows]

    def set_explanation(self, dictionary_id: int, idx: int, text: str, source: str) -> None:
        """Store an explanation and what produced it (e.g. `offline`, `llm:gpt-4o-mini`)."""
        self.set_explanations(dictionary_id, [(idx, text, source)])

    def set_explanations(self, dictionary_id: int, items: Iterable[tuple[int, str | None, str]]) -> None:
        with self.transaction() as db:
            db.executemany(
                "UPDATE features SET explanation = ?, explanation_source = ? WHERE dictionary_id = ? AND idx = ?",
                [(text, source, dictionary_id, int(idx)) for idx, text, source in items],
            )

    def set_scores(self, dictionary_id: int, idx: int, scores: Mapping[str, Any], scorer: str) -> None:
        """Store scoring results: `scores` maps a method (`detection`, `fuzzing`) to a dict with at
        least `score`; those land in `score_<method>` columns for sorting, all of it in `scores`.
        `scorer` names what judged (e.g. `offline-keyword`, `llm:gpt-4o-mini`)."""
        self.set_scores_many(dictionary_id, [(idx, scores, scorer)])

    def set_scores_many(
        self, dictionary_id: int, items: Iterable[tuple[int, Mapping[str, Any], str]]
    ) -> None:
        """`set_scores` for many features in one transaction."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE features SET score_detection = ?, score_fuzzing = ?, scores = ?, scorer = ? "
                "WHERE dictionary_id = ? AND idx = ?",
                [
                    (
                        (sc.get("detection") or {}).get("score"),
                        (sc.get("fuzzing") or {}).get("score"),
                        enc(dict(sc)),
                        scorer,
                        dictionary_id,
                        int(idx),
                    )
                    for idx, sc, scorer in items
                ],  # fmt: skip
            )

    # -- graphs ----------------------------------------------------------------------------------
    def add_graph(self, name: str, graph: Mapping[str, Any], prompt: str | None = None) -> int:
        """Store an attribution graph (Neuronpedia/circuit-tracer JSON) and return its id."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO graphs (name, prompt, json, created) VALUES (?, ?, ?, ?)",
                (name, prompt, json.dumps(graph), now()),
            )
        return int(cur.lastrowid)

    def graphs(self) -> list[dict[str, Any]]:
        """Graph summaries (id, name, prompt, created), newest first; `graph(id)` gives the JSON."""
        return [dict(r) for r in self._rows("SELECT id, name, prompt, created FROM graphs ORDER BY id DESC")]

    def graph(self, graph_id: int) -> dict[str, Any]:
        rows = self._rows("SELECT json FROM graphs WHERE id = ?", (graph_id,))
        if not rows:
            raise MonosemanticError(f"no graph {graph_id} in {self.path}")
        return json.loads(rows[0][0])
