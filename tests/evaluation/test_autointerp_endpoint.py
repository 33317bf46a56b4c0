"""autointerp through an LLM endpoint: explain's prompts on the same held-out items, answered by a
local chat-completions server that judges by the word 'pink'."""

from __future__ import annotations

import random

import numpy as np
import pytest
from chat_server import ChatServer

from monosemantic.config.explain import ExplainConfig
from monosemantic.evaluation.benchmarks.autointerp import feature_examples, llm_scores
from monosemantic.utils.errors import ConfigError


def test_llm_judge_scores_a_pink_feature_perfectly_and_needs_an_endpoint(tmp_path, monkeypatch):
    words = ["the", "cat", "saw", "a", "pink", "ball", "and", "ran", "home", "fast"] * 2
    f = np.zeros((40, len(words)))
    f[:30, 4] = np.linspace(1, 3, 30)  # fires on ' pink' in 30 sequences
    f[:30, 14] = 0.5
    strings = [list(words) if s < 30 else [w for w in words if w != "pink"] + ["red"] * 2 for s in range(40)]
    work = {7: feature_examples(f, strings, random.Random(0))}
    server = ChatServer(failures=())
    try:
        cfg = ExplainConfig(endpoint=server.url, model="judge-1", cache=tmp_path / "cache")
        scores = llm_scores(work, cfg, seed=0)
    finally:
        server.close()
    assert scores[7]["detection"] == pytest.approx(1.0) and scores[7]["fuzzing"] == pytest.approx(1.0)
    assert len(server.requests) == 3  # one explanation, one detection, one fuzzing prompt
    monkeypatch.delenv("MONOSEMANTIC_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match="endpoint"):
        llm_scores(work, ExplainConfig(), seed=0)
