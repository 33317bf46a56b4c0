"""The live worker: jobs run one at a time, in order; closing it (the server's shutdown) lets the
running job finish, fails the waiting ones and refuses new ones, so shutdown never waits on a queue."""

from __future__ import annotations

import threading

import pytest

from monosemantic.server.jobs import Closed, Worker
from monosemantic.utils.errors import MonosemanticError


def test_jobs_run_in_order_and_report_failures():
    worker = Worker(queue_size=4)
    order: list[int] = []
    done = threading.Event()

    def fail(job):
        raise MonosemanticError("bad input")

    first, _ = worker.submit("a", lambda job: order.append(1) or "one")
    bad, _ = worker.submit("b", fail)
    last, _ = worker.submit("c", lambda job: order.append(3) or done.set())
    assert done.wait(30)
    assert order == [1, 3] and first.result == "one" and first.status == "done"
    assert bad.status == "failed" and bad.error == "bad input" and not bad.internal
    worker.close()


def test_close_finishes_the_running_job_drops_the_waiting_and_refuses_new():
    worker = Worker(queue_size=2)
    started, release = threading.Event(), threading.Event()

    def running(job):
        started.set()
        assert release.wait(30)
        return "finished"

    busy, _ = worker.submit("busy", running)
    assert started.wait(30)
    waiting = [worker.submit("waiting", lambda job: "ran")[0] for _ in range(2)]  # the queue is full
    worker.close()
    assert all(j.status == "failed" and j.error == "the server shut down" for j in waiting)
    with pytest.raises(Closed):
        worker.submit("late", lambda job: "ran")
    release.set()
    worker._thread.join(30)
    assert not worker._thread.is_alive()
    assert busy.status == "done" and busy.result == "finished"
    assert all(j.result is None for j in waiting)
