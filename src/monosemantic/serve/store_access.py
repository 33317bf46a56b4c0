"""The store a server reads, reopened when the file changes, failing fast when it is locked.

`analyze` builds a new `features.db` under a temporary name and renames it over the old one; a
connection opened before keeps reading the deleted file. `explain` and `circuit` update the file in
place. Either way the file's (inode, size, mtime) change, so `LiveStore.get()` opens a fresh
connection then (cheap: a stat per request), and every cache keyed by `generation` is rebuilt.
A writer holding the database lock makes reads wait `busy_timeout_s` at most; the app answers
503 with Retry-After instead of stalling the 30 s SQLite default.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from monosemantic.analyze.store import FeatureStore

__all__ = ["LiveStore"]


class LiveStore:
    """A `FeatureStore` on `path` that follows the file when it is replaced or updated."""

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path = Path(path)
        self.timeout = busy_timeout_s
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._store = FeatureStore(self.path, timeout=busy_timeout_s)
        self._retired: list[FeatureStore] = []
        self.generation = 0

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None  # between an unlink and a rename: keep reading what is open
        return st.st_ino, st.st_size, st.st_mtime_ns

    def get(self) -> FeatureStore:
        """The open store, reopened first if the file on disk is not the one it reads."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return self._store
        with self._lock:
            if stamp != self._stamp:
                fresh = FeatureStore(self.path, timeout=self.timeout)
                # a request may still hold the previous connection: close it one swap later
                for old in self._retired:
                    old.close()
                self._retired = [self._store]
                self._store, self._stamp = fresh, stamp
                self.generation += 1
        return self._store

    def close(self) -> None:
        with self._lock:
            for s in [*self._retired, self._store]:
                s.close()
