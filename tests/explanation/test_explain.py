"""`explain` against a real local chat-completions server: retries, cache, stored provenance; and
the scoring procedures shared by the LLM and the offline judge."""

from __future__ import annotations

import random
import re

import pytest
from analysis_world import analyze_config
from chat_server import ChatServer

from monosemantic.analysis.run import analyze
from monosemantic.explanation import scoring
from monosemantic.explanation.llm_client import ChatClient
from monosemantic.explanation.run import explain, parse_explanation
from monosemantic.store.feature_store import FeatureStore
from monosemantic.utils.errors import MonosemanticError


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


def test_features_with_too_few_examples_are_not_explained_or_scored(world, analysis, tmp_path):
    """A feature seen in fewer than `explain.min_examples` contexts gets no explanation and no
    scores (one context would score 1.0 by itself), and says why; the others are scored."""
    import shutil

    from monosemantic.explanation.run import TOO_FEW, contexts

    db = shutil.copy(analysis, tmp_path / "features.db")
    with FeatureStore(db) as store:
        counts = {(d["id"], f["idx"]): contexts(ex) for d in store.dictionaries()
                  for f, ex in store.features_with_examples(d["id"]) if f["n_active"]}  # fmt: skip
    need = sorted(counts.values())[len(counts) // 2]  # half the live features fall short
    cfg = analyze_config(world, world["dicts"], tmp_path, f"explain.min_examples={need}")
    explain(cfg)
    with FeatureStore(db) as store:
        for (did, idx), n in counts.items():
            f = store.feature(did, idx)
            if n < need:
                assert f["explanation"] is None and f["explanation_source"] == TOO_FEW
                assert f["score_detection"] is None and f["score_fuzzing"] is None
                assert f["scores"]["note"].startswith(f"{TOO_FEW}: {n} activating")
            else:
                assert f["explanation"] and f["explanation_source"] == "offline"
                assert f["score_fuzzing"] is not None  # (detection also needs silent contexts)
    assert any(n < need for n in counts.values()) and any(n >= need for n in counts.values())
