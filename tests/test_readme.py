"""The README is the front page: the two commands, a short tour, true headline numbers, links.

Its commands, links and Python are checked with the docs pages' (tests/test_docs.py); its Python
snippet runs in tests/test_readme_python.py.
"""

import re

from manual_pages import README, REPO, split

RESULTS = REPO / "benchmarks" / "results"


def test_readme_names_the_two_commands_and_links_the_manual():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    for page in ("install", "tutorial", "cli", "configuration", "benchmarks"):
        assert f"(docs/{page}.md" in text, page


def test_readme_stays_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines: move long material into a docs/ page"


def _headline_rows() -> list[list[str]]:
    _, prose = split(README.read_text())
    section = prose.split("## Benchmarks at a glance", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # without the header


def test_readme_headline_numbers_are_in_the_latest_benchmark_tables():
    """Every number of the headline table appears in benchmarks/results/ (what `make bench` wrote)."""
    results = "\n".join(p.read_text() for p in sorted(RESULTS.glob("*.md")))
    rows = _headline_rows()
    assert len(rows) >= 4
    for what, ours, peer, machine in rows:
        for number in re.findall(r"\d+(?:\.\d+)?(?:e[+-]\d+)?", f"{ours} {peer}"):
            assert number in results, f"README headline {what!r}: {number} is in no benchmarks/results/ table"
        date = re.search(r"\d{4}-\d{2}-\d{2}", machine)
        assert date and date[0] in results, f"README headline {what!r}: no table was measured on {machine}"


def test_readme_links_point_into_the_docs_that_exist():
    for target in re.findall(r"\]\((docs/[^)#]+)", README.read_text()):
        assert (REPO / target).is_file(), target
