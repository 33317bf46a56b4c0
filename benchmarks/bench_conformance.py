"""Conformance with peers: every checkpoint format we read or write, round-tripped through the
peer's own code in its own venv, and SAELens's own `run_evals` against our metrics.

Not a timing: a correctness table, rerun by `make bench` (the peer venvs come from the Makefile:
`.venv-saelens`, `.venv-sparsify`, `.venv-dictlearn`, `.venv-circuit-tracer`, `.venv-neuronpedia`;
a peer whose venv is missing is reported as not checked). Activations are real: the shipped
storyworld LM on 16 windows of 64 tokens of storyworld seed 7. Dictionaries have seeded random
weights (agreement, not quality, is checked). Each row compares the peer's encode (f) and decode
(y) outputs with ours on the same activations (max absolute difference, pass at 1e-5), and the L0
and FVU each side's outputs give.
`run_evals` rows compare SAELens 6's metrics of our TopK SAE with ours on the same tokens under its
conventions (`evaluate.ce_convention = "saelens"`: predictions at non-special positions, every
position zero-ablated), passing at 1e-4 relative. The Neuronpedia rows export a real feature store
(those storyworld activations analysed with the TopK SAE and transcoder, offline explanations) and
read it with Neuronpedia's own client (`neuronpedia_conformance.py`): values to 1e-5, tokens, density,
explanations and logits equal.
Usage: python -m benchmarks.bench_conformance (peer pythons from SAELENS_PYTHON, SPARSIFY_PYTHON,
DICTLEARN_PYTHON, CIRCUIT_TRACER_PYTHON, NEURONPEDIA_PYTHON or the venvs above).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TITLE = "Conformance with peers (formats and SAELens run_evals)"
ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "benchmarks" / "conformance_peer.py"
PLUGIN = ROOT / "src" / "monosemantic" / "dictionaries" / "saelens_topk.py"
VENVS = {"saelens": ("SAELENS_PYTHON", ".venv-saelens"), "sparsify": ("SPARSIFY_PYTHON", ".venv-sparsify"),
         "dictionary_learning": ("DICTLEARN_PYTHON", ".venv-dictlearn"),
         "circuit_tracer": ("CIRCUIT_TRACER_PYTHON", ".venv-circuit-tracer")}  # fmt: skip
TOL, REL_TOL = 1e-5, 1e-4
SITE, TC_IN, TC_OUT = "blocks.1.hook_resid_post", "blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out"


def _python(peer: str) -> Path | None:
    env, venv = VENVS["saelens" if peer.startswith("saelens") else peer]
    py = Path(os.environ.get(env, ROOT / venv / "bin" / "python"))
    return py if py.exists() else None


def _activations(n_windows: int = 16, ctx: int = 64) -> tuple[Any, torch.Tensor, dict[str, torch.Tensor]]:
    from monosemantic.config.data import DataConfig
    from monosemantic.corpus.windows import TokenWindows
    from monosemantic.lm.model import load_model

    model = load_model("storyworld", dtype="float32")
    data = DataConfig(text="storyworld", seed=7, context_size=ctx, max_tokens=n_windows * ctx)
    tokens = torch.stack([w.tokens for w in TokenWindows(data, model.tokenizer)]).long()
    with torch.inference_mode():
        acts = model.run(tokens, capture=[SITE, TC_IN, TC_OUT]).activations
    return model, tokens, {s: a.reshape(-1, a.shape[-1]).float().clone() for s, a in acts.items()}


def _ours(out: Path, d_model: int) -> dict[str, Any]:
    """Our dictionaries (seeded), saved in our layout: name -> (dictionary, folder, input site)."""
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries.io import save_dictionary
    from monosemantic.dictionaries.registry import build_dictionary

    specs = {
        "topk SAE": (dict(architecture="topk", k=8, site=SITE), d_model),
        "relu SAE": (dict(architecture="relu", site=SITE), d_model),
        "jumprelu SAE": (dict(architecture="jumprelu", site=SITE), d_model),
        "relu transcoder": (dict(architecture="relu", site=TC_IN, site_out=TC_OUT), d_model),
        "jumprelu transcoder": (dict(architecture="jumprelu", site=TC_IN, site_out=TC_OUT), d_model),
        "topk transcoder": (dict(architecture="topk", k=8, site=TC_IN, site_out=TC_OUT), d_model),
    }
    made = {}
    for i, (name, (kw, d)) in enumerate(specs.items()):
        torch.manual_seed(i)
        dic = build_dictionary(DictionaryConfig(d_sae=4 * d, **kw), d, d).eval()
        with torch.no_grad():
            if hasattr(dic, "threshold"):
                dic.threshold.fill_(0.05)
            dic.b_enc.add_(0.02)
        folder = out / name.replace(" ", "-")
        meta = {"model_name": "storyworld", "hook_name": kw["site"], "context_size": 64}
        if "site_out" in kw:
            meta["hook_name_out"] = kw["site_out"]
        save_dictionary(dic, folder, meta)
        made[name] = (dic, folder, kw["site"], kw.get("site_out", kw["site"]))
    return made


def _l0_fvu(f: torch.Tensor, y_hat: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    l0 = float((f != 0).float().sum(-1).mean())
    fvu = float(((y - y_hat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    return l0, fvu


def _compare(check: str, peer: str, direction: str, ours: tuple, theirs: tuple, y: torch.Tensor) -> dict:
    (f1, y1), (f2, y2) = ours, theirs
    df, dy = float((f1 - f2).abs().max()), float((y1 - y2).abs().max())
    (l0a, fva), (l0b, fvb) = _l0_fvu(f1, y1, y), _l0_fvu(f2, y2, y)
    ok = df <= TOL and dy <= TOL and abs(l0a - l0b) <= TOL * 100 and abs(fva - fvb) <= TOL
    return {"check": check, "peer": peer, "direction": direction, "max |Δf|": f"{df:.1e}", "max |Δy|": f"{dy:.1e}",
            "L0 ours / peer": f"{l0a:.2f} / {l0b:.2f}", "FVU ours / peer": f"{fva:.4f} / {fvb:.4f}",
            "result": "pass" if ok else "FAIL"}  # fmt: skip


def _run_peer(peer: str, tasks: list[dict], work: Path) -> tuple[dict, dict[str, dict]]:
    py = _python(peer)
    if py is None:
        return {}, {
            t["id"]: {"ok": False, "error": f"no {VENVS[peer.split('_evals')[0]][1]} venv"} for t in tasks
        }
    job = work / f"job-{peer}.json"
    job.write_text(json.dumps({"tasks": tasks}))
    proc = subprocess.run([str(py), str(PEER), str(job)], capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {}, {t["id"]: {"ok": False, "error": err[:300]} for t in tasks}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["versions"], {r["id"]: r for r in out["tasks"]}


def _encode(dic: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        f = dic.encode(x)
        return f, dic.decode(f, x)


def run() -> str:
    from monosemantic.dictionaries.io import load_dictionary

    rows: list[dict] = []
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, tokens, acts = _activations()
        save_file({"x": acts[SITE].contiguous()}, str(work / "x_resid.safetensors"))
        save_file({"x": acts[TC_IN].contiguous()}, str(work / "x_mlp_in.safetensors"))
        xfile = {SITE: str(work / "x_resid.safetensors"), TC_IN: str(work / "x_mlp_in.safetensors")}
        made = _ours(work / "ours", model.d_model)
        rows += _saelens_rows(made, acts, xfile, work, versions)
        rows += _foreign_rows(acts, xfile, work, versions, model.d_model)
        rows += _circuit_tracer_rows(made, acts, xfile, work, versions)
        rows += _run_evals_rows(made, model, tokens, work, versions)
        rows += _neuronpedia_rows(made, work, versions)
        del load_dictionary
    head = "Peers: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".\n\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    passed = sum(str(r.get("result", "")).startswith("pass") for r in rows)
    return (
        head
        + "\n".join(lines)
        + f"\n\n{passed} of {len(rows)} checks pass (1e-5 absolute on outputs, 1e-4 relative on run_evals metrics).\n"
    )


def _neuronpedia_rows(made: dict, work: Path, versions: dict) -> list[dict]:
    """Our Neuronpedia export of the TopK SAE and TopK transcoder, analysed on storyworld, read by
    Neuronpedia's own client (`neuronpedia_conformance.py`)."""
    from benchmarks.neuronpedia_conformance import neuronpedia_rows, storyworld_export

    dictionaries = {name.replace(" ", "-"): made[name][1] for name in ("topk SAE", "topk transcoder")}
    rows, got = neuronpedia_rows(storyworld_export(dictionaries, [SITE, TC_IN, TC_OUT], work), work)
    versions.update(got)
    return rows


def _saelens_rows(made: dict, acts: dict, xfile: dict, work: Path, versions: dict) -> list[dict]:
    from monosemantic.dictionaries.io import load_dictionary

    tasks = [{"peer": "saelens", "op": "load", "id": name, "path": str(folder), "x": xfile[site],
              "out": str(work / f"sl-{i}.safetensors"), "plugin": str(PLUGIN)}
             for i, (name, (_, folder, site, _o)) in enumerate(made.items())]  # fmt: skip
    for arch in ("topk", "jumprelu"):
        tasks.append({"peer": "saelens", "op": "write", "id": f"theirs {arch}", "architecture": arch, "k": 8,
                      "d_in": acts[SITE].shape[1], "d_sae": 4 * acts[SITE].shape[1], "path": str(work / f"theirs-{arch}"),
                      "x": xfile[SITE], "out": str(work / f"sl-theirs-{arch}.safetensors"), "plugin": str(PLUGIN)})  # fmt: skip
    got, results = _run_peer("saelens", tasks, work)
    versions.update(got)
    rows = []
    for t in tasks:
        r = results[t["id"]]
        if t["op"] == "load":
            dic, _, site, site_out = made[t["id"]]
            check = f"SAELens loads our {t['id']}"
            if not r["ok"]:
                rows.append(
                    {
                        "check": check,
                        "peer": "sae-lens",
                        "direction": "ours → SAE.load_from_disk",
                        "result": f"FAIL: {r['error']}",
                    }
                )
                continue
            peer = load_file(t["out"])
            row = _compare(check, "sae-lens", "ours → SAE.load_from_disk", _encode(dic, acts[site]),
                           (peer["f"], peer["y"]), acts[site_out])  # fmt: skip
            kept = r["hook_name"] == site and r["model_name"] == "storyworld" and r["context_size"] == 64
            row["metadata kept"] = (
                "yes" if kept else f"no ({r['hook_name']}, {r['model_name']}, {r['context_size']})"
            )
            row["result"] = row["result"] if kept else "FAIL"
            rows.append(row)
        else:
            check = f"we load SAELens's {t['architecture']} SAE"
            if not r["ok"]:
                rows.append(
                    {
                        "check": check,
                        "peer": "sae-lens",
                        "direction": "save_model → ours",
                        "result": f"FAIL: {r['error']}",
                    }
                )
                continue
            peer = load_file(t["out"])
            dic = load_dictionary(t["path"])
            rows.append(_compare(check, "sae-lens", "save_model → ours", _encode(dic, acts[SITE]),
                                 (peer["f"], peer["y"]), acts[SITE]))  # fmt: skip
    return rows


def _foreign_rows(acts: dict, xfile: dict, work: Path, versions: dict, d: int) -> list[dict]:
    from monosemantic.dictionaries.io import load_dictionary
    from monosemantic.utils.errors import MonosemanticError

    rows = []
    for peer, tasks, label in (
        ("sparsify", [{"peer": "sparsify", "id": "sparsify topk", "d_in": d, "d_sae": 4 * d, "k": 8,
                       "path": str(work / "sp" / SITE), "x": xfile[SITE], "out": str(work / "sp.safetensors")}], "eai-sparsify"),
        ("dictionary_learning", [
            {"peer": "dictionary_learning", "id": "AutoEncoderTopK", "architecture": "AutoEncoderTopK", "d_in": d,
             "d_sae": 4 * d, "k": 8, "path": str(work / "dl-topk"), "x": xfile[SITE], "out": str(work / "dl1.safetensors")},
            {"peer": "dictionary_learning", "id": "BatchTopKSAE", "architecture": "BatchTopKSAE", "d_in": d,
             "d_sae": 4 * d, "k": 8, "path": str(work / "dl-btk"), "x": xfile[SITE], "out": str(work / "dl2.safetensors")},
            {"peer": "dictionary_learning", "id": "AutoEncoderTopK without config.json", "architecture": "AutoEncoderTopK",
             "d_in": d, "d_sae": 4 * d, "k": 8, "config": False, "path": str(work / "dl-bare"), "x": xfile[SITE],
             "out": str(work / "dl3.safetensors")}], "dictionary-learning"),
    ):  # fmt: skip
        got, results = _run_peer(peer, tasks, work)
        versions.update(got)
        for t in tasks:
            r, check = results[t["id"]], f"we load {label}'s {t['id']}"
            if not r["ok"]:
                rows.append(
                    {
                        "check": check,
                        "peer": label,
                        "direction": "theirs → ours",
                        "result": f"FAIL: {r['error']}",
                    }
                )
                continue
            peer_out = load_file(t["out"])
            if t.get("config", True) is False:  # without config.json: refused, never guessed
                try:
                    load_dictionary(t["path"])
                    rows.append(
                        {
                            "check": check,
                            "peer": label,
                            "direction": "theirs → ours",
                            "result": "FAIL: guessed a class",
                        }
                    )
                except MonosemanticError as e:
                    rows.append({"check": check, "peer": label, "direction": "theirs → ours",
                                 "result": "pass (refused: " + str(e).split(";")[0][:60] + "…)"})  # fmt: skip
                continue
            dic = load_dictionary(t["path"])
            rows.append(_compare(check, label, "theirs → ours", _encode(dic, acts[SITE]), (peer_out["f"], peer_out["y"]),
                                 acts[SITE]))  # fmt: skip
    return rows


def _circuit_tracer_rows(made: dict, acts: dict, xfile: dict, work: Path, versions: dict) -> list[dict]:
    """Our per-layer transcoders written by `write_circuit_tracer`, read by circuit-tracer's loaders
    (ReLU: `layer_1.safetensors`; JumpReLU: Gemma Scope `layer_1/params.npz`)."""
    from monosemantic.dictionaries.circuit_tracer import write_circuit_tracer
    from monosemantic.dictionaries.io import load_dictionary

    rows, tasks, dics = [], [], {}
    for arch, loader in (("relu", "load_relu_transcoder"), ("jumprelu", "load_gemma_scope_transcoder")):
        folder = work / f"ct-{arch}"
        base = made[f"{arch} transcoder"][0]
        per_layer = []
        for layer in range(4):  # circuit-tracer takes a transcoder per layer 0..L-1; layer 1 is compared
            dic = load_dictionary(made[f"{arch} transcoder"][1])
            dic.cfg.hook_name, dic.cfg.hook_name_out = (
                f"blocks.{layer}.hook_mlp_in",
                f"blocks.{layer}.hook_mlp_out",
            )
            per_layer.append(dic)
        write_circuit_tracer(per_layer, folder)
        path = folder / ("layer_1.safetensors" if arch == "relu" else "layer_1/params.npz")
        tasks.append({"peer": "circuit_tracer", "id": arch, "loader": loader, "layer": 1, "path": str(path),
                      "x": xfile[TC_IN], "out": str(work / f"ct-{arch}.safetensors")})  # fmt: skip
        dics[arch] = base
    got, results = _run_peer("circuit_tracer", tasks, work)
    versions.update(got)
    for t in tasks:
        r, check = results[t["id"]], f"circuit-tracer {t['loader']} on our {t['id']} transcoder"
        if not r["ok"]:
            rows.append(
                {
                    "check": check,
                    "peer": "circuit-tracer",
                    "direction": "write_circuit_tracer → theirs",
                    "result": f"FAIL: {r['error']}",
                }
            )
            continue
        peer = load_file(t["out"])
        rows.append(_compare(check, "circuit-tracer", "write_circuit_tracer → theirs", _encode(dics[t["id"]], acts[TC_IN]),
                             (peer["f"], peer["y"]), acts[TC_OUT]))  # fmt: skip
    return rows


def _run_evals_rows(made: dict, model: Any, tokens: torch.Tensor, work: Path, versions: dict) -> list[dict]:
    """SAELens's run_evals on our TopK SAE vs our metrics, same tokens, SAELens's conventions."""
    from monosemantic.corpus.windows import special_token_ids
    from monosemantic.evaluation.metrics import ReconstructionMetrics
    from monosemantic.evaluation.spliced import SplicedEvaluator

    dic, folder, site, _ = made["topk SAE"]
    special = special_token_ids(model.tokenizer)
    keep = ~torch.isin(tokens, torch.tensor(special))
    save_file({"tokens": tokens.to(torch.int32).contiguous()}, str(work / "tokens.safetensors"))
    batch = 8
    got, results = _run_peer("saelens_evals", [{"peer": "saelens_evals", "id": "run_evals", "path": str(folder),
                                                "model": str(model.hf.name_or_path), "tokens": str(work / "tokens.safetensors"),
                                                "batch": batch, "special": special, "plugin": str(PLUGIN)}], work)  # fmt: skip
    versions.update(got)
    r = results["run_evals"]
    if not r["ok"]:
        return [
            {
                "check": "SAELens run_evals on our topk SAE",
                "peer": "sae-lens",
                "result": f"FAIL: {r['error']}",
            }
        ]
    m = ReconstructionMetrics(dic.d_sae, dic.d_out)
    with torch.inference_mode():
        x = model.run(tokens, capture=[site]).activations[site].float()
        f = dic.encode(x)
        m.update(x, dic.decode(f, x), f, keep)
    ours = m.compute()
    mean = x[keep].double().mean(0).float()
    ev = SplicedEvaluator(model, list(tokens.split(batch)), list(keep.split(batch)), convention="saelens")
    sp = ev.evaluate(dic, mean)
    theirs = {k: v for group in r["metrics"].values() if isinstance(group, dict) for k, v in group.items()}
    pairs = [("explained_variance", "explained_variance", 1 - ours["fvu"]), ("l0", "l0", ours["l0"]),
             ("l2_ratio", "l2_ratio", ours["l2_ratio"]), ("mse (per token)", "mse", ours["mse_per_token"]),
             ("CE with SAE", "ce_loss_with_sae", sp["ce_loss_spliced"]), ("CE clean", "ce_loss_without_sae", sp["ce_loss_clean"]),
             ("CE zero-ablated", "ce_loss_with_ablation", sp["ce_loss_zero_ablated"]),
             ("CE recovered (ce_loss_score)", "ce_loss_score", sp["ce_loss_recovered"]),
             ("KL with SAE", "kl_div_with_sae", sp["kl_spliced"])]  # fmt: skip
    rows = []
    for label, key, value in pairs:
        t = theirs.get(key)
        ok = isinstance(t, (int, float)) and abs(t - value) <= REL_TOL * max(abs(value), 1e-3)
        rows.append({"check": f"run_evals {label}", "peer": "sae-lens", "direction": "ours vs SAELens's run_evals",
                     "ours": f"{value:.6g}", "SAELens": "–" if t is None else f"{t:.6g}",
                     "result": "pass" if ok else "FAIL"})  # fmt: skip
    return rows


if __name__ == "__main__":
    print(run())
