"""Training speed, ours vs SAELens, on the same activations: `python benchmarks/bench_train.py`.

Both sides train on one saved activation file (planted sparse features in d_in dimensions, so FVU
means something). SAELens runs in its own venv (`/tmp/saelens-venv`, or $SAELENS_PYTHON) through
`bench_train_saelens.py`; without it the table reports ours only. Throughput excludes the first
(warm-up) step and data loading; the machine is shared, so the load average is reported too.
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
from safetensors.torch import save_file

from monosemantic.config import Config
from monosemantic.training.trainer import Trainer

TITLE = "Training throughput: TopK / ReLU / JumpReLU, ours vs SAELens (same activations)"
HERE = Path(__file__).parent
SAELENS_PYTHON = Path(os.environ.get("SAELENS_PYTHON", "/tmp/saelens-venv/bin/python"))


def planted_activations(n: int, d_in: int, n_features: int, seed: int = 0) -> torch.Tensor:
    """x = sparse codes @ random unit directions + a little noise (LM-like superposition)."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n_features, d_in, generator=g), dim=1)
    rows = []
    for start in range(0, n, 4096):
        m = min(4096, n - start)
        idx = torch.randint(0, n_features, (m, 24), generator=g)
        vals = torch.rand(m, 24, generator=g) * 2
        x = torch.nn.functional.embedding_bag(idx, directions, per_sample_weights=vals, mode="sum")
        rows.append(x + 0.05 * torch.randn(m, d_in, generator=g))
    return torch.cat(rows)


def ours(path: Path, arch: str, steps: int, batch: int, d_sae: int, k: int, dtype: str) -> dict:
    dictionary: dict = {"architecture": arch, "d_sae": d_sae}
    if arch in ("topk", "batchtopk"):
        dictionary["k"] = k
    with tempfile.TemporaryDirectory() as out:
        cfg = Config.model_validate(
            {
                "data": {"activations": str(path)},
                "dictionary": dictionary,
                "train": {"tokens": batch * (steps + 1), "batch_size": batch, "lr": 4e-4, "seed": 0,
                          "out": out, "device": "cpu", "dtype": dtype, "lr_decay": "none",
                          "log_every": 10**9, "buffer_tokens": 4 * batch, "init_tokens": batch},
            }
        )  # fmt: skip
        trainer = Trainer(cfg)
        trainer.initialize()
        batches = [trainer.next_batch() for _ in range(steps + 1)]
        trainer.train_step(batches[0])  # warm-up
        t0 = time.perf_counter()
        for b in batches[1:]:
            trainer.train_step(b)
        elapsed = time.perf_counter() - t0
        slot = trainer.slots[0]
        with torch.no_grad():
            x = batches[-1][slot.hook_name] * trainer.scales[slot.hook_name]
            x_hat = slot.dic(x)
            fvu = float((x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return {"tok_s": batch * steps / elapsed, "fvu": fvu}


def saelens(path: Path, arch: str, steps: int, batch: int, d_sae: int, k: int, sparse: bool) -> dict | None:
    if not SAELENS_PYTHON.exists():
        return None
    cmd = [str(SAELENS_PYTHON), str(HERE / "bench_train_saelens.py"), str(path), arch, str(steps),
           str(batch), str(d_sae), str(k), "1" if sparse else "0"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        return {"tok_s": float("nan"), "fvu": float("nan"), "error": res.stderr.strip().splitlines()[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _round(v: float, nd: int | None = None) -> float | None:
    return None if v != v else round(v, nd)  # NaN -> None


def run(
    d_in: int = 512,
    d_sae: int = 16384,
    batch: int = 4096,
    k: int = 32,
    steps: int = 10,
    quality_steps: int = 0,
) -> list[dict]:
    """One row per (implementation, architecture, option): tokens/s, FVU after `steps` steps, load."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acts.safetensors"
        n = batch * (max(steps, quality_steps) + 2)
        save_file({"activations": planted_activations(n, d_in, d_sae)}, str(path))

        def add(impl: str, arch: str, option: str, result: dict | None) -> None:
            if result is None:
                rows.append({"impl": impl, "arch": arch, "option": option, "tok_s": None,
                             "fvu": None, "note": f"SAELens venv missing ({SAELENS_PYTHON})"})  # fmt: skip
                return
            rows.append({"impl": impl, "arch": arch, "option": option, "tok_s": _round(result["tok_s"]),
                         "fvu": _round(result["fvu"], 4), "load": round(os.getloadavg()[0], 1),
                         "note": result.get("error", result.get("version", ""))})  # fmt: skip

        add("monosemantic", "topk", "fp32", ours(path, "topk", steps, batch, d_sae, k, "float32"))
        add("monosemantic", "topk", "bf16", ours(path, "topk", steps, batch, d_sae, k, "bfloat16"))
        add("saelens", "topk", "sparse decoder", saelens(path, "topk", steps, batch, d_sae, k, True))
        add("saelens", "topk", "dense", saelens(path, "topk", steps, batch, d_sae, k, False))
        for arch in ("relu", "jumprelu"):
            add("monosemantic", arch, "fp32", ours(path, arch, steps, batch, d_sae, k, "float32"))
            add("saelens", arch, "fp32", saelens(path, arch, steps, batch, d_sae, k, False))
        if quality_steps:
            for dtype in ("float32", "bfloat16"):
                r = ours(path, "topk", quality_steps, batch, d_sae, k, dtype)
                add("monosemantic", "topk", f"{dtype} quality ({quality_steps} steps)", r)
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| implementation | arch | option | tok/s | FVU | load avg | note |\n|---|---|---|---:|---:|---:|---|\n"
    body = "".join(
        f"| {r['impl']} | {r['arch']} | {r['option']} | {r['tok_s'] if r['tok_s'] is not None else '-'} | "
        f"{r['fvu'] if r['fvu'] is not None else '-'} | {r.get('load', '-')} | {r['note']} |\n"
        for r in rows
    )
    return head + body


if __name__ == "__main__":
    args = dict(a.split("=") for a in sys.argv[1:])
    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}", file=sys.stderr)
    print(markdown(run(**{k: int(v) for k, v in args.items()})))
