"""Rich progress bars with rate and ETA, the same look for every long-running verb."""

from __future__ import annotations

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


class RateColumn(TextColumn):
    """Items per second, with a unit (tok/s, seq/s, step/s)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        if speed is None:
            return f"? {unit}/s"
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if speed >= scale:
                return f"{speed / scale:.1f}{suffix} {unit}/s"
        return f"{speed:.1f} {unit}/s"


class _Progress(Progress):
    """A run that fails takes its bar with it, so the error is the only line left on stderr."""

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            self.live.transient = True
            self.disable = True
        super().__exit__(exc_type, exc_val, exc_tb)


def progress_bar(transient: bool = False) -> Progress:
    """A bar showing description, completion, count, rate, elapsed and ETA, plus a free `info` field."""
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
