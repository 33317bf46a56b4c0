"""A background-thread read-ahead for the harvest's window stream (single and distributed)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any


class Prefetch:
    """Runs an iterator in a background thread, `depth` items ahead, in order.

    Story generation and tokenizing (CPU) then overlap the forward pass (which releases the GIL),
    the way a DataLoader worker would, without changing what is produced or its order.
    """

    _END = object()

    def __init__(self, items: Iterator[Any], depth: int = 256) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(items,), daemon=True)
        self._thread.start()

    def _fill(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                while not self._put(item):
                    if self._stop.is_set():
                        return
        except BaseException as e:  # handed to the consumer, raised there
            self._put_final(e)
            return
        self._put_final(self._END)

    def _put(self, item: Any) -> bool:
        try:
            self._queue.put(item, timeout=0.1)
            return True
        except queue.Full:
            return False

    def _put_final(self, item: Any) -> None:
        while not self._put(item) and not self._stop.is_set():
            pass

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)  # stay exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
