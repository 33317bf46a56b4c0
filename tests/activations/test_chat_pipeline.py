"""Chat data end to end on storyworld conversations and a tiny model with a chat template: harvest
with `train_on = "assistant"`, train, evaluate and analyze count only assistant tokens and say so
in every output; a circuit explains a chat prompt and marks its turns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from chat_world import save_chat_model, write_chat_jsonl

from monosemantic.activations import split
from monosemantic.activations.cache import ActivationCache
from monosemantic.activations.harvest import harvest
from monosemantic.analysis.run import analyze
from monosemantic.circuits.run import circuit
from monosemantic.config import Config
from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.corpus.chat import ROLE_CODE
from monosemantic.dictionaries import build_dictionary, save_dictionary
from monosemantic.evaluation.run import evaluate
from monosemantic.store.feature_store import FeatureStore
from monosemantic.training.trainer import train

SITE = "blocks.1.hook_resid_post"
TC_IN, TC_OUT = "blocks.{L}.mlp.hook_in", "blocks.{L}.hook_mlp_out"


def _cfg(root: Path, model: Path, data: Path, **extra) -> Config:
    base = {
        "device": "cpu",
        "model": {"name": str(model)},
        "data": {
            "format": "chat",
            "text": str(data),
            "train_on": "assistant",
            "context_size": 32,
            "max_tokens": 1280,
        },
        "sites": {"names": [SITE]},
        "harvest": {"out": str(root / "cache"), "dtype": "float32", "shard_sequences": 20, "batch_size": 8},
        "dictionaries": [{"name": "sae", "architecture": "topk", "k": 4, "d_sae": 64, "site": SITE}],
        "train": {"out": str(root / "train"), "tokens": 2048, "batch_size": 64, "lr": 1e-4},
        "evaluate": {"out": str(root / "eval"), "benchmarks": []},
        "analyze": {"out": str(root / "analysis"), "cache": str(root / "cache")},
    }
    for key, value in extra.items():
        base[key] = {**base.get(key, {}), **value}
    return Config.model_validate(base)


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-run")
    model = save_chat_model(root / "model")
    data = write_chat_jsonl(root / "chat.jsonl", 40)
    cfg = _cfg(root, model, data)
    harvest(cfg)
    train(cfg)
    return root, model, data, cfg


def test_harvest_records_roles_and_policy(chat_run):
    root, *_ = chat_run
    cache = ActivationCache(root / "cache")
    assert (
        cache.manifest["train_on"] == "assistant"
        and cache.manifest["roles"][ROLE_CODE["assistant"]] == "assistant"
    )
    assert cache.manifest["data"]["format"] == "chat" and len(cache.manifest["chat_template"]) == 16
    batch = next(cache.iter_sequences(batch_sequences=8))
    roles = batch["roles"]
    assert roles.shape == batch["tokens"].shape and {0, 2, 3} <= set(roles.unique().tolist())
    keep = cache.keep_mask(batch["tokens"], roles)
    assert keep.sum() == ((roles == ROLE_CODE["assistant"]) & ~cache.special_mask(batch["tokens"])).sum() > 0


def test_training_reads_only_assistant_tokens_and_records_it(chat_run):
    root, *_ = chat_run
    meta = json.loads((root / "train" / "sae" / "cfg.json").read_text())["metadata"]
    assert meta["train_on"] == "assistant" and meta["data_format"] == "chat"
    from monosemantic.activations.sources import CacheSource

    src = CacheSource(root / "cache", [SITE], 10**6, True, "assistant")
    chunk = src.next_chunk()[SITE]
    cache = ActivationCache(root / "cache")
    shard = cache.load_shard(0, [SITE])
    held = split.held_out(cache.manifest)  # evaluation sequences: training never reads them
    rows = torch.ones(len(shard["tokens"]), dtype=torch.bool)
    if held is not None:
        rows = ~torch.isin(torch.arange(len(rows)), held)
    keep = (shard["roles"] == ROLE_CODE["assistant"]) & ~cache.special_mask(shard["tokens"]) & rows[:, None]
    want = shard[SITE][keep]
    torch.testing.assert_close(chunk, want.float(), rtol=0, atol=0)


def test_evaluate_and_analyze_count_assistant_tokens_only(chat_run):
    root, model, data, cfg = chat_run
    evaluate(cfg)
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["sample"]["train_on"] == "assistant"
    cache = ActivationCache(root / "cache")
    tokens = torch.cat([b["tokens"] for b in cache.iter_sequences(batch_sequences=16)])
    roles = torch.cat([b["roles"] for b in cache.iter_sequences(batch_sequences=16)])
    held = split.held_out(cache.manifest)  # evaluate reads the held-out sequences
    rows = held if held is not None else torch.arange(len(tokens))
    n = int(cache.keep_mask(tokens[rows], roles[rows]).sum())
    assert metrics["dictionaries"]["sae"]["n_tokens"] == n < int((~cache.special_mask(tokens[rows])).sum())
    db = analyze(cfg)
    with FeatureStore(db) as store:
        (d,) = store.dictionaries()
        examples = [ex for f in range(64) for ex in store.examples(d["id"], f, kind="top")]
    seen_other = 0
    for ex in examples:  # an example's activations run over its sequence from position - peak
        start = ex["position"] - ex["peak"]
        for i, act in enumerate(ex["activations"]):
            role = int(roles[ex["sequence"], start + i])
            seen_other += role != ROLE_CODE["assistant"]
            assert act == 0.0 or role == ROLE_CODE["assistant"]
    assert examples and seen_other > 0  # contexts show user turns too, silent


def test_circuit_explains_a_chat_prompt_and_marks_its_turns(chat_run, tmp_path):
    root, model, data, cfg = chat_run
    chat = "system: You tell short stories.\nuser: Tell me a story about Lily."
    paths = []
    torch.manual_seed(0)
    for i in range(2):  # random transcoders on both MLPs: the graph needs every layer replaced
        c = DictionaryConfig(
            architecture="topk", d_sae=48, k=4, site=TC_IN.format(L=i), site_out=TC_OUT.format(L=i)
        )
        paths.append(save_dictionary(build_dictionary(c, 32, 32), tmp_path / f"tc{i}"))
    cfg = _cfg(root, model, data, circuit={"chat": chat, "out": str(tmp_path / "graph"), "batch_size": 16,
                                           "dictionaries": [str(p) for p in paths]})  # fmt: skip
    circuit(cfg)
    g = json.loads((tmp_path / "graph" / "graph.json").read_text())
    meta = g["metadata"]
    assert [t["role"] for t in meta["turns"]] == ["other", "system", "user", "other"]
    assert meta["chat"][1] == {"role": "user", "content": "Tell me a story about Lily."}
    tokens = meta["prompt_tokens"]
    assert meta["turns"][-1]["end"] == len(tokens) and "".join(tokens).endswith(
        "<start_of_turn>model⏎"
    )  # ⏎ shows a newline
    html = (tmp_path / "graph" / "index.html").read_text()
    assert '"turns"' in html and "turn-role" in html
