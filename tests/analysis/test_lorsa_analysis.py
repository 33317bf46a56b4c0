"""`analyze` on a Lorsa: its heads are encoded on whole windows (not on the flattened tokens of a
batch), so the stored top examples equal the head activations of each sequence on its own."""

from __future__ import annotations

import pytest
import torch
from analysis_world import analyze_config, cache_tensors

from monosemantic.analysis.run import analyze
from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.io import save_dictionary
from monosemantic.store.feature_store import FeatureStore

SITE, SITE_OUT = "blocks.0.ln1.hook_normalized", "blocks.0.hook_attn_out"


def test_lorsa_top_examples_are_per_sequence_head_activations(world, tmp_path):
    torch.manual_seed(0)
    cfg = DictionaryConfig(
        architecture="lorsa", d_sae=16, k=3, n_qk_heads=2, d_qk_head=8, site=SITE, site_out=SITE_OUT
    )
    lorsa = build_dictionary(cfg, 32, 32)
    meta = {"model_name": str(world["model"]), "hook_name": SITE, "hook_name_out": SITE_OUT}
    save_dictionary(lorsa, tmp_path / "dicts" / "lorsa", meta)
    db = analyze(analyze_config(world, tmp_path / "dicts", tmp_path / "out"))

    cache = world["cache"]
    tokens, _, _ = cache_tensors(cache, "blocks.0.hook_resid_post")
    model = cache.load_model(torch.device("cpu"))
    with torch.no_grad():
        x = model.run(tokens.long(), capture=[SITE]).activations[SITE].float()
        codes = lorsa.encode(x) * (~cache.special_mask(tokens)).unsqueeze(-1)  # [N, T, H], window by window
    seq_max = codes.amax(1)
    with FeatureStore(db) as store:
        (d,) = store.dictionaries()
        assert d["hook_name"] == SITE and d["hook_name_out"] == SITE_OUT
        checked = 0
        for head in range(16):
            top = store.examples(d["id"], head, kind="top")
            if not top:
                assert seq_max[:, head].max() <= 0
                continue
            vals = seq_max[:, head].topk(len(top)).values
            assert [e["max_activation"] for e in top] == pytest.approx(vals.tolist(), rel=1e-3)
            checked += 1
        assert checked >= 8


def test_lorsa_examples_store_the_keys_each_head_attends_to(world, tmp_path):
    """Every stored example of a head carries the key positions it attends to most from the
    example's peak, equal to `Lorsa.top_keys` on that sequence, indexed like `peak`."""
    torch.manual_seed(1)
    cfg = DictionaryConfig(
        architecture="lorsa", d_sae=8, k=2, n_qk_heads=2, d_qk_head=8, site=SITE, site_out=SITE_OUT
    )
    lorsa = build_dictionary(cfg, 32, 32)
    meta = {"model_name": str(world["model"]), "hook_name": SITE, "hook_name_out": SITE_OUT}
    save_dictionary(lorsa, tmp_path / "dicts" / "lorsa", meta)
    db = analyze(analyze_config(world, tmp_path / "dicts", tmp_path / "out"))

    cache = world["cache"]
    tokens, _, _ = cache_tensors(cache, "blocks.0.hook_resid_post")
    model = cache.load_model(torch.device("cpu"))
    with torch.no_grad():
        x = model.run(tokens.long(), capture=[SITE]).activations[SITE].float()
    with FeatureStore(db) as store:
        (d,) = store.dictionaries()
        checked = kinds = 0
        for head in range(8):
            examples = store.examples(d["id"], head)
            kinds |= {e["kind"] for e in examples} >= {"top", "quantile"}
            for e in examples:
                with torch.no_grad():
                    keys, weights = lorsa.top_keys(x[e["sequence"]], head, e["position"], n=5)
                start = e["position"] - e["peak"]  # the stored window's first position in the sequence
                assert [k + start for k, _ in e["attended"]] == keys.tolist()
                assert [w for _, w in e["attended"]] == pytest.approx(weights.tolist(), abs=1e-4)
                checked += 1
        assert checked >= 20 and kinds
