"""`evaluate` with `[evaluate].benchmarks`, then `compare` (table, plots, blind mode), end to end on a
tiny GPT-2's harvested storyworld cache."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from monosemantic.config import load_config
from monosemantic.dictionaries.io import save_dictionary
from monosemantic.evaluation.blind import blind_prepare, score_ratings
from monosemantic.evaluation.compare import compare
from monosemantic.evaluation.run import evaluate
from monosemantic.utils.errors import ConfigError, DataError

from .conftest import make_topk

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.toml"
SITE = "blocks.0.hook_resid_post"
ALL = '["sparse_probing","absorption","scr","tpp","autointerp"]'


@pytest.fixture(scope="module")
def setup(tiny_gpt2, tmp_path_factory) -> tuple[Path, Path, Path]:
    from monosemantic.activations.harvest import harvest

    root = tmp_path_factory.mktemp("bench")
    cfg = load_config(
        DEMO,
        [f"model.name={tiny_gpt2}", "device=cpu", "data.context_size=32", "data.max_tokens=4096",
         f'sites.names=["{SITE}"]', f"harvest.out={root / 'cache'}", "harvest.dtype=float32",
         "harvest.shard_sequences=64", "harvest.batch_size=16", "harvest.eval_fraction=0.5"],
    )  # fmt: skip
    cache = harvest(cfg)
    for name, seed in (("a", 1), ("b", 2)):
        dic = make_topk(32, 64, 4, SITE, seed=seed)
        save_dictionary(dic, root / "dicts" / name, {"model_name": str(tiny_gpt2), "hook_name": SITE})
    return root, cache, root / "dicts"


def _cfg(setup, *more: str):
    root, cache, dicts = setup
    return load_config(
        DEMO,
        [f"evaluate.dictionary={dicts}", f"evaluate.cache={cache}", f"evaluate.out={root / 'eval'}",
         "device=cpu", "evaluate.spliced=false", "evaluate.plots=false", *more],
    )  # fmt: skip


def test_benchmarks_land_in_each_entry_and_compare_writes_tables(setup, monkeypatch):
    from monosemantic.evaluation.benchmarks import scr_tpp, sparse_probing

    # smaller story sets and probe splits than the defaults, to keep the test a few seconds
    for mod, name, value in ((scr_tpp, "N_BALANCED", 80), (scr_tpp, "N_TRAIN", 80), (scr_tpp, "N_TEST", 80),
                             (scr_tpp, "TPP_STORIES", 240), (sparse_probing, "MAX_PER_CLASS", 60),
                             (sparse_probing, "MIN_PER_CLASS", 60)):  # fmt: skip
        monkeypatch.setattr(mod, name, value)
    results = evaluate(_cfg(setup, f"evaluate.benchmarks={ALL}", "evaluate.autointerp_features=8"))
    root = setup[0]
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    for name in ("a", "b"):
        entry = metrics["dictionaries"][name]
        for task in entry["sparse_probing"].values():
            assert set(task["k"]) <= {"1", "2", "5", "10", "20"} and 0 <= task["dense"] <= 1
        assert "mean_absorption_rate" in entry["absorption"]
        assert any(k.startswith("scr_metric_threshold_") for k in entry["scr"])
        assert any(k.startswith("tpp_threshold_") for k in entry["tpp"])
        auto = entry["autointerp"]
        assert set(auto) >= {"mean", "ci95"} and auto["n_features"] > 0
        assert 0 <= auto["mean"] <= 1 and auto["ci95"][0] <= auto["mean"] <= auto["ci95"][1]
        for eval_type in ("sparse_probing", "absorption_first_letter", "scr", "tpp", "autointerp"):
            rec = json.loads(
                (root / "eval" / "saebench" / eval_type / f"{name}_eval_results.json").read_text()
            )
            assert rec["eval_type_id"] == eval_type and rec["sae_lens_id"] == name
    assert len(metrics["dictionaries"]["a"]["sparse_probing"]) > 0  # storyworld concepts became tasks
    assert results[0]["name"] == "a"

    folder = compare(_cfg(setup))
    rows = list(csv.DictReader((folder / "compare.csv").open()))
    assert [r["name"] for r in rows] == ["a", "b"]
    assert math.isclose(float(rows[0]["autointerp"]), metrics["dictionaries"]["a"]["autointerp"]["mean"])
    assert "| a |" in (folder / "compare.md").read_text()
    for png in ("probing_vs_k.png", "autointerp.png", "coverage.png"):
        assert (folder / png).stat().st_size > 1000, png


def test_blind_mode_hides_labels_then_unblinds(setup):
    cfg = _cfg(setup)
    folder = setup[0] / "blind"
    blind_prepare(cfg, "a", "b", folder, n=5, judge="offline")
    items = (folder / "items.md").read_text()
    assert "## Item 1" in items and "## Item 2" in items
    for line in items.splitlines():  # headers carry item numbers only, never a dictionary's name
        assert not line.startswith("## ") or line.removeprefix("## Item ").isdigit()
    key = json.loads((folder / "key.json").read_text())
    assert sorted({v["dictionary"] for v in key["items"].values()}) == ["a", "b"]
    rows = list(csv.DictReader((folder / "ratings.csv").open()))
    assert len(rows) == len(key["items"]) and all(1 <= float(r["rating"]) <= 5 for r in rows if r["rating"])
    # a human's ratings: every item of "a" rated 5, of "b" rated 1 -> the key must recover that
    with (folder / "ratings.csv").open("w") as fh:
        fh.write(
            "id,rating\n"
            + "".join(f"{i},{5 if v['dictionary'] == 'a' else 1}\n" for i, v in key["items"].items())
        )
    result = score_ratings(folder)
    assert result["dictionaries"]["a"]["mean"] == 5 and result["dictionaries"]["b"]["mean"] == 1
    assert result["difference_a_minus_b"] == 4
    with pytest.raises(ConfigError, match="no dictionary named"):
        blind_prepare(cfg, "a", "zzz", folder)
    with pytest.raises(DataError, match="monosemantic blind CONFIG A B"):
        score_ratings(setup[0] / "nothing")


def test_blind_and_unblind_verbs_take_config_or_command_line(setup):
    from typer.testing import CliRunner

    from monosemantic.cli import app

    root, cache, dicts = setup
    sets = [f"evaluate.dictionary={dicts}", f"evaluate.cache={cache}", f"evaluate.out={root / 'eval-cli'}",
            "device=cpu", "compare.judge=offline", "compare.features=4"]  # fmt: skip
    args = [a for s in sets for a in ("--set", s)]
    folder = root / "compare" / "blind"  # [compare].out defaults to `compare` beside [evaluate].out
    run = CliRunner().invoke
    by_args = run(app, ["blind", str(DEMO), "a", "b", *args])
    assert by_args.exit_code == 0, by_args.output
    key = json.loads((folder / "key.json").read_text())
    assert (key["a"], key["b"], key["judge"]) == ("a", "b", "offline") and len(key["items"]) == 8
    scored = run(app, ["unblind", str(DEMO), *args])
    assert scored.exit_code == 0, scored.output
    assert "a: mean rating" in scored.output and (folder / "result.json").exists()
    # the same inputs from the config alone, into another folder
    by_config = run(app, ["blind", str(DEMO), *args, "--set", 'compare.blind=["b", "a"]',
                          "--set", f"compare.out={root / 'cmp2'}", "--features", "3"])  # fmt: skip
    assert by_config.exit_code == 0, by_config.output
    key2 = json.loads((root / "cmp2" / "blind" / "key.json").read_text())
    assert (key2["a"], key2["b"]) == ("b", "a") and len(key2["items"]) == 6
    one = run(app, ["blind", str(DEMO), "a", *args])
    assert one.exit_code == 2 and "two dictionaries" in one.output
    none = run(app, ["blind", str(DEMO), *args])
    assert none.exit_code == 2 and "compare.blind" in none.output


def test_unknown_benchmark_fails_before_any_work(setup):
    with pytest.raises(ConfigError, match="unknown benchmark"):
        evaluate(_cfg(setup, 'evaluate.benchmarks=["probing"]'))


def test_probe_dataset_from_a_local_csv(setup, monkeypatch, tmp_path):
    from monosemantic.evaluation.benchmarks import sparse_probing

    monkeypatch.setattr(sparse_probing, "MIN_PER_CLASS", 20)
    rows = ["text,label"]
    for i in range(120):
        animal, label = ("cat", "yes") if i % 2 else ("dog", "no")
        rows.append(f'"the {animal} saw {i % 7} birds and the {animal} ran",{label}')
    (tmp_path / "pets.csv").write_text("\n".join(rows) + "\n")
    spec = f'evaluate.probe_datasets=[{{path = "{tmp_path / "pets.csv"}"}}]'
    results = evaluate(_cfg(setup, 'evaluate.benchmarks=["sparse_probing"]', spec, "evaluate.concepts=false"))
    task = results[0]["sparse_probing"]["pets"]
    assert task["dense"] >= 0.9 and set(task["k"]) == {"1", "2", "5", "10", "20"}
    assert task["n_train"] + task["n_test"] == 120
    bad = f'evaluate.probe_datasets=[{{path = "{tmp_path / "pets.csv"}", label_column = "y"}}]'
    with pytest.raises(ConfigError, match="no column 'y'"):
        evaluate(_cfg(setup, 'evaluate.benchmarks=["sparse_probing"]', bad))


def test_text_activations_of_one_site_named_twice_stay_aligned(tiny_gpt2):
    from monosemantic.evaluation.benchmarks.text_data import per_text_activations
    from monosemantic.lm.model import load_model

    model = load_model(str(tiny_gpt2), dtype="float32", device="cpu")
    texts = ["the cat sat", "a dog ran to the park today", "hi"]
    both = per_text_activations(model, texts, [SITE, SITE])
    alone = [per_text_activations(model, [t], SITE)[0] for t in texts]
    assert len(both[SITE]) == 3
    for a, b in zip(both[SITE], alone, strict=True):
        assert a.shape == b.shape and float((a - b).abs().max()) < 1e-5
