"""`explain` against a real local chat-completions server: retries, cache, stored provenance; and
the scoring procedures shared by the LLM and the offline judge."""

from __future__ import annotations

import random
import re

import pytest
from analysis_world import analyze_config
from chat_server import ChatServer

from monosemantic.activations import split
from monosemantic.analysis.run import analyze
from monosemantic.explanation import score_sets, scoring
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
                         'explain.model="judge-1"', 'explain.api_key_env="JUDGE_KEY"', "explain.concurrency=2", "explain.min_examples=2")  # fmt: skip
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
        assert (
            set(f["scores"]) == {"detection", "fuzzing", "scored_on"}
            and f["scores"]["scored_on"] == "held_out"
        )
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
    # scored on the contexts counted here (held-out scoring has its own, smaller, count: tested below)
    cfg = analyze_config(
        world, world["dicts"], tmp_path, f"explain.min_examples={need}", 'explain.score_on="all"'
    )
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


def test_scoring_reads_only_held_out_contexts_and_says_so(world, tmp_path, capsys):
    cfg = analyze_config(world, world["probe"], tmp_path, "explain.min_examples=2")
    db = analyze(cfg)
    held_seqs = set(split.held_out(world["cache"].manifest).tolist())
    with FeatureStore(db) as store:
        ex = store.examples(1, 0)
    held = {tuple(e["tokens"]) for e in ex if e["kind"] == "held_out"}
    held_neg = {tuple(e["tokens"]) for e in ex if e["kind"] == "held_out_negative"}
    assert len(held) >= 2 and held_neg
    assert {e["sequence"] for e in ex if e["kind"].startswith("held_out")} <= held_seqs
    assert any(e["sequence"] not in held_seqs for e in ex if e["kind"] == "top")  # the explainer's contexts
    sets, record = score_sets.score_items(ex, "held_out", ["detection", "fuzzing"], 6, 2, random.Random(0))
    assert record == {"scored_on": "held_out"} and set(sets) == {"detection", "fuzzing"}
    for it in sets["detection"]:
        assert tuple(it.tokens) in (held if it.label else held_neg)
    assert all(tuple(it.tokens) in held for it in sets["fuzzing"])

    explain(cfg)
    err = capsys.readouterr().err
    assert "held-out sequences the explainer never saw" in err and "explain.score_on = held_out" in err
    with FeatureStore(db) as store:
        f = store.feature(1, 0)
        assert f["scores"]["scored_on"] == "held_out" and f["scorer"] == "offline-keyword"
        assert store.meta()["explain_scored_on"] == "held_out"

    explain(analyze_config(world, world["probe"], tmp_path, 'explain.score_on="all"'))
    assert "explain.score_on = all" in capsys.readouterr().err
    with FeatureStore(db) as store:
        assert store.feature(1, 0)["scores"]["scored_on"] == "all"

    # too few held-out contexts: the feature is not scored, and the note says why
    explain(analyze_config(world, world["probe"], tmp_path, f"explain.min_examples={len(held) + 50}"))
    with FeatureStore(db) as store:
        f = store.feature(1, 0)
        assert f["scorer"] == score_sets.TOO_FEW and f["score_detection"] is None
        # (fewer than that overall too: explain's own gate marks it first, with the count it saw)
        assert "activating context" in f["scores"]["note"]

    # a store without held-out examples (its cache had no split) is scored on all, with the fix named
    with FeatureStore(db) as store:
        store.set_meta(held_out=None)
    explain(cfg)
    err = capsys.readouterr().err
    assert "harvest.eval_fraction" in err and "explain.score_on = all" in err
    with FeatureStore(db) as store:
        assert store.feature(1, 0)["scores"]["scored_on"] == "all"
