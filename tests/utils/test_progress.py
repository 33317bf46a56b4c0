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


def test_rates_keep_significant_digits_and_are_never_zero_per_second():
    from monosemantic.utils.progress import rate_text

    assert rate_text(0.1, "batch") == "10.0 s/batch"  # slow work in seconds per item, not "0.1 batch/s"
    assert rate_text(0.004, "batch") == "4.17 min/batch"
    assert rate_text(0.4, "step") == "2.50 s/step"
    assert rate_text(1.234, "seq") == "1.23 seq/s" and rate_text(45.67, "seq") == "45.7 seq/s"
    assert rate_text(234.5, "tok") == "234 tok/s" and rate_text(2345.0, "tok") == "2.35k tok/s"
    assert rate_text(3.2e7, "tok") == "32.0M tok/s"
    assert rate_text(0.0, "batch") == rate_text(None, "batch") == "? batch/s"


def test_a_slow_task_reads_in_seconds_per_item(capsys):
    with PlainProgress(interval=3600) as bar:
        task = bar.add_task("evaluate", total=10, unit="batch", info="")
        bar.tasks[task]["start"] -= 20.0  # 20 s for one batch
        bar.update(task, advance=1)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"  \d\d\.\d s/batch", last) and "0.0 batch/s" not in last
