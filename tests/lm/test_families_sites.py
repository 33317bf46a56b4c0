"""Every family's hook sites on tiny random float64 models: exactly transformers' own values, exactly
TransformerLens' (when `.venv-transformer-lens` exists), and hooks that change nothing.

TransformerLens' reference is its `TransformerBridge` over the same HF weights, run in its own venv
by `tests/support/transformer_lens_reference.py` (`make .venv-transformer-lens/.stamp`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_families import DECODERS, load64, token_ids

from monosemantic.lm.hooks import norm_affine, norm_parts

ROOT = Path(__file__).resolve().parents[2]
TL_PYTHON = ROOT / ".venv-transformer-lens" / "bin" / "python"
# our own names where TransformerLens' differ: the MoE router's logits
TL_ALIAS = {"mlp.hook_router_logits": {"gpt_oss": "mlp.router.hook_out"}}


def _blk(m, layer: int):
    return m.base.get_submodule(f"{m.layout.blocks}.{layer}")


def _sub(m, layer: int, name: str | None):
    return None if name is None else _blk(m, layer).get_submodule(name)


@pytest.mark.parametrize("variant", DECODERS)
def test_families_hooks_change_nothing(tiny_family, variant):
    """Logits with every site captured, and with an identity edit at every editable site, equal the
    plain model's bit for bit (float64, eager attention)."""
    m = load64(tiny_family(variant))
    ids = token_ids()
    editable = [s for s in m.site_names() if m.editable(s)]
    with torch.no_grad():
        ref = m.hf(input_ids=ids, use_cache=False).logits
        out = m.run(ids, capture=m.site_names())
        edited = m.run(ids, edits={s: (lambda x: x) for s in editable})
    assert torch.equal(out.logits, ref)
    assert torch.equal(edited.logits, ref)
    for s, a in out.activations.items():
        if not s.endswith(("hook_pattern", "hook_attn_scores")):
            assert a[0, 0].numel() == m.site_width(s), s


@pytest.mark.parametrize("variant", DECODERS)
def test_families_sites_equal_transformers_values(tiny_family, variant):
    """Each site against transformers' own intermediates: hidden states, attention weights, and the
    family's modules applied to the captured inputs."""
    m = load64(tiny_family(variant))
    f = m.family_entry
    ids = token_ids()
    with torch.no_grad():
        a = m.run(ids, capture=m.site_names()).activations
        hf = m.hf(input_ids=ids, output_hidden_states=True, output_attentions=True, use_cache=False)
        for L in range(m.n_layers):
            p = f"blocks.{L}."
            pre, attn, mlp_in, out, post = (a[p + k] for k in ("hook_resid_pre", "hook_attn_out", "hook_mlp_in",
                                                               "hook_mlp_out", "hook_resid_post"))  # fmt: skip
            assert torch.equal(pre, hf.hidden_states[L])
            if L + 1 < m.n_layers:
                assert torch.equal(post, hf.hidden_states[L + 1])
            assert torch.equal(a[p + "attn.hook_pattern"], hf.attentions[L])
            # the pre-softmax scores give the pattern (GPT-OSS: with its sink logit, dropped after)
            scores = a[p + "attn.hook_attn_scores"]
            sinks = getattr(_blk(m, L).get_submodule(f.attn), "sinks", None)
            if sinks is not None:
                scores = torch.cat([scores, sinks.reshape(1, -1, 1, 1).expand(*scores.shape[:3], 1)], -1)
            pattern = torch.softmax(scores, -1)[..., : hf.attentions[L].shape[-1]]
            torch.testing.assert_close(pattern, hf.attentions[L], rtol=0, atol=1e-6)
            if m.parallel_residual:
                assert torch.equal(mlp_in, pre) and torch.equal(post, out + attn + pre)
            else:
                mid = a[p + "hook_resid_mid"]
                assert (
                    torch.equal(mid, pre + attn) and torch.equal(mlp_in, mid) and torch.equal(post, mid + out)
                )
            normed = a[p + "mlp.hook_in"]
            ln2 = _sub(m, L, f.ln2)
            if ln2 is None:  # OLMo 2: no norm before the MLP
                assert torch.equal(normed, mlp_in)
            else:
                assert torch.equal(normed, ln2(mlp_in))
                scale, x_hat = norm_parts(f.norm, ln2, mlp_in)
                assert torch.equal(a[p + "ln2.hook_normalized"], x_hat)
                assert torch.equal(a[p + "ln2.hook_scale"], scale)
                torch.testing.assert_close(
                    norm_affine(f.norm, ln2, x_hat, normed.dtype), normed, rtol=0, atol=1e-12
                )
            mlp_out = _blk(m, L).mlp(normed)
            mlp_out = (
                mlp_out[0] if isinstance(mlp_out, tuple) else mlp_out
            )  # GPT-OSS returns router scores too
            post_norm = _sub(m, L, f.mlp_post_norm)
            assert torch.equal(out, post_norm(mlp_out) if post_norm is not None else mlp_out)
            o_proj = _blk(m, L).get_submodule(f.attn).get_submodule(f.o_proj)
            z = a[p + "attn.hook_z"]
            attn_raw = o_proj(z.flatten(2))
            attn_post = _sub(m, L, f.attn_post_norm)
            assert torch.equal(attn, attn_post(attn_raw) if attn_post is not None else attn_raw)
        last = a[f"blocks.{m.n_layers - 1}.hook_resid_post"]
        assert torch.equal(a["ln_final.hook_out"], m.final_norm(last))
        assert torch.equal(a["ln_final.hook_out"], hf.hidden_states[-1])


@pytest.fixture(scope="session")
def transformer_lens(tiny_family, tmp_path_factory):
    """TransformerLens' values of every site of every decoder variant, from one run of the reference
    venv (variant -> (info, tensors)); the comparisons skip where it is not installed."""
    ok = (TL_PYTHON.parent.parent / ".stamp").is_file() and subprocess.run(
        [str(TL_PYTHON), "-c", "import transformer_lens.model_bridge, safetensors"], capture_output=True
    ).returncode == 0
    if not ok:
        pytest.skip("no .venv-transformer-lens (make .venv-transformer-lens/.stamp installs it)")
    root = tmp_path_factory.mktemp("transformer_lens")
    jobs, names = [], {}
    for v in DECODERS:
        m = load64(tiny_family(v))
        names[v] = {s: _tl_name(s, m.family) for s in m.site_names()}
        jobs.append({"model": str(tiny_family(v)), "ids": token_ids().tolist(), "sites": list(names[v].values()),
                     "out": str(root / f"{v}.safetensors")})  # fmt: skip
    (root / "jobs.json").write_text(json.dumps(jobs))
    script = ROOT / "tests" / "support" / "transformer_lens_reference.py"
    run = subprocess.run(
        [str(TL_PYTHON), str(script), str(root / "jobs.json")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr.strip().splitlines()[-3:]
    infos = json.loads(run.stdout.strip().splitlines()[-1])
    return {
        v: (info, names[v], load_file(j["out"])) for v, info, j in zip(DECODERS, infos, jobs, strict=True)
    }


def _tl_name(site: str, family: str) -> str:
    """TransformerLens' name of our site (they differ only for the MoE router's logits)."""
    for ours, theirs in TL_ALIAS.items():
        if ours in site:
            return site.replace(ours, theirs.get(family, "mlp.gate.hook_out"))
    return site


@pytest.mark.parametrize("variant", DECODERS)
def test_families_sites_equal_transformer_lens(tiny_family, variant, transformer_lens):
    """Every site TransformerLens has, with its name, equals ours on the same weights (relative 1e-6:
    RMSNorms run in float32 inside both); the MoE router's logits under TransformerLens' own name."""
    info, names, tl = transformer_lens[variant]
    assert info["missing"] == [] and info["logits_equal_hf"]
    m = load64(tiny_family(variant))
    with torch.no_grad():
        ours = m.run(token_ids(), capture=m.site_names())
    torch.testing.assert_close(
        ours.logits, tl["__logits__"], rtol=0, atol=1e-6
    )  # buffers (rotary) may round apart
    for s in m.site_names():
        a, b = ours.activations[s], tl[names[s]]
        b = b.view(a.shape) if b.numel() == a.numel() else b
        assert a.shape == b.shape, (s, a.shape, b.shape)
        if s.endswith("attn.hook_attn_scores"):  # masked entries: HF's additive mask in both (or -inf)
            low = torch.finfo(b.dtype).min / 2
            assert torch.equal(a < low, b < low), s
            a, b = a[b >= low], b[b >= low]
        err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        assert err < 1e-6, (s, err)
