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
from monosemantic.lm.known_models import KNOWN, known_config
from monosemantic.lm.params import count_parameters
from monosemantic.training.plan import dims_of, plan, plan_lines
from monosemantic.utils.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
GiB = 2**30


def _cfg(name: str, tmp_path: Path, *extra: str):
    # harvest.out points at an empty folder: the source is then live, whatever the caller's cwd holds
    return load_config(REPO / "configs" / name, [f'harvest.out="{tmp_path / "none"}"', *extra])


def test_llama_3_1_8b_parameter_count() -> None:
    # 8,030,261,248 in the released checkpoint, norms and the untied head included
    assert count_parameters(known_config("meta-llama/Llama-3.1-8B")).total == 8_030_261_248


def test_families_plan_counts_every_expert_qwen3_30b_a3b() -> None:
    """Qwen3-30B-A3B by hand: 48 blocks of attention (q 2048x4096, k and v 2048x512, o 4096x2048, q/k
    norms 128 each), two norms, a 2048x128 router and 128 experts of 3 x 2048 x 768; untied
    151,936 x 2048 embedding and head; a final norm. A token runs 8 of the 128 experts."""
    d, layers, vocab, experts, top_k, d_exp = 2048, 48, 151_936, 128, 8, 768
    attn = d * 4096 + 2 * d * 512 + 4096 * d + 2 * 128
    expert = 3 * d * d_exp
    block_dense = attn + 2 * d + d * experts
    total = layers * (block_dense + experts * expert) + 2 * vocab * d + d
    active = layers * (block_dense + top_k * expert) + 2 * vocab * d + d
    assert (total, active) == (30_532_122_624, 3_353_032_704)  # 30.5 B and 3.3 B, as published
    count = count_parameters(known_config("Qwen/Qwen3-30B-A3B"))
    assert (count.total, count.active, count.experts) == (total, active, layers * experts * expert)
    result = CliRunner().invoke(app, ["plan", str(REPO / "configs/qwen3-30b-a3b.toml")])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert "30.532 B parameters, 3.353 B used per token" in first
    weights = next(line for line in result.output.splitlines() if "model weights" in line)
    assert f"{total * 2 / 2**30:,.2f} GiB" in weights  # every expert is loaded (bfloat16)


@pytest.mark.parametrize("config", ["gemma-3-1b", "qwen3-0.6b", "olmo-2-1b", "qwen3-30b-a3b"])
def test_families_example_configs_plan_without_the_hub(config) -> None:
    result = CliRunner().invoke(app, ["plan", str(REPO / f"configs/{config}.toml")])
    assert result.exit_code == 0, result.output
    assert "total per rank" in result.output


@pytest.mark.parametrize("name", list(KNOWN))
def test_tied_and_untied_embeddings_cost_the_same_forward(name: str) -> None:
    """For every family: tying changes what is stored (one vocab x d matrix less), never the
    matmuls a token costs (the unembedding counts when every block runs, tied or not)."""
    both = {}
    for tied in (True, False):
        c = known_config(name)
        c = getattr(c, "text_config", None) or c
        c.tie_word_embeddings = tied
        both[tied] = dims_of(c)
    tied, untied = both[True], both[False]
    v, d, n = tied.vocab, tied.d, tied.layers
    assert untied.params - tied.params == v * d
    for blocks in (1, n // 2, n):
        assert tied.forward_params(blocks) == untied.forward_params(blocks)
    assert tied.forward_params(n) == tied.count.blocks_up_to(n, active=True) + v * d


def test_llama_scope_worked_example(tmp_path: Path) -> None:
    p = plan(_cfg("llama-scope.toml", tmp_path, "train.parallel=dictionaries"), world_size=8)
    # Llama-3.1-8B: d 4096, 32 heads of 128, 8 kv heads, ff 14336, vocab 128256, untied; two
    # RMSNorm weights per block and a final one, no biases
    attn = 2 * 4096 * 32 * 128 + 2 * 4096 * 8 * 128  # 41,943,040
    block = attn + 3 * 4096 * 14336 + 2 * 4096
    assert block == 218_112_000
    assert p.params == 32 * block + 2 * 128_256 * 4096 + 4096 == 8_030_261_248
    forward = 2 * (32 * block + 128_256 * 4096)  # every block runs, then the unembedding
    assert p.harvest.flops_per_token == forward == 15_009_841_152
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
    # gemma-2-2b: d 2304, 8 heads of 256, 4 kv heads, ff 9216, vocab 256000, tied; four RMSNorm
    # weights per block and a final one
    block = 2 * 2304 * 8 * 256 + 2 * 2304 * 4 * 256 + 3 * 2304 * 9216 + 4 * 2304
    assert block == 77_865_984
    assert p.params == 26 * block + 256_000 * 2304 + 2304 == 2_614_341_888
    # the SAE reads layer 12: blocks 0..12 run, no unembedding
    assert p.harvest.blocks == 13 and p.harvest.flops_per_token == 2 * 13 * block
    t = p.train
    assert t.source == "live" and t.model_flops_per_token == 2 * 13 * block
    # JumpReLU is dense: 6 d_sae (d_in + d_out)
    assert t.dictionary_flops_per_token == 6 * 16384 * (2304 + 2304)
    assert t.flops_per_rank == pytest.approx(100_000_000 * (6 * 16384 * 4608 + 2 * 13 * block), rel=1e-12)


def test_pythia_70m_worked_example(tmp_path: Path) -> None:
    p = plan(_cfg("pythia-70m.toml", tmp_path), world_size=1)
    # pythia-70m: d 512, 8 heads of 64, ff 2048 (not gated), vocab 50304, untied; every linear
    # has a bias, two LayerNorms (weight and bias) per block and a final one
    block = (4 * 512 * 512 + 4 * 512) + (2 * 512 * 2048 + 2048 + 512) + 2 * 2 * 512
    assert p.params == 6 * block + 2 * 50_304 * 512 + 2 * 512 == 70_426_624
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
    assert "world_size" in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="world_size must be a whole number"):
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


def test_world_size_from_config_or_command_line_alike() -> None:
    config = str(REPO / "configs/llama-scope.toml")
    by_flag = CliRunner().invoke(app, ["plan", config, "--world-size", "8"])
    by_config = CliRunner().invoke(app, ["plan", config, "--set", "plan.world_size=8"])
    default = CliRunner().invoke(app, ["plan", config])
    assert by_flag.exit_code == by_config.exit_code == default.exit_code == 0, by_flag.output
    assert by_flag.output == by_config.output != default.output
    assert "world size 8" in by_flag.output and "world size 1" in default.output
    bad = CliRunner().invoke(app, ["plan", config, "--set", "plan.world_size=0"])
    assert bad.exit_code == 2 and "plan.world_size" in bad.output
