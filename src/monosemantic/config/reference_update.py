"""Rewrite the config reference in README.md: `python -m monosemantic.config.reference_update`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .reference import config_reference

START, END = "<!-- config:start -->", "<!-- config:end -->"


def update(readme: Path) -> None:
    text = readme.read_text()
    block = f"{START}\n{config_reference()}{END}"
    if START in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.replace("CONFIG_REFERENCE", block)
    readme.write_text(text)


if __name__ == "__main__":
    update(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
