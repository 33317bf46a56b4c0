"""TransformerLens' values of our hook sites, for the family tests (runs in `.venv-transformer-lens`).

It imports nothing from monosemantic: it loads a saved HF model folder in float64 with eager
attention, wraps it in TransformerLens' `TransformerBridge` (TransformerLens 4: the same HF weights,
hook points with TransformerLens' names and meanings; `hook_mlp_in` switched on), runs the given
token ids with `run_with_cache` and writes every requested site TransformerLens has to a
safetensors file. One run serves many models (importing TransformerLens is the slow part).

Usage: python transformer_lens_reference.py JOBS.json, a list of {"model", "ids", "sites", "out"};
prints one JSON line: per job, the sites TransformerLens lacks ("missing") and whether its logits
equal the HF model's ("logits_equal_hf").
"""

from __future__ import annotations

import json
import sys

import torch
from safetensors.torch import save_file
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoModelForCausalLM


def main(model_dir: str, ids: list[list[int]], sites: list[str], out: str) -> dict:
    hf = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float64, attn_implementation="eager", experts_implementation="eager"
    )
    bridge = TransformerBridge.boot_transformers(model_dir, hf_model=hf, dtype=torch.float64)
    bridge.set_use_hook_mlp_in(True)
    tokens = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens)
        plain = hf(tokens).logits
    have = set(cache.keys())
    found = {s: cache[s].detach().clone().contiguous() for s in sites if s in have}
    found["__logits__"] = logits.detach().contiguous()
    save_file(found, out)
    return {
        "missing": [s for s in sites if s not in have],
        "logits_equal_hf": bool(torch.equal(logits, plain)),
    }


if __name__ == "__main__":
    jobs = json.loads(open(sys.argv[1]).read())
    print(json.dumps([main(j["model"], j["ids"], j["sites"], j["out"]) for j in jobs]))
