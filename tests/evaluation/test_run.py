"""`monosemantic evaluate` end to end: a real harvested cache of a tiny GPT-2 on storyworld text."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monosemantic.activations.cache import ActivationCache
from monosemantic.config import load_config
from monosemantic.dictionaries.base import DictionaryMeta
from monosemantic.dictionaries.io import save_dictionary
from monosemantic.dictionaries.relu import ReLUDictionary
from monosemantic.evaluation.run import evaluate

from .conftest import make_topk

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.toml"
SAE_SITE = "blocks.0.hook_resid_post"
TC_IN, TC_OUT = "blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out"  # TC_OUT is not harvested: computed live
REQUIRED = ["l0", "fvu", "mse", "dead_fraction", "ce_loss_clean", "ce_loss_spliced", "ce_loss_zero_ablated",
            "ce_loss_recovered", "kl_spliced"]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tiny_gpt2, tmp_path_factory) -> Path:
    from monosemantic.activations.harvest import harvest

    out = tmp_path_factory.mktemp("cache")
    cfg = load_config(
        DEMO,
        [
            f"model.name={tiny_gpt2}", "device=cpu", "data.context_size=16", "data.max_tokens=448",
            f"sites.names=[\"{SAE_SITE}\", \"{TC_IN}\"]", f"harvest.out={out}", "harvest.dtype=float32",
            "harvest.shard_sequences=10", "harvest.batch_size=8", "harvest.eval_fraction=0.8",
        ],
    )  # fmt: skip
    return harvest(cfg)


def _save(dic, path: Path, model: Path) -> Path:
    meta = {"model_name": str(model), "hook_name": dic.cfg.hook_name, "context_size": 16}
    if dic.is_transcoder:
        meta["hook_name_out"] = dic.cfg.hook_name_out
    save_dictionary(dic, path, meta)
    return path


def _exact_relu(d: int, site: str) -> ReLUDictionary:
    """relu(x) - relu(-x) = x: a dictionary whose reconstruction is exact."""
    dic = ReLUDictionary(DictionaryMeta(architecture="relu", d_in=d, d_sae=2 * d, d_out=d, hook_name=site,
                                        hook_name_out=site))  # fmt: skip
    eye = torch.eye(d)
    with torch.no_grad():
        dic.W_enc.copy_(torch.cat([eye, -eye], 1))
        dic.W_dec.copy_(torch.cat([eye, -eye], 0))
        dic.b_enc.zero_()
        dic.b_dec.zero_()
    return dic


def test_acceptance_command(cache, tiny_gpt2, tmp_path):
    """The contract: `monosemantic evaluate configs/demo.toml --set evaluate.dictionary=DIR ...`."""
    ckpt = _save(make_topk(32, 64, 4, SAE_SITE), tmp_path / "sae", tiny_gpt2)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "COLUMNS": "160"}
    cli = Path(sys.executable).with_name("monosemantic")
    proc = subprocess.run(
        [str(cli), "evaluate", str(DEMO), "--set", f"evaluate.dictionary={ckpt}", "--set",
         f"evaluate.cache={cache}", "--set", f"evaluate.out={out}", "--set", "device=cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) == {"sample", "dictionaries"} and list(saved["dictionaries"]) == ["sae"]
    metrics = saved["dictionaries"]["sae"]
    # every held-out sequence the manifest names, and only those
    manifest = ActivationCache(cache).manifest
    held = manifest["eval_sequences"]["sequences"]
    assert 0 < len(held) < ActivationCache(cache).n_sequences
    sample = saved["sample"]
    assert sample["selection"] == "held_out" and sample["held_out"] is True and sample["sequences"] == held
    assert sample["eval_sequences"] == {"seed": 0, "fraction": 0.8, "n": len(held)}
    assert metrics["n_sequences"] == len(held) and metrics["held_out"] is True
    assert "held-out sequences" in sample["note"] and "held-out sequences" in proc.stdout
    for key in REQUIRED:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["hook_name"] == SAE_SITE and metrics["live_sites"] == []
    assert metrics["ce_loss_spliced_with_error"] == metrics["ce_loss_clean"]
    assert metrics["splice_error_check_max_logit_diff"] == 0.0
    assert 0 <= metrics["concept_coverage"] <= 1 and (out / "concepts.json").is_file()
    concepts = json.loads((out / "concepts.json").read_text())
    assert len(concepts["concepts"]) == len(ActivationCache(cache).concepts)
    assert (out / "metrics.csv").read_text().count("\n") == 2
    assert (out / "density.png").stat().st_size > 1000
    assert "Dictionary evaluation" in proc.stdout and "metrics written to" in proc.stdout


def test_sweep_live_site_and_independent_metrics(cache, tiny_gpt2, tmp_path):
    sweep = tmp_path / "sweep"
    _save(_exact_relu(32, SAE_SITE), sweep / "exact", tiny_gpt2)
    _save(make_topk(32, 64, 4, SAE_SITE, seed=3), sweep / "topk", tiny_gpt2)
    _save(make_topk(32, 48, 3, TC_IN, TC_OUT, seed=4), sweep / "transcoder", tiny_gpt2)
    out = tmp_path / "out"
    cfg = load_config(DEMO, [f"evaluate.dictionary={sweep}", f"evaluate.cache={cache}", f"evaluate.out={out}",
                             "device=cpu", "evaluate.max_sequences=20", "evaluate.batch_size=6"])  # fmt: skip
    results = {r["name"]: r for r in evaluate(cfg)}
    assert set(results) == {"exact", "topk", "transcoder"}

    # metrics.json has the same shape as for one dictionary: {"sample": ..., "dictionaries": {name: ...}}
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) == {"sample", "dictionaries"}
    assert set(saved["dictionaries"]) == {"exact", "topk", "transcoder"}
    assert saved["dictionaries"]["transcoder"]["fvu"] == results["transcoder"]["fvu"]
    assert (out / "topk" / "concepts.json").is_file() and not (out / "topk" / "metrics.json").exists()
    assert (out / "metrics.csv").read_text().count("\n") == 4
    for png in ("density.png", "frontier_l0_fvu.png", "frontier_l0_ce_recovered.png"):
        assert (out / png).stat().st_size > 1000, png

    # an exact reconstruction recovers all of the loss
    ex = results["exact"]
    assert ex["fvu"] == pytest.approx(0.0, abs=1e-12) and ex["kl_spliced"] == pytest.approx(0.0, abs=1e-9)
    assert ex["ce_loss_spliced"] == pytest.approx(ex["ce_loss_clean"], rel=1e-9)
    assert ex["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-6)

    # a seeded random sample of 20 of the held-out sequences (not the first 20: one slice of the corpus)
    sample = saved["sample"]
    assert sample["selection"] == "random" and sample["seed"] == 0 and sample["n_sequences"] == 20
    ids = sample["sequences"]
    held = ActivationCache(cache).manifest["eval_sequences"]["sequences"]
    assert len(held) > 20 and set(ids) < set(held)
    assert len(set(ids)) == 20 and ids == sorted(ids) and ids != held[:20]
    assert (
        sample["cache_sequences"] == ActivationCache(cache).n_sequences
        and sample["n_tokens"] == results["topk"]["n_tokens"]
    )
    # reconstruction metrics of the topk SAE, recomputed directly from those cached sequences
    c = ActivationCache(cache)
    seqs = next(c.iter_sample(torch.tensor(ids), [SAE_SITE], batch_sequences=20))
    assert seqs["seq_ids"].tolist() == ids
    keep = ~c.special_mask(seqs["tokens"])
    x = seqs[SAE_SITE][keep].double()
    dic = make_topk(32, 64, 4, SAE_SITE, seed=3)
    with torch.no_grad():
        x_hat = dic(x.float()).double()
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert results["topk"]["n_tokens"] == int(keep.sum()) and results["topk"]["n_sequences"] == 20
    assert results["topk"]["fvu"] == pytest.approx(fvu.item(), rel=1e-5)

    # the transcoder's output site was computed live from the model
    t = results["transcoder"]
    assert t["live_sites"] == [TC_OUT] and t["is_transcoder"]
    assert t["splice_error_check_max_logit_diff"] == 0.0
    assert t["ce_loss_clean"] == results["topk"]["ce_loss_clean"]
    assert math.isfinite(t["fvu"]) and t["fvu"] > 0


@pytest.mark.slow
def test_trained_dictionary_beats_its_initialisation(cache, tmp_path):
    """The real trainer on the harvested cache: evaluation must rank the trained SAE above a fresh one."""
    from monosemantic.training.trainer import train

    cfg = load_config(
        DEMO,
        ["device=cpu", f"data.activations={cache}", f"train.out={tmp_path / 'trained'}", "train.tokens=20000",
         "train.batch_size=256", "train.buffer_tokens=2048", "train.checkpoint_every=1000",
         "train.dead_after_tokens=10000"],
    )  # fmt: skip
    one = cfg.dictionaries[0].model_copy(update={"site": SAE_SITE, "k": 4, "expansion": 2})
    trained = train(cfg.model_copy(update={"dictionaries": [], "dictionary": one}))[0]
    sweep = tmp_path / "sweep"
    _save(make_topk(32, 64, 4, SAE_SITE, seed=0), sweep / "fresh", Path("tiny"))
    shutil.copytree(trained, sweep / "trained", ignore=shutil.ignore_patterns("trainer_state"))
    ecfg = load_config(DEMO, ["device=cpu", f"evaluate.dictionary={sweep}", f"evaluate.cache={cache}",
                              f"evaluate.out={tmp_path / 'eval'}"])  # fmt: skip
    r = {x["name"]: x for x in evaluate(ecfg)}
    assert r["trained"]["fvu"] < 0.9 < r["fresh"]["fvu"]
    assert r["trained"]["kl_spliced"] < r["fresh"]["kl_spliced"]
    assert r["trained"]["cosine_similarity"] > r["fresh"]["cosine_similarity"]


def test_bad_inputs_raise_one_line_errors(cache, tiny_gpt2, tmp_path):
    from monosemantic.utils.errors import MonosemanticError

    def run(dictionary: Path, cache_dir: Path = cache) -> None:
        evaluate(load_config(DEMO, [f"evaluate.dictionary={dictionary}", f"evaluate.cache={cache_dir}",
                                    f"evaluate.out={tmp_path / 'out'}", "device=cpu"]))  # fmt: skip

    with pytest.raises(MonosemanticError, match="does not exist"):
        run(tmp_path / "missing")
    ckpt = _save(make_topk(32, 64, 4, SAE_SITE), tmp_path / "sae", tiny_gpt2)
    with pytest.raises(MonosemanticError, match="harvest"):
        run(ckpt, tmp_path / "no-cache")
    wrong = _save(make_topk(32, 64, 4, "blocks.7.hook_resid_post"), tmp_path / "wrong", tiny_gpt2)
    with pytest.raises(MonosemanticError, match="blocks.7.hook_resid_post"):
        run(wrong)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_nan_cache_nan_dictionary_and_unfinished_checkpoint(cache, tiny_gpt2, tmp_path, capsys):
    """NaN activations stop evaluate naming shard and sequence; a NaN dictionary is an error, not FVU null;
    a checkpoint of an unfinished training run is evaluated with a warning."""
    from safetensors.torch import load_file, save_file

    from monosemantic.utils.errors import DataError
    from monosemantic.utils.files import sha256_file

    def run(dictionary: Path, cache_dir: Path, out: str) -> list:
        return evaluate(load_config(DEMO, [f"evaluate.dictionary={dictionary}", f"evaluate.cache={cache_dir}",
                                           f"evaluate.out={tmp_path / out}", "device=cpu", "evaluate.spliced=false",
                                           "evaluate.plots=false"]))  # fmt: skip

    bad = tmp_path / "nan-cache"
    shutil.copytree(cache, bad)
    shard = bad / "shard-00001.safetensors"  # sequences 10..19; evaluate reads the held-out ones
    held = [g - 10 for g in ActivationCache(cache).manifest["eval_sequences"]["sequences"] if 10 <= g < 20]
    tensors = load_file(str(shard))
    tensors[SAE_SITE][held[0], 2, 0] = float("nan")
    save_file(tensors, str(shard))
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["shards"][1]["sha256"] = sha256_file(shard)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    ckpt = _save(make_topk(32, 64, 4, SAE_SITE), tmp_path / "sae", tiny_gpt2)
    with pytest.raises(
        DataError, match=rf"shard-00001.safetensors .*{SAE_SITE} holds NaN or inf in sequence\(s\) {held[0]};"
    ):
        run(ckpt, bad, "a")

    broken = make_topk(32, 64, 4, SAE_SITE)
    with torch.no_grad():
        broken.W_dec[3, 0] = float("nan")
    with pytest.raises(DataError, match="non-finite .*fvu"):
        run(_save(broken, tmp_path / "broken", tiny_gpt2), cache, "b")
    assert not (tmp_path / "a" / "metrics.json").exists() and not (tmp_path / "b" / "metrics.json").exists()

    meta = json.loads((ckpt / "cfg.json").read_text())
    meta["metadata"]["training"] = {"complete": False, "steps": 7}
    (ckpt / "cfg.json").write_text(json.dumps(meta))
    capsys.readouterr()
    run(ckpt, cache, "c")
    seen = capsys.readouterr()
    text = " ".join((seen.out + seen.err).split())
    assert "sae is a checkpoint of an unfinished training run (7 steps)" in text
