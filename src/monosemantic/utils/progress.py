"""Progress for every long-running verb: a rich bar with rate and ETA on a terminal, and plain
lines (count, rate, ETA) at a steady interval when stderr is a file, a pipe, CI or a notebook,
where a live bar would be redrawn into garbage or cut off."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def rate_text(rate: float | None, unit: str) -> str:
    """A rate with 3 significant digits in units that keep them: `2.34k tok/s`, `45.6 seq/s`, or
    seconds per item when under one a second (`4.20 s/batch`), never `0.0 batch/s`."""
    if rate is None or not rate > 0:
        return f"? {unit}/s"
    if rate < 1:
        per = 1 / rate
        return f"{_sig(per)} s/{unit}" if per < 60 else f"{_sig(per / 60)} min/{unit}"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= scale:
            return f"{_sig(rate / scale)}{suffix} {unit}/s"
    return f"{_sig(rate)} {unit}/s"


def _sig(x: float) -> str:
    """3 significant digits, no exponent (x in [1, 1000) in practice)."""
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


class RateColumn(TextColumn):
    """Items per second, with a unit (tok/s, seq/s, step/s); seconds per item when slow."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        return rate_text(task.finished_speed or task.speed, task.fields.get("unit", "it"))


class _Progress(Progress):
    """A run that fails takes its bar with it, so the error is the only line left on stderr."""

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            self.live.transient = True
            self.disable = True
        super().__exit__(exc_type, exc_val, exc_tb)


PLAIN_INTERVAL_S = 10.0  # seconds between plain progress lines


def _si(x: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{suffix}"
    return f"{x:.1f}" if x != int(x) else f"{int(x)}"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class PlainProgress:
    """The part of `rich.progress.Progress` the verbs use (`add_task`, `update`, `advance`, context
    manager), printing one line per task every `interval` seconds and a last one when it ends."""

    def __init__(self, interval: float = PLAIN_INTERVAL_S, transient: bool = False) -> None:
        self.interval = interval
        self.transient = transient
        self.tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and not self.transient:
            for tid in self.tasks:
                self._print(tid)

    def add_task(
        self,
        description: str,
        total: float | None = None,
        completed: float = 0,
        visible: bool = True,
        **fields: Any,
    ) -> int:
        tid = len(self.tasks)
        now = time.monotonic()
        self.tasks[tid] = {
            "description": description,
            "total": total,
            "completed": completed,
            "start_completed": completed,
            "visible": visible,
            "start": now,
            "last": now,
            "fields": {"unit": "it", "info": "", **fields},
        }
        return tid

    def update(
        self,
        task_id: int,
        advance: float | None = None,
        completed: float | None = None,
        total: float | None = None,
        **fields: Any,
    ) -> None:
        t = self.tasks[task_id]
        if completed is not None:
            t["completed"] = completed
        if advance is not None:
            t["completed"] += advance
        if total is not None:
            t["total"] = total
        fields.pop("visible", None)
        t["fields"].update(fields)
        now = time.monotonic()
        if now - t["last"] >= self.interval:
            t["last"] = now
            self._print(task_id)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def line(self, task_id: int) -> str:
        """`name: done/total unit (pct)  rate unit/s  elapsed h:mm:ss  eta h:mm:ss  info`."""
        t = self.tasks[task_id]
        unit, done, total = t["fields"]["unit"], t["completed"], t["total"]
        elapsed = time.monotonic() - t["start"]
        rate = (done - t["start_completed"]) / elapsed if elapsed > 0 else 0.0
        parts = [f"{t['description']}: {_si(done)}" + (f"/{_si(total)}" if total else "") + f" {unit}"]
        if total:
            parts[0] += f" ({100 * done / total:.1f}%)"
        parts.append(rate_text(rate, unit))
        parts.append(f"elapsed {_clock(elapsed)}")
        if total and rate > 0:
            parts.append(f"eta {_clock(max(0.0, total - done) / rate)}")
        if t["fields"].get("info"):
            parts.append(str(t["fields"]["info"]))
        return "  ".join(parts)

    def _print(self, task_id: int) -> None:
        if self.tasks[task_id]["visible"]:
            console.print(self.line(task_id), markup=False, highlight=False, soft_wrap=True)


def progress_bar(transient: bool = False) -> Progress | PlainProgress:
    """A bar showing description, completion, count, rate, elapsed and ETA, plus a free `info` field;
    plain progress lines instead when stderr is not a terminal."""
    if not console.is_terminal:
        return PlainProgress(transient=transient)
    return _Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=transient,
        refresh_per_second=4,
    )
