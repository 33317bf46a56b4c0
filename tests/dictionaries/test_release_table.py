"""docs/releases.md's table of releases stays true: every fixture test it names exists (in the file
it names, else test_release_readers.py) and every reader module it names is in the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT = "tests/dictionaries/test_release_readers.py"


def _rows() -> list[list[str]]:
    text = (REPO / "docs" / "releases.md").read_text(encoding="utf-8")
    table = text.split("## The releases", 1)[1].split("\n\n")[2]  # prose, then the table
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]  # header, rule
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def _defined(path: str) -> set[str]:
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def _named_tests(cell: str) -> list[tuple[str, str]]:
    """(test, file) pairs of a fixture-test cell: `test_x` ... in `tests/....py` names that file
    for the tests before it in its clause (clauses are separated by ';')."""
    out = []
    for clause in cell.split(";"):
        files = re.findall(r"`(tests/[\w/]+\.py)`", clause)
        out += [(t, files[-1] if files else DEFAULT) for t in re.findall(r"`(test_\w+)`", clause)]
    return out


def test_every_release_row_names_fixture_tests_that_exist():
    rows = _rows()
    assert len(rows) >= 10, rows
    for row in rows:
        release, tests = row[0], _named_tests(row[4])
        assert tests, f"{release}: names no fixture test"
        for name, path in tests:
            assert name in _defined(path), f"{release}: {name} is not defined in {path}"


def test_every_reader_the_table_names_is_a_module():
    readers = {m for row in _rows() for m in re.findall(r"`(dictionaries/[\w/]+\.py)`", row[3])}
    assert readers and all((REPO / "src" / "monosemantic" / m).is_file() for m in readers), readers


def test_the_readme_release_table_names_fixture_tests_that_exist():
    """The README's short table (release, fixture test) names tests that exist, one row per release."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`test_" in line]
    assert len(rows) >= 9, rows
    for line in rows:
        release, cell = (c.strip() for c in line.strip("|").split("|")[:2])
        tests = _named_tests(cell)
        assert tests, f"README: {release} names no fixture test"
        for name, path in tests:
            assert name in _defined(path), f"README: {release}: {name} is not defined in {path}"
