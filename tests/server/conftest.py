"""A small real feature store for the server tests: a TopK SAE and a transcoder (random weights)
encoded on toy token sequences, every statistic computed from those codes and written through
the store's write API, plus one attribution graph."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from monosemantic.config import Config
from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.store.feature_store import FeatureStore

WORDS = [" the", " cat", " dog", " sat", " on", " mat", " red", " blue", ".", " a", " ran", " happy",
         " Lily", " Tom", " park", " ball", " saw", " big", " small", " sun", " rain", " said", ' "', " and"]  # fmt: skip
D, N, T = 16, 40, 12
GRAPH = {"metadata": {"slug": "toy", "prompt": "the cat sat"}, "qParams": {},
         "nodes": [{"node_id": "E_0_0", "feature_type": "embedding"}], "links": []}  # fmt: skip


def _rows(codes: torch.Tensor, tokens: torch.Tensor, lens: torch.Tensor, w_dec: torch.Tensor, key: str):
    F = codes.shape[-1]
    flat = codes.reshape(-1, F)
    unit = w_dec / w_dec.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    cos.fill_diagonal_(-2)
    feats, examples = [], []
    for f in range(F):
        a = flat[:, f]
        on = a[a > 0]
        mx = float(on.max()) if on.numel() else 0.0
        counts = torch.histc(on, bins=20, min=0, max=mx).long().tolist() if on.numel() else []
        top = lens[f].topk(3)
        seq_max = codes[..., f].max(dim=1)
        order = seq_max.values.argsort(descending=True)[:3]
        ex = []
        for rank, s in enumerate(order.tolist()):
            if seq_max.values[s] <= 0:
                break
            ex.append({"feature": f, "kind": "top", "rank": rank, "sequence": s, "position": int(seq_max.indices[s]),
                       "peak": int(seq_max.indices[s]), "max_activation": float(seq_max.values[s]),
                       "tokens": [WORDS[i] for i in tokens[s]], "token_ids": tokens[s].tolist(),
                       "activations": codes[s, :, f].tolist()})  # fmt: skip
        peaks = Counter(e["tokens"][e["peak"]].strip() for e in ex)
        row = {
            "idx": f, "density": on.numel() / a.numel(), "max_activation": mx,
            "mean_activation": float(on.mean()) if on.numel() else 0.0, "n_active": on.numel(),
            "quantiles": [0.0, mx / 2, mx],
            "histogram": {"edges": [mx * i / 20 for i in range(21)] if counts else [], "counts": counts,
                          "zeros": int((a == 0).sum())},
            key: [{"id": int(i), "token": WORDS[i], "value": float(v)} for v, i in zip(top.values, top.indices, strict=True)],
            "neighbours": [{"feature": int(i), "cosine": float(cos[f, i])} for i in cos[f].topk(3).indices],
        }  # fmt: skip
        if ex and f % 2 == 0:
            row["explanation"] = f"the word '{peaks.most_common(1)[0][0]}'"
            row["explanation_source"] = "offline"
        feats.append(row)
        examples += ex
    return feats, examples


@pytest.fixture(scope="session")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    embed = torch.randn(len(WORDS), D)
    tokens = torch.randint(len(WORDS), (N, T))
    x = embed[tokens] + 0.1 * torch.randn(N, T, D)
    path = tmp_path_factory.mktemp("serve") / "features.db"
    with FeatureStore.fresh(path) as store:
        store.set_meta(model="toy", n_tokens=N * T, n_sequences=N, context_size=T)
        for name, site_out, key in (
            ("toy-sae", None, "logit_top"),
            ("toy-transcoder", "blocks.0.hook_mlp_out", "input_top"),
        ):
            cfg = DictionaryConfig(
                architecture="topk", d_sae=24, k=3, site="blocks.0.hook_resid_post", site_out=site_out
            )
            dic = build_dictionary(cfg, D, D)
            with torch.no_grad():
                codes = dic.encode(x.reshape(-1, D)).reshape(N, T, -1)
                # SAE: tokens its decoder writes towards; transcoder: tokens its encoder reads
                lens = dic.W_dec @ embed.T if site_out is None else (embed @ dic.W_enc).T
                feats, examples = _rows(codes, tokens, lens, dic.W_dec, key)
            did = store.add_dictionary(name, architecture="topk", hook_name=cfg.site, hook_name_out=site_out,
                                       d_in=D, d_sae=24, model="toy", cfg={"k": 3})  # fmt: skip
            store.upsert_features(did, feats)
            store.add_examples(did, examples)
        store.add_graph("toy", GRAPH, prompt="the cat sat")
    return path


LIVE_SAE, LIVE_TC = "live-sae", "live-transcoder"


@pytest.fixture(scope="session")
def live_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    """A store whose dictionaries are real checkpoints on the shipped storyworld LM (random
    weights, saved with `save_dictionary`): an SAE on the layer-1 residual stream and a layer-1
    transcoder, each with rows for every feature, plus the config `serve` gets."""
    from monosemantic.dictionaries.io import save_dictionary

    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("live")
    path = root / "features.db"
    with FeatureStore.fresh(path) as store:
        store.set_meta(model="storyworld")
        for name, site, site_out in (
            (LIVE_SAE, "blocks.1.hook_resid_post", None),
            (LIVE_TC, "blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out"),
        ):
            cfg = DictionaryConfig(architecture="topk", d_sae=256, k=8, site=site, site_out=site_out)
            dic = build_dictionary(cfg, 128, 128)
            ckpt = save_dictionary(dic, root / name, metadata={"hook_name": site, "hook_name_out": site_out,
                                                               "model_name": "storyworld", "prepend_bos": True})  # fmt: skip
            did = store.add_dictionary(name, path=ckpt, architecture="topk", hook_name=site, hook_name_out=site_out,
                                       d_in=128, d_sae=256, model="storyworld", cfg={"k": 8})  # fmt: skip
            store.upsert_features(
                did,
                [{"idx": i, "density": 0.01 * (i % 7), "max_activation": 1.0 + i % 5,
                  "logit_top": [{"id": i, "token": f" tok{i}", "value": 1.0}],
                  **({"explanation": f"{name} feature {i} about dragons"} if i % 50 == 0 else {})}
                 for i in range(256)],
            )  # fmt: skip
    cfg = Config(device="cpu")
    cfg.circuit.ablation = "zero"
    return path, cfg
