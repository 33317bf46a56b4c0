"""A sweep trains N dictionaries from one stream; a killed run resumes bit-exactly."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import PlantedStream, make_config

from monosemantic.training.trainer import train

SWEEP = [
    {"architecture": "topk", "d_sae": 64, "k": 4},
    {"architecture": "topk", "d_sae": 64, "k": 8},
    {"architecture": "relu", "d_sae": 128, "l1_coefficient": 2.0},
    {"architecture": "jumprelu", "d_sae": 128, "name": "my-jump"},
]


class Killed(Exception):
    pass


class KillAfter(PlantedStream):
    """The same data, but the process 'dies' when batch `kill_at` is requested."""

    def __init__(self, kill_at: int, **kw) -> None:
        super().__init__(**kw)
        self.kill_at = kill_at

    def __next__(self):
        if self.index == self.kill_at:
            raise Killed(f"killed at batch {self.index}")
        return super().__next__()


def test_sweep_trains_every_dictionary_from_one_stream(tmp_path, capsys):
    stream = PlantedStream()
    cfg = make_config(tmp_path, dictionaries=SWEEP, tokens=256 * 20)
    outs = train(cfg, stream=stream)
    # the progress line sums the sweep up at the last logged step, naming the worst dictionaries
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("train:")][-1]
    assert "4 dicts at step 20: L0 " in line and "worst FVU" in line and "most dead" in line
    names = [p.name for p in outs]
    assert re.search(r"worst FVU [\d.]+ \((.+?)\)", line).group(1) in names
    assert [p.name for p in outs] == ["topk-k4-64", "topk-k8-64", "relu-l1c2.0-128", "my-jump"]
    assert stream.index == 20  # one pass over the data fed all four
    for out in outs:
        meta = json.loads((out / "cfg.json").read_text())
        assert meta["metadata"]["hook_name"] == "site"
        assert meta["metadata"]["training"]["steps"] == 20
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [10, 20]
        assert {"loss", "l0", "fvu", "dead_fraction", "lr", "tokens"} <= set(rows[-1])
    assert json.loads((outs[0] / "cfg.json").read_text())["k"] == 4
    assert json.loads((outs[1] / "cfg.json").read_text())["k"] == 8


def _weights(outs):
    return [load_file(str(p / "sae_weights.safetensors")) for p in outs]


@pytest.mark.parametrize("kill_at", [3, 13])  # before the first checkpoint, and between two
def test_killed_run_resumes_bit_exactly(tmp_path, kill_at):
    kw = {"dictionaries": SWEEP[:3], "tokens": 256 * 20, "checkpoint_every": 5, "init_tokens": 512}
    ref = train(make_config(tmp_path / "ref", **kw), stream=PlantedStream())
    cfg = make_config(tmp_path / "run", **kw)
    with pytest.raises(Killed):
        train(cfg, stream=KillAfter(kill_at))
    outs = train(cfg, stream=PlantedStream())
    for a, b in zip(_weights(ref), _weights(outs), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    for r, o in zip(ref, outs, strict=True):  # the log reads as if the run never stopped
        steps = [json.loads(line)["step"] for line in (o / "metrics.jsonl").read_text().splitlines()]
        assert steps == [10, 20]
        assert (
            json.loads((r / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
            == json.loads((o / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
        )


def test_finished_run_rerun_says_complete(tmp_path):
    cfg = make_config(tmp_path, dictionary={"architecture": "topk", "d_sae": 64, "k": 4}, tokens=256 * 4)
    first = train(cfg, stream=PlantedStream())
    stamp = (tmp_path / "sae_weights.safetensors").stat().st_mtime_ns
    stream = PlantedStream()
    again = train(cfg, stream=stream)
    assert again == first
    assert stream.index == 4  # restored to where the run ended, and not advanced
    assert (tmp_path / "sae_weights.safetensors").stat().st_mtime_ns == stamp  # nothing rewritten


def test_resume_with_different_config_is_refused(tmp_path):
    from monosemantic.utils.errors import ConfigError

    cfg = make_config(tmp_path, dictionary={"architecture": "topk", "d_sae": 64, "k": 4}, tokens=256 * 4)
    train(cfg, stream=PlantedStream())
    changed = make_config(tmp_path, dictionary={"architecture": "topk", "d_sae": 64, "k": 8}, tokens=256 * 4)
    with pytest.raises(ConfigError, match="different config"):
        train(changed, stream=PlantedStream())
