"""Model diffing: a crosscoder over one site of two models, read from two caches of the same tokens
(`data.activations` + `data.activations_b`, site `{a,b}:blocks.0.hook_resid_post`). A concept only
model B represents is found by a latent whose decoder norm is mostly on model B."""

from pathlib import Path

import pytest
import torch

from monosemantic.activations.cache import ShardWriter
from monosemantic.activations.manifest import FORMAT_VERSION
from monosemantic.config import Config
from monosemantic.dictionaries.io import load_dictionary
from monosemantic.training.trainer import train
from monosemantic.utils.errors import DataError

SITE, D, VOCAB, CTX = "blocks.0.hook_resid_post", 48, 40, 16
PLANTED = (7, 8, 9, 10)  # four tokens of one new concept that only model B represents


def _manifest(model: str) -> dict:
    return {
        "format_version": FORMAT_VERSION, "model": model, "revision": None, "tokenizer": "synthetic",
        "sites": {SITE: D}, "dtype": "float32", "context_size": CTX, "special_tokens": "exclude",
        "special_token_ids": [0], "prepend_bos": True, "data": {"text": "synthetic"}, "harvest": {},
        "sequences": 0, "tokens": 0, "complete": False, "shards": [],
    }  # fmt: skip


def token_directions(model: str) -> torch.Tensor:
    """[VOCAB, D]: each token writes its own direction (A and B: different random bases, as two
    models' do); model B adds a concept direction u on the planted tokens."""
    seed = 1 if model == "A" else 2
    directions = torch.randn(VOCAB, D, generator=torch.Generator().manual_seed(seed))
    directions = torch.nn.functional.normalize(directions, dim=1)
    if model == "B":
        u = torch.randn(D, generator=torch.Generator().manual_seed(3))
        directions[list(PLANTED)] += 2.0 * torch.nn.functional.normalize(u, dim=0)
    return directions


def write_model_cache(path: Path, model: str, token_seed: int = 0) -> Path:
    """Token windows (the same for the same `token_seed`) and each token's direction, jittered."""
    directions = token_directions(model)
    g = torch.Generator().manual_seed(token_seed)
    writer = ShardWriter(path, _manifest(model))
    for n in (96, 96, 64):
        tokens = torch.randint(1, VOCAB, (n, CTX), generator=g, dtype=torch.int32)
        tokens[:, 0] = 0  # BOS, excluded from training
        x = directions[tokens.long()] * (1 + 0.2 * torch.rand(n, CTX, 1, generator=g))
        writer.write({"tokens": tokens, SITE: x})
    writer.finish()
    return path


def _config(tmp_path: Path, a: Path, b: Path) -> Config:
    return Config.model_validate({
        "data": {"activations": str(a), "activations_b": str(b)},
        "dictionary": {"architecture": "crosscoder", "activation": "relu", "d_sae": 64, "site": "{a,b}:" + SITE,
                       "l1_coefficient": 1.0},
        "train": {"tokens": 256 * 300, "batch_size": 256, "lr": 3e-3, "out": str(tmp_path / "cc"),
                  "log_every": 50, "init_tokens": 1024, "buffer_tokens": 2048},
    })  # fmt: skip


def test_crosscoder_across_two_models_finds_the_concept_only_model_b_has(tmp_path):
    a = write_model_cache(tmp_path / "a", "A")
    b = write_model_cache(tmp_path / "b", "B")
    (folder,) = train(_config(tmp_path, a, b))
    cc = load_dictionary(folder)
    assert [str(s) for s in cc.sites_in] == [SITE, "b:" + SITE] and cc.cfg.metadata["model_name_b"] == "B"
    share_a = cc.decoder_norm_share([0]).detach()  # 1: only model A, 0: only model B
    # in training's scale: each model's block times its recorded activation scale
    scales = torch.tensor(cc.cfg.metadata["training"]["activation_scale"])
    assert scales.shape == (2,) and float((scales[0] - scales[1]).abs()) > 1e-3  # B's norms are larger
    normed = cc.decoder_norms().detach() * scales
    expected = normed[:, 0] / normed.sum(1)
    assert torch.allclose(cc.decoder_norm_share([0], training_scale=True).detach(), expected, atol=1e-6)
    with torch.no_grad():  # each token's most active latent, on both models' activations of it
        x = torch.cat([token_directions("A"), token_directions("B")], -1)
        top = cc.encode(x[1:]).argmax(-1)  # tokens 1..VOCAB-1
    planted = share_a[top[[t - 1 for t in PLANTED]]]
    ordinary = share_a[top[[t - 1 for t in range(1, VOCAB) if t not in PLANTED]]]
    # ordinary tokens: same-size writes in both models (~0.5); planted: mostly model B's (the
    # concept is partly absorbed into the planted tokens' own latents, so their share stays above 0)
    assert 0.45 < float(ordinary.median()) < 0.55 and float(ordinary.quantile(0.1)) > 0.45, ordinary
    assert float(planted.max()) < 0.44, planted


def test_caches_of_different_tokens_are_refused_before_training(tmp_path):
    a = write_model_cache(tmp_path / "a", "A", token_seed=0)
    b = write_model_cache(tmp_path / "b", "B", token_seed=1)
    with pytest.raises(DataError, match="hold different tokens.*same \\[data\\]"):
        train(_config(tmp_path, a, b))


def test_paired_site_without_a_second_cache_says_what_to_set(tmp_path):
    a = write_model_cache(tmp_path / "a", "A")
    cfg = _config(tmp_path, a, a).model_copy(deep=True)
    cfg.data.activations_b = None
    with pytest.raises(DataError, match="data.activations_b"):
        train(cfg)


def test_paired_source_resumes_both_caches_at_the_same_position(tmp_path):
    from monosemantic.activations.paired import PairedSource

    a = write_model_cache(tmp_path / "a", "A")
    b = write_model_cache(tmp_path / "b", "B")
    sites = [SITE, "b:" + SITE]
    src = PairedSource(a, b, sites, chunk_tokens=CTX * 40, exclude_special=True)
    for _ in range(3):
        src.next_chunk()
    state = src.state_dict()
    expected = src.next_chunk()
    again = PairedSource(a, b, sites, chunk_tokens=CTX * 40, exclude_special=True)
    again.load_state_dict(state)
    got = again.next_chunk()
    assert set(got) == set(sites) and got[SITE].shape[0] == got["b:" + SITE].shape[0] > 0
    assert all(torch.equal(got[s], expected[s]) for s in sites)
    assert not torch.allclose(got[SITE], got["b:" + SITE], atol=1e-3)  # two models, not one twice


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory) -> dict[str, Path]:
    """Two synthetic caches, a crosscoder trained on them and a config naming both caches."""
    root = tmp_path_factory.mktemp("pair")
    a = write_model_cache(root / "a", "A")
    b = write_model_cache(root / "b", "B")
    cfg = _config(root, a, b).model_copy(deep=True)
    cfg.train.tokens = 256 * 60
    (folder,) = train(cfg)
    toml = root / "c.toml"
    toml.write_text(
        f'[data]\nactivations = "{a}"\nactivations_b = "{b}"\n[train]\nout = "{root / "cc"}"\n'
        f'[evaluate]\nout = "{root / "ev"}"\nplots = false\n[analyze]\nout = "{root / "an"}"\n'
    )
    return {"root": root, "a": a, "b": b, "folder": folder, "toml": toml}


def test_evaluate_reports_fvu_on_each_model_of_a_model_pair_crosscoder(pair_run, cli_runner):
    """model A's cache is data.activations (no harvest.out needed), model B's data.activations_b."""
    import json

    from monosemantic.cli import app

    result = cli_runner.invoke(app, ["evaluate", str(pair_run["toml"])])
    assert result.exit_code == 0, result.stderr
    row = json.loads((pair_run["root"] / "ev" / "metrics.json").read_text())["dictionaries"]["cc"]
    assert row["cache"] == str(pair_run["a"]) and row["cache_b"] == str(pair_run["b"])
    assert [r["site"] for r in row["per_layer"]] == [SITE, "b:" + SITE]
    # the same FVU per model computed directly from the two caches' rows
    from monosemantic.activations.cache import ActivationCache

    cc = load_dictionary(pair_run["folder"]).eval()
    ca, cb = ActivationCache(pair_run["a"]), ActivationCache(pair_run["b"])
    xa = torch.cat([ca.load_shard(i, [SITE])[SITE][:, 1:] for i in range(ca.num_shards)]).reshape(-1, D)
    xb = torch.cat([cb.load_shard(i, [SITE])[SITE][:, 1:] for i in range(cb.num_shards)]).reshape(-1, D)
    with torch.no_grad():
        x = torch.cat([xa, xb], -1).float()
        x_hat = cc.decode(cc.encode(x))
    for side, (lo, hi) in enumerate([(0, D), (D, 2 * D)]):
        y, y_hat = x[:, lo:hi], x_hat[:, lo:hi]
        fvu = float((y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
        assert abs(row["per_layer"][side]["fvu"] - fvu) < 1e-4, (side, row["per_layer"][side], fvu)
    assert 0 < row["per_layer"][0]["fvu"] < 1 and 0 < row["per_layer"][1]["fvu"] < 1


def test_analyze_reads_both_models_of_a_model_pair_crosscoder(pair_run, cli_runner):
    """The feature store's top examples are model A's tokens, the activations from both caches."""
    import json
    import sqlite3

    from monosemantic.cli import app

    result = cli_runner.invoke(app, ["analyze", str(pair_run["toml"])])
    assert result.exit_code == 0, result.stderr
    db = next((pair_run["root"] / "an").rglob("*.db"))
    with sqlite3.connect(db) as con:
        hook, cfg = con.execute("select hook_name, cfg from dictionaries").fetchone()
        n_examples = con.execute("select count(*) from examples").fetchone()[0]
    assert hook == "{a,b}:" + SITE and n_examples > 0
    # the feature page's decoder-norm plot names the two models and gives each latent's share on A
    from monosemantic.analysis.layers import feature_layers

    view = feature_layers(json.loads(cfg), 0)
    assert view["labels"] == ["A L0", "B L0"]
    cc = load_dictionary(pair_run["folder"])
    share = cc.decoder_norm_share([0], training_scale=True)
    assert abs(view["share_a"] - float(share[0])) < 1e-3


def test_a_model_pair_crosscoder_without_model_bs_cache_is_one_line(pair_run, tmp_path, cli_runner):
    from monosemantic.cli import app

    toml = tmp_path / "c.toml"
    toml.write_text(
        pair_run["toml"].read_text().replace(f'activations_b = "{pair_run["b"]}"\n', "")
        .replace(f'out = "{pair_run["root"] / "ev"}"', f'out = "{tmp_path / "ev"}"\ncache = "{pair_run["a"]}"')
    )  # fmt: skip
    result = cli_runner.invoke(app, ["evaluate", str(toml)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert "model-diffing crosscoder over {a,b}:" + SITE in lines[0] and "set data.activations_b" in lines[0]
    assert not (tmp_path / "ev").exists()
