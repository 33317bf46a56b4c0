"""`analyze` on a real harvest: every statistic equals a brute-force computation over the same tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from analysis_world import MLP_IN, RESID, cache_tensors

from monosemantic.dictionaries.io import load_dictionary
from monosemantic.store.feature_store import FeatureStore

W = 3  # analyze.window in the fixture config
K = 5  # analyze.top_k


@pytest.fixture(scope="module")
def brute(world):
    """Codes of the SAE on every cached token, with the special-token mask."""
    cache = world["cache"]
    tokens, x, _ = cache_tensors(cache, RESID)
    sae = load_dictionary(world["dicts"] / "sae")
    with torch.no_grad():
        codes = sae.encode(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1)
    keep = ~cache.special_mask(tokens)
    return tokens.long(), codes * keep.unsqueeze(-1), keep


def _sae(store: FeatureStore) -> int:
    return store.dictionary("sae")["id"]


def test_top_examples_match_brute_force(analysis, brute):
    tokens, codes, _ = brute
    seq_max, seq_arg = codes.max(dim=1)  # [N, F]
    T = tokens.shape[1]
    with FeatureStore(analysis) as store:
        did = _sae(store)
        checked = 0
        for f in range(codes.shape[-1]):
            top = store.examples(did, f, kind="top")
            n_seq = int((seq_max[:, f] > 0).sum())
            assert len(top) == min(K, n_seq)
            if not top:
                continue
            vals = seq_max[:, f].topk(len(top)).values
            assert [e["max_activation"] for e in top] == pytest.approx(vals.tolist(), rel=1e-3)
            # ties (identical contexts) may pick either sequence; each pick must hold that value
            assert len({e["sequence"] for e in top}) == len(top)
            assert [float(seq_max[e["sequence"], f]) for e in top] == pytest.approx(vals.tolist(), rel=1e-6)
            for e in top:
                s, p = e["sequence"], int(seq_arg[e["sequence"], f])
                assert e["position"] == p
                lo, hi = max(0, p - W), min(T, p + W + 1)
                assert e["token_ids"] == tokens[s, lo:hi].tolist()
                # stored to 4 significant digits of the window's peak
                tol = 1e-3 * e["max_activation"]
                assert e["activations"] == pytest.approx(codes[s, lo:hi, f].tolist(), abs=tol)
                assert e["peak"] == p - lo and e["tokens"][e["peak"]]
            checked += 1
        assert checked > 20


def test_densities_and_histograms(analysis, brute):
    _, codes, keep = brute
    n = int(keep.sum())
    active = (codes > 0).sum(dim=(0, 1))
    with FeatureStore(analysis) as store:
        feats = store.list_features(_sae(store))
        assert len(feats) == codes.shape[-1]
        for f in feats:
            i = f["idx"]
            assert f["n_active"] == int(active[i])
            assert f["density"] == pytest.approx(int(active[i]) / n)
            assert f["max_activation"] == pytest.approx(float(codes[..., i].max()), rel=1e-6)
            if active[i]:
                mean = float(codes[..., i][codes[..., i] > 0].mean())
                assert f["mean_activation"] == pytest.approx(mean, rel=1e-4)
            h = f["histogram"]
            assert sum(h["counts"]) == int(active[i]) and h["zeros"] == n - int(active[i])
            if h["counts"]:
                assert h["edges"][-1] >= f["max_activation"] * (1 - 1e-3)


def test_quantile_samples_fall_in_their_bins(analysis, brute):
    _, codes, _ = brute
    with FeatureStore(analysis) as store:
        did = _sae(store)
        seen_bins, full, busy = set(), 0, 0
        for f in store.list_features(did):
            edges = f["quantiles"]
            assert len(edges) == 4 and edges == sorted(edges)
            qs = store.examples(did, f["idx"], kind="quantile")
            assert len(qs) <= 3 * 2
            for e in qs:
                b, v = e["bin"], e["max_activation"]
                assert edges[b] * (1 - 1e-3) <= v <= edges[b + 1] * (1 + 1e-3)
                assert e["activations"][e["peak"]] == pytest.approx(v, abs=1e-3 * max(e["activations"]))
                # the sample is a real activation at that token
                assert float(codes[e["sequence"], e["position"], f["idx"]]) == pytest.approx(v, rel=1e-3)
                seen_bins.add(b)
            per_bin = [sum(1 for e in qs if e["bin"] == b) for b in range(3)]
            assert max(per_bin) <= 2
            if f["n_active"] >= 60:  # enough activations: bins get their samples, unless ties
                busy += 1  # (one repeated value) squeeze a bin to nothing
                full += per_bin == [2, 2, 2]
                assert sum(per_bin) >= 4
        assert seen_bins == {0, 1, 2} and full >= 0.6 * busy


def test_negatives_are_silent_sequences(analysis, brute):
    _, codes, _ = brute
    seq_max = codes.max(dim=1).values
    with FeatureStore(analysis) as store:
        did = _sae(store)
        n_with = 0
        for f in store.list_features(did):
            neg = store.examples(did, f["idx"], kind="negative")
            assert len(neg) <= 3 and len({e["sequence"] for e in neg}) == len(neg)
            for e in neg:
                assert float(seq_max[e["sequence"], f["idx"]]) == 0.0
                assert not any(e["activations"])
            n_with += bool(neg)
        assert n_with > 10


def test_transcoder_input_site_is_computed_live(analysis, world):
    assert MLP_IN not in world["cache"].sites
    with FeatureStore(analysis) as store:
        d = store.dictionary("transcoder")
        assert d["hook_name"] == MLP_IN and d["hook_name_out"] == "blocks.0.hook_mlp_out"
        feats = store.list_features(d["id"], order_by="density")
        assert feats[0]["density"] > 0 and store.examples(d["id"], feats[0]["idx"], kind="top")
        assert all(len(f["input_top"]) == 5 for f in feats)
        assert store.list_features(store.dictionary("sae")["id"])[0]["input_top"] is None


def test_probe_feature_finds_planted_concept(world, tmp_path):
    from analysis_world import PROBE_CONCEPT, analyze_config

    from monosemantic.analysis.run import analyze
    from monosemantic.explanation.run import explain

    cfg = analyze_config(world, world["probe"], tmp_path, "explain.min_examples=2")
    db = analyze(cfg)
    explain(cfg)
    with FeatureStore(db) as store:
        (d,) = store.dictionaries()
        f = store.feature(d["id"], 0)
        assert f["concept"] == PROBE_CONCEPT and f["concept_auroc"] > 0.95
        assert f["explanation"].startswith(f"concept: {PROBE_CONCEPT} (AUROC")
        assert "'pink'" in f["explanation"] and f["explanation_source"] == "offline"
        assert f["scorer"] == "offline-keyword" and f["score_fuzzing"] > 0.8 and f["score_detection"] > 0.6
        silent = store.feature(d["id"], 1)
        assert silent["density"] == 0 and silent["explanation"] is None and not store.examples(d["id"], 1)


def test_cli_verbs_analyze_and_explain(world, tmp_path):
    from typer.testing import CliRunner

    from monosemantic.cli import app

    cfg = tmp_path / "a.toml"
    cfg.write_text(
        f'device = "cpu"\n[analyze]\ndictionary = "{world["probe"]}"\ncache = "{world["root"] / "acts"}"\n'
        f'out = "{tmp_path / "out"}"\ntop_k = 4\nwindow = 2\n'
    )
    runner = CliRunner()
    res = runner.invoke(app, ["analyze", str(cfg), "--set", "analyze.quantiles=2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "features.db").is_file()
    res = runner.invoke(app, ["explain", str(cfg)])
    assert res.exit_code == 0, res.output
    with FeatureStore(tmp_path / "out" / "features.db") as store:
        f = store.feature(1, 0)
        assert len(f["quantiles"]) == 3 and len(store.examples(1, 0, kind="top")) == 4
        assert f["explanation_source"] == "offline"
    res = runner.invoke(app, ["analyze", str(cfg), "--set", f'analyze.cache="{tmp_path / "missing"}"'])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_matched_concepts_beat_chance(analysis):
    """A feature is matched to a storyworld concept only when it detects it better than chance."""
    with FeatureStore(analysis) as store:
        feats = store.list_features(_sae(store))
        matched = [f for f in feats if f["concept"] is not None]
        assert matched and all(f["concept_auroc"] > 0.5 and f["concept_f1"] > 0 for f in matched)


def _copy_cache(world: dict, dst: Path) -> Path:
    import shutil

    shutil.copytree(world["root"] / "acts", dst)
    return dst


def test_damaged_or_non_finite_cache_is_refused_naming_shard_and_sequences(world, tmp_path):
    """A flipped byte (sha256) and NaN rows that a re-recorded sha256 would let through both stop analyze."""
    from analysis_world import RESID, analyze_config
    from safetensors.torch import load_file, save_file

    from monosemantic.analysis.run import analyze
    from monosemantic.utils.errors import DataError
    from monosemantic.utils.files import sha256_file

    flipped = _copy_cache(world, tmp_path / "flipped")
    shard = flipped / "shard-00002.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-100] ^= 0xFF
    shard.write_bytes(bytes(raw))
    cfg = analyze_config(world, world["probe"], tmp_path / "a", f'analyze.cache="{flipped}"')
    with pytest.raises(DataError, match="shard-00002.safetensors .*sha256"):
        analyze(cfg)

    nan = _copy_cache(world, tmp_path / "nan")
    shard = nan / "shard-00001.safetensors"
    tensors = load_file(str(shard))
    tensors[RESID][5, 7, 3] = float("nan")
    tensors[RESID][9, 0, 0] = float("inf")
    save_file(tensors, str(shard))
    manifest = json.loads((nan / "manifest.json").read_text())
    manifest["shards"][1]["sha256"] = sha256_file(shard)
    (nan / "manifest.json").write_text(json.dumps(manifest))
    cfg = analyze_config(world, world["probe"], tmp_path / "b", f'analyze.cache="{nan}"')
    with pytest.raises(
        DataError, match=rf"shard-00001.safetensors .*{RESID} holds NaN or inf in sequence\(s\) 5, 9;"
    ):
        analyze(cfg)
    assert not (tmp_path / "a" / "features.db").exists() and not (tmp_path / "b" / "features.db").exists()


def test_unfinished_harvest_is_analysed_with_a_warning(world, tmp_path, capsys):
    from analysis_world import analyze_config

    from monosemantic.analysis.run import analyze

    cache = _copy_cache(world, tmp_path / "acts")
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["complete"] = False
    (cache / "manifest.json").write_text(json.dumps(manifest))
    analyze(analyze_config(world, world["probe"], tmp_path / "out", f'analyze.cache="{cache}"'))
    seen = capsys.readouterr()
    assert f"the harvest at {cache} is unfinished" in " ".join((seen.out + seen.err).split())


def test_held_out_examples_come_only_from_held_out_sequences(analysis, brute, world):
    """`held_out` keeps a uniform sample of activating tokens of held-out sequences only (all of
    them where there are fewer than the sample size), `held_out_negative` silent held-out sequences."""
    from monosemantic.activations import split

    held = split.held_out(world["cache"].manifest)
    assert held is not None and held.numel() > 5
    _, codes, _ = brute
    on_held = codes[held]  # [H, T, F]
    firing = (on_held > 0).flatten(0, 1).sum(0)  # held-out activating tokens per feature
    seq_max = codes.max(dim=1).values
    held_set = set(held.tolist())
    with FeatureStore(analysis) as store:
        assert store.meta()["held_out"] == {"seed": 0, "fraction": 0.05, "sequences": held.numel()}
        did = _sae(store)
        n_pos = n_neg = 0
        for f in store.list_features(did):
            pos = store.examples(did, f["idx"], kind="held_out")
            neg = store.examples(did, f["idx"], kind="held_out_negative")
            assert len(pos) == min(20, int(firing[f["idx"]]))
            assert len({(e["sequence"], e["position"]) for e in pos}) == len(pos)
            for e in pos:
                assert e["sequence"] in held_set
                code = float(codes[e["sequence"], e["position"], f["idx"]])
                assert code > 0 and abs(e["max_activation"] - code) <= 1e-3 * code
                assert abs(e["activations"][e["peak"]] - code) <= 1e-3 * code
            assert len(neg) <= 3 and len({e["sequence"] for e in neg}) == len(neg)
            for e in neg:
                assert e["sequence"] in held_set and float(seq_max[e["sequence"], f["idx"]]) <= 0.0
            n_pos += bool(pos)
            n_neg += bool(neg)
        assert n_pos > 10 and n_neg > 10


def test_cache_without_split_keeps_no_held_out_examples(world, tmp_path, capsys):
    from analysis_world import analyze_config

    from monosemantic.analysis.run import analyze

    acts = _copy_cache(world, tmp_path / "acts")
    manifest = json.loads((acts / "manifest.json").read_text())
    del manifest["eval_sequences"]
    (acts / "manifest.json").write_text(json.dumps(manifest))
    cfg = analyze_config(world, world["probe"], tmp_path / "out", f'analyze.cache="{acts}"')
    db = analyze(cfg)
    assert "harvest.eval_fraction" in capsys.readouterr().err
    with FeatureStore(db) as store:
        assert store.meta()["held_out"] is None
        assert store.examples(1, 0, kind="top") and not store.examples(1, 0, kind="held_out")
