"""The store a server reads, reopened when the file is replaced, failing fast when it is locked.

`analyze` builds a new `features.db` under a temporary name and renames it over the old one; a
connection opened before keeps reading the deleted file, so `LiveStore.get()` reopens when the
inode changes (cheap: a stat per request). `explain` and `circuit` update the file in place: the
open connection sees their rows, but caches derived from the store (the viewer's index rows, the
search index) must be rebuilt, so any change of (inode, size, mtime) bumps `version`. The
server's own writes (graphs it traced, annotations) go through `own_write()`, which does not
bump it: they touch neither features nor examples, and tracing in a loop must not throw away
every cache each time.

A writer holding the database lock makes reads wait `busy_timeout_s` at most; the app answers
503 with Retry-After instead of stalling the 30 s SQLite default.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monosemantic.store.feature_store import FeatureStore

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
        self.version = 0

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
                if stamp[0] != self._stamp[0]:  # a new file: a fresh connection
                    fresh = FeatureStore(self.path, timeout=self.timeout)
                    # a request may still hold the previous connection: close it one swap later
                    for old in self._retired:
                        old.close()
                    self._retired = [self._store]
                    self._store = fresh
                self._stamp = stamp
                self.version += 1
        return self._store

    @contextmanager
    def own_write(self) -> Iterator[FeatureStore]:
        """A store to write graphs or annotations to; the change does not invalidate caches
        (an outside change made meanwhile is seen at the next one)."""
        store = self.get()
        with self._lock:
            yield store
            self._stamp = self._stat()

    def close(self) -> None:
        with self._lock:
            for s in [*self._retired, self._store]:
                s.close()
