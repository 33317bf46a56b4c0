"""A static, self-contained HTML viewer for graph.json (inline JS/CSS, opens from file://)."""

from __future__ import annotations

import html
import json
from importlib.resources import files
from pathlib import Path

from monosemantic.utils.files import write_text_atomic


def render_viewer(graph_json: dict) -> str:
    """The viewer page with the graph embedded (script-safe: `</` is escaped inside the JSON)."""
    template = files("monosemantic.circuits").joinpath("templates/viewer.html").read_text()
    data = json.dumps(graph_json).replace("</", "<\\/")
    title = html.escape(str(graph_json.get("metadata", {}).get("slug", "graph")))
    return template.replace("__TITLE__", title).replace("__GRAPH__", data)


def write_viewer(graph_json: dict, path: str | Path) -> Path:
    path = Path(path)
    write_text_atomic(path, render_viewer(graph_json))
    return path
