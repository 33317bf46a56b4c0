"""One worker thread that runs every live job (activations, steering, tracing) in turn.

The model and dictionaries live in this thread alone, so there is one copy of each and no two
jobs compete for the CPU or GPU; browsing requests never wait for it (they only read the store).
The queue is bounded: a submission beyond `queue_size` waiting jobs raises `QueueFull`, which
the app answers with 429 and Retry-After. Jobs report progress (a stage and a fraction) and may
stream events (generated tokens) to an asyncio listener through `listen`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from monosemantic.utils.errors import MonosemanticError

__all__ = ["Closed", "Job", "QueueFull", "Worker"]

KEEP_FINISHED = 200  # finished jobs remembered for GET /api/jobs/{id}
WORKER_NICE = 10


class QueueFull(Exception):
    """Too many live jobs are waiting; `retry_after` seconds is a fair wait."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the live queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class Closed(Exception):
    """The worker was closed (the server is shutting down): no new job runs."""


@dataclass
class Job:
    id: int
    kind: str
    fn: Callable[[Job], Any] = field(repr=False)
    status: str = "queued"  # queued | running | done | failed
    stage: str = "queued"
    progress: float = 0.0
    result: Any = None
    error: str | None = None
    internal: bool = False  # failed on a bug or resource problem, not on the request's input
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    _listeners: list[Callable[[dict[str, Any] | None], None]] = field(default_factory=list, repr=False)

    def report(self, stage: str, progress: float) -> None:
        self.stage, self.progress = stage, max(0.0, min(1.0, float(progress)))

    def emit(self, event: dict[str, Any] | None) -> None:
        """Send an event to every listener (None: the stream is over)."""
        for listener in list(self._listeners):
            listener(event)

    def listen(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
        """An asyncio queue in `loop` receiving this job's events, then None when it finishes."""
        q: asyncio.Queue = asyncio.Queue()
        self._listeners.append(lambda ev: loop.call_soon_threadsafe(q.put_nowait, ev))
        return q

    @property
    def done(self) -> bool:
        return self.status in ("done", "failed")

    def summary(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("id", "kind", "status", "stage", "progress", "error")}
        out["seconds"] = round((self.finished or time.time()) - (self.started or time.time()), 3)
        if self.status == "done" and isinstance(self.result, dict) and "graph_id" in self.result:
            out["result"] = self.result
        return out


class Worker:
    """A daemon thread running submitted jobs one at a time, in order."""

    def __init__(self, queue_size: int) -> None:
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._closed = threading.Event()
        self._ids = itertools.count(1)
        self._jobs: OrderedDict[int, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._mean_s = 5.0  # running mean job time, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="monosemantic-live", daemon=True)
        self._thread.start()

    def submit(self, kind: str, fn: Callable[[Job], Any], listen: asyncio.AbstractEventLoop | None = None
               ) -> tuple[Job, asyncio.Queue | None]:  # fmt: skip
        """Queue `fn(job)`; with `listen`, also an asyncio queue of its events (see `Job.listen`)."""
        job = Job(next(self._ids), kind, fn)
        events = job.listen(listen) if listen is not None else None
        with self._lock:  # `close` takes it too: no job slips in behind its sentinel
            if self._closed.is_set():
                raise Closed("the server is shutting down; retry when it is back")
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull(max(1, round(self._mean_s * self._queue.qsize()))) from None
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_FINISHED and next(iter(self._jobs.values())).done:
                self._jobs.popitem(last=False)
        return job, events

    def job(self, job_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def close(self) -> None:
        """Stop after the running job: the waiting jobs fail (they will never run), new ones are
        refused (`Closed`); returns at once, so a server's shutdown never waits on the queue."""
        with self._lock:
            self._closed.set()  # `submit` checks it under the lock: nothing joins the queue now
        while True:
            try:
                dropped = self._queue.get_nowait()
            except queue.Empty:
                break
            if dropped is not None:
                dropped.status, dropped.error = "failed", "the server shut down"
                dropped.finished = time.time()
                dropped.emit(None)
        self._queue.put_nowait(None)  # the loop ends when it reaches this

    def _loop(self) -> None:
        try:  # Linux: a thread's own nice value. Browsing requests get the CPU first; jobs use the rest.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
        except (AttributeError, OSError):
            pass
        while True:
            job = self._queue.get()
            if job is None:  # `close`: leave the jobs still waiting, they will not run
                return
            job.status, job.stage, job.started = "running", "running", time.time()
            try:
                job.result = job.fn(job)
                job.status, job.stage, job.progress = "done", "done", 1.0
            except MonosemanticError as e:
                job.status, job.error = "failed", str(e)
            except Exception as e:  # a job's bug must not kill the worker: report it on the job
                job.status, job.error, job.internal = "failed", f"{type(e).__name__}: {e}", True
                traceback.print_exc()
            job.finished = time.time()
            self._mean_s = 0.8 * self._mean_s + 0.2 * (job.finished - job.started)
            job.emit(None)
