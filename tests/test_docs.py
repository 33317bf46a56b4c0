"""The manual (docs/, built by mkdocs) states facts the code keeps true.

Every page is in the nav; every link and anchor resolves; the generated reference blocks equal
what the code generates; every config key and CLI verb is documented; every command in a shell
block parses against the CLI (with its --set keys valid for the config it names); TOML blocks are
valid configs, JSON blocks parse, Python blocks compile and name real API; config keys and repo
paths named in prose exist; `plan` output shown in the docs is what plan prints. Each failure is
one line naming the page, the line and the fix.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import tomllib
import typer
from manual_pages import (
    DOCS,
    README,
    REPO,
    SHELLS,
    anchors,
    code_spans,
    generated_blocks,
    links,
    monosemantic_argv,
    nav_pages,
    outside_generated,
    pages,
    shell_commands,
    split,
)
from pydantic import BaseModel
from typer.testing import CliRunner

import monosemantic
from monosemantic import manual
from monosemantic.cli import app, verbs
from monosemantic.config import Config, load_config, validate_config
from monosemantic.config.dictionary import _CONFIGS, registered_configs
from monosemantic.dictionaries.base import _REGISTRY
from monosemantic.utils.errors import ConfigError

ALL = [*pages(), README]


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    listed = nav_pages()
    on_disk = [str(p.relative_to(DOCS)) for p in pages()]
    missing = [p for p in on_disk if p not in listed]
    assert not missing, (
        f"docs/{missing[0]} is not in mkdocs.yml's nav: add `- {missing[0]}` under its section"
    )
    absent = [p for p in listed if p not in on_disk]
    assert not absent, f"mkdocs.yml's nav lists {absent[0]}, which is not in docs/"


def test_generated_reference_blocks_are_current():
    stale = manual.stale(DOCS)
    assert not stale, f"{stale[0]} differs from the code: regenerate with `python -m monosemantic.manual`"


def test_benchmark_tables_are_the_latest_results():
    spec = importlib.util.spec_from_file_location("bench_run_all", REPO / "benchmarks" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)  # type: ignore[union-attr]
    page = (DOCS / "benchmarks.md").read_text()
    block = page.split(run_all.START, 1)[1].split(run_all.END, 1)[0]
    assert block.strip() == run_all.docs_block().strip(), (
        "docs/benchmarks.md's tables differ from benchmarks/results/: run `python -m benchmarks.run_all --docs`"
    )


def test_links_and_anchors_resolve():
    problems = []
    for page in ALL:
        for target, line in links(page.read_text()):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:, file:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{rel(page)}:{line}: link {target!r}"
            if page != README and path and DOCS not in dest.parents and dest != DOCS:
                problems.append(f"{where} leaves docs/ (mkdocs cannot follow it): name the file in `code`")
            elif not dest.exists():
                problems.append(f"{where}: {rel(dest) if REPO in dest.parents else dest} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
                problems.append(f"{where}: no heading with anchor #{anchor} in {rel(dest)}")
    assert not problems, problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def _models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models(a)]


def _config_keys() -> dict[str, list[str]]:
    """Every section (and nested table) of Config with its keys, walked from the root model."""
    found: dict[str, list[str]] = {
        "root keys": [n for n, f in Config.model_fields.items() if not _models(f.annotation)]
    }

    def walk(prefix: str, model: type[BaseModel]) -> None:
        found.setdefault(prefix, list(model.model_fields))
        for key, field in model.model_fields.items():
            for sub in _models(field.annotation):
                walk(f"{prefix}.{key}", sub)

    for name, field in Config.model_fields.items():
        for model in _models(field.annotation):
            walk("dictionary" if name == "dictionaries" else name, model)
    return found


def test_every_config_key_is_documented():
    block = generated_blocks((DOCS / "configuration.md").read_text())["config"]
    tables = dict(re.findall(r"^### (.+?)\n(.*?)(?=^### |\Z)", block, flags=re.S | re.M))
    by_name = {re.sub(r"[\[\]]", "", h).split(" / ")[0]: body for h, body in tables.items()}
    missing, undescribed = [], []
    for section, keys in _config_keys().items():
        body = by_name.get(section, "")
        for key in keys:
            row = re.search(rf"^\| `{key}` \|.*\| (.*) \|$", body, flags=re.M)
            if row is None:
                missing.append(f"{section}.{key}")
            elif not row[1].strip():
                undescribed.append(f"{section}.{key}")
    assert not missing, (
        f"config keys missing from docs/configuration.md: {missing}; run `python -m monosemantic.manual`"
    )
    assert not undescribed, (
        f"config keys without a description (give the Field a description=): {undescribed}"
    )


def test_every_verb_is_documented():
    cli_page = (DOCS / "cli.md").read_text()
    reference = generated_blocks(cli_page)["cli"]
    prose = "\n".join(outside_generated(p.read_text()) for p in pages())
    for verb in verbs():
        assert f"### monosemantic {verb}\n" in reference, (
            f"`{verb}` is not in docs/cli.md: run `python -m monosemantic.manual`"
        )
        assert re.search(rf"monosemantic {verb}\b", prose), (
            f"no page outside the generated reference uses `monosemantic {verb}`"
        )


def _command(argv: list[str]):  # type: ignore[no-untyped-def]
    command = typer.main.get_command(app)
    words = list(argv)
    while hasattr(command, "commands") and words:
        name = words.pop(0)
        if name not in command.commands:
            return None, name, words
        command = command.commands[name]
    return command, None, words


def _shell_blocks():  # type: ignore[no-untyped-def]
    for page in ALL:
        blocks, _ = split(page.read_text())
        for block in blocks:
            if block.lang in SHELLS:
                for argv, output in shell_commands(block):
                    yield page, block, argv, output


def test_commands_in_the_docs_parse_and_their_overrides_are_valid():
    problems, checked = [], 0
    for page, block, argv, _ in _shell_blocks():
        args = monosemantic_argv(argv)
        if args is None:
            continue
        where = f"{rel(page)}:{block.line}: `monosemantic {' '.join(args)}`"
        command, unknown, rest = _command(args)
        if command is None:
            problems.append(f"{where}: no verb {unknown!r}")
            continue
        try:
            command.make_context("monosemantic", list(rest))
        except Exception as e:  # a usage error of the command itself
            problems.append(f"{where}: {type(e).__name__}: {e}")
            continue
        sets = [rest[i + 1] for i, a in enumerate(rest[:-1]) if a in ("--set", "-s")]
        config = next((REPO / a for a in rest if a.endswith(".toml") and (REPO / a).is_file()), None)
        try:
            load_config(config, sets)
        except ConfigError as e:
            problems.append(f"{where}: {e}")
        checked += 1
    assert not problems, problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    assert checked >= 20  # the checker finds the docs' commands (the tutorial alone has more)


def test_plan_output_shown_in_the_docs_is_what_plan_prints():
    shown = [(p, b, argv, out) for p, b, argv, out in _shell_blocks() if out and monosemantic_argv(argv)]
    assert shown, "no console block shows plan's output"
    for page, block, argv, output in shown:
        args = monosemantic_argv(argv)
        assert args[0] == "plan", (
            f"{rel(page)}:{block.line}: only plan's output is checked; show others without `$ `"
        )
        result = CliRunner().invoke(app, [a if not a.endswith(".toml") else str(REPO / a) for a in args])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == output.strip(), (
            f"{rel(page)}:{block.line}: plan prints something else now: paste its output into the page"
        )


def _run_registration(code: str, registered: list[str]) -> None:
    """Execute a page's example that registers an architecture, so the config after it can name it
    (and the example itself is checked to import, subclass and register)."""
    before = set(registered_configs())
    exec(compile(code, "<docs example>", "exec"), {"__name__": "docs_example"})
    registered += sorted(set(registered_configs()) - before)


def test_toml_and_json_blocks_are_valid():
    sections = set(Config.model_fields)
    registered: list[str] = []
    try:
        _check_blocks(sections, registered)
    finally:
        for name in registered:
            _REGISTRY.pop(name, None)
            _CONFIGS.pop(name, None)


def _check_blocks(sections: set[str], registered: list[str]) -> None:
    for page in ALL:
        blocks, _ = split(page.read_text())
        for block in blocks:
            where = f"{rel(page)}:{block.line}"
            if block.lang == "python" and "@register_dictionary(" in block.code:
                _run_registration(block.code, registered)
            elif block.lang == "toml":
                data = tomllib.loads(block.code)
                if set(data) <= sections:  # a config (or part of one): it must validate
                    try:
                        validate_config(data)
                    except ConfigError as e:
                        pytest.fail(f"{where}: {e}")
            elif block.lang == "json":
                try:
                    json.loads(block.code)
                except json.JSONDecodeError as e:
                    pytest.fail(f"{where}: not JSON ({e})")


def test_python_blocks_compile_and_name_real_api():
    for page in ALL:
        blocks, _ = split(page.read_text())
        for block in blocks:
            if block.lang != "python":
                continue
            where = f"{rel(page)}:{block.line}"
            compile(block.code, where, "exec")
            for chain in re.findall(r"\bmonosemantic((?:\.\w+)+)", block.code):
                obj: object = monosemantic
                for part in chain.strip(".").split("."):
                    assert hasattr(obj, part), f"{where}: monosemantic{chain} does not exist"
                    obj = getattr(obj, part)
                    if callable(obj) and not isinstance(obj, type):
                        break


FILE_TYPES = {
    "md",
    "csv",
    "json",
    "jsonl",
    "py",
    "toml",
    "db",
    "safetensors",
    "png",
    "html",
    "txt",
    "npz",
    "pt",
}


def test_config_keys_named_in_the_docs_exist():
    keys = _config_keys()
    pattern = re.compile(r"^\[?(?P<section>[a-z_]+)\]?\.(?P<key>[a-z_0-9]+)(?:$|\s*=|/)")
    problems = []
    for page in ALL:
        _, prose = split(outside_generated(page.read_text()))
        for span in code_spans(prose):
            m = pattern.match(span)
            if (
                m
                and m["section"] in keys
                and m["key"] not in keys[m["section"]]
                and m["key"] not in FILE_TYPES
            ):
                problems.append(
                    f"{rel(page)}: `{span}` names no config key ({m['section']} has no {m['key']})"
                )
    assert not problems, problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def test_repository_paths_named_in_the_docs_exist():
    pattern = re.compile(r"^[\w.-]+(/[\w.-]+)+\.(py|toml|ipynb)$")
    roots = [REPO, REPO / "src" / "monosemantic"]
    problems = []
    for page in ALL:
        _, prose = split(page.read_text())
        for span in code_spans(prose):
            if (
                pattern.match(span)
                and not span.startswith("runs/")
                and not any((r / span).exists() for r in roots)
            ):
                problems.append(
                    f"{rel(page)}: `{span}` does not exist in the repository or src/monosemantic/"
                )
    assert not problems, problems


@pytest.mark.skipif(
    shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None, reason="mkdocs not installed"
)
def test_the_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # the theme's end-of-life notice
    proc = subprocess.run([mkdocs, "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").exists()


def test_the_reference_ignores_architectures_registered_at_run_time():
    import toy_architecture  # noqa: F401  (registers "toy_gain", with its own config class, in this process)

    from monosemantic.dictionaries.registry import architectures

    assert "toy_gain" in architectures()
    assert manual.stale(DOCS) == []  # the manual documents the package, not what a process added
