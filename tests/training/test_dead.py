"""The one definition of dead and near-dead latents, and the end-of-run check of target L0 and dead latents."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import PlantedStream, make_config

from monosemantic.training.dead import NEAR_DEAD_DENSITY, DeadLatentTracker, latent_liveness
from monosemantic.training.l0_control import landing
from monosemantic.training.trainer import train


def test_liveness_counts_dead_and_near_dead_over_the_stated_tokens():
    tokens = 1_000_000
    counts = torch.tensor([0, 1, 9, 10, 5000, 0])  # near dead: fewer than 1e-5 * 1e6 = 10 firings
    live = latent_liveness(counts, tokens)
    assert live.dead.tolist() == [True, False, False, False, False, True]
    assert live.near_dead.tolist() == [False, True, True, False, False, False]
    assert live.summary() == pytest.approx(
        {"dead_fraction": 2 / 6, "near_dead_fraction": 2 / 6, "dead_tokens": tokens}
    )
    assert NEAR_DEAD_DENSITY * tokens == pytest.approx(10)


def test_tracker_applies_the_definition_to_the_last_window():
    tracker = DeadLatentTracker(3, dead_after_tokens=100, device=torch.device("cpu"))
    for _ in range(30):  # 30 batches of 10 tokens: latent 0 always fires, 1 once at the start, 2 never
        tracker.update(torch.tensor([10, 0, 0]), 10)
    tracker.since_fired[1] = 50  # latent 1 last fired 50 tokens ago: alive over the last 100
    assert tracker.dead_mask().tolist() == [False, False, True]
    tracker.fire_counts[1] = 0  # alive by its recent firing, never counted in the density window
    assert not tracker.near_dead_mask().any()  # no latent fired on 0 < n < 1e-5 of 300 tokens


def test_landing_says_by_how_much_and_what_to_change():
    assert landing("j", 20.0, 21.5, 0.02, 200_000, "jumprelu") is None  # within 10%, few dead
    line = landing("j", 20.0, 9.3, 0.61, 200_000, "jumprelu")
    assert line is not None and "\n" not in line
    assert "L0 ended at 9.3, -53% from target_l0 20" in line and "61% of latents are dead" in line
    assert "200,000 tokens" in line and "train" in line
    line = landing("r", 20.0, 30.0, 0.0, 200_000, "relu")
    assert line is not None and "+50%" in line and "dead" not in line.split(";")[0]
    assert landing("t", None, 16.0, 0.55, 1_000_000, "topk").startswith("t (topk): 55% of latents are dead")


def test_a_missed_target_ends_with_one_line_and_is_recorded(tmp_path, capsys):
    """L0 starts at half the latents at most (`start_density`): ten steps cannot take it to a
    target of 120 of 128, and the run says so."""
    d = {"architecture": "relu", "d_sae": 128, "target_l0": 120.0}
    (out,) = train(make_config(tmp_path, dictionary=d, tokens=256 * 10), stream=PlantedStream())
    err = " ".join(capsys.readouterr().err.split())
    assert "warning:" in err and "from target_l0 120" in err
    summary = json.loads((out / "cfg.json").read_text())["metadata"]["training"]
    assert "(relu): L0 ended at" in summary["landing"]


@pytest.mark.parametrize("architecture", ["relu", "gated", "jumprelu"])
def test_a_target_l0_run_starts_at_the_target_with_every_latent_alive(tmp_path, architecture):
    """`initialize` places biases, gates or thresholds so L0 on the first tokens is the target and
    no latent starts dead; ReLU and Gated encoders are scaled so the reconstruction is the right
    size; the controller starts from the architecture's fraction of the coefficient."""
    from monosemantic.training.trainer import Trainer

    d = {"architecture": architecture, "d_sae": 128, "target_l0": 8.0}
    trainer = Trainer(make_config(tmp_path, dictionary=d, tokens=256 * 4), stream=PlantedStream())
    trainer.initialize()
    slot = trainer.slots[0]
    x = torch.cat([b["site"] for b in trainer.pending]) * trainer.scales["site"]
    with torch.no_grad():
        fires = slot.dic.encode(x) > 0
    assert float(fires.sum(1).float().mean()) == pytest.approx(8.0, rel=0.15)
    assert bool(fires.any(0).all())  # every latent fires on some of the first tokens
    assert float(slot.controller.multiplier()) == pytest.approx(slot.dic.controller_start)
    if architecture != "jumprelu":  # least squares on the first tokens: no other scale fits them better
        assert slot.dic.encoder_scale_from_data(x, x) == pytest.approx(1.0, abs=0.01)  # was ~200x


def test_a_clt_with_a_target_starts_at_it_on_every_layer(tmp_path):
    from monosemantic.training.trainer import Trainer

    stream = PlantedStream(
        site="blocks.{0,1}.hook_mlp_in", site_out="blocks.{0,1}.hook_mlp_out", d=32, d_out=32
    )
    stream.widths = {"blocks.{0,1}.hook_mlp_in": 32, "blocks.{0,1}.hook_mlp_out": 32}
    d = {"architecture": "clt", "activation": "jumprelu", "d_sae": 64, "target_l0": 8.0, "site": "blocks.*.hook_mlp_in",
         "site_out": "blocks.*.hook_mlp_out", "layers": [0, 1]}  # fmt: skip
    trainer = Trainer(make_config(tmp_path, dictionary=d, tokens=256 * 4), stream=stream)
    trainer.initialize()
    slot = trainer.slots[0]
    x = torch.cat([b[slot.hook_name] for b in trainer.pending]) * trainer.scales[slot.hook_name]
    with torch.no_grad():
        fires = slot.dic.encode(x) > 0  # [n, 2 layers x 64]
    assert float(fires.sum(1).float().mean()) == pytest.approx(8.0, rel=0.15)
    assert bool(fires.any(0).all())


def test_reconstruction_scale_fits_a_related_part_and_leaves_an_unrelated_one():
    """Least squares when the latents' part points along the target; 1 when it is noise (a
    transcoder's random decoder), so a chance fit never shrinks the encoder."""
    from monosemantic.dictionaries.base import reconstruction_scale

    g = torch.Generator().manual_seed(0)
    target = torch.randn(512, 16, generator=g)
    noisy = target / 200 + 1e-3 * torch.randn(512, 16, generator=g)
    assert reconstruction_scale(noisy, target) == pytest.approx(200.0, rel=0.05)
    assert reconstruction_scale(torch.randn(512, 16, generator=g), target) == 1.0
    assert reconstruction_scale(torch.zeros(512, 16), target) == 1.0
