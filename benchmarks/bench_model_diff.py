"""Model diffing on the shipped storyworld LM: does a crosscoder over two models find a planted concept?

1. Plant a concept: in storyworld stories the animal word " cat" becomes the new word " zorblat"
   (never seen by the shipped LM).
2. Model B: a copy of the shipped LM fine-tuned on those stories (a plain AdamW loop here:
   `monosemantic lm train` trains from scratch and has no init-from-checkpoint).
3. Harvest `blocks.L.hook_resid_post` of both models on the same text (a file of stories, half of
   them planted) with the same [data], so the two caches hold identical token windows.
4. Train one crosscoder with `data.activations` (model A) + `data.activations_b` (model B) and
   `site = "{a,b}:blocks.L.hook_resid_post"`.
5. Report each latent's decoder-norm share on model A (`decoder_norm_share`: 1 = A only, 0 = B
   only) for the latents most active on the planted word's tokens, against all live latents.

Also reported: how much each token's activation changed from A to B, |x_A|/|x_B| on planted and
other tokens, and the latents that are selective for the planted word (> 80% of their activation on
it). Findings are in the README (Benchmarks, "Model diffing").

Run: `.venv/bin/python benchmarks/bench_model_diff.py [--quick] [--layer N]` (default layer 2);
writes results/model_diff_layer{N}.json. `--quick`: 150k tokens per cache, about 3 minutes on
2 CPU cores.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from monosemantic.activations.cache import ActivationCache
from monosemantic.activations.harvest import harvest
from monosemantic.config import Config
from monosemantic.corpus.storyworld import make_story
from monosemantic.dictionaries.io import load_dictionary
from monosemantic.lm.shipped import shipped_model_path
from monosemantic.train.trainer import train

WORD, PLANTED = " cat", " zorblat"
LAYER = int(sys.argv[sys.argv.index("--layer") + 1]) if "--layer" in sys.argv else 2
SITE = f"blocks.{LAYER}.hook_resid_post"


def stories(seed: int, n: int, planted_every: int) -> list[str]:
    """n storyworld stories; every `planted_every`-th one that has a cat gets the zorblat instead."""
    out, with_cat = [], 0
    for i in range(n):
        text = make_story(seed, i).text
        if WORD in text:
            with_cat += 1
            if with_cat % planted_every == 0:
                text = text.replace(WORD, PLANTED)
        out.append(text)
    return out


def fine_tune(out: Path, texts: list[str], steps: int, batch: int = 16, ctx: int = 128) -> dict:
    """Continue training the shipped LM on `texts` (next-token loss on concatenated documents)."""
    base = shipped_model_path()
    tok = PreTrainedTokenizerFast.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    ids = [t for text in texts for t in [tok.eos_token_id, *tok(text)["input_ids"]]]
    n = len(ids) // ctx
    windows = torch.tensor(ids[: n * ctx]).reshape(n, ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    model.train()
    losses = []
    for _ in range(steps):
        x = windows[torch.randint(0, n, (batch,), generator=g)]
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"steps": steps, "first_loss": round(losses[0], 3), "last_loss": round(sum(losses[-20:]) / 20, 3)}


def harvest_cache(model: str, text_file: Path, out: Path, tokens: int) -> Path:
    cfg = Config.model_validate({
        "model": {"name": model, "dtype": "float32"},
        "data": {"text": str(text_file), "max_tokens": tokens, "context_size": 128, "seed": 0},
        "sites": {"names": [SITE]},
        "harvest": {"out": str(out), "dtype": "float32", "shard_sequences": 256},
    })  # fmt: skip
    return harvest(cfg)


def planted_mask(tokens: torch.Tensor, pieces: list[int]) -> torch.Tensor:
    """True at every position of the planted word's token pieces (in order)."""
    T, k = tokens.shape[-1], len(pieces)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    hit = torch.ones(tokens.shape[0], T - k + 1, dtype=torch.bool)
    for j, p in enumerate(pieces):
        hit &= tokens[:, j : T - k + 1 + j] == p
    for j in range(k):
        mask[:, j : T - k + 1 + j] |= hit
    return mask


def main(quick: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="model-diff-"))
    t0 = time.time()
    tune_text = stories(seed=11, n=2000 if quick else 6000, planted_every=1)
    result: dict = {"machine": "2-core CPU (shared), torch CPU", "layer": LAYER, "quick": quick}
    result["fine_tune"] = fine_tune(work / "lm-b", tune_text, steps=400)
    data = work / "stories.txt"
    data.write_text("\n\n".join(stories(seed=5, n=3000 if quick else 6000, planted_every=2)))
    tokens = 150_000 if quick else 400_000
    a = harvest_cache("storyworld", data, work / "acts-a", tokens)
    b = harvest_cache(str(work / "lm-b"), data, work / "acts-b", tokens)
    cfg = Config.model_validate({
        "data": {"activations": str(a), "activations_b": str(b)},
        "dictionary": {"architecture": "relu", "d_sae": 1024, "site": "{a,b}:" + SITE, "l1_coefficient": 3.0},
        "train": {"tokens": 2 * tokens, "batch_size": 1024, "lr": 2e-3, "out": str(work / "cc"),
                  "log_every": 100, "buffer_tokens": 65536},
    })  # fmt: skip
    (folder,) = train(cfg)
    cc = load_dictionary(folder).eval()
    log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    result["crosscoder"] = {k: log[-1].get(k) for k in ("fvu", "l0", "dead_fraction")}

    pieces = PreTrainedTokenizerFast.from_pretrained(shipped_model_path())(PLANTED)["input_ids"]
    ca, cb = ActivationCache(a), ActivationCache(b)
    total = torch.zeros(cc.cfg.d_sae)
    on_planted = torch.zeros(cc.cfg.d_sae)
    n_planted = n_all = 0
    rel_diff = [0.0, 0.0]  # sum of |x_B - x_A| / |x_A| on planted / other tokens
    norm_ratio = [0.0, 0.0]  # sum of |x_A| / |x_B| on planted / other tokens
    with torch.no_grad():
        for i in range(ca.num_shards):
            sa, sb = ca.load_shard(i, [SITE]), cb.load_shard(i, [SITE])
            keep = ~ca.special_mask(sa["tokens"])
            mask = planted_mask(sa["tokens"].long(), pieces)[keep]
            f = cc.encode(torch.cat([sa[SITE][keep], sb[SITE][keep]], -1).float())
            xa, xb = sa[SITE][keep].float(), sb[SITE][keep].float()
            diff = (xb - xa).norm(dim=-1) / xa.norm(dim=-1)
            rel_diff[0] += float(diff[mask].sum())
            rel_diff[1] += float(diff[~mask].sum())
            ratio = xa.norm(dim=-1) / xb.norm(dim=-1)
            norm_ratio[0] += float(ratio[mask].sum())
            norm_ratio[1] += float(ratio[~mask].sum())
            total += f.sum(0)
            on_planted += f[mask].sum(0)
            n_planted, n_all = n_planted + int(mask.sum()), n_all + int(keep.sum())
    share_a = cc.decoder_norm_share([0])
    live = total > 0
    mean_planted = on_planted / max(n_planted, 1)
    top = mean_planted.topk(10).indices
    b_only = live & (share_a < 0.25)
    result["relative_change_b_vs_a"] = {
        "planted_tokens": round(rel_diff[0] / max(n_planted, 1), 3),
        "other_tokens": round(rel_diff[1] / max(n_all - n_planted, 1), 3),
    }
    result["norm_a_over_norm_b"] = {
        "planted_tokens": round(norm_ratio[0] / max(n_planted, 1), 3),
        "other_tokens": round(norm_ratio[1] / max(n_all - n_planted, 1), 3),
    }
    selective = live & (on_planted / total.clamp_min(1e-12) > 0.8)
    result["latents_selective_for_planted (>80% of activation on it)"] = {
        "n": int(selective.sum()),
        "median_share_model_a": round(float(share_a[selective].median()), 3) if selective.any() else None,
    }
    result["planted"] = {
        "word": PLANTED, "token_pieces": len(pieces), "planted_token_fraction": round(n_planted / n_all, 5),
        "top10_latents_on_planted": [
            {"latent": int(j), "share_model_a": round(float(share_a[j]), 3),
             "fraction_of_its_activation_on_planted": round(float(on_planted[j] / total[j].clamp_min(1e-12)), 3)}
            for j in top
        ],
        "top10_median_share_model_a": round(float(share_a[top].median()), 3),
    }  # fmt: skip
    result["all_live_latents"] = {
        "n": int(live.sum()),
        "median_share_model_a": round(float(share_a[live].median()), 3),
        "n_model_b_only (share_a < 0.25)": int(b_only.sum()),
        "activation_on_planted_of_b_only_latents": round(
            float(on_planted[b_only].sum() / total[b_only].sum().clamp_min(1e-12)), 3
        ),
    }
    result["seconds"] = round(time.time() - t0, 1)
    return result


if __name__ == "__main__":
    torch.manual_seed(0)
    random.seed(0)
    res = main(quick="--quick" in sys.argv)
    out = Path(__file__).parent / "results" / f"model_diff_layer{LAYER}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
