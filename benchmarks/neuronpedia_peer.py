"""Neuronpedia's side of the conformance check; runs in its own venv (.venv-neuronpedia, the
`neuronpedia` client from PyPI) and imports only the standard library and that client.

Neuronpedia's client reads a feature with `FeatureRequest().get(model, source, index)`: a GET of
`{BASE_URL}/feature/{model}/{source}/{index}` parsed into its `Feature` (`Activation.from_np_db_json`,
`Explanation.from_np_db_json`). With `USE_LOCALHOST=true` (read when the client is imported) its
BASE_URL is `http://localhost:3000/api`, so this script serves our export there, from a local
`http.server`: each feature of `DIR/<source>/batch-*.json` at `/api/feature/<model>/<source>/<index>`.
It also takes the client's upload (`FeatureRequest().upload_batch`, a POST to
`/api/feature/upload-batch`) of the features it loaded, with their logits added, and keeps the
payload. The client's code is used as installed; only its server is local. If port 3000 is taken,
the server takes a free port and the client's `NPRequest.BASE_URL` (its one setting for where
Neuronpedia is) points there.

Usage: python neuronpedia_peer.py JOB.json  (keys: dir, features: [[model, source, index], ...]).
Prints one JSON line: versions, loaded (what `get` returned, per feature), uploaded (the captured
payloads), requests (the paths served).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ["USE_LOCALHOST"] = "true"  # before the client is imported: it reads these at import
os.environ.setdefault("NEURONPEDIA_API_KEY", "local-conformance-check")


def _features(root: Path) -> dict[tuple[str, str, str], dict]:
    """Every exported feature by (modelId, source, index)."""
    out = {}
    for batch in sorted(root.glob("*/batch-*.json")):
        for f in json.loads(batch.read_text(encoding="utf-8")):
            out[(f["modelId"], f["layer"], str(f["index"]))] = f
    return out


def _server(features: dict, uploads: list, seen: list) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(("GET", self.path, self.headers.get("X-Api-Key")))
            parts = self.path.strip("/").split("/")
            key = tuple(parts[2:]) if parts[:2] == ["api", "feature"] and len(parts) == 5 else None
            if key in features:
                self._reply(200, features[key])
            else:
                self._reply(404, {"message": f"no feature at {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            seen.append(("POST", self.path, self.headers.get("X-Api-Key")))
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
            if self.path.rstrip("/") == "/api/feature/upload-batch":
                uploads.append(body)
                self._reply(200, {"message": "ok", "features": len(body["features"])})
            else:
                self._reply(404, {"message": f"no endpoint {self.path}"})

        def log_message(self, *args: object) -> None:  # quiet: stdout carries the result line
            pass

    try:
        return ThreadingHTTPServer(("127.0.0.1", 3000), Handler)
    except OSError:  # port 3000 busy (another local server): any free port
        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    features, uploads, seen = _features(Path(job["dir"])), [], []
    server = _server(features, uploads, seen)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    import importlib.metadata

    from neuronpedia.np_feature import Logit
    from neuronpedia.requests.base_request import NPRequest
    from neuronpedia.requests.feature_request import FeatureRequest

    if server.server_address[1] != 3000:
        NPRequest.BASE_URL = f"http://127.0.0.1:{server.server_address[1]}/api"
    loaded, batches = [], {}
    try:
        for model, source, index in job["features"]:
            feat = FeatureRequest().get(model, source, int(index))  # the client's loader, unmodified
            loaded.append(asdict(feat))
            raw = features[(model, source, str(index))]  # logits: the client's `get` does not read them
            feat.top_logits = [Logit(t, v) for t, v in zip(raw["pos_str"], raw["pos_values"], strict=True)]
            feat.bottom_logits = [Logit(t, v) for t, v in zip(raw["neg_str"], raw["neg_values"], strict=True)]
            batches.setdefault((model, source), []).append(feat)
        for (model, source), feats in batches.items():  # one upload per source, as its uploader batches
            FeatureRequest().upload_batch(model, source, feats)
    finally:
        server.shutdown()
    versions = {"neuronpedia": importlib.metadata.version("neuronpedia")}
    sys.stdout.flush()
    print(json.dumps({"versions": versions, "loaded": loaded, "uploaded": uploads, "requests": seen}))


if __name__ == "__main__":
    main(sys.argv[1])
