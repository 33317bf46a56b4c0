"""Attribution side by side with circuit-tracer: same model, same transcoders, same prompt, same graph.

The model is the shipped storyworld LM (GPT-2 shape: 4 layers, d 128); the dictionaries are JumpReLU
per-layer transcoders (x8) and one JumpReLU cross-layer transcoder over the 4 MLPs, with random
directions and thresholds calibrated on storyworld text so about 16 latents per layer fire on a
token (attribution cost depends on shapes and active counts only, and circuit-tracer has no TopK
CLT). They are saved in our layout and written by `write_circuit_tracer`; circuit-tracer loads
them with its own loaders (`load_clt`, `load_gemma_scope_transcoder`), in its own venv
(`.venv-circuit-tracer`, see `circuit_tracer_peer.py`). Both take token ids and the same
`max_feature_nodes` / `batch_size`; ours runs with `zero_bos` (circuit-tracer's BOS convention).
Each run is a fresh subprocess: seconds and peak RSS over the loaded model (VmHWM reset after setup).

`max edge diff` compares the two graphs where their conventions agree: every feature -> feature
and feature -> logit edge, features matched by (layer, position, index), relative to the largest
edge (embedding and error nodes differ by design: ours carries position embeddings and BOS output).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TITLE = "Circuits: attribution side by side with circuit-tracer"
ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".venv-circuit-tracer"
# (dictionaries, prompt tokens, max_feature_nodes): the first two compare whole graphs
CASES = (("per-layer", 32, 8192), ("clt", 32, 8192), ("per-layer", 128, 2048), ("clt", 128, 2048))
BATCH = 64
NOTE = (
    "Shipped storyworld LM; JumpReLU transcoders (x8) or one JumpReLU CLT with random directions and thresholds "
    "calibrated to ~16 active latents per layer per token, written by `write_circuit_tracer` and loaded by "
    "circuit-tracer 0.5.0 in `.venv-circuit-tracer`; batch 64; all features at 32 tokens, 2,048 rows at 128. "
    "`max edge diff`: largest |ours - theirs| over feature-to-feature and feature-to-logit edges, relative to "
    "the largest edge (whole graphs only). Last row: a tiny random Gemma-2 (4 layers, d 64) with JumpReLU "
    "transcoders in Gemma Scope's layout reading ln2.hook_normalized, 16 tokens, the whole graph."
)
DENSITY = 16 / 1024  # each latent fires on ~1.6% of tokens: ~16 active per layer per token


def _peer_python() -> Path | None:
    py = Path(os.environ.get("CIRCUIT_TRACER_PYTHON", PEER_VENV / "bin" / "python"))
    if not py.is_file():
        return None
    ok = subprocess.run([str(py), "-c", "import circuit_tracer"], capture_output=True).returncode == 0
    return py if ok else None


def _mlp_inputs(model, hook: str = "mlp.hook_in", n_tokens: int = 4096) -> list[torch.Tensor]:
    """Each layer's transcoder input (`hook`) on storyworld text (random tokens for a random model):
    the calibration data for the thresholds."""
    from benchmarks.bench_circuits import story_ids

    if model.name == "storyworld" or "storyworld" in str(model.name):
        ids = story_ids(model.tokenizer, n_tokens).view(-1, 128)
    else:
        ids = torch.randint(
            1, len(model.tokenizer), (n_tokens // 128, 128), generator=torch.Generator().manual_seed(0)
        )
    sites = [f"blocks.{L}.{hook}" for L in range(model.n_layers)]
    with torch.no_grad():
        acts = model.run(ids, capture=sites).activations
    return [acts[s].reshape(-1, acts[s].shape[-1]).float() for s in sites]


def _calibrate(pre: torch.Tensor) -> torch.Tensor:
    """Per-latent thresholds at the (1 - DENSITY) quantile of the pre-activations (floor 1e-3)."""
    q = pre.kthvalue(int((1 - DENSITY) * pre.shape[0]), dim=0).values
    return q.clamp_min(1e-3)


def make_dictionaries(model, kind: str, hook: str = "mlp.hook_in"):
    """JumpReLU transcoders (or one CLT) reading `hook` of every layer and writing hook_mlp_out."""
    from monosemantic.config import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary

    torch.manual_seed(0)
    L, d = model.n_layers, model.d_model
    xs = _mlp_inputs(model, hook)
    if kind == "clt":
        layers = ",".join(str(i) for i in range(L))
        c = DictionaryConfig(
            architecture="jumprelu",
            d_sae=8 * d,
            site=f"blocks.{{{layers}}}.{hook}",
            site_out=f"blocks.{{{layers}}}.hook_mlp_out",
        )
        clt = build_dictionary(c, L * d, L * d)
        with torch.no_grad():
            for i, x in enumerate(xs):
                clt.log_threshold[i] = _calibrate(clt.pre_acts_layer(i, x)).log()
        return [clt.eval()]
    out = []
    for i, x in enumerate(xs):
        c = DictionaryConfig(
            architecture="jumprelu",
            d_sae=8 * d,
            site=f"blocks.{i}.{hook}",
            site_out=f"blocks.{i}.hook_mlp_out",
        )
        tc = build_dictionary(c, d, d)
        with torch.no_grad():
            tc.log_threshold.copy_(_calibrate(tc.pre_acts(x)).log())
        out.append(tc.eval())
    return out


def _peak_mb() -> float:
    from benchmarks.bench_circuits import _rss_mb

    return _rss_mb()


def ours(job: dict) -> dict:
    """Our attribution on the job's model, saved dictionaries and ids (run in a fresh subprocess)."""
    from benchmarks.bench_circuits import _reset_peak, _status_mb
    from monosemantic.circuits.attribution import attribute
    from monosemantic.circuits.replacement import ReplacementModel
    from monosemantic.dictionaries.io import find_dictionaries, load_dictionary
    from monosemantic.lm.model import load_model

    torch.set_num_threads(job.get("threads", 2))
    model = load_model(job["model"])
    dics = [load_dictionary(p) for p in find_dictionaries(Path(job["ours"]))]
    rm = ReplacementModel(model, dics, zero_bos=True)
    ids = torch.tensor(job["ids"], dtype=torch.long)
    _reset_peak()
    base = _status_mb("VmRSS") or _peak_mb()
    t0 = time.perf_counter()
    g = attribute(
        rm,
        prompt=ids,
        max_feature_nodes=job["max_feature_nodes"],
        batch_size=job["batch_size"],
        show_progress=False,
    )
    seconds = time.perf_counter() - t0
    out = {
        "seconds": round(seconds, 3),
        "peak MB over model": round(_peak_mb() - base, 1),
        "active features": g.total_active_features,
        "selected": g.n_features,
        "logits": g.n_logits,
    }
    if job.get("graph"):
        torch.save(
            {
                "features": g.features[:, 1:],  # (layer, pos, index)
                "adjacency": g.adjacency,
                "logit_tokens": torch.tensor([t.token_id for t in g.targets if t.kind != "feature"]),
                "n_features": g.n_features,
            },
            job["graph"],
        )
    return out


def edge_difference(ours_file: Path, theirs_file: Path) -> float:
    """max |edge_ours - edge_theirs| / max |edge| over feature->feature and feature->logit edges."""
    a, b = torch.load(ours_file), torch.load(theirs_file)
    if not torch.equal(a["logit_tokens"], b["logit_tokens"]):
        return float("nan")
    sel = b["active_features"][b["selected_features"]]
    key = lambda f: {tuple(int(v) for v in r): i for i, r in enumerate(f)}  # noqa: E731
    ka, kb = key(a["features"]), key(sel)
    if set(ka) != set(kb):
        return float("nan")
    order_a = torch.tensor([ka[k] for k in kb])  # ours, in circuit-tracer's feature order
    n_a, n_b, n_l = a["n_features"], len(sel), len(b["logit_tokens"])
    rows_a = torch.cat([order_a, torch.arange(a["adjacency"].shape[0] - n_l, a["adjacency"].shape[0])])
    rows_b = torch.cat(
        [torch.arange(n_b), torch.arange(b["adjacency"].shape[0] - n_l, b["adjacency"].shape[0])]
    )
    A = a["adjacency"][rows_a][:, order_a].double()
    B = b["adjacency"][rows_b][:, :n_b].double()
    assert n_a == n_b
    return float((A - B).abs().max() / B.abs().max().clamp_min(1e-30))


def _subprocess(python: Path | str, args: list[str]) -> dict:
    out = subprocess.run([str(python), *args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{args}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(cases=CASES) -> list[dict]:
    from benchmarks.bench_circuits import story_ids
    from benchmarks.run_all import markdown_table
    from monosemantic.dictionaries.circuit_tracer import write_circuit_tracer
    from monosemantic.dictionaries.io import save_dictionary
    from monosemantic.lm.model import load_model
    from monosemantic.lm.shipped import SHIPPED_DIR

    peer = _peer_python()
    model = load_model("storyworld")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ct-"))
    made = {}
    rows = []
    for kind, n_tok, max_nodes in cases:
        if kind not in made:
            dics = make_dictionaries(model, kind)
            for i, dic in enumerate(dics):
                save_dictionary(dic, tmp / kind / "ours" / f"d{i}")
            write_circuit_tracer(dics[0] if kind == "clt" else dics, tmp / kind / "ct")
            made[kind] = True
        ids = [model.tokenizer.bos_token_id, *story_ids(model.tokenizer, n_tok - 1).tolist()]
        job = {"model": str(SHIPPED_DIR), "ids": ids, "max_feature_nodes": max_nodes, "batch_size": BATCH,
               "kind": "clt" if kind == "clt" else "per_layer", "ours": str(tmp / kind / "ours"),
               "transcoders": str(tmp / kind / "ct"), "threads": 2}  # fmt: skip
        full = max_nodes >= 8192
        if full:
            job["graph"] = str(tmp / f"{kind}-{n_tok}-ours.pt")
        (tmp / "job.json").write_text(json.dumps(job))
        mine = _subprocess(
            sys.executable, ["-m", "benchmarks.bench_circuit_tracer", "--ours", str(tmp / "job.json")]
        )
        row = {"dictionaries": "JumpReLU CLT" if kind == "clt" else "JumpReLU transcoders", "tokens": n_tok,
               "active features": mine["active features"], "rows": mine["selected"] + mine["logits"],
               "ours s": mine["seconds"], "ours peak MB": mine["peak MB over model"]}  # fmt: skip
        if peer is not None:
            if full:
                job["graph"] = str(tmp / f"{kind}-{n_tok}-ct.pt")
                (tmp / "job.json").write_text(json.dumps(job))
            theirs = _subprocess(
                peer, [str(ROOT / "benchmarks" / "circuit_tracer_peer.py"), str(tmp / "job.json")]
            )
            row |= {"circuit-tracer s": theirs["seconds"], "circuit-tracer peak MB": theirs["peak MB over model"],
                    "speed-up": round(theirs["seconds"] / max(mine["seconds"], 1e-9), 2)}  # fmt: skip
            if theirs["active features"] != mine["active features"]:
                row["note"] = f"circuit-tracer found {theirs['active features']} active features"
            if full:
                row["max edge diff (rel.)"] = (
                    f"{edge_difference(tmp / f'{kind}-{n_tok}-ours.pt', Path(job['graph'])):.1e}"
                )
        rows.append(row)
    rows.append(gemma2_row(peer, tmp))
    if peer is None:
        print("circuit-tracer is not installed in .venv-circuit-tracer; the table has our side only")
    return markdown_table(rows) + "\n\n" + NOTE


GEMMA2 = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, head_dim=16, query_pre_attn_scalar=16,
              sliding_window=4096, layer_types=["sliding_attention", "full_attention"] * 2)  # fmt: skip


def gemma2_row(peer: Path | None, tmp: Path, n_tok: int = 16, max_nodes: int = 8192) -> dict:
    """A second family side by side: a tiny random Gemma-2 (soft-capping, sandwich norms, (1 + w)
    RMSNorms, GQA) with JumpReLU transcoders in Gemma Scope's layout reading ln2.hook_normalized (the
    norm's x_hat, where Gemma Scope and circuit-tracer's Gemma configs read) and writing hook_mlp_out."""
    from monosemantic.dictionaries.circuit_tracer import write_circuit_tracer
    from monosemantic.dictionaries.io import save_dictionary
    from monosemantic.lm.model import load_model
    from monosemantic.lm.tiny import save_tiny_model

    folder = save_tiny_model("gemma2", tmp / "gemma2-model", seed=0, **GEMMA2)
    model = load_model(str(folder))
    dics = make_dictionaries(model, "per-layer", hook="ln2.hook_normalized")
    for i, dic in enumerate(dics):
        save_dictionary(dic, tmp / "gemma2" / "ours" / f"d{i}")
    write_circuit_tracer(dics, tmp / "gemma2" / "ct")
    g = torch.Generator().manual_seed(1)
    ids = [
        model.tokenizer.bos_token_id,
        *torch.randint(1, len(model.tokenizer), (n_tok - 1,), generator=g).tolist(),
    ]
    job = {"model": str(folder), "ids": ids, "max_feature_nodes": max_nodes, "batch_size": BATCH, "kind": "per_layer",
           "ours": str(tmp / "gemma2" / "ours"), "transcoders": str(tmp / "gemma2" / "ct"), "threads": 2,
           "graph": str(tmp / "gemma2-ours.pt")}  # fmt: skip
    (tmp / "job.json").write_text(json.dumps(job))
    mine = _subprocess(
        sys.executable, ["-m", "benchmarks.bench_circuit_tracer", "--ours", str(tmp / "job.json")]
    )
    row = {"dictionaries": "tiny Gemma-2, JumpReLU transcoders (ln2.hook_normalized)", "tokens": n_tok,
           "active features": mine["active features"], "rows": mine["selected"] + mine["logits"],
           "ours s": mine["seconds"], "ours peak MB": mine["peak MB over model"]}  # fmt: skip
    if peer is not None:
        job["graph"] = str(tmp / "gemma2-ct.pt")
        (tmp / "job.json").write_text(json.dumps(job))
        theirs = _subprocess(
            peer, [str(ROOT / "benchmarks" / "circuit_tracer_peer.py"), str(tmp / "job.json")]
        )
        row |= {"circuit-tracer s": theirs["seconds"], "circuit-tracer peak MB": theirs["peak MB over model"],
                "speed-up": round(theirs["seconds"] / max(mine["seconds"], 1e-9), 2)}  # fmt: skip
        if theirs["active features"] != mine["active features"]:
            row["note"] = f"circuit-tracer found {theirs['active features']} active features"
        row["max edge diff (rel.)"] = f"{edge_difference(tmp / 'gemma2-ours.pt', Path(job['graph'])):.1e}"
    return row


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--ours":
        print(json.dumps(ours(json.loads(Path(sys.argv[2]).read_text()))))
    else:
        print(run())
