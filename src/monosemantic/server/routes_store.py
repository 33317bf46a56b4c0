"""Browsing routes: read-only JSON over the feature store, and the notes readers attach.

Every number a request carries is bounded (ids and indices fit SQLite's integers, pages are at
most `MAX_LIMIT` rows, strings at most `MAX_QUERY` characters), so bad input is a 422, never a
500. These handlers are plain functions: FastAPI runs them in its thread pool, apart from the
live worker, so browsing stays fast while a live job runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from monosemantic.exports.dashboard import dictionary_summary, feature_payload, index_rows, site_summary
from monosemantic.store.feature_store import ORDERABLE, FeatureStore
from monosemantic.store.search import search_features
from monosemantic.utils.errors import MonosemanticError

from .annotations import add_annotation, annotations
from .guard import Body

# Friendly sort names the viewer uses, mapped onto the store's sortable columns.
ORDER_ALIASES = {"max": "max_activation", "score": "score_detection"}
MAX_ID = 2**31 - 1
MAX_LIMIT = 10_000
MAX_QUERY = 200
MAX_NOTE = 10_000
SITE_GRAPHS = 5

Id = Annotated[int, Path(ge=0, le=MAX_ID)]

# Browsing payloads are plain JSON already: rendering them directly skips FastAPI's generic
# encoder, which cost 3-9 ms of the ~4-12 ms a feature page or list took.
router = APIRouter(default_response_class=JSONResponse)


def _json(content: Any) -> JSONResponse:
    return JSONResponse(content)


def _store(request: Request) -> FeatureStore:
    return request.app.state.store.get()


def _dictionary(store: FeatureStore, did: int) -> dict[str, Any]:
    try:
        return store.dictionary(did)
    except MonosemanticError as e:
        raise HTTPException(404, str(e)) from None


def _index_of(state: Any, store: FeatureStore, did: int) -> dict[int, dict[str, Any]]:
    """Index rows of a dictionary, rebuilt when the store changed (`LiveStore.version`). One
    request builds them while the others wait, instead of every request building its own."""
    cache, stamp = state.index_cache, (state.store.version, id(store))
    if did in cache and cache[did][0] == stamp:
        return cache[did][1]
    with state.index_lock:
        if did not in cache or cache[did][0] != stamp:
            cache[did] = (stamp, {r["idx"]: r for r in index_rows(store, did)})
        return cache[did][1]


def _search(state: Any, query: str, limit: int, offset: int, **filters: Any) -> list[dict[str, Any]]:
    store = state.store.get()
    with state.index_lock:  # one build of the search index per store version
        return search_features(
            store, query, limit, offset, version=(state.store.version, id(store)), **filters
        )


def warm(state: Any) -> None:
    """Build the index rows of every dictionary and the search index (a server does this once it
    listens, so the first readers do not wait for them)."""
    store = state.store.get()
    for d in store.dictionaries():
        _index_of(state, store, d["id"])
    _search(state, "warm", 1, 0)


@router.get("/api/site")
def site(request: Request) -> JSONResponse:
    store = _store(request)
    out = site_summary(store)
    graphs = store.graphs()
    # the header links the newest few; /api/graphs and the live page list them all
    out["graphs"] = [{**g, "url": f"graphs/{g['id']}"} for g in graphs[:SITE_GRAPHS]]
    out["n_graphs"] = len(graphs)
    return _json(out)


@router.get("/api/dictionaries")
def dictionaries(request: Request) -> JSONResponse:
    return _json([dictionary_summary(d) for d in _store(request).dictionaries()])


@router.get("/api/dictionaries/{did}")
def one_dictionary(request: Request, did: Id) -> JSONResponse:
    return _json(dictionary_summary(_dictionary(_store(request), did)))


@router.get("/api/dictionaries/{did}/features")
def features(
    request: Request,
    did: Id,
    search: Annotated[str | None, Query(max_length=MAX_QUERY)] = None,
    order: Annotated[str, Query(max_length=40)] = "idx",
    descending: bool | None = None,
    min_density: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_density: Annotated[float | None, Query(ge=0, le=1)] = None,
    dead: Annotated[bool, Query(description="include dead features (never fired)")] = False,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT)] = None,
) -> JSONResponse:
    """Index rows (what the viewer's list shows), filtered and sorted by the store; dead features
    only with `dead=true`."""
    store = _store(request)
    _dictionary(store, did)
    column = ORDER_ALIASES.get(order, order)
    if column not in ORDERABLE:
        raise HTTPException(
            400, f"cannot order by {order!r}; use one of {', '.join([*ORDER_ALIASES, *ORDERABLE])}"
        )
    band = {"max_density": max_density, "include_dead": dead}
    rows = store.list_features(did, column, descending, search or None, min_density, limit, offset, **band)
    rows_by_idx = _index_of(request.app.state, store, did)
    return _json(
        {
            "total": store.count_features(did, search or None, min_density, **band),
            "offset": offset,
            "features": [rows_by_idx[f["idx"]] for f in rows],
        }
    )


@router.get("/api/dictionaries/{did}/features/{idx}")
def feature(request: Request, did: Id, idx: Id, negatives: bool = False) -> JSONResponse:
    """One feature's dashboard data; `negatives=true` adds the silent contexts kept for scoring."""
    store = _store(request)
    _dictionary(store, did)
    try:
        out = feature_payload(store, did, idx)
    except MonosemanticError as e:
        raise HTTPException(404, str(e)) from None
    if negatives:
        out["negatives"] = [
            {"t": e["tokens"], "a": e["activations"]} for e in store.examples(did, idx, kind="negative")
        ]
    return _json(out)


@router.get("/api/search")
def search(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    dead: Annotated[bool, Query(description="include dead features (never fired)")] = False,
    min_density: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_density: Annotated[float | None, Query(ge=0, le=1)] = None,
) -> JSONResponse:
    """Features of every dictionary whose explanation, concept or top tokens match `q` (FTS5);
    dead features only with `dead=true`, within a density range when given."""
    found = _search(request.app.state, q, limit, offset, include_dead=dead, min_density=min_density,
                    max_density=max_density)  # fmt: skip
    return _json({"query": q, "results": found})


@router.get("/api/graphs")
def graphs(request: Request) -> JSONResponse:
    return _json(_store(request).graphs())


@router.get("/api/graphs/{gid}")
def graph(request: Request, gid: Id) -> JSONResponse:
    try:
        return _json(_store(request).graph(gid))
    except MonosemanticError as e:
        raise HTTPException(404, str(e)) from None


class Note(Body):
    target: Literal["graph", "feature"]
    key: str = Field(min_length=1, max_length=64, description="graph id, or DICTIONARY_ID/IDX")
    text: str = Field(min_length=1, max_length=MAX_NOTE)


@router.post("/api/annotations")
def post_annotation(request: Request, note: Note) -> dict[str, Any]:
    """Attach a note to a graph or a feature that exists in the store."""
    store = _store(request)
    try:
        if note.target == "graph":
            store.graph(int(note.key))
        else:
            did, idx = (int(p) for p in note.key.split("/"))
            store.feature(did, idx)
    except (ValueError, OverflowError):
        raise HTTPException(422, "key: a graph id, or DICTIONARY_ID/IDX for a feature") from None
    except MonosemanticError as e:
        raise HTTPException(404, str(e)) from None
    with request.app.state.store.own_write() as writable:
        return {"id": add_annotation(writable, note.target, note.key, note.text)}


@router.get("/api/annotations")
def get_annotations(
    request: Request,
    target: Literal["graph", "feature"] | None = None,
    key: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    return _json(annotations(_store(request), target, key))
