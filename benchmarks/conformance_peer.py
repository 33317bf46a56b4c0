"""The peers' side of `bench_conformance.py`: runs in a peer's own venv and imports nothing from
monosemantic. Usage: python conformance_peer.py JOB.json. The job lists tasks; each task loads a
checkpoint with the peer's own loader (or writes one with the peer's own code) and saves the
peer's encode/decode outputs on the given activations to `out` (safetensors: `f`, `y`), so every
comparison is made on our side. Prints one JSON line: {"versions": {...}, "tasks": [{...}, ...]}.
"""

from __future__ import annotations

import json
import sys
import types
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _saelens(task: dict) -> dict:
    import runpy

    from sae_lens import SAE

    runpy.run_path(task["plugin"])["register_topk_transcoder"]()
    if task["op"] == "load":
        sae = SAE.load_from_disk(task["path"], device="cpu")
        x = load_file(task["x"])["x"]
        with torch.no_grad():
            f = sae.encode(x)
            y = sae.decode(f)
        save_file({"f": f.contiguous(), "y": y.contiguous()}, task["out"])
        md = sae.cfg.metadata
        return {"architecture": sae.cfg.architecture(), "hook_name": md.hook_name, "model_name": md.model_name,
                "context_size": md.context_size, "sae_lens_version": md.sae_lens_version}  # fmt: skip
    # op "write": a SAELens-built SAE with seeded weights, saved by SAELens, and its outputs
    import sae_lens

    torch.manual_seed(0)
    d_in, d_sae = task["d_in"], task["d_sae"]
    if task["architecture"] == "topk":
        sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=task["k"]))
    else:
        sae = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(torch.rand_like(sae.threshold) * 0.2)
    sae.save_model(task["path"])
    x = load_file(task["x"])["x"]
    with torch.no_grad():
        f = sae.encode(x)
        y = sae.decode(f)
    save_file({"f": f.contiguous(), "y": y.contiguous()}, task["out"])
    return {}


def _saelens_evals(task: dict) -> dict:
    """SAELens's own `run_evals` on our SAE, on our token batches, with a TransformerLens copy of the
    shipped LM (converted from its HF folder)."""
    import runpy

    from sae_lens import SAE
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformers import AutoTokenizer, GPT2LMHeadModel

    runpy.run_path(task["plugin"])["register_topk_transcoder"]()
    hf = GPT2LMHeadModel.from_pretrained(task["model"], torch_dtype=torch.float32)
    c = hf.config
    cfg = HookedTransformerConfig(n_layers=c.n_layer, d_model=c.n_embd, n_ctx=c.n_positions,
                                  d_head=c.n_embd // c.n_head, n_heads=c.n_head, d_mlp=c.n_inner or 4 * c.n_embd,
                                  d_vocab=c.vocab_size, act_fn="gelu_new", normalization_type="LN",
                                  eps=c.layer_norm_epsilon, positional_embedding_type="standard",
                                  original_architecture="GPT2LMHeadModel", default_prepend_bos=False,
                                  device="cpu", dtype=torch.float32)  # fmt: skip
    model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(task["model"]))
    model.load_state_dict(convert_gpt2_weights(hf, cfg), strict=False)
    model.eval()
    tokens = load_file(task["tokens"])["tokens"].long()

    class Store:  # what run_evals reads of an ActivationsStore: our token batches, in order
        store_batch_size_prompts = int(task["batch"])
        context_size = tokens.shape[1]

        def __init__(self) -> None:
            self.i = 0

        def get_batch_tokens(self, n: int) -> torch.Tensor:
            out = tokens[self.i : self.i + n]
            self.i += n
            return out

        def reset_input_dataset(self) -> None:
            self.i = 0

    sae = SAE.load_from_disk(task["path"], device="cpu")
    n_batches = tokens.shape[0] // int(task["batch"])
    ec = EvalConfig(batch_size_prompts=int(task["batch"]), n_eval_reconstruction_batches=n_batches,
                    n_eval_sparsity_variance_batches=n_batches, compute_kl=True, compute_ce_loss=True,
                    compute_l2_norms=True, compute_sparsity_metrics=True, compute_variance_metrics=True,
                    compute_featurewise_density_statistics=False, compute_featurewise_weight_based_metrics=False)  # fmt: skip
    with torch.no_grad():
        metrics, _ = run_evals(
            sae, Store(), model, ActivationScaler(), ec, exclude_special_tokens=task["special"]
        )
    return {"metrics": metrics}


def _sparsify(task: dict) -> dict:
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    cfg = SparseCoderConfig(num_latents=task["d_sae"], k=task["k"], transcode=task.get("transcode", False))
    sae = SparseCoder(task["d_in"], cfg, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    folder = Path(task["path"])
    sae.save_to_disk(folder)
    x = load_file(task["x"])["x"]
    with torch.no_grad():
        enc = sae.encode(x)
        f = torch.zeros(x.shape[0], task["d_sae"]).scatter_(1, enc.top_indices, enc.top_acts)
        y = sae.decode(enc.top_acts, enc.top_indices)
    save_file({"f": f.contiguous(), "y": y.contiguous()}, task["out"])
    return {}


def _dictionary_learning(task: dict) -> dict:
    for missing in ("nnsight",):  # installed --no-deps: the package __init__ imports its LM buffer
        stub = types.ModuleType(missing)
        stub.LanguageModel = object
        sys.modules.setdefault(missing, stub)
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    torch.manual_seed(0)
    cls = AutoEncoderTopK if task["architecture"] == "AutoEncoderTopK" else BatchTopKSAE
    ae = cls(task["d_in"], task["d_sae"], task["k"])
    with torch.no_grad():
        for p in ae.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        if cls is BatchTopKSAE:
            ae.threshold.fill_(0.05)
    folder = Path(task["path"])
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ae.state_dict(), folder / "ae.pt")
    if task.get("config", True):
        (folder / "config.json").write_text(
            json.dumps({"trainer": {"dict_class": cls.__name__, "k": task["k"]}})
        )
    x = load_file(task["x"])["x"]
    with torch.no_grad():
        f = ae.encode(x) if cls is AutoEncoderTopK else ae.encode(x, use_threshold=True)
        y = ae.decode(f)
    save_file({"f": f.contiguous(), "y": y.contiguous()}, task["out"])
    return {}


def _circuit_tracer(task: dict) -> dict:
    from circuit_tracer.transcoder.cross_layer_transcoder import load_clt
    from circuit_tracer.transcoder.single_layer_transcoder import (
        load_gemma_scope_transcoder,
        load_relu_transcoder,
    )

    x = load_file(task["x"])["x"]
    with torch.no_grad():
        if task["loader"] == "load_clt":
            clt = load_clt(task["path"], scan="conformance", dtype=torch.float32, lazy_decoder=False)
            xs = x.reshape(x.shape[0], clt.n_layers, -1).transpose(0, 1)  # [L, N, d]
            f = clt.encode(xs)  # [L, N, n]
            y = clt.decode(f)  # [L, N, d]
            f, y = f.transpose(0, 1).reshape(x.shape[0], -1), y.transpose(0, 1).reshape(x.shape[0], -1)
        else:
            load = (
                load_gemma_scope_transcoder
                if task["loader"] == "load_gemma_scope_transcoder"
                else load_relu_transcoder
            )
            tc = load(task["path"], layer=task["layer"], dtype=torch.float32)
            f = tc.encode(x)
            y = tc.decode(f)
    save_file({"f": f.float().contiguous(), "y": y.float().contiguous()}, task["out"])
    return {}


PEERS = {
    "saelens": (_saelens, "sae-lens"),
    "saelens_evals": (_saelens_evals, "sae-lens"),
    "sparsify": (_sparsify, "eai-sparsify"),
    "dictionary_learning": (_dictionary_learning, "dictionary-learning"),
    "circuit_tracer": (_circuit_tracer, "circuit-tracer"),
}


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    results = []
    for task in job["tasks"]:
        fn, dist = PEERS[task["peer"]]
        try:
            results.append({"id": task["id"], "ok": True, **fn(task)})
        except Exception as e:  # reported in the table, not fatal for the other tasks
            results.append({"id": task["id"], "ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
    dists = {PEERS[t["peer"]][1] for t in job["tasks"]}
    print(json.dumps({"versions": {d: version(d) for d in sorted(dists)}, "tasks": results}))


if __name__ == "__main__":
    main()
