"""Harvest and cache-read throughput.

Rows (tokens/s, higher is better):
- bare forward: the plain transformers model on pre-tokenized windows, no hooks, all blocks;
- capture: `SubjectModel.run` capturing every demo site in one pass (stops after the last block
  needed); its overhead against the bare forward is the hook cost (target <= 5%);
- harvest: `monosemantic.harvest` end to end (story generation, tokenizing, concept labels,
  capture, fp16 shards with checksums on disk);
- raw disk read: reading every shard file's bytes;
- cache stream: `activation_batches` over the cache (checksums, special-token filter, float32,
  shuffle buffer) yielding training batches of all sites, and of one site.

Runs on the shipped storyworld LM; falls back to a tiny random GPT-2 when it is not built.
"""

from __future__ import annotations

import json
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from monosemantic.activations.buffer import activation_batches
from monosemantic.activations.harvest import capture, harvest
from monosemantic.config import load_config
from monosemantic.corpus.windows import TokenWindows
from monosemantic.lm.model import load_model
from monosemantic.lm.shipped import SHIPPED_DIR


def _model_and_sites(tmp: Path) -> tuple[str, list[str], str]:
    if (SHIPPED_DIR / "config.json").exists():
        model = "storyworld"
        label = "shipped storyworld LM"
    else:
        from monosemantic.lm.tiny import save_tiny_model

        model = str(save_tiny_model("gpt2", tmp / "tiny-gpt2"))
        label = "tiny random gpt2 (shipped LM not built)"
    n_layers = load_model(model, device="cpu").n_layers
    sites = ["blocks.1.hook_resid_post"] if n_layers > 1 else []
    for layer in range(n_layers):
        sites += [f"blocks.{layer}.mlp.hook_in", f"blocks.{layer}.hook_mlp_out"]
    return model, sites, label


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(
    max_tokens: int = 32_768, batch_size: int = 64, repeats: int = 3, threads: int | None = None
) -> list[dict]:
    """`threads` pins torch's intra-op threads (1 gives stable numbers on a busy shared machine)."""
    torch.manual_seed(0)
    if threads is not None:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_name, sites, label = _model_and_sites(tmp)
        cfg = load_config(
            None,
            [
                "device='cpu'",
                f"model.name='{model_name}'",
                f"data.max_tokens={max_tokens}",
                f"sites.names={json.dumps(sites)}",
                f"harvest.out='{tmp / 'cache'}'",
                "harvest.dtype='float16'",
                f"harvest.batch_size={batch_size}",
                "harvest.shard_sequences=128",
                "train.buffer_tokens=16384",
            ],
        )
        model = load_model(model_name, device="cpu")
        tokens = torch.stack([w.tokens for w in TokenWindows(cfg.data, model.tokenizer)])
        n_tok = tokens.numel()
        batches = tokens.split(batch_size)
        stop = model.stop_layer(sites)

        def bare() -> None:
            with torch.inference_mode():
                for b in batches:
                    model.hf(input_ids=b, attention_mask=torch.ones_like(b), use_cache=False)

        def hooked() -> None:
            for b in batches:
                capture(model, b, sites, stop)

        def base() -> None:  # the transformer body without the LM head, as deep as capture runs
            with torch.inference_mode():
                for b in batches:
                    model.base(input_ids=b, attention_mask=torch.ones_like(b), use_cache=False)

        bare()  # warm-up
        t_bare = min(_timed(bare) for _ in range(repeats))
        t_base = min(_timed(base) for _ in range(repeats)) if stop is None or stop == model.n_layers else None
        t_hook = min(_timed(hooked) for _ in range(repeats))
        t_harvest = _timed(lambda: harvest(cfg))

        shards = sorted((tmp / "cache").glob("shard-*.safetensors"))
        t_raw = min(_timed(lambda: [p.read_bytes() for p in shards]) for _ in range(repeats))
        cfg.data.activations = tmp / "cache"
        batch = 2048
        n_batches = max(1, (int(0.9 * n_tok) - 16384) // batch)  # one epoch: the buffer reads ahead

        def stream(which: list[str]):
            def go() -> None:
                for _ in islice(activation_batches(cfg, which, batch), n_batches):
                    pass

            return go

        t_all = min(_timed(stream(sites)) for _ in range(repeats))
        t_one = min(_timed(stream(sites[:1])) for _ in range(repeats))
        mb = sum(p.stat().st_size for p in shards) / 1e6

    streamed = n_batches * batch
    # hook overhead is measured against the same work without hooks (no LM head when capture skips it)
    ref, ref_name = (t_bare, "bare") if t_base is None else (t_base, "bare without head")
    rows = [
        {"benchmark": "bare forward (no hooks, all blocks)", "tokens_per_s": n_tok / t_bare, "vs": "1.00x"},
        *(
            []
            if t_base is None
            else [
                {
                    "benchmark": "bare forward (no hooks, no LM head)",
                    "tokens_per_s": n_tok / t_base,
                    "vs": f"{t_bare / t_base:.2f}x bare",
                }
            ]
        ),
        {
            "benchmark": f"capture {len(sites)} sites, one pass",
            "tokens_per_s": n_tok / t_hook,
            "vs": f"{ref / t_hook:.2f}x {ref_name} ({100 * (t_hook / ref - 1):+.1f}% time)",
        },
        {
            "benchmark": "harvest end to end (text -> shards)",
            "tokens_per_s": n_tok / t_harvest,
            "vs": f"{t_bare / t_harvest:.2f}x bare",
        },
        {"benchmark": f"raw disk read of shards ({mb:.0f} MB)", "tokens_per_s": n_tok / t_raw, "vs": "1.00x"},
        {
            "benchmark": f"cache stream, {len(sites)} sites",
            "tokens_per_s": streamed / t_all,
            "vs": f"{(streamed / t_all) / (n_tok / t_raw):.2f}x raw read",
        },
        {
            "benchmark": "cache stream, 1 site",
            "tokens_per_s": streamed / t_one,
            "vs": f"{(streamed / t_one) / (n_tok / t_raw):.2f}x raw read",
        },
    ]
    for row in rows:
        row["model"] = label
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        f"Model: {rows[0]['model']}; torch threads: {torch.get_num_threads()}",
        "",
        "| benchmark | tokens/s | relative |",
        "|---|---:|---|",
    ]
    lines += [f"| {r['benchmark']} | {r['tokens_per_s']:,.0f} | {r['vs']} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32_768)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    print(markdown(run(max_tokens=args.max_tokens, threads=args.threads)))
