"""A self-contained HTML viewer for graph.json: the page, its CSS and JS inlined, no network, so
the same file opens from file://, is served at /graphs/{id}, and shows inline in a notebook."""

from __future__ import annotations

import html
import json
from importlib.resources import files
from pathlib import Path

from monosemantic.utils.files import write_text_atomic


def _template(name: str) -> str:
    return files("monosemantic.circuits").joinpath(f"templates/{name}").read_text(encoding="utf-8")


def render_viewer(graph_json: dict) -> str:
    """The viewer page with the graph embedded (script-safe: `</` is escaped inside the JSON)."""
    data = json.dumps(graph_json).replace("</", "<\\/")
    title = html.escape(str(graph_json.get("metadata", {}).get("slug", "graph")))
    js = (_template("viewer.js") + "\n" + _template("heads_panel.js")).replace("</script", "<\\/script")
    page = _template("viewer.html").replace("__TITLE__", title).replace("__CSS__", _template("viewer.css"))
    # the graph last: its text may contain the other placeholders
    return page.replace("__JS__", js).replace("__GRAPH__", data)


def write_viewer(graph_json: dict, path: str | Path) -> Path:
    path = Path(path)
    write_text_atomic(path, render_viewer(graph_json))
    return path
