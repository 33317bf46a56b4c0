"""The manual's generated parts, so the docs cannot drift from the code.

- `docs/configuration.md`: every section and key of `Config` (type, default, range, description),
  with the keys each built-in architecture's config class adds to `[dictionary]`;
- `docs/cli.md`: every verb of the typer app with its arguments and options.

Each lives in a page between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->`.
`python -m monosemantic.manual [DOCS]` rewrites them (`make docs` runs it first); the docs test
fails, naming this command, when a committed page differs from what this module generates.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monosemantic.config.reference import config_reference


def _usage(verb: str, command: Any) -> str:
    parts = [f"monosemantic {verb}"]
    for p in command.params:
        if p.param_type_name != "argument":
            continue
        name = p.metavar or p.name.upper()
        name = f"{name}..." if p.nargs == -1 and not p.metavar else name
        parts.append(name if p.required else f"[{name}]")
    if any(p.param_type_name == "option" and not p.hidden for p in command.params):
        parts.append("[OPTIONS]")
    return " ".join(parts)


def _param_row(p: Any) -> str:
    if p.param_type_name == "argument":
        name = f"`{p.metavar or p.name.upper()}`"
    else:
        name = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
        if not getattr(p, "is_flag", False):
            name += f" {p.metavar or p.name.rstrip('_').upper()}"
    help_text = (getattr(p, "help", None) or "").replace("|", "\\|")
    if p.required:
        default = "required"
    elif p.default is None or p.multiple or getattr(p, "is_flag", False) and p.default is False:
        default = ""
    else:
        default = f"`{p.default}`"
    return f"| {name} | {help_text} | {default} |"


def cli_reference() -> str:
    """Markdown: a heading, the help text, the usage line and a table of parameters per verb."""
    import typer

    from monosemantic.cli import app, verbs

    root = typer.main.get_command(app)
    out: list[str] = []
    for verb in verbs():
        command = root
        for part in verb.split():
            command = command.commands[part]  # type: ignore[attr-defined]
        params = [p for p in command.params if not getattr(p, "hidden", False)]
        out += [f"### monosemantic {verb}", "", (command.help or "").strip(), ""]
        out += ["```", _usage(verb, command), "```", ""]
        out += ["| argument / option | meaning | default |", "|---|---|---|"]
        out += [_param_row(p) for p in params]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {
    "config": ("configuration.md", config_reference),
    "cli": ("cli.md", cli_reference),
}


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- generated: {re.escape(name)} -->\n).*?(<!-- end generated: {re.escape(name)} -->)", re.S
    )


def rendered(docs: Path) -> dict[Path, str]:
    """Each page holding generated blocks, with the blocks as the code generates them now."""
    pages: dict[Path, str] = {}
    for name, (page, generate) in BLOCKS.items():
        path = docs / page
        text = pages.get(path) or path.read_text(encoding="utf-8")
        pattern = _pattern(name)
        if not pattern.search(text):
            raise ValueError(
                f"{path} has no <!-- generated: {name} --> ... <!-- end generated: {name} --> block"
            )
        block = generate()
        pages[path] = pattern.sub(lambda m, block=block: f"{m.group(1)}\n{block}\n{m.group(2)}", text)
    return pages


def stale(docs: Path) -> list[str]:
    """The pages whose generated blocks differ from the code's."""
    return [str(p) for p, text in rendered(docs).items() if p.read_text(encoding="utf-8") != text]


def write(docs: Path) -> list[Path]:
    """Rewrite every generated block; returns the pages that changed."""
    changed = []
    for path, text in rendered(docs).items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":
    for page in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(f"rewrote {page}")
