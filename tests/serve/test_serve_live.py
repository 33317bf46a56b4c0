"""`monosemantic serve` as a real process: uvicorn answers the API, and the viewer renders in chromium."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(store_path, tmp_path_factory):
    port = _free_port()
    cfg = tmp_path_factory.mktemp("cfg") / "serve.toml"
    cfg.write_text(f'[serve]\ndb = "{store_path}"\nport = {port}\n')
    proc = subprocess.Popen([sys.executable, "-m", "monosemantic.cli", "serve", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"serve exited: {proc.stdout.read()}")
            try:
                httpx.get(url + "/api/dictionaries", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_answers(server):
    got = httpx.get(server + "/api/dictionaries").json()
    assert [d["name"] for d in got] == ["toy-sae", "toy-transcoder"]


def test_live_viewer_renders(server):
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed at /usr/bin/chromium (`make setup` installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        page.wait_for_selector("#feature .ex .tok.on", timeout=15_000)
        assert page.locator("#list li").count() == 24
        assert page.locator("#graphs a").count() == 1
        page.fill("#search", "zzzz-none")
        page.wait_for_timeout(100)
        assert page.locator("#list li").count() == 0
        browser.close()
    assert errors == []
