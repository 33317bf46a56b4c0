"""Config values cannot crash a verb: every field of every config model (tests/support/config_fuzz.py
finds them, so new fields are fuzzed without a line here) gets 0, negatives, huge values, inf,
NaN, wrong types, null, empty values, its declared bounds and their neighbours, and for paths a
FIFO, a symlink loop, a read-only location, a file where a folder goes and the other way round.

Fast part (`make test`): every (field, value) through the config loader: it loads, or it is one
line naming the key; and a sample of the values that load run the verbs that read them for real.
Slow part (`-m slow`): every value that loads runs every verb that reads its section. A real run
exits 0, or exits 2 with one line on stderr; never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from config_fuzz import READERS, VERB_ARGS, VERBS, Field, Paths, Value, fields, overrides, readers, values
from tiny_world import base_toml

from monosemantic.cli import app
from monosemantic.config import load_config
from monosemantic.config.ranges import INT64, leaf_number
from monosemantic.utils.errors import ConfigError

FIELDS = fields()
FAST_RUNS_PER_VERB = 2


class ChecksPassed(Exception):
    """Raised where a verb that never ends by itself (serve) or runs every other verb (demo) has
    passed its own checks."""


@pytest.fixture(scope="module")
def fuzz_paths(tmp_path_factory: pytest.TempPathFactory):
    """The path fixtures: a FIFO, a symlink loop, a read-only folder (a read-only tmpfs where this
    process may mount one, else a place under /proc), an existing file, an existing folder."""
    root = tmp_path_factory.mktemp("fuzz-paths")
    os.mkfifo(root / "fifo")
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "file").write_text("not a config\n")
    (root / "folder").mkdir()
    ro = root / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0  # fmt: skip
    paths = Paths({"fifo": root / "fifo", "loop": root / "loop-a", "file": root / "file", "folder": root / "folder",
                   "missing": root / "missing" / "x", "dangling": root / "dangling",
                   "readonly": ro / "x" if mounted else Path("/proc/monosemantic-fuzz/x")})  # fmt: skip
    yield paths
    if mounted:
        subprocess.run(["umount", str(ro)], check=False)


@pytest.fixture(scope="module")
def fuzz_world(tiny_world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny world plus an evaluation (`compare` reads its metrics.json)."""
    from monosemantic.evaluation.run import evaluate

    root = tmp_path_factory.mktemp("fuzz-world")
    case = root / "seed"
    case.mkdir()
    (case / "c.toml").write_text(base_toml(tiny_world, case))
    evaluate(load_config(case / "c.toml", ["evaluate.spliced=false", "evaluate.plots=false"]))
    return {**tiny_world, "metrics": case / "eval" / "metrics.json"}


def _config_file(world: dict[str, Path], case: Path) -> Path:
    case.mkdir(parents=True, exist_ok=True)
    path = case / "c.toml"
    path.write_text(base_toml(world, case))
    shutil.copyfile(world["db"], case / "copy.db")  # explain writes into its store
    (case / "eval").mkdir(exist_ok=True)
    shutil.copyfile(world["metrics"], case / "eval" / "metrics.json")  # compare reads it
    return path


def _loads(path: Path, f: Field, v: Value, paths: Paths) -> bool:
    """True when the config loads; a refusal must be one ConfigError line naming the key."""
    try:
        load_config(path, overrides(f, v, paths))
    except ConfigError as e:
        message = str(e)
        assert "\n" not in message, f"{f.name}={v.label}: {message!r}"
        named = f.key.split(".")[0] if f.key in ("dtype", "device", "seed") else f.key
        assert named in message or f.section in message, f"{f.name}={v.label}: {message}"
        return False
    return True


def _run(verb: str, cfg: Path, f: Field, v: Value, paths: Paths, cli_runner, monkeypatch) -> None:
    """One real run: exit 0, or exit 2 with one line on stderr."""
    import uvicorn

    import monosemantic.demo

    def listening(server) -> None:  # serve: every check passed, uvicorn would listen now
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", listening)
    monkeypatch.setattr(monosemantic.demo, "_step", lambda *a, **k: (_ for _ in ()).throw(ChecksPassed()))
    args = [*verb.split(), str(cfg), *VERB_ARGS.get(verb, [])]
    for assignment in overrides(f, v, paths):
        args += ["--set", assignment]
    result = cli_runner.invoke(app, args)
    paths.reset()
    where = f"{verb} {f.name}={v.label}"
    if isinstance(result.exception, ChecksPassed):
        return
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"{where}: raised {result.exception!r}\n{result.stderr}"
    )
    assert "Traceback" not in result.output and "Traceback" not in result.stderr, where
    if result.exit_code == 0:
        return
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]  # progress or notes may precede it
    assert result.exit_code == 2, f"{where}: exit {result.exit_code}\n{result.stderr}"
    assert len(errors) == 1 and lines[-1] == errors[0], (
        f"{where}: {len(errors)} error lines:\n{result.stderr}"
    )


def test_every_number_field_declares_its_range():
    """Lower bound always; integers an upper one too (they must fit torch, numpy and SQLite)."""
    for f in FIELDS:
        leaf = leaf_number(f.annotation, list(f.metadata))
        if leaf is None:
            continue
        kind, meta = leaf
        kinds = {type(m).__name__ for m in meta}
        assert kinds & {"Gt", "Ge"}, f"{f.name} declares no lower bound"
        if kind is int:
            assert kinds & {"Lt", "Le"}, f"{f.name} declares no upper bound (config/ranges.py: Count, ...)"
            assert all(getattr(m, k, 0) <= INT64 for m in meta for k in ("le", "lt")), f.name


def test_every_section_has_its_readers():
    assert {f.section for f in FIELDS} <= set(READERS), "add the new section's verbs to READERS"
    assert {v for vs in READERS.values() for v in vs} <= set(VERBS)


@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
def test_every_value_loads_or_is_one_line_naming_the_key(f: Field, tmp_path: Path, fuzz_paths: Paths) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        base_toml({k: Path(f"/world/{k}") for k in ("model", "acts", "sae", "tc", "db")}, tmp_path)
    )
    for v in values(f):
        _loads(cfg, f, v, fuzz_paths)


def _combos(paths: Paths, tmp: Path) -> list[tuple[str, Field, Value]]:
    """(verb, field, value) for every value that loads, against every verb that reads the field."""
    cfg = tmp / "c.toml"
    cfg.write_text(base_toml({k: Path(f"/world/{k}") for k in ("model", "acts", "sae", "tc", "db")}, tmp))
    return [(verb, f, v) for f in FIELDS for v in values(f) if v.run and _loads(cfg, f, v, paths)
            for verb in readers(f)]  # fmt: skip


@pytest.fixture(scope="module")
def loading(fuzz_paths: Paths, tmp_path_factory: pytest.TempPathFactory) -> tuple[list, float]:
    """Every (verb, field, value) that loads, found once per module, and the seconds it took."""
    start = time.perf_counter()
    combos = _combos(fuzz_paths, tmp_path_factory.mktemp("combos"))
    return combos, time.perf_counter() - start


def _sample(combos: list[tuple[str, Field, Value]]) -> list[tuple[str, Field, Value]]:
    """A fixed sample: per verb, the first few combos in an order set by a hash of their names."""

    def key(c: tuple[str, Field, Value]) -> str:
        return hashlib.sha256(f"{c[0]}|{c[1].name}|{c[2].label}".encode()).hexdigest()

    picked = []
    for verb in VERBS:
        picked += sorted((c for c in combos if c[0] == verb), key=key)[:FAST_RUNS_PER_VERB]
    return picked


def test_a_sample_of_loading_values_runs_the_verbs_that_read_them(
    loading, fuzz_world, fuzz_paths, tmp_path, cli_runner, monkeypatch
):
    sample = _sample(loading[0])
    assert {verb for verb, _, _ in sample} == set(VERBS)
    for i, (verb, f, v) in enumerate(sample):
        cfg = _config_file(fuzz_world, tmp_path / f"case-{i}")
        _run(verb, cfg, f, v, fuzz_paths, cli_runner, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
def test_every_loading_value_runs_every_verb_that_reads_it(
    f: Field, fuzz_world, fuzz_paths, tmp_path, cli_runner, monkeypatch
):
    cfg = tmp_path / "c.toml"
    cfg.write_text(base_toml(fuzz_world, tmp_path))
    ran = 0
    for v in values(f):
        if not (v.run and _loads(cfg, f, v, fuzz_paths)):
            continue
        for verb in readers(f):
            case = _config_file(fuzz_world, tmp_path / f"{ran}")
            _run(verb, case, f, v, fuzz_paths, cli_runner, monkeypatch)
            ran += 1


def test_fuzz_counts(loading, capsys):
    """The size of the fuzz, reported with the suite (fields x values x verbs)."""
    combos, seconds = loading
    n_values = sum(len(values(f)) for f in FIELDS)
    counts = {"fields": len(FIELDS), "values": n_values, "loading_runs": len(combos),
              "sample": len(_sample(combos)), "seconds_to_load_all": round(seconds, 1)}  # fmt: skip
    with capsys.disabled():
        print("\nconfig fuzz:", json.dumps(counts))
    assert counts["fields"] > 150 and counts["values"] > 10 * counts["fields"]
