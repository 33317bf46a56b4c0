"""A self-contained HTML viewer for graph.json: the page, its CSS and JS inlined, no network, so
the same file opens from file://, is served at /graphs/{id}, and shows inline in a notebook."""

from __future__ import annotations

import html
from importlib.resources import files
from pathlib import Path

from monosemantic.utils.files import write_text_atomic
from monosemantic.utils.html import script_json


def _template(name: str) -> str:
    return files("monosemantic.circuits").joinpath(f"templates/{name}").read_text(encoding="utf-8")


def render_viewer(graph_json: dict, nonce: str | None = None) -> str:
    """The viewer page with the graph embedded (script-safe: `utils.html.script_json`); `nonce`
    marks its script for a Content-Security-Policy (the server sets one per response)."""
    data = script_json(graph_json, compact=False)
    title = html.escape(str(graph_json.get("metadata", {}).get("slug", "graph")))
    js = (_template("viewer.js") + "\n" + _template("heads_panel.js")).replace("</script", "<\\/script")
    page = _template("viewer.html").replace("__TITLE__", title).replace("__CSS__", _template("viewer.css"))
    # the graph last: its text may contain the other placeholders
    if nonce is not None:
        page = page.replace("<script>", f'<script nonce="{html.escape(nonce)}">')
    return page.replace("__JS__", js).replace("__GRAPH__", data)


def write_viewer(graph_json: dict, path: str | Path) -> Path:
    path = Path(path)
    write_text_atomic(path, render_viewer(graph_json))
    return path
