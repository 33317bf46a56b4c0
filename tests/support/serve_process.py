"""`monosemantic serve` as a real process on a free port, for the tests that need uvicorn (and a
browser) in front of the app."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(db: Path, workdir: Path, extra: str = "") -> tuple[subprocess.Popen, str]:
    """`monosemantic serve` on a free port, returned once it says it is serving (no polling);
    `extra` is appended to its [serve] section."""
    from chat_world import TEMPLATE

    port = free_port()
    cfg = workdir / "serve.toml"
    (workdir / "chat.jinja").write_text(TEMPLATE)  # the storyworld tokenizer has no chat template
    cfg.write_text(f'device = "cpu"\n[data]\nchat_template = "{workdir / "chat.jinja"}"\n'
                   f'[serve]\ndb = "{db}"\nport = {port}\n{extra}\n[circuit]\nablation = "zero"\n')  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "monosemantic.cli", "serve", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("serving "):
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # never let the pipe fill
            return proc, f"http://127.0.0.1:{port}"
    pytest.fail(f"serve exited: {''.join(seen)}")
