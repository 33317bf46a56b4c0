"""Launch `python -m monosemantic` under torchrun with 2 CPU processes (gloo), as a user would."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc-per-node N -m monosemantic ARGS`; fail with its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    done = subprocess.run(
        [*cmd, "-m", "monosemantic", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it. torchrun starts each rank in a session of its
    own, so killing the launcher's process group alone leaves the ranks running (and writing)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    for child in children:
        kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def decoder_agreement(a: Path, b: Path) -> float:
    """Fraction of latents whose decoder rows in checkpoints a and b have cosine > 0.999."""
    wa, wb = load_file(str(a / "sae_weights.safetensors")), load_file(str(b / "sae_weights.safetensors"))
    cos = torch.nn.functional.cosine_similarity(wa["W_dec"], wb["W_dec"], dim=1)
    return float((cos > 0.999).float().mean())


def train_config(folder: Path, acts: Path, body: str) -> Path:
    path = folder / "config.toml"
    path.write_text(
        f'device = "cpu"\n[data]\nactivations = "{acts}"\n{body}\n'
        "[train]\ntokens = 8192\nbatch_size = 512\nlr = 1e-3\nbuffer_tokens = 4096\ninit_tokens = 1024\n"
        f'dead_after_tokens = 2048\nlog_every = 4\ncheckpoint_every = 8\nout = "{folder}/single"\n'
    )
    return path


def assert_close(a: object, b: object, rel: float, floor: float, path: str = "") -> None:
    """Equal structure and values; floats to `rel` relative to max(|a|, floor) (float64 sums in
    another order), NaN equal to NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            assert_close(a[k], b[k], rel, floor, f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, rel, floor, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= rel * max(abs(a), floor), (path, a, b)
    else:
        assert a == b, (path, a, b)
