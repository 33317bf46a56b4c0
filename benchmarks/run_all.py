"""Run every benchmark and write the tables into docs/benchmarks.md (between the bench markers).

Each `benchmarks/bench_*.py` module exposes `run()` returning either a markdown string or a list
of row dicts; `TITLE` names its section. A failing benchmark is reported in its section instead of
aborting the others, so one missing optional peer (e.g. SAELens) never hides the rest. Each keeps
its latest section in `benchmarks/results/NAME.md`; the docs page is those sections in `MODULES`
order (`python -m benchmarks.run_all --docs` rewrites it from them without running anything).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
MODULES = [
    "bench_harvest",
    "bench_train",
    "bench_analyze",
    "bench_circuits",
    "bench_circuit_tracer",
    "bench_attention_circuits",
    "bench_toy_recovery",
    "bench_conformance",
]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_no rows_"
    cols = list(dict.fromkeys(k for row in rows for k in row))
    fmt = lambda v: f"{v:,.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in cols) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} cores ({cpu}), {gpu}, torch {torch.__version__}, Python {sys.version.split()[0]}"
    )


def docs_block() -> str:
    """The generated section of docs/benchmarks.md: every benchmark's latest table, in order."""
    sections = [(RESULTS / f"{name}.md").read_text() for name in MODULES if (RESULTS / f"{name}.md").exists()]
    return "\n".join(sections)


def write_docs() -> None:
    """Put the latest tables between the bench markers of docs/benchmarks.md."""
    page = DOCS.read_text()
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{START}\n{docs_block()}\n{END}{tail}")


def main(only: list[str] | None = None) -> str:
    """Run the named benchmarks (default all); each keeps its latest section in benchmarks/results/,
    so re-running one benchmark updates its table and keeps the others'."""
    RESULTS.mkdir(exist_ok=True)
    for name in only or MODULES:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as e:
            (RESULTS / f"{name}.md").write_text(f"### {name}\n\n_not run: {e}_\n")
            continue
        title = getattr(module, "TITLE", name)
        print(f"== {title}", flush=True)
        try:
            result = module.run()
            body = result if isinstance(result, str) else markdown_table(result)
        except Exception:  # a benchmark failure is reported, not fatal
            body = "_failed:_\n```\n" + traceback.format_exc(limit=3) + "```"
        print(body, flush=True)
        stamp = f"_Measured {time.strftime('%Y-%m-%d %H:%M')} on {machine()}; load average {os.getloadavg()[0]:.1f}._"
        (RESULTS / f"{name}.md").write_text(f"### {title}\n\n{stamp}\n\n{body}\n")
    write_docs()
    return docs_block()


if __name__ == "__main__":
    if sys.argv[1:] == ["--docs"]:
        write_docs()
    else:
        main(sys.argv[1:] or None)
