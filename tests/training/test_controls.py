"""Target-L0 controller, schedules, initialisation, naming, and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from train_helpers import PlantedStream, make_config

from monosemantic.training.init import geometric_median, norm_scale
from monosemantic.training.naming import dictionary_name
from monosemantic.training.schedules import lr_factor, sparsity_factor
from monosemantic.training.trainer import Trainer, train
from monosemantic.utils.errors import ConfigError, DataError


def test_target_l0_controller_reaches_requested_l0(tmp_path):
    d = {"architecture": "relu", "d_sae": 128, "target_l0": 6.0}
    cfg = make_config(tmp_path, dictionary=d, tokens=256 * 600)
    (out,) = train(cfg, stream=PlantedStream())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    l0 = sum(r["l0"] for r in rows[-5:]) / 5
    assert abs(l0 - 6.0) / 6.0 < 0.25, l0
    assert rows[-1]["coefficient"] != rows[0]["coefficient"]  # the controller moved it


def test_lr_schedule_warms_up_and_decays():
    f = [lr_factor(s, 100, 10, "linear", 0.8) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[50] == 1.0
    assert f[80] == 1.0 and f[90] == pytest.approx(0.5) and f[99] < 0.06
    c = [lr_factor(s, 100, 0, "cosine", 0.5) for s in range(100)]
    assert (
        c[50] == 1.0 and c[75] == pytest.approx(0.5) and all(a >= b for a, b in zip(c, c[1:], strict=False))
    )
    assert sparsity_factor(0, 10) == pytest.approx(0.1) and sparsity_factor(10, 10) == 1.0


def test_geometric_median_ignores_outliers_and_norm_scale():
    x = torch.randn(1000, 8) * 0.1 + 3.0
    x[:100] += 1000.0  # 10% wild outliers drag the mean, not the median
    med = geometric_median(x)
    assert (med - 3.0).abs().max() < 0.1
    assert (x.mean(0) - 3.0).abs().max() > 50
    y = torch.randn(500, 16) * 7
    s = norm_scale(y)
    assert (s * y).norm(dim=1).mean() == pytest.approx(math.sqrt(16), rel=1e-4)


def test_sweep_names_follow_what_differs():
    from monosemantic.config.dictionary import DictionaryConfig

    a = DictionaryConfig(architecture="topk", k=32, d_sae=16384)
    b = DictionaryConfig(architecture="jumprelu", d_sae=4096)
    c = DictionaryConfig(
        architecture="topk", k=16, site="blocks.0.mlp.hook_in", site_out="blocks.0.hook_mlp_out"
    )
    assert dictionary_name(a, [a, b], 16384, None) == "topk-k32-16k"
    assert dictionary_name(b, [a, b], 4096, 1.0) == "jumprelu-l0c1.0-4k"
    assert dictionary_name(c, [c], 2048, None) == "tc-blocks.0.mlp.hook_in-topk-k16-2k"


def test_k_larger_than_d_sae_is_a_config_error(tmp_path):
    cfg = make_config(tmp_path, dictionary={"architecture": "topk", "expansion": 1, "k": 40})
    with pytest.raises(ConfigError, match="k=40 is larger than d_sae=32"):
        train(cfg, stream=PlantedStream())


class WrongWidth(PlantedStream):
    def __next__(self):
        batch = super().__next__()
        return {"site": batch["site"][:, :30]} if self.index > 2 else batch


def test_width_mismatch_mid_stream_names_the_batch(tmp_path):
    cfg = make_config(tmp_path, dictionary={"architecture": "topk", "d_sae": 64, "k": 4}, tokens=256 * 10)
    with pytest.raises(DataError, match="batch .* has width 30 but the source declared 32"):
        train(cfg, stream=WrongWidth())


def test_resume_on_activations_of_another_width_is_refused(tmp_path):
    cfg = make_config(tmp_path, dictionary={"architecture": "topk", "d_sae": 64, "k": 4}, tokens=256 * 4)
    train(cfg, stream=PlantedStream())
    with pytest.raises(ConfigError, match="width"):
        train(cfg, stream=PlantedStream(d=16))


def test_nan_in_activation_file_names_the_batch(tmp_path):
    from safetensors.torch import save_file

    x = torch.randn(4096, 16)
    x[2000, 3] = float("nan")
    save_file({"activations": x}, str(tmp_path / "acts.safetensors"))
    cfg = make_config(tmp_path / "out", dictionary={"architecture": "topk", "d_sae": 64, "k": 4}, tokens=4096)
    cfg.data.activations = tmp_path / "acts.safetensors"
    cfg.train.buffer_tokens = 1024
    with pytest.raises(DataError, match="NaN or inf.*batch"):
        train(cfg)


def test_resampling_revives_dead_latents(tmp_path):
    # A heavy L1 penalty kills most latents; resampling re-points them at badly reconstructed inputs.
    d = {"architecture": "relu", "d_sae": 128, "l1_coefficient": 30.0}
    common = {"tokens": 256 * 120, "dead_after_tokens": 256 * 20, "lr_decay_start": 1.0}
    (plain,) = train(
        make_config(tmp_path / "none", dictionary=d, dead_latents="none", **common), stream=PlantedStream()
    )
    (res,) = train(
        make_config(tmp_path / "res", dictionary=d, dead_latents="resample", **common), stream=PlantedStream()
    )
    rows = [json.loads(line) for line in (res / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["resampled"] for r in rows) > 0
    base = [json.loads(line) for line in (plain / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["fvu"] < base[-1]["fvu"]


def test_bf16_compute_trains(tmp_path):
    d = {"architecture": "topk", "d_sae": 128, "k": 4}
    (out,) = train(
        make_config(tmp_path, dictionary=d, tokens=256 * 100, dtype="bfloat16"), stream=PlantedStream()
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["fvu"] < 0.6 and rows[-1]["fvu"] < rows[0]["fvu"]


def test_wandb_without_the_package_is_a_clear_error(tmp_path):
    pytest.importorskip("torch")
    try:
        import wandb  # noqa: F401
    except ImportError:
        d = {"architecture": "topk", "d_sae": 64, "k": 4}
        with pytest.raises(ConfigError, match="pip install wandb"):
            train(make_config(tmp_path, dictionary=d, tokens=256 * 2, wandb=True), stream=PlantedStream())
    else:
        pytest.skip("wandb is installed")


def test_jumprelu_density_init_sets_the_starting_l0(tmp_path):
    """A fixed initial threshold starts a wide JumpReLU dense; `jumprelu_init_density` places each
    threshold at its latent's quantile on the first batches, so every latent fires on that
    fraction of them and L0 starts near density x d_sae."""
    from monosemantic.config import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary

    stream = PlantedStream(batch_size=1024)
    x = next(stream)["site"]
    x = x * (x.shape[1] ** 0.5 / x.norm(dim=1).mean())  # the trainer's normalisation
    dic = build_dictionary(
        DictionaryConfig(architecture="jumprelu", d_sae=512, jumprelu_init_density=0.02), 32
    )
    with torch.no_grad():
        dense_rate = (dic.encode(x) > 0).float().mean(0)
        dic.initialize_from_data(x)
        rate = (dic.encode(x) > 0).float().mean(0)
    assert float(dense_rate.mean()) > 0.1  # the fixed threshold: ~1 in 6 latents on per token
    positive = (dic.pre_acts(x) > 0).float().mean(0) > 0.02
    assert torch.allclose(rate[positive], torch.full_like(rate[positive], 0.02), atol=2 / 1024)
    assert int(positive.sum()) > 400

    d = {"architecture": "jumprelu", "d_sae": 1024, "l0_coefficient": 0.1}
    rows = {}
    for name, extra in (("fixed", {}), ("density", {"jumprelu_init_density": 0.01})):
        (out,) = train(
            make_config(tmp_path / name, dictionary={**d, **extra}, tokens=256 * 10), stream=PlantedStream()
        )
        rows[name] = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert rows["density"]["l0"] < 30 < 80 < rows["fixed"]["l0"], rows


def test_a_huge_learning_rate_fails_as_divergence_and_saves_no_final_dictionary(tmp_path):
    """lr = 1e6 gives a finite but astronomical loss (5.6e29 seen): an error, not a saved garbage checkpoint."""
    from monosemantic.utils.errors import MonosemanticError

    cfg = make_config(tmp_path, dictionary={"architecture": "relu", "d_sae": 64}, tokens=256 * 20, lr=1e6)
    with pytest.raises(MonosemanticError, match="diverged at step 10 .*FVU"):
        train(cfg, stream=PlantedStream())
    cfg_json = tmp_path / "cfg.json"
    assert not cfg_json.exists() or not json.loads(cfg_json.read_text())["metadata"]["training"]["complete"]


def test_a_batch_of_one_row_trains_without_a_false_divergence(tmp_path):
    """One row has no variance: its FVU is astronomical while the loss is fine (the fuzzer found
    train.batch_size = 1 reported as divergence at the first log row)."""
    cfg = make_config(tmp_path, dictionary={"architecture": "topk", "d_sae": 32, "k": 4}, tokens=40,
                      batch_size=1, init_tokens=16, buffer_tokens=64)  # fmt: skip
    (out,) = train(cfg, stream=PlantedStream())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 40 and all(math.isfinite(r["loss"]) for r in rows)


def test_input_scale_defaults_to_norm_2_for_topk_and_sqrt_d_otherwise(tmp_path):
    """Unset, TopK/BatchTopK-only runs scale inputs to mean norm 2; an L1 dictionary in the run,
    or an explicit `normalize_activations = true`, to sqrt(d_in); false keeps them raw."""
    topk = {"architecture": "topk", "d_sae": 32, "k": 4}
    relu = {"architecture": "relu", "d_sae": 32}
    cases = [
        ([topk], None, 2.0),
        ([topk, relu], None, "sqrt(d)"),
        ([topk], True, "sqrt(d)"),
        ([relu], False, "raw"),
    ]
    for i, (dicts, flag, norm) in enumerate(cases):
        extra = {} if flag is None else {"normalize_activations": flag}
        cfg = make_config(tmp_path / str(i), dictionaries=dicts, tokens=256 * 2, **extra)
        trainer = Trainer(cfg, stream=PlantedStream())
        trainer.initialize()
        assert trainer.input_norm() == norm
        (scale,) = trainer.scales.values()
        x = torch.cat([b["site"] for b in trainer.pending]).float()
        scaled_norm = float((x * scale).norm(dim=-1).mean())
        expected = {"raw": float(x.norm(dim=-1).mean()), "sqrt(d)": math.sqrt(x.shape[-1])}.get(norm, norm)
        assert scaled_norm == pytest.approx(expected, rel=1e-4), (dicts, flag, scale)


def test_lr_decay_defaults_off_only_for_topk_and_batchtopk(tmp_path):
    """Unset, runs of one-site TopK/BatchTopK only train at a constant LR (decay cost planted toy
    directions); any other dictionary in the run, or an explicit value, gives the decay."""
    topk = {"architecture": "topk", "d_sae": 32, "k": 4}
    batchtopk = {"architecture": "batchtopk", "d_sae": 32, "k": 4}
    relu = {"architecture": "relu", "d_sae": 32}
    matryoshka = {"architecture": "matryoshka", "d_sae": 32, "k": 4}
    cases = [([topk], None, "none"), ([batchtopk, topk], None, "none"), ([topk, relu], None, "linear"),
             ([matryoshka], None, "linear"), ([topk], "cosine", "cosine")]  # fmt: skip
    for i, (dicts, flag, decay) in enumerate(cases):
        cfg = make_config(tmp_path / str(i), dictionaries=dicts, tokens=256 * 2, lr_decay=flag)
        assert Trainer(cfg, stream=PlantedStream()).lr_decay() == decay, (dicts, flag)
    # what the runs log: the last step's learning rate, constant for TopK, near zero with the decay
    last_lr = {}
    for arch, d in (("topk", topk), ("relu", relu)):
        cfg = make_config(tmp_path / arch, dictionary=d, tokens=256 * 20, lr_decay=None, log_every=1)
        (out,) = train(cfg, stream=PlantedStream())
        last_lr[arch] = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["lr"]
    assert math.isclose(last_lr["topk"], 3e-3, rel_tol=1e-9)
    assert last_lr["relu"] < 0.3 * 3e-3  # 20 steps: decay from step 16, the last at a quarter
