"""`monosemantic export`: the feature store as a static dashboard site and/or Neuronpedia JSON.

The site opens straight from disk (`file://`), where browsers refuse fetch/XHR, so data travels
as `<script>` files that hand JSON to the viewer (`MONO.site(...)`, `MONO.index(...)`,
`MONO.chunk(...)`). Features are split into chunks of `CHUNK` per file, loaded on demand, so a
store of 7 x 1024 features opens as fast as one of 64. Nothing is fetched from the network.
The whole site is written into a temporary folder and renamed over the target at the end.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from monosemantic.analysis.layers import feature_layers
from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.exports.dashboard import ASSETS, index_row, payload_from, site_summary
from monosemantic.exports.neuronpedia import MARKER
from monosemantic.store.feature_store import FeatureStore, feature_store_path
from monosemantic.utils.disk import disk_full_guard
from monosemantic.utils.errors import MonosemanticError
from monosemantic.utils.files import atomic_dir, check_replaceable, remove_stale_temps
from monosemantic.utils.html import script_json
from monosemantic.utils.lock import output_lock
from monosemantic.utils.progress import console, progress_bar

CHUNK = 64  # features per data file
ASSET_FILES = ("index.html", "app.js", "style.css")


def store_path(cfg: Config) -> Path:
    """The store `export` reads: `[export].db`, else `[analyze].out/features.db`."""
    return feature_store_path(cfg.analyze.out, cfg.export.db)


def open_store(path: Path) -> FeatureStore:
    if not path.is_file():
        raise MonosemanticError(
            f"no feature store at {path}; run `monosemantic analyze CONFIG` first (or set export.db)"
        )
    return FeatureStore(path)


def _js(call: str, *args: Any) -> str:
    """A data file: one call handing JSON to the viewer. `</` is escaped so token text can never
    close a script element."""
    return call + "(" + ", ".join(script_json(a) for a in args) + ");\n"


def write_site(store: FeatureStore, out: str | Path) -> Path:
    """Write the static dashboard of every dictionary in `store` to `out` (atomically)."""
    out = Path(out)
    check_replaceable(out, "--html", "data/site.js")
    with atomic_dir(out) as tmp:
        (tmp / "data").mkdir(parents=True)
        for name in ASSET_FILES:
            shutil.copyfile(ASSETS / name, tmp / name)
        site = site_summary(store)
        site["chunk"] = CHUNK
        (tmp / "data" / "site.js").write_text(_js("MONO.site", site), encoding="utf-8")
        total = sum(d["n_features"] for d in site["dictionaries"])
        with progress_bar() as bar:
            task = bar.add_task("export", total=total, info="", unit="feat")
            for d in site["dictionaries"]:
                _write_dictionary(store, d["id"], tmp / "data" / f"d{d['id']}", bar, task)
    return out


def _write_dictionary(store: FeatureStore, did: int, folder: Path, bar: Any, task: Any) -> None:
    folder.mkdir()
    rows: list[dict[str, Any]] = []
    chunk: dict[int, dict[str, Any]] = {}

    def flush(c: int) -> None:
        (folder / f"c{c}.js").write_text(_js("MONO.chunk", did, c, chunk), encoding="utf-8")
        chunk.clear()

    current = None
    cfg = store.dictionary(did).get("cfg") or {}  # CLT/crosscoder: per-latent layer norms
    for f, examples in store.features_with_examples(did):
        c = f["idx"] // CHUNK
        if current is not None and c != current and chunk:
            flush(current)
        current = c
        rows.append(index_row(f, [e for e in examples if e["kind"] == "top"]))
        chunk[f["idx"]] = payload_from(f, examples, feature_layers(cfg, f["idx"]))
        bar.update(task, advance=1)
    if chunk and current is not None:
        flush(current)
    (folder / "index.js").write_text(_js("MONO.index", did, rows), encoding="utf-8")


def export(cfg: ConfigLike) -> list[Path]:
    """Write what `[export].html` / `[export].neuronpedia` ask for; returns the folders written."""
    cfg = as_config(cfg)
    e = cfg.export
    if e.html is None and e.neuronpedia is None:
        raise MonosemanticError("nothing to export; pass --html DIR and/or --neuronpedia DIR")
    with output_lock(e.html, "export.html"), output_lock(e.neuronpedia, "export.neuronpedia"):
        for target, flag, marker in (
            (e.html, "--html", "data/site.js"),
            (e.neuronpedia, "--neuronpedia", MARKER),
        ):
            if target is not None:  # both checked before either is written
                check_replaceable(Path(target), flag, marker)
                remove_stale_temps(target)  # a killed export's half-written folder
        with disk_full_guard(e.html or e.neuronpedia, "export.html" if e.html else "export.neuronpedia"):
            return _export(cfg)


def _export(cfg: Config) -> list[Path]:
    e = cfg.export
    path = store_path(cfg)
    store = open_store(path)
    written = []
    try:
        if e.html is not None:
            written.append(write_site(store, e.html))
            console.print(f"dashboard written to [bold]{e.html}[/] (open {Path(e.html) / 'index.html'})")
        if e.neuronpedia is not None:
            from monosemantic.exports.neuronpedia import write_neuronpedia

            written.append(
                write_neuronpedia(store, e.neuronpedia, model_id=e.model_id, source_set=e.source_set)
            )
            console.print(f"Neuronpedia JSON written to [bold]{e.neuronpedia}[/]")
    finally:
        store.close()
    return written
