"""Real small data shared by the analysis, explanation, exports, steering and store tests (its
session fixtures `world` and `analysis` are registered in tests/conftest.py): a tiny random GPT-2 with a BPE trained on storyworld, a storyworld
harvest with concept labels, and three saved dictionaries (a TopK SAE, a transcoder whose input
site is *not* in the cache, and a ReLU dictionary whose feature 0 is a trained concept probe)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from monosemantic.activations.cache import ActivationCache
from monosemantic.activations.harvest import harvest
from monosemantic.config import Config, load_config
from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.corpus.storyworld import generate_stories
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.io import save_dictionary
from monosemantic.lm.tiny import save_tiny_model
from monosemantic.lm.tokenizer import train_tokenizer

RESID = "blocks.0.hook_resid_post"
MLP_IN, MLP_OUT = "blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out"
PROBE_CONCEPT = "colour:pink"


def save_storyworld_tiny(path: Path) -> Path:
    """The tiny random GPT-2 of `lm/tiny.py` with a BPE trained on storyworld, so that concept
    words are single tokens (as with the shipped LM)."""
    tok = train_tokenizer([s.text for s in generate_stories(1, 400)], vocab_size=768, model_max_length=128)
    return save_tiny_model("gpt2", path, seed=0, tokenizer=tok)


def cache_tensors(cache: ActivationCache, site: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens [N, T], activations [N, T, d], concepts [N, T, C] of the whole cache."""
    shards = [cache.load_shard(i, [site]) for i in range(cache.num_shards)]
    return (torch.cat([s["tokens"] for s in shards]), torch.cat([s[site] for s in shards]).float(),
            torch.cat([s["concepts"] for s in shards]))  # fmt: skip


def _probe(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic-regression direction and bias separating y from the rest."""
    torch.manual_seed(0)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sd
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")
    pos_weight = (1 - y).sum() / y.sum().clamp_min(1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w + b, y, pos_weight=pos_weight)
        loss = loss + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        w_raw = w / sd
        return w_raw, b - (mu * w_raw).sum()


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    with one_thread():
        return _world(tmp_path_factory)


def _world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("analyze")
    model = save_storyworld_tiny(root / "tiny")
    base = [
        f'model.name="{model}"', 'device="cpu"', "data.context_size=32", "data.max_tokens=8192",
        f'sites.names=["{RESID}", "{MLP_OUT}"]', f'harvest.out="{root / "acts"}"',
        "harvest.shard_sequences=64", "harvest.batch_size=64",
    ]  # fmt: skip
    harvest(load_config(None, base))
    cache = ActivationCache(root / "acts")
    dicts = root / "dicts"
    torch.manual_seed(0)
    sae = build_dictionary(DictionaryConfig(architecture="topk", d_sae=64, k=4, site=RESID), 32, 32)
    save_dictionary(sae, dicts / "sae", {"model_name": str(model), "hook_name": RESID})
    tc = build_dictionary(
        DictionaryConfig(architecture="topk", d_sae=32, k=4, site=MLP_IN, site_out=MLP_OUT), 32, 32
    )
    save_dictionary(
        tc, dicts / "transcoder", {"model_name": str(model), "hook_name": MLP_IN, "hook_name_out": MLP_OUT}
    )
    tokens, x, concepts = cache_tensors(cache, RESID)
    col = cache.concepts.index(PROBE_CONCEPT)
    keep = ~cache.special_mask(tokens)
    w, b = _probe(x[keep], concepts[..., col][keep].float())
    probe = build_dictionary(DictionaryConfig(architecture="relu", d_sae=8, site=RESID), 32, 32)
    with torch.no_grad():
        probe.b_dec.zero_()
        probe.b_enc.fill_(-1e3)  # features 1..7 never fire: density 0, no examples
        probe.W_enc[:, 0] = w
        probe.b_enc[0] = b
    save_dictionary(probe, root / "probe" / "probe", {"model_name": str(model), "hook_name": RESID})
    return {"root": root, "model": model, "cache": cache, "dicts": dicts, "probe": root / "probe"}


def analyze_config(world: dict, dictionary: Path, out: Path, *extra: str) -> Config:
    return load_config(None, [
        'device="cpu"', f'analyze.dictionary="{dictionary}"', f'analyze.cache="{world["root"] / "acts"}"',
        f'analyze.out="{out}"', "analyze.top_k=5", "analyze.quantiles=3", "analyze.per_quantile=2",
        "analyze.window=3", "analyze.negatives=3", "analyze.batch_sequences=16", "analyze.logit_lens_k=5",
        "analyze.block_tokens=1024", *extra,  # several blocks: the cross-block merges are checked too
    ])  # fmt: skip


@pytest.fixture(scope="session")
def analysis(world: dict) -> Path:
    from monosemantic.analysis.run import analyze

    with one_thread():
        return analyze(analyze_config(world, world["dicts"], world["root"] / "analysis"))


@contextmanager
def one_thread() -> Iterator[None]:
    """The CI box has 2 shared cores: intra-op threads fighting other processes cost 10x here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
