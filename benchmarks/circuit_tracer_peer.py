"""circuit-tracer's side of `bench_circuit_tracer.py`; runs in its own venv (.venv-circuit-tracer).

It imports nothing from monosemantic (whose transformers floor differs): it reads a GPT-2 folder
(HF layout) into TransformerLens, loads the transcoders our `write_circuit_tracer` wrote with
circuit-tracer's own loaders (`load_clt`, or `load_gemma_scope_transcoder` per layer), runs its
`attribute()` on token ids (its `ensure_tokenized` fails when BOS id is 0) and prints one JSON
line: seconds, peak RSS over setup, counts; with `--graph F` also the graph's arrays for the
comparison (active features as (layer, pos, index), selected features, adjacency, logit tokens).

Usage: python circuit_tracer_peer.py JOB.json  (keys: model, transcoders, kind "clt" | "per_layer",
ids, max_feature_nodes, batch_size, graph: optional output path).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return _peak_mb()


def _gemma2(folder: str):
    """A Gemma-2 folder as (HF model, TransformerLens config, TransformerLens weights): the config of
    TransformerLens' own google/gemma-2-2b entry with the folder's sizes (unfolded, as circuit-tracer
    loads models: fold_ln=False, center_writing_weights=False)."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights
    from transformers import Gemma2ForCausalLM

    hf = Gemma2ForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager")
    c = hf.config
    kinds = getattr(c, "layer_types", None) or ["sliding_attention", "full_attention"] * c.num_hidden_layers
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, d_head=c.head_dim, n_heads=c.num_attention_heads, d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers, n_ctx=c.max_position_embeddings, eps=c.rms_norm_eps, d_vocab=c.vocab_size,
        act_fn="gelu_pytorch_tanh", normalization_type="RMS", rotary_base=10000.0, positional_embedding_type="rotary",
        use_attn_scale=True, attn_scale=c.query_pre_attn_scalar**0.5, n_key_value_heads=c.num_key_value_heads,
        window_size=c.sliding_window, use_local_attn=True,
        attn_types=["local" if k == "sliding_attention" else "global" for k in kinds][: c.num_hidden_layers],
        attn_scores_soft_cap=c.attn_logit_softcapping, output_logits_soft_cap=c.final_logit_softcapping,
        gated_mlp=True, final_rms=True, use_normalization_before_and_after=True,
        original_architecture="Gemma2ForCausalLM", model_name="tiny-gemma-2", default_prepend_bos=False,
        device="cpu", dtype=torch.float32,
    )  # fmt: skip
    return hf, cfg, convert_gemma_weights(hf, cfg)


def load_model(folder: str, transcoders):
    """The HF GPT-2 or Gemma-2 in `folder` as circuit-tracer's TransformerLens replacement model."""
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    if json.loads((Path(folder) / "config.json").read_text())["model_type"] == "gemma2":
        hf, cfg, weights = _gemma2(folder)
        return _finish(
            TransformerLensReplacementModel.from_config(cfg, transcoders), weights, folder, hf.config
        )
    hf = GPT2LMHeadModel.from_pretrained(folder, torch_dtype=torch.float32)
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer,
        d_model=c.n_embd,
        n_ctx=c.n_positions,
        d_head=c.n_embd // c.n_head,
        n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd,
        d_vocab=c.vocab_size,
        act_fn="gelu_new",
        normalization_type="LN",
        eps=c.layer_norm_epsilon,
        positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel",
        model_name="storyworld",
        default_prepend_bos=False,
        device="cpu",
        dtype=torch.float32,
    )
    model = TransformerLensReplacementModel.from_config(cfg, transcoders)
    return _finish(model, convert_gpt2_weights(hf, cfg), folder, c)


def _finish(model, weights: dict, folder: str, c):
    """Load TransformerLens weights into circuit-tracer's model and give it the folder's tokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # circuit-tracer wraps each MLP and the unembedding (`old_mlp`, `old_unembed`)
    state = {
        re.sub(
            r"^(blocks\.\d+\.mlp|unembed)\.", lambda m: f"{m.group(1)}.old_{m.group(1).split('.')[-1]}.", k
        ): v
        for k, v in weights.items()
    }
    state.setdefault("unembed.old_unembed.b_U", torch.zeros(c.vocab_size))  # no unembedding bias
    missing, unexpected = model.load_state_dict(state, strict=False)
    skip = ("mask", "IGNORE", "rotary_sin", "rotary_cos")  # buffers TransformerLens computes itself
    missing = [k for k in missing if not k.startswith("transcoders.") and not k.endswith(skip)]
    assert not missing and not unexpected, (missing, unexpected)
    # transformers 5's tokenizer_config names a class 4.x lacks: build the fast tokenizer directly
    special = json.loads((Path(folder) / "tokenizer_config.json").read_text())
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(Path(folder) / "tokenizer.json"),
        **{k: special[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in special},
    )
    # TransformerLens reloads the tokenizer by name: give it a folder in 4.x's own format
    saved = Path(tempfile.mkdtemp()) / "tokenizer"
    tok.save_pretrained(saved)
    model.set_tokenizer(AutoTokenizer.from_pretrained(saved), default_padding_side="right")
    return model


def hooks(path: str) -> tuple[str, str]:
    """The hooks the transcoders were trained on, from the config.yaml `write_circuit_tracer` wrote."""
    import yaml

    cfg = yaml.safe_load((Path(path) / "config.yaml").read_text())
    return cfg["feature_input_hook"], cfg["feature_output_hook"]


def load_transcoders(path: str, kind: str, n_layers: int):
    hook_in, hook_out = hooks(path)
    if kind == "clt":
        from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

        return load_clt(
            path,
            feature_input_hook=hook_in,
            feature_output_hook=hook_out,
            device=torch.device("cpu"),
            dtype=torch.float32,
            lazy_decoder=False,
        )
    from circuit_tracer.transcoder.single_layer_transcoder import TranscoderSet, load_gemma_scope_transcoder

    layers = {
        i: load_gemma_scope_transcoder(
            str(Path(path) / f"layer_{i}" / "params.npz"), i, torch.device("cpu"), torch.float32
        )
        for i in range(n_layers)
    }
    return TranscoderSet(layers, feature_input_hook=hook_in, feature_output_hook=hook_out)


def run(job: dict) -> dict:
    from circuit_tracer import attribute

    torch.set_num_threads(job.get("threads", 2))
    config = json.loads((Path(job["model"]) / "config.json").read_text())
    n_layers = config.get("n_layer") or config["num_hidden_layers"]
    model = load_model(job["model"], load_transcoders(job["transcoders"], job["kind"], n_layers))
    ids = torch.tensor(job["ids"], dtype=torch.long)
    Path("/proc/self/clear_refs").write_text("5")  # count attribution's peak, not setup's
    base = _rss_mb()
    t0 = time.perf_counter()
    g = attribute(
        ids,
        model,
        max_feature_nodes=job["max_feature_nodes"],
        batch_size=job["batch_size"],
        max_n_logits=job.get("max_n_logits", 10),
        desired_logit_prob=job.get("desired_logit_prob", 0.95),
        verbose=False,
    )
    seconds = time.perf_counter() - t0
    out = {
        "seconds": round(seconds, 3),
        "peak MB over model": round(_peak_mb() - base, 1),
        "active features": int(g.active_features.shape[0]),
        "selected": int(g.selected_features.shape[0]),
        "logits": len(g.logit_targets),
    }
    if job.get("graph"):
        torch.save(
            {
                "active_features": g.active_features,  # [n, 3] (layer, pos, index)
                "selected_features": g.selected_features,
                "adjacency": g.adjacency_matrix,
                "logit_tokens": torch.tensor([t.vocab_idx for t in g.logit_targets]),
                "n_layers": n_layers,
                "n_pos": len(ids),
            },
            job["graph"],
        )
    return out


if __name__ == "__main__":
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
