"""`explain` against a real local chat-completions server: retries, cache, stored provenance; and
the scoring procedures shared by the LLM and the offline judge."""

from __future__ import annotations

import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from monosemantic.analysis.run import analyze
from monosemantic.explanation import scoring
from monosemantic.explanation.llm_client import ChatClient
from monosemantic.explanation.run import explain, parse_explanation
from monosemantic.store.feature_store import FeatureStore
from monosemantic.utils.errors import MonosemanticError

from .conftest import analyze_config


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


@pytest.fixture
def server():
    s = ChatServer()
    yield s
    s.close()


def test_explain_through_endpoint_with_retries_and_cache(world, tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    cfg = analyze_config(world, world["probe"], tmp_path, f'explain.endpoint="{server.url}"',
                         'explain.model="judge-1"', 'explain.api_key_env="JUDGE_KEY"', "explain.concurrency=2")  # fmt: skip
    db = analyze(cfg)
    explain(cfg)
    err = capsys.readouterr().err
    assert re.search(r"1 explanation requests \(~[\d,]+ prompt tokens; 0 cached\)", err)
    assert "2 retries" in err  # the 429 and the 503
    n = len(server.requests)
    assert n == 2 + 1 + 2  # failures, one explanation, detection + fuzzing
    assert set(server.auth) == {"Bearer sk-test"}
    with FeatureStore(db) as store:
        f = store.feature(1, 0)
        assert f["explanation"] == "the colour word pink" and f["explanation_source"] == "llm:judge-1"
        # fuzzing marks the probe's top tokens: a neighbour of 'pink' may be among them (torch-version
        # dependent), which the judge rightly rejects
        assert f["scorer"] == "llm:judge-1" and f["score_fuzzing"] > 0.8 and f["score_detection"] > 0.6
        assert set(f["scores"]) == {"detection", "fuzzing"}
    # a rerun is answered entirely from the on-disk cache
    explain(cfg)
    assert len(server.requests) == n
    assert "3 cache hits" in capsys.readouterr().err


def test_client_gives_up_with_one_line_on_client_errors(server, tmp_path):
    client = ChatClient(server.url, "wrong-model", cache_dir=tmp_path, max_retries=3)
    with pytest.raises(MonosemanticError, match="HTTP 400"):
        client.complete_all([[{"role": "user", "content": "hi"}]])
    retry = ChatClient(server.url, "judge-1", max_retries=1, backoff=0.0)
    with pytest.raises(MonosemanticError, match="HTTP 503"):
        retry.complete_all([[{"role": "user", "content": "hi"}]])  # 429 then 503: out of retries


def test_parsing_and_metrics():
    assert parse_explanation("blah\n[EXPLANATION]: dogs and cats") == "dogs and cats"
    assert parse_explanation("just this") == "just this"
    assert scoring.parse_labels("I think [1, 0, 1]", 3) == [1, 0, 1]
    assert scoring.parse_labels("[1, 2] then [0, 1]", 2) == [0, 1]
    assert scoring.parse_labels("no idea", 2) is None
    m = scoring.metrics([1, 1, 0, 0], [1, 0, 0, 0])
    assert m["score"] == 0.75 and m["precision"] == 1.0 and m["recall"] == 0.5 and m["accuracy"] == 0.75


def test_fuzzing_marks_real_or_random_tokens():
    ex = [{"tokens": list("abcdefg"), "activations": [0, 0, 0, 1.0, 0.5, 0, 0]} for _ in range(6)]
    items = scoring.fuzzing_items(ex, 6, random.Random(0))
    assert sorted(it.label for it in items) == [0, 0, 0, 1, 1, 1]
    for it in items:
        assert (it.marked == [3, 4]) == bool(it.label) and len(it.marked) == 2
    assert items[0].text().count("<<") == 2
    det = scoring.detection_items(ex, [{"tokens": ["x"], "activations": [0]}] * 4, 3, random.Random(0))
    assert sorted(it.label for it in det) == [0, 0, 0, 1, 1, 1]
