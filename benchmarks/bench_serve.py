"""Load test of `monosemantic serve`: N concurrent browsing clients while live jobs run.

A real server (`monosemantic serve` in a subprocess, uvicorn on 127.0.0.1) reads a feature store
with real checkpoints (default: the demo's `runs/demo/features.db`; run `make demo` first). Each
of `clients` httpx clients (one asyncio task each, all at once) browses `rounds` times: the
dictionary list, a page of 50 features, one feature's dashboard data, a cross-dictionary search
and the graph list, after the server built its caches (it does once it listens). Meanwhile live jobs keep the worker busy back to back: `trace this prompt`
(attribution, polled to the end) alternating with a 32-token steering request. Reported: errors
(any non-200 or transport error; the target is 0), browsing latency p50/p99/max, requests/s, how
many live jobs finished and the share of the browsing window a live job was running.
`--no-live` browses alone (the baseline the live jobs are compared with).

    .venv/bin/python -m benchmarks.bench_serve [--clients 200] [--rounds 5] [--db runs/demo/features.db]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

TITLE = "Serve: concurrent browsing while live jobs run"
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, workdir: Path, extra: str = "") -> tuple[subprocess.Popen, str]:
    """`monosemantic serve` on a free port; returns once it printed that it is listening."""
    port = _free_port()
    cfg = workdir / "serve.toml"
    cfg.write_text(
        f'device = "cpu"\n[serve]\ndb = "{db}"\nport = {port}\nqueue_size = 8\n[circuit]\nablation = "zero"\n{extra}'
    )
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen([sys.executable, "-m", "monosemantic.cli", "serve", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    seen = []
    for line in proc.stdout:  # warnings may come first; the line appears once uvicorn listens
        seen.append(line)
        if line.startswith("serving "):
            # keep draining its output (progress bars, warnings): a full pipe would block the server
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, f"http://127.0.0.1:{port}"
    proc.wait()
    raise RuntimeError(f"serve did not start: {''.join(seen)}")


async def _browse(client: httpx.AsyncClient, dids: list[int], word: str, rounds: int, seed: int,
                  lat: list[float], errors: list[str]) -> None:  # fmt: skip
    for r in range(rounds):
        did = dids[(seed + r) % len(dids)]
        for path in ("/api/dictionaries", f"/api/dictionaries/{did}/features?order=max&limit=50",
                     f"/api/dictionaries/{did}/features/{(seed * 7 + r) % 64}", f"/api/search?q={word}",
                     "/api/graphs"):  # fmt: skip
            t0 = time.perf_counter()
            try:
                resp = await client.get(path)
                if resp.status_code != 200:
                    errors.append(f"{path}: {resp.status_code} {resp.text[:120]}")
            except httpx.HTTPError as e:
                errors.append(f"{path}: {type(e).__name__} {e}")
            lat.append(time.perf_counter() - t0)


async def _live(client: httpx.AsyncClient, stop: asyncio.Event, sae: int, busy: list[tuple[float, float]],
                errors: list[str]) -> None:  # fmt: skip
    """Live jobs back to back until `stop`: a trace (polled) then a steering request, repeated."""
    n = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        if n % 2 == 0:
            r = await client.post(
                "/api/circuits", json={"prompt": "Tom the dog found a red ball in the park. He"}
            )
            if r.status_code != 202:
                errors.append(f"circuits: {r.status_code} {r.text[:200]}")
                return
            while True:
                job = (await client.get(f"/api/jobs/{r.json()['job']}")).json()
                if job["status"] in ("done", "failed"):
                    if job["status"] == "failed":
                        errors.append(f"trace failed: {job['error']}")
                    break
                await asyncio.sleep(0.05)
        else:
            r = await client.post("/api/steer", json={"dictionary": sae, "feature": 1, "prompt": "Lily went to the",
                                                      "value": 20.0, "max_new_tokens": 32}, timeout=300)  # fmt: skip
            if r.status_code != 200:
                errors.append(f"steer: {r.status_code} {r.text[:200]}")
        busy.append((t0, time.perf_counter()))
        n += 1


async def load(url: str, clients: int, rounds: int, live_jobs: bool = True) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        dicts = (await client.get("/api/dictionaries")).json()
        dids = [d["id"] for d in dicts]
        sae = next((d["id"] for d in dicts if not d["transcoder"]), dids[0])
        for did in dids:  # the server builds these caches once it listens; measure after that
            await client.get(f"/api/dictionaries/{did}/features?limit=1")
        await client.get("/api/search?q=the")
        word = "the"
        lat: list[float] = []
        errors: list[str] = []
        live_errors: list[str] = []
        busy: list[tuple[float, float]] = []
        stop = asyncio.Event()
        if not live_jobs:
            stop.set()
        live = asyncio.create_task(_live(client, stop, sae, busy, live_errors))
        while (
            live_jobs and not busy and not live.done()
        ):  # the first live job is under way before browsing starts
            await asyncio.sleep(0.05)
            if (await client.get("/api/jobs")).json():
                break
        t0 = time.perf_counter()
        await asyncio.gather(*(_browse(client, dids, word, rounds, i, lat, errors) for i in range(clients)))
        t1 = time.perf_counter()
        stop.set()
        await live
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    overlap = sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in busy)
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": len(errors),
        "p50 ms": round(pick(0.50), 1),
        "p99 ms": round(pick(0.99), 1),
        "max ms": round(lat[-1] * 1000, 1),
        "requests/s": round(len(lat) / (t1 - t0), 1),
        "live jobs": len(busy),
        "live busy %": round(100 * overlap / (t1 - t0), 1),
        "live errors": len(live_errors),
        "first errors": (errors + live_errors)[:3],
    }


def run(clients: int = 200, rounds: int = 5, db: str | Path = "runs/demo/features.db", live_jobs: bool = True
        ) -> list[dict[str, Any]]:  # fmt: skip
    db = Path(db).resolve()
    if not db.is_file():
        raise SystemExit(f"no feature store at {db}; run `make demo` first or pass --db")
    with tempfile.TemporaryDirectory() as tmp:
        # serve a copy: every trace stores its graph, and the store given must stay as it was
        # (checkpoint paths in it are relative to the working folder, not to the store)
        copy = Path(tmp) / "features.db"
        shutil.copyfile(db, copy)
        proc, url = start_server(copy, Path(tmp))
        try:
            return [asyncio.run(load(url, clients, rounds, live_jobs))]
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--db", default="runs/demo/features.db")
    ap.add_argument("--no-live", action="store_true", help="browse only (the baseline)")
    args = ap.parse_args()
    print(json.dumps(run(args.clients, args.rounds, args.db, not args.no_live)[0], indent=1))


if __name__ == "__main__":
    main()
