"""`monosemantic demo` runs from an installed package: its config ships as package data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import monosemantic
from monosemantic.config import load_config
from monosemantic.demo import demo_config

REPO = Path(__file__).resolve().parents[1]


def test_packaged_demo_config_is_the_repositorys():
    packaged = demo_config()
    assert packaged.is_file(), packaged
    assert packaged.read_bytes() == (REPO / "configs" / "demo.toml").read_bytes()
    assert load_config(packaged).model.name == "storyworld"
    # the wheel's package data names it (a glob that missed it would ship a demo without a config)
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    rel = packaged.relative_to(Path(monosemantic.__file__).parent)
    assert any(rel.match(pattern) for pattern in data["monosemantic"]), data


TINY = [
    "data.max_tokens=4096",
    "data.context_size=32",
    'dictionaries=[{name = "t", architecture = "topk", k = 4, d_sae = 64, site = "blocks.1.hook_resid_post"}]',
    'sites.names=["blocks.1.hook_resid_post"]',
    "train.tokens=4096",
    "train.batch_size=512",
    "train.buffer_tokens=2048",
    "train.init_tokens=1024",
    "evaluate.max_sequences=16",
    "device=cpu",
]


@pytest.mark.slow
def test_demo_runs_from_a_built_wheel(tmp_path: Path):
    """A real `pip wheel`, installed into a fresh venv that sees the dependencies of this one but
    not its editable checkout, run in an empty folder: no `configs/` anywhere near."""
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = wheels.glob("monosemantic-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (site / "deps.pth").write_text(f"{deps}\n")  # a plain path: the editable install's .pth is not read
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import monosemantic; print(monosemantic.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert str(site) in where.stdout, where.stdout  # the wheel's copy, not the checkout
    args = [a for s in TINY for a in ("--set", s)]
    proc = subprocess.run([str(venv / "bin" / "monosemantic"), "demo", *args],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (work / "runs" / "demo" / "features.db").is_file()
    assert (work / "runs" / "demo" / "dashboard" / "index.html").is_file()
    # the closing lines name the packaged config in the next commands (on the console: stderr)
    assert f"monosemantic serve {site / 'monosemantic' / 'configs' / 'demo.toml'}" in proc.stderr
