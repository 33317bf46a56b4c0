"""`monosemantic serve`: the feature store over HTTP, the dashboard viewer at `/`, live views at `/live`.

The viewer is the one the static export writes (`export/templates/dashboard/`); here its
`data/site.js` tells it to read the JSON API instead of data files, so both show the same thing.
Attribution graphs open in the circuits viewer at `/graphs/{id}`. Browsing routes are in
`routes_store`, live ones (activations, steering, tracing) in `routes_live`, run by one worker.
"""

from __future__ import annotations

import socket
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.exports.dashboard import ASSETS
from monosemantic.store.feature_store import feature_store_path
from monosemantic.utils.errors import DataError, MonosemanticError

from . import routes_live, routes_store
from .auth import check_bind, token_middleware
from .guard import Guard, allowed_hosts
from .jobs import Worker
from .live import LiveModels
from .store_access import LiveStore

LIVE_ASSETS = ("live.html", "live.js")
MEDIA = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# a link to the live views, added to the dashboard's header by the served site.js
SITE_JS = """MONO.live("api");
document.addEventListener("DOMContentLoaded", () => {
  const a = document.createElement("a"); a.href = "live"; a.id = "live-link"; a.textContent = "live"; a.title = "search, activations, steering, tracing";
  document.getElementById("graphs").prepend(a);
});
"""


def db_path(cfg: Config) -> Path:
    """The store `serve` reads: `[serve].db`, else `[analyze].out/features.db`."""
    return feature_store_path(cfg.analyze.out, cfg.serve.db)


async def _sqlite_error(_: Request, err: Exception) -> JSONResponse:
    """A store another process locks (or cannot be read) is a 503 the client may retry."""
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    what = (
        "is locked by another process" if "locked" in msg or "busy" in msg else f"could not be read ({msg})"
    )
    return JSONResponse(
        {"detail": f"the feature store {what}; retry shortly"}, status_code=503, headers={"Retry-After": "1"}
    )


async def _store_error(_: Request, err: Exception) -> JSONResponse:
    """A store replaced by something unreadable (a schema from another version, a broken file)."""
    return JSONResponse({"detail": str(err).splitlines()[0]}, status_code=503, headers={"Retry-After": "5"})


def _warm(state: object) -> None:
    try:
        routes_store.warm(state)
    except Exception as e:  # a store unreadable now answers 503 per request; say why once here
        print(f"warning: could not prepare the viewer's indexes ({type(e).__name__}: {e})", file=sys.stderr)


def create_app(db_path: str | Path, cfg: Config | None = None) -> FastAPI:
    """A FastAPI app serving the store at `db_path`; `cfg` gives the model, limits and token."""
    cfg = cfg if cfg is not None else Config()
    path = Path(db_path)
    if not path.is_file():
        raise MonosemanticError(
            f"no feature store at {path}; run `monosemantic analyze CONFIG` first (or set serve.db)"
        )
    try:
        store = LiveStore(path, cfg.serve.busy_timeout_s)
    except sqlite3.DatabaseError as e:
        raise MonosemanticError(
            f"{path} is not a readable feature store ({e}); rerun `monosemantic analyze`"
        ) from None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=_warm, args=(app.state,), name="monosemantic-warm", daemon=True).start()
        yield
        app.state.worker.close()  # the running job (if any) ends on its own; waiting ones are dropped
        store.close()

    app = FastAPI(
        title="monosemantic", summary="Sparse-dictionary features and attribution graphs", lifespan=lifespan
    )
    app.state.cfg = cfg
    app.state.store = store
    app.state.index_cache = {}
    app.state.index_lock = threading.Lock()
    app.state.worker = Worker(cfg.serve.queue_size)
    app.state.live = LiveModels(cfg, store)
    app.add_exception_handler(sqlite3.OperationalError, _sqlite_error)
    app.add_exception_handler(sqlite3.DatabaseError, _sqlite_error)
    app.add_exception_handler(DataError, _store_error)
    s = cfg.serve
    if s.cors_origins:  # inside the guard, which lets only these origins through
        app.add_middleware(CORSMiddleware, allow_origins=s.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"])  # fmt: skip
    if s.token:
        app.middleware("http")(token_middleware(s.token))
    # outermost: host, origin, body and header rules for every route (server/guard.py)
    app.add_middleware(Guard, hosts=allowed_hosts(s.host, s.allowed_hosts), origins=s.cors_origins)
    app.include_router(routes_store.router)
    app.include_router(routes_live.router)

    @app.get("/graphs/{gid}", response_class=HTMLResponse)
    def graph_page(request: Request, gid: routes_store.Id) -> str:
        from monosemantic.circuits.viewer import render_viewer

        try:  # its inline script carries this response's CSP nonce
            return render_viewer(store.get().graph(gid), nonce=request.state.csp_nonce)
        except MonosemanticError as e:
            raise HTTPException(404, str(e)) from None

    @app.get("/data/site.js")
    def site_js() -> Response:
        return Response(SITE_JS, media_type="text/javascript")

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(ASSETS / "index.html", media_type="text/html")

    @app.get("/live")
    def live_page() -> FileResponse:
        return FileResponse(ASSETS / "live.html", media_type="text/html")

    @app.get("/{name}")
    def asset(name: str) -> FileResponse:
        if name not in ("app.js", "style.css", *LIVE_ASSETS):
            raise HTTPException(404, f"no page {name!r}")
        return FileResponse(ASSETS / name, media_type=MEDIA[Path(name).suffix])

    return app


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise MonosemanticError(
                f"cannot listen on {host}:{port} ({e.strerror}); pick another with --set serve.port=N"
            ) from None


def serve(cfg: ConfigLike) -> None:
    """Run the viewer on `[serve].host:[serve].port` until interrupted; says so once listening."""
    cfg = as_config(cfg)
    import uvicorn

    s = cfg.serve
    check_bind(s.host, s.token)
    app = create_app(db_path(cfg), cfg)
    _check_port(s.host, s.port)
    server = uvicorn.Server(
        uvicorn.Config(app, host=s.host, port=s.port, log_level="warning", timeout_keep_alive=75)
    )

    def announce() -> None:  # uvicorn sets `started` once its sockets listen
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            print(f"serving {db_path(cfg)} at http://{s.host}:{s.port}/", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()
    if not server.started:
        sys.exit(1)
