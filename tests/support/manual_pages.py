"""Reading the manual's Markdown the way mkdocs does: pages, code blocks, links, anchors, commands.

Shared by the docs and README tests (no third-party Markdown parser: fences, links and headings are
simple enough, and the anchors use the same `slugify` as mkdocs' toc extension).
"""

from __future__ import annotations

import html
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml
from markdown.extensions.toc import slugify

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"
MKDOCS = REPO / "mkdocs.yml"

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<lang>[\w+-]*)[^\n]*$")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def pages() -> list[Path]:
    return sorted(DOCS.glob("**/*.md"))


def nav_pages() -> list[str]:
    """Every page the mkdocs nav lists (paths relative to docs/)."""
    nav = yaml.safe_load(MKDOCS.read_text())["nav"]
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(nav)
    return found


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence


def split(text: str) -> tuple[list[Block], str]:
    """The fenced code blocks, and the text with them blanked out (line numbers kept)."""
    blocks: list[Block] = []
    prose: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        indent, fence, start = len(m["indent"]), m["fence"], i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        blocks.append(Block(m["lang"].lower(), "\n".join(body) + "\n", start + 1))
        prose += [""] * (i - start + 1)
        i += 1
    return blocks, "\n".join(prose)


def without_code_spans(prose: str) -> str:
    return re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), prose)


def code_spans(prose: str) -> list[str]:
    return [m.group(2).strip() for m in re.finditer(r"(`+)(.+?)\1", prose)]


def links(text: str) -> list[tuple[str, int]]:
    """(target, line) of every Markdown link outside code."""
    _, prose = split(text)
    found = []
    for n, line in enumerate(without_code_spans(prose).splitlines(), 1):
        found += [(m["target"], n) for m in LINK.finditer(line)]
    return found


def _heading_text(raw: str) -> str:
    """A heading as the toc extension sees it: Markdown rendered, tags stripped."""
    text = re.sub(r"`([^`]*)`", r"\1", raw)
    text = LINK.sub(lambda m: m["text"], text)
    text = re.sub(r"(\*\*|__|\*|_)(?=\S)(.+?)(?<=\S)\1", r"\2", text)
    return html.unescape(text)


def anchors(text: str) -> set[str]:
    """The ids mkdocs gives the page's headings (duplicates get _1, _2, ...), plus explicit `{#id}`s."""
    _, prose = split(text)
    seen: dict[str, int] = {}
    ids: set[str] = set()
    for line in prose.splitlines():
        m = HEADING.match(line)
        if not m:
            continue
        explicit = re.search(r"\{#([\w-]+)\}\s*$", m[2])
        slug = explicit[1] if explicit else slugify(_heading_text(m[2]), "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}_{n}")
    return ids


def generated_blocks(text: str) -> dict[str, str]:
    """`<!-- generated: NAME -->` ... `<!-- end generated: NAME -->` contents by name."""
    pattern = re.compile(r"<!-- generated: ([\w-]+) -->\n(.*?)<!-- end generated: \1 -->", re.S)
    return {m[1]: m[2] for m in pattern.finditer(text)}


def outside_generated(text: str) -> str:
    return re.sub(r"<!-- generated: ([\w-]+) -->\n.*?<!-- end generated: \1 -->", "", text, flags=re.S)


SHELLS = {"bash", "sh", "shell", "console"}


def shell_commands(block: Block) -> list[tuple[list[str], str]]:
    """(argv, output) of each command in a shell block: continuation lines joined, comments
    dropped; in a `console` block only `$ ` lines are commands, the lines after one are its output."""
    commands: list[tuple[list[str], str]] = []
    lines = block.code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if block.lang == "console":
            if not line.startswith("$ "):
                i += 1
                continue
            line = line[2:]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        output: list[str] = []
        if block.lang == "console":
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append((shlex.split(line, comments=True), "\n".join(output)))
    return commands


def monosemantic_argv(argv: list[str]) -> list[str] | None:
    """The arguments after the `monosemantic` command (or `-m monosemantic` under python/torchrun)."""
    for i, word in enumerate(argv):
        if word.split("/")[-1] == "monosemantic" and (i == 0 or argv[i - 1] == "-m"):
            return argv[i + 1 :]
    return None
