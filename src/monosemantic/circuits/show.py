"""`monosemantic.show(...)`: the feature dashboard or the graph viewer inline in a notebook.

Both views are the same pages `export` and `circuit` write, with their CSS, JS and data inlined
(nothing fetched, no CDN) and shown in an `<iframe srcdoc>`, so their scripts and styles cannot
collide with the notebook's and the output still renders when the notebook is saved as HTML.

    monosemantic.show("runs/demo/circuit")                          # a graph (folder or graph.json)
    monosemantic.show("runs/demo/features.db", "topk-k16", 12)      # a feature's dashboard
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from monosemantic.config.ranges import Count, NonNegativeInt, check_argument
from monosemantic.exports.dashboard import ASSETS, feature_payload, index_rows, site_summary
from monosemantic.exports.run import CHUNK
from monosemantic.store.feature_store import FeatureStore
from monosemantic.utils.errors import MonosemanticError
from monosemantic.utils.html import script_json

from .viewer import render_viewer


class Inline:
    """A page that Jupyter shows in an iframe (`_repr_html_`); `.html` is the page, `.save(path)`
    writes it as a standalone file."""

    def __init__(self, page: str, height: int = 720) -> None:
        self.html = page
        self.height = height

    def _repr_html_(self) -> str:
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" '
            f'style="width:100%;height:{self.height}px;border:1px solid #ddd"></iframe>'
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.html, encoding="utf-8")
        return path


def _call(fn: str, *args: Any) -> str:
    return fn + "(" + ", ".join(script_json(a) for a in args) + ");"


def dashboard_page(store: FeatureStore, dictionary: str | int, feature: int) -> str:
    """The dashboard opened on one feature, with its dictionary's index and that feature's data."""
    d = store.dictionary(dictionary)
    did = d["id"]
    payload = feature_payload(store, did, feature)
    site = site_summary(store)
    site["dictionaries"] = [x for x in site["dictionaries"] if x["id"] == did]
    site["graphs"] = []
    site["chunk"] = CHUNK
    data = "\n".join(
        [
            f'location.hash = "#/{did}/{int(feature)}";',  # fragment navigation works in about:srcdoc
            _call("MONO.index", did, index_rows(store, did)),
            _call("MONO.chunk", did, int(feature) // CHUNK, {int(feature): payload}),
            _call("MONO.site", site),
        ]
    )
    page = (ASSETS / "index.html").read_text(encoding="utf-8")
    css = (ASSETS / "style.css").read_text(encoding="utf-8")
    js = (ASSETS / "app.js").read_text(encoding="utf-8").replace("</script", "<\\/script")
    page = page.replace('<link rel="stylesheet" href="style.css">', f"<style>\n{css}\n</style>")
    page = page.replace('<script src="data/site.js"></script>', f"<script>\n{data}\n</script>")
    return page.replace('<script src="app.js"></script>', f"<script>\n{js}\n</script>")


def _graph(obj: Any) -> dict | None:
    if isinstance(obj, dict) and "nodes" in obj and "links" in obj:
        return obj
    if isinstance(obj, str | Path):
        p = Path(obj)
        p = p / "graph.json" if p.is_dir() and (p / "graph.json").is_file() else p
        if p.suffix == ".json" and p.is_file():
            return json.loads(p.read_text(encoding="utf-8"))
    return None


def show(
    obj: Any, dictionary: str | int | None = None, feature: int | None = None, height: int = 720
) -> Inline:
    """A graph (graph.json dict, file or circuit folder), or a feature of `dictionary` (name or
    store id) in a feature store (`features.db` path or `FeatureStore`), rendered inline."""
    if height is not None:
        height = check_argument("height", height, Count)
    if feature is not None:
        feature = check_argument("feature", feature, NonNegativeInt)
    graph = _graph(obj)
    if graph is not None:
        return Inline(render_viewer(graph), height or 880)
    if dictionary is None or feature is None:
        raise MonosemanticError(
            "show() takes a graph (dict, graph.json or circuit folder), or a feature store with "
            "dictionary= and feature=, e.g. show('runs/demo/features.db', 'topk-k16', 12)"
        )
    if isinstance(obj, FeatureStore):
        return Inline(dashboard_page(obj, dictionary, feature), height or 720)
    path = Path(obj)
    if not path.is_file():
        raise MonosemanticError(f"no feature store at {path}; run `monosemantic analyze CONFIG` first")
    with FeatureStore(path) as store:
        return Inline(dashboard_page(store, dictionary, feature), height or 720)
