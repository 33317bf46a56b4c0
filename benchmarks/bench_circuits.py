"""Attribution time and peak memory against prompt length (32..2048 tokens).

Each length runs in a fresh subprocess so its peak RSS (`resource.getrusage` max RSS, minus the
RSS after loading the model and dictionaries) is its own. Transcoders on every MLP: the demo's
trained ones under runs/demo/dictionaries when present, else random TopK transcoders of the same
shape (attribution cost does not depend on training). The model is the shipped storyworld LM up
to its 128-token context; beyond that the same weights with the 128 learned position embeddings
tiled to 2048 (`long_context_copy`). `growth` is the log-log slope from the previous length
(1 = linear, 2 = quadratic).
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

TITLE = "Circuits: attribution time and memory vs prompt length"
LENGTHS = (32, 64, 128, 256, 512, 1024, 2048)
ROOT = Path(__file__).resolve().parents[1]


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Linux lets a process reset its RSS high-water mark (VmHWM), so setup's own peak is not counted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_mb() -> float:
    """Peak RSS since the last reset (Linux), else the lifetime peak from getrusage."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def long_context_copy(n_positions: int) -> Path:
    """The shipped LM with its 128 learned position embeddings repeated up to `n_positions`, saved
    to a temporary folder: the same weights and activation statistics (so the demo's transcoders
    fire as usual) on prompts longer than its context. Position p reads embedding p mod 128."""
    import shutil
    import tempfile

    from transformers import GPT2Config, GPT2LMHeadModel

    from monosemantic.lm.shipped import SHIPPED_DIR

    short = GPT2LMHeadModel.from_pretrained(SHIPPED_DIR, dtype=torch.float32)
    cfg = GPT2Config.from_pretrained(SHIPPED_DIR)
    cfg.n_positions = n_positions
    long = GPT2LMHeadModel(cfg).to(torch.float32)
    state = short.state_dict()
    wpe = state.pop("transformer.wpe.weight")
    state["transformer.wpe.weight"] = wpe.repeat(-(-n_positions // len(wpe)), 1)[:n_positions]
    long.load_state_dict(state)
    out = Path(tempfile.mkdtemp()) / "storyworld-long"
    long.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SHIPPED_DIR / f, out / f)
    return out


def _setup(n: int):
    import torch

    from monosemantic.circuits.replacement import ReplacementModel
    from monosemantic.config import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary
    from monosemantic.dictionaries.io import find_dictionaries, load_dictionary
    from monosemantic.lm.model import load_model

    torch.set_num_threads(2)
    if n <= 128:
        model, label = load_model("storyworld"), "shipped storyworld LM"
    else:
        model = load_model(str(long_context_copy(max(LENGTHS))))
        label = f"shipped storyworld LM, its 128 positions tiled to {max(LENGTHS)}"
    trained = ROOT / "runs" / "demo" / "dictionaries"
    dics = []
    if trained.is_dir():
        dics = [load_dictionary(p) for p in find_dictionaries(trained)]
        dics = [
            d for d in dics if d.cfg.is_transcoder and d.cfg.architecture != "neurons"
        ]  # transcoder-L0..3
    if len(dics) == model.n_layers:
        label += ", trained demo transcoders"
    else:
        torch.manual_seed(0)
        d = model.d_model
        dics = [
            build_dictionary(
                DictionaryConfig(
                    architecture="topk",
                    expansion=8,
                    k=16,
                    site=f"blocks.{L}.mlp.hook_in",
                    site_out=f"blocks.{L}.hook_mlp_out",
                ),
                d,
                d,
            )
            for L in range(model.n_layers)
        ]
        label += ", random TopK transcoders (x8, k=16)"
    return ReplacementModel(model, dics), label


def story_ids(tokenizer, n: int):
    """The first n tokens of storyworld's stories (seed 0), joined by spaces."""
    import torch

    from monosemantic.corpus.storyworld import generate_stories

    ids: list[int] = []
    for story in generate_stories(0):
        ids += tokenizer(story.text + " ", add_special_tokens=False).input_ids
        if len(ids) >= n:
            break
    return torch.tensor(ids[:n])


def _prompt_ids(rm, n: int):
    return story_ids(rm.tokenizer, n)


def one(n: int, max_feature_nodes: int, batch_size: int) -> dict:
    from monosemantic.circuits.attribution import attribute

    rm, label = _setup(n)
    ids = _prompt_ids(rm, n)
    _reset_peak()
    base = _status_mb("VmRSS") or _rss_mb()
    t0 = time.perf_counter()
    g = attribute(
        rm, prompt=ids, max_feature_nodes=max_feature_nodes, batch_size=batch_size, show_progress=False
    )
    seconds = time.perf_counter() - t0
    return {
        "tokens": n,
        "active features": g.total_active_features,
        "rows": g.n_features + g.n_logits,
        "seconds": round(seconds, 2),
        "peak MB over model": round(_rss_mb() - base, 1),
        "model": label,
    }


def run(lengths=LENGTHS, max_feature_nodes: int = 1024, batch_size: int = 64) -> list[dict]:
    rows = []
    for n in lengths:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_circuits",
            "--one",
            str(n),
            str(max_feature_nodes),
            str(batch_size),
        ]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for prev, row in zip(rows, rows[1:], strict=False):
        r = math.log(prev["tokens"] / row["tokens"])
        row["time growth"] = round(math.log(prev["seconds"] / max(row["seconds"], 1e-9)) / r, 2)
        if prev["peak MB over model"] > 0 and row["peak MB over model"] > 0:
            row["memory growth"] = round(
                math.log(prev["peak MB over model"] / row["peak MB over model"]) / r, 2
            )
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(one(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
    else:
        lengths = tuple(int(x) for x in sys.argv[1:]) or LENGTHS
        for row in run(lengths):
            print(row)
