"""Off a terminal, progress is plain lines with count, rate and ETA at a steady interval."""

from __future__ import annotations

import re
import time

from monosemantic.utils import progress
from monosemantic.utils.progress import PlainProgress, progress_bar


def test_not_a_terminal_gives_plain_progress():
    assert not progress.console.is_terminal  # pytest captures stderr
    assert isinstance(progress_bar(), PlainProgress)


def test_plain_lines_at_interval_with_rate_and_eta(capsys):
    with PlainProgress(interval=0.05) as bar:
        task = bar.add_task("harvest", total=1000, unit="tok", info="")
        for _ in range(10):
            time.sleep(0.011)
            bar.update(task, advance=50, info="shard 1")
    lines = [x for x in capsys.readouterr().err.splitlines() if x]
    # ~0.11 s of work at a 0.05 s interval: one or two periodic lines plus the final one
    assert 2 <= len(lines) <= 4
    last = lines[-1]
    assert last.startswith("harvest: 500/1.0k tok (50.0%)")
    rate = float(re.search(r"  ([\d.]+)k? tok/s", last).group(1))
    assert rate > 0
    assert re.search(r"eta 0:00:0\d", last) and "shard 1" in last
    assert "\x1b" not in last  # no terminal control codes


def test_transient_and_invisible_tasks_print_no_final_line(capsys):
    with PlainProgress(interval=3600, transient=True) as bar:
        bar.update(bar.add_task("spliced", total=3), advance=3)
    with PlainProgress(interval=3600) as bar:
        bar.advance(bar.add_task("quiet", total=None, visible=False))
    assert capsys.readouterr().err == ""
