"""A tiny OpenAI-compatible chat server for the explainer and autointerp tests."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """A tiny OpenAI-compatible server. It answers like a careful judge who knows the feature is
    about 'pink', and fails the first requests with 429 and 503 to exercise the retries."""

    def __init__(self, failures: tuple[int, ...] = (429, 503)) -> None:
        self.failures = list(failures)
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.auth.append(self.headers.get("Authorization"))
                if self.path != "/v1/chat/completions" or body.get("model") != "judge-1":
                    return self._send(400, {"error": {"message": "bad path or model"}})
                with lock:
                    fail = server.failures.pop(0) if server.failures else None
                    server.requests.append(body)
                if fail is not None:
                    return self._send(fail, {"error": {"message": "try again"}}, {"Retry-After": "0"})
                content = server.answer(body["messages"][-1]["content"])
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": 100, "completion_tokens": 10}})  # fmt: skip

            def _send(self, code: int, obj: dict, headers: dict | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def answer(prompt: str) -> str:
        lines = re.findall(r"^Example \d+: (.*)$", prompt, flags=re.M)
        if "decide whether the feature" in prompt:
            return json.dumps([int("pink" in ln) for ln in lines])
        if "marked tokens are exactly" in prompt:
            marks = [re.findall(r"<<(.*?)>>", ln) for ln in lines]
            return "Answer: " + json.dumps([int(bool(m) and all("pink" in t for t in m)) for m in marks])
        return "The marked tokens are all the colour pink.\n[EXPLANATION]: the colour word pink"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
