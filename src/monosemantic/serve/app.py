"""`monosemantic serve`: the feature store over HTTP, with the dashboard viewer at `/`.

The viewer is the one the static export writes (`analyze/templates/dashboard/`); here its
`data/site.js` tells it to read the JSON API instead of data files, so both show the same thing.
Attribution graphs stored by `monosemantic circuit` open in the circuits viewer at `/graphs/{id}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, Response

from monosemantic.analyze.dashboard import (
    ASSETS,
    dictionary_summary,
    feature_payload,
    index_rows,
    site_summary,
)
from monosemantic.analyze.store import ORDERABLE, FeatureStore, feature_store_path
from monosemantic.config import Config
from monosemantic.utils.errors import MonosemanticError

# Friendly sort names the viewer uses, mapped onto the store's sortable columns.
ORDER_ALIASES = {"max": "max_activation", "score": "score_detection"}


def db_path(cfg: Config) -> Path:
    """The store `serve` reads: `[serve].db`, else `[analyze].out/features.db`."""
    return feature_store_path(cfg.analyze.out, cfg.serve.db)


def create_app(db_path: str | Path) -> FastAPI:
    """A FastAPI app serving the store at `db_path` (JSON under `/api`, the viewer at `/`)."""
    path = Path(db_path)
    if not path.is_file():
        raise MonosemanticError(
            f"no feature store at {path}; run `monosemantic analyze CONFIG` first (or set serve.db)"
        )
    store = FeatureStore(path)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="monosemantic", summary="Sparse-dictionary features and attribution graphs", lifespan=lifespan
    )
    app.state.store = store

    cache: dict[int, tuple[int, dict[int, dict[str, Any]]]] = {}

    def index_of(did: int) -> dict[int, dict[str, Any]]:
        """Index rows of a dictionary, rebuilt when the store file changes (e.g. `explain` ran)."""
        stamp = path.stat().st_mtime_ns
        if did not in cache or cache[did][0] != stamp:
            cache[did] = (stamp, {r["idx"]: r for r in index_rows(store, did)})
        return cache[did][1]

    def dictionary(did: int) -> dict[str, Any]:
        try:
            return store.dictionary(did)
        except MonosemanticError as e:
            raise HTTPException(404, str(e)) from None

    @app.get("/api/site")
    def site() -> dict[str, Any]:
        out = site_summary(store)
        out["graphs"] = [{**g, "url": f"graphs/{g['id']}"} for g in store.graphs()]
        return out

    @app.get("/api/dictionaries")
    def dictionaries() -> list[dict[str, Any]]:
        return [dictionary_summary(d) for d in store.dictionaries()]

    @app.get("/api/dictionaries/{did}")
    def one_dictionary(did: int) -> dict[str, Any]:
        return dictionary_summary(dictionary(did))

    @app.get("/api/dictionaries/{did}/features")
    def features(
        did: int,
        search: str | None = None,
        order: str = "idx",
        descending: bool | None = None,
        min_density: float | None = None,
        offset: int = Query(0, ge=0),
        limit: int | None = Query(None, ge=1),
    ) -> dict[str, Any]:
        """Index rows (what the viewer's list shows), filtered and sorted by the store."""
        dictionary(did)
        column = ORDER_ALIASES.get(order, order)
        if column not in ORDERABLE:
            raise HTTPException(
                400, f"cannot order by {order!r}; use one of {', '.join([*ORDER_ALIASES, *ORDERABLE])}"
            )
        rows = store.list_features(did, column, descending, search or None, min_density, limit, offset)
        rows_by_idx = index_of(did)
        return {
            "total": store.count_features(did, search or None, min_density),
            "offset": offset,
            "features": [rows_by_idx[f["idx"]] for f in rows],
        }

    @app.get("/api/dictionaries/{did}/features/{idx}")
    def feature(did: int, idx: int, negatives: bool = False) -> dict[str, Any]:
        """One feature's dashboard data; `negatives=true` adds the silent contexts kept for scoring."""
        dictionary(did)
        try:
            out = feature_payload(store, did, idx)
        except MonosemanticError as e:
            raise HTTPException(404, str(e)) from None
        if negatives:
            out["negatives"] = [
                {"t": e["tokens"], "a": e["activations"]} for e in store.examples(did, idx, kind="negative")
            ]
        return out

    @app.get("/api/graphs")
    def graphs() -> list[dict[str, Any]]:
        return store.graphs()

    @app.get("/api/graphs/{gid}")
    def graph(gid: int) -> dict[str, Any]:
        try:
            return store.graph(gid)
        except MonosemanticError as e:
            raise HTTPException(404, str(e)) from None

    @app.get("/graphs/{gid}", response_class=HTMLResponse)
    def graph_page(gid: int) -> str:
        from monosemantic.circuits.viewer import render_viewer

        return render_viewer(graph(gid))

    @app.get("/data/site.js")
    def site_js() -> Response:
        return Response('MONO.live("api");\n', media_type="text/javascript")

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(ASSETS / "index.html", media_type="text/html")

    @app.get("/app.js")
    def app_js() -> FileResponse:
        return FileResponse(ASSETS / "app.js", media_type="text/javascript")

    @app.get("/style.css")
    def style() -> FileResponse:
        return FileResponse(ASSETS / "style.css", media_type="text/css")

    return app


def serve(cfg: Config) -> None:
    """Run the viewer on `[serve].host:[serve].port` until interrupted."""
    import uvicorn

    app = create_app(db_path(cfg))
    print(f"serving {db_path(cfg)} at http://{cfg.serve.host}:{cfg.serve.port}/", flush=True)
    uvicorn.run(app, host=cfg.serve.host, port=cfg.serve.port, log_level="warning")
