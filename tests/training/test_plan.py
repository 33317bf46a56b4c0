"""`monosemantic plan`: memory, disk and FLOPs from config.json dims, before any weight is read.

The worked examples (README: llama-scope; the pythia-70m and gemma-2-2b configs) are checked
field by field against arithmetic written out by hand from the models' published config.json.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from monosemantic.cli import app
from monosemantic.config import load_config
from monosemantic.training.plan import KNOWN, Dims, plan, plan_lines
from monosemantic.utils.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
GiB = 2**30


def _cfg(name: str, tmp_path: Path, *extra: str):
    # harvest.out points at an empty folder: the source is then live, whatever the caller's cwd holds
    return load_config(REPO / "configs" / name, [f'harvest.out="{tmp_path / "none"}"', *extra])


def test_llama_3_1_8b_parameter_count() -> None:
    # 8,030,261,248 in the released checkpoint; the plan leaves out the 65 norm vectors (266k).
    assert abs(Dims(**KNOWN["meta-llama/Llama-3.1-8B"]).params - 8_030_261_248) < 300_000


def test_tied_and_untied_embeddings_cost_the_same_forward() -> None:
    """Tying changes what is stored (one vocab x d matrix less), never the matmuls a token costs."""
    untied = Dims(**{**KNOWN["google/gemma-2-2b"], "tied": False})
    tied = Dims(**KNOWN["google/gemma-2-2b"])
    assert untied.params - tied.params == 256_000 * 2304
    for blocks in (1, 13, 26):
        assert tied.forward_params(blocks) == untied.forward_params(blocks)
    # every block run: the unembedding matmul is counted for both
    assert tied.forward_params(26) == 26 * tied.block_params + 256_000 * 2304


def test_llama_scope_worked_example(tmp_path: Path) -> None:
    p = plan(_cfg("llama-scope.toml", tmp_path, "train.parallel=dictionaries"), world_size=8)
    # Llama-3.1-8B: d 4096, 32 heads of 128, 8 kv heads, ff 14336, vocab 128256, untied
    attn = 2 * 4096 * 32 * 128 + 2 * 4096 * 8 * 128  # 41,943,040
    block = attn + 3 * 4096 * 14336  # 218,103,808
    assert block == 218_103_808
    assert p.params == 32 * block + 2 * 128_256 * 4096 == 8_029_995_008
    forward = 2 * (32 * block + 128_256 * 4096)  # every block runs, then the unembedding
    assert p.harvest.flops_per_token == forward == 15_009_316_864
    # 32 TopK SAEs, d_sae 32768, k 50: encoder 2 d d_sae + sparse decoder/backward 6 k (d_in + d_out)
    sae = 2 * 4096 * 32768 + 6 * 50 * 8192
    t = p.train
    assert t.source == "live" and t.live
    assert t.dictionary_flops_per_token == 32 * sae == 8_668_577_792
    assert t.model_flops_per_token == forward
    # each rank trains 4 of the 32, and runs the model on all 800M tokens (same stream on every rank)
    assert t.per_rank == 4
    assert t.flops_per_rank == pytest.approx(800_000_000 * (32 * sae / 8 + forward), rel=1e-12)
    params = 4 * ((4096 + 4096) * 32768 + 32768 + 4096)
    assert t.dictionary_bytes == 4 * params and t.optimizer_bytes == 12 * params
    assert t.buffer_bytes == 65_536 * 2 * 4096 * 32  # bf16 rows of 32 sites: 16 GiB
    assert t.workspace_bytes == 4096 * 32768 * 4
    model = 2 * p.params + 8 * 1024 * (12 * 4096 + 32 * 1024) * 2  # bf16 weights + one forward batch
    assert t.model_bytes == model
    assert t.total_bytes == 16 * params + t.buffer_bytes + t.workspace_bytes + model
    assert round(t.total_bytes / GiB, 2) == 48.71  # the README's figure
    # the cache of all 32 sites: 800M tokens x (int32 token + 32 x 4096 bf16 values)
    assert p.harvest.cache_bytes == 800_000_000 * (4 + 2 * 32 * 4096)


def test_gemma_2_2b_worked_example(tmp_path: Path) -> None:
    p = plan(_cfg("gemma-2-2b.toml", tmp_path), world_size=1)
    # gemma-2-2b: d 2304, 8 heads of 256, 4 kv heads, ff 9216, vocab 256000, tied
    block = 2 * 2304 * 8 * 256 + 2 * 2304 * 4 * 256 + 3 * 2304 * 9216
    assert block == 77_856_768
    assert p.params == 26 * block + 256_000 * 2304 == 2_614_099_968
    # the SAE reads layer 12: blocks 0..12 run, no unembedding
    assert p.harvest.blocks == 13 and p.harvest.flops_per_token == 2 * 13 * block
    t = p.train
    assert t.source == "live" and t.model_flops_per_token == 2 * 13 * block
    # JumpReLU is dense: 6 d_sae (d_in + d_out)
    assert t.dictionary_flops_per_token == 6 * 16384 * (2304 + 2304)
    assert t.flops_per_rank == pytest.approx(100_000_000 * (6 * 16384 * 4608 + 2 * 13 * block), rel=1e-12)


def test_pythia_70m_worked_example(tmp_path: Path) -> None:
    p = plan(_cfg("pythia-70m.toml", tmp_path), world_size=1)
    # pythia-70m: d 512, 8 heads of 64, ff 2048 (not gated), vocab 50304, untied
    block = 4 * 512 * 512 + 2 * 512 * 2048
    assert p.params == 6 * block + 2 * 50_304 * 512 == 70_385_664
    assert p.harvest.flops_per_token == 2 * 4 * block  # layer 3: blocks 0..3
    t = p.train
    # TopK, expansion 32 -> d_sae 16384, k 32
    assert t.dictionary_flops_per_token == 2 * 512 * 16384 + 6 * 32 * 1024
    assert t.model_flops_per_token == 2 * 4 * block
    assert t.tokens == 20_000_000


def test_plan_reads_the_source_train_reads(tmp_path: Path) -> None:
    """A config whose train reads the harvest.out cache is planned as a cache source (no model
    on the training device, no forward FLOPs), as `train` would read it."""

    cache = tmp_path / "acts"
    cache.mkdir()
    (cache / "manifest.json").write_text("{}")
    cfg = load_config(REPO / "configs/pythia-70m.toml", [f'harvest.out="{cache}"'])
    t = plan(cfg).train
    assert t.source == "harvest cache" and t.source_path == str(cache)
    assert t.model_flops_per_token == 0 and t.model_bytes == 0
    assert t.buffer_bytes == 262_144 * 2 * 512  # float16, as harvested
    tensor = tmp_path / "x.safetensors"
    cfg = load_config(REPO / "configs/pythia-70m.toml", [f'data.activations="{tensor}"'])
    assert plan(cfg).train.source == "tensor file"
    live = plan(_cfg("pythia-70m.toml", tmp_path)).train
    assert live.source == "live" and live.total_bytes > t.total_bytes


def test_demo_plan_prints_every_stage() -> None:
    result = CliRunner().invoke(app, ["plan", str(REPO / "configs/demo.toml")])
    assert result.exit_code == 0, result.output
    for what in ("model weights", "cache on disk", "FLOPs per token", "gradients + Adam", "total per rank"):
        assert what in result.output


@pytest.mark.parametrize("n", ["0", "-3"])
def test_world_size_below_one_is_refused_in_one_line(n: str) -> None:
    result = CliRunner().invoke(app, ["plan", str(REPO / "configs/demo.toml"), "--world-size", n])
    assert result.exit_code == 2
    assert "world-size" in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="world-size"):
        plan(load_config(REPO / "configs/demo.toml", []), world_size=int(n))


def test_feature_shards_divide_dictionary_memory(tmp_path: Path) -> None:
    one = plan(_cfg("llama-scope.toml", tmp_path), world_size=1).train
    eight = plan(_cfg("llama-scope.toml", tmp_path, "train.parallel=features"), world_size=8).train
    assert one.dictionary_bytes == 32 * GiB * (1 + 36_864 / 268_435_456)
    assert eight.dictionary_bytes == one.dictionary_bytes / 8 and eight.shards == 8


def test_lines_format_the_fields(tmp_path: Path) -> None:
    p = plan(_cfg("llama-scope.toml", tmp_path, "train.parallel=dictionaries"), world_size=8)
    text = "\n".join(plan_lines(p))
    assert "15.01 GFLOP" in text and "8.67 GFLOP" in text and "48.71 GiB" in text and "live" in text
