"""Steering on a real (tiny, storyworld-tokenised) GPT-2 with the fixture's SAE and transcoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monosemantic.config import load_config
from monosemantic.dictionaries.io import load_dictionary
from monosemantic.lm.generate import Sampling, context_of, subject_forward
from monosemantic.lm.generate import generate as lm_generate
from monosemantic.lm.model import load_model
from monosemantic.steering.edits import prompt_ids, steering_edits
from monosemantic.steering.run import steer
from monosemantic.utils.errors import MonosemanticError

PROMPT = "Once upon a time, Lily saw a red ball in the park."


def generate(lm, ids, n, edits=None, use_cache=True, sampling=Sampling()):
    """One greedy (or `sampling`) continuation through the library's generation loop."""
    eos = lm.tokenizer.eos_token_id
    return lm_generate(
        subject_forward(lm, edits), ids, n, sampling, 1, eos, "stop", context_of(lm.hf.config), use_cache
    )[0]


@pytest.fixture(scope="module")
def lm(world):
    return load_model(str(world["model"]), device="cpu")


def _codes(lm, dic, ids):
    site = dic.cfg.hook_name
    x = lm.run(ids.unsqueeze(0), capture=[site]).activations[site]
    with torch.no_grad():
        return dic.encode(x)[0]  # [T, F]


@pytest.mark.parametrize("name", ["sae", "transcoder"])
def test_clamp_to_current_value_is_exact_identity(world, lm, name):
    dic = load_dictionary(world["dicts"] / name)
    ids = prompt_ids(lm, PROMPT)
    codes = _codes(lm, dic, ids)
    f = int(codes[1:].abs().sum(0).argmax())  # a feature that fires on this prompt
    assert codes[1:, f].abs().sum() > 0
    plain = lm.run(ids.unsqueeze(0)).logits
    same = lm.run(ids.unsqueeze(0), edits=steering_edits(dic, f, "clamp", codes[:, f].unsqueeze(0))).logits
    assert torch.equal(plain, same)
    # clamping that live feature to 0 (= ablating it) does change the logits, identically both ways
    zero = lm.run(ids.unsqueeze(0), edits=steering_edits(dic, f, "clamp", 0.0)).logits
    ablated = lm.run(ids.unsqueeze(0), edits=steering_edits(dic, f, "ablate")).logits
    assert not torch.allclose(plain, zero) and torch.allclose(zero, ablated, atol=1e-6)


def test_ablating_a_silent_feature_changes_nothing(world, lm):
    dic = load_dictionary(world["dicts"] / "sae")
    ids = prompt_ids(lm, PROMPT)
    silent = (_codes(lm, dic, ids) == 0).all(0).nonzero().flatten()
    assert silent.numel() > 0
    f = int(silent[0])
    plain = generate(lm, ids, 8)
    assert torch.equal(generate(lm, ids, 8, steering_edits(dic, f, "ablate")), plain)
    assert torch.equal(generate(lm, ids, 8, steering_edits(dic, f, "add", 0.0)), plain)


def test_large_add_changes_generation_and_moves_the_logit_lens(world, lm):
    dic = load_dictionary(world["dicts"] / "sae")
    ids = prompt_ids(lm, PROMPT)
    f = 3
    plain = lm.run(ids.unsqueeze(0)).logits[0, -1]
    steered = lm.run(ids.unsqueeze(0), edits=steering_edits(dic, f, "add", 50.0)).logits[0, -1]
    # adding a residual direction pushes the output towards that direction's unembedding
    lens = lm.unembed(dic.W_dec[f].detach() * 50.0)
    assert torch.corrcoef(torch.stack([steered - plain, lens]))[0, 1] > 0.5
    assert not torch.equal(generate(lm, ids, 8), generate(lm, ids, 8, steering_edits(dic, f, "add", 50.0)))


def test_cached_generation_equals_full_recompute(world, lm):
    """The key/value cache runs one new position per step; the tokens equal recomputing the
    whole sequence every step, steered or not (an edit at t only changes positions >= t)."""
    ids = prompt_ids(lm, PROMPT)
    sae, tc = load_dictionary(world["dicts"] / "sae"), load_dictionary(world["dicts"] / "transcoder")

    def skip_bos(dic, f, mode, value):
        return lambda start: steering_edits(dic, f, mode, value, skip_first=start == 0)

    for edits in (
        None,
        skip_bos(sae, 3, "add", 20.0),
        skip_bos(tc, 2, "clamp", 30.0),
        skip_bos(sae, 1, "ablate", 0),
    ):
        cached = generate(lm, ids, 10, edits)
        assert torch.equal(cached, generate(lm, ids, 10, edits, use_cache=False)) and cached.numel() > 0
    assert not torch.equal(generate(lm, ids, 10), generate(lm, ids, 10, skip_bos(sae, 3, "add", 20.0)))


def test_bos_position_is_left_alone(world, lm):
    dic = load_dictionary(world["dicts"] / "sae")
    ids = prompt_ids(lm, PROMPT)
    site = dic.cfg.hook_name
    x = lm.run(ids.unsqueeze(0), capture=[site]).activations[site][0]
    edits = steering_edits(dic, 3, "add", 5.0, skip_first=True)
    y = edits[site](x.unsqueeze(0).clone())[0]
    assert torch.equal(y[0], x[0])
    assert torch.allclose(y[1:] - x[1:], 5.0 * dic.W_dec[3].detach().expand_as(x[1:]), atol=1e-5)


def _cfg(world, name: str | None, *extra: str, tmp: Path | None = None):
    dic = world["dicts"] / name if name else world["dicts"]
    out = tmp if tmp is not None else world["root"] / "steer-out"
    return load_config(None, [f'model.name="{world["model"]}"', f'steer.dictionary="{dic}"', 'device="cpu"',
                              "steer.max_new_tokens=6", "steer.temperature=0", f'steer.out="{out}"',
                              f'analyze.out="{world["root"] / "no-analysis"}"', *extra])  # fmt: skip


def test_steer_verb_returns_both_texts(world, lm, capsys):
    out = steer(_cfg(world, "transcoder", 'steer.mode="add"'), feature=2, value=40.0, prompt=PROMPT)
    ids = prompt_ids(lm, PROMPT)
    assert out["unsteered_ids"] == generate(lm, ids, 6).tolist()
    assert out["unsteered"] == lm.tokenizer.decode(out["unsteered_ids"])
    assert out["site"] == "blocks.0.hook_mlp_out" and out["steered"] != out["unsteered"]
    printed = capsys.readouterr().out
    assert "plain" in printed and "concept rate" in printed and "40" in printed
    sampled = steer(_cfg(world, "sae", "steer.temperature=1.0", "steer.seed=3"), 1, 0.0, PROMPT)
    again = steer(_cfg(world, "sae", "steer.temperature=1.0", "steer.seed=3"), 1, 0.0, PROMPT)
    assert sampled["arms"][0]["samples"] == again["arms"][0]["samples"]
    assert sampled["unsteered"] == again["unsteered"] == sampled["steered"]  # seeded; add 0 is a no-op


def test_bad_feature_and_ambiguous_dictionary_are_one_line(world):
    with pytest.raises(MonosemanticError, match="out of range") as err:
        steer(_cfg(world, "sae"), feature=64, value=1.0, prompt=PROMPT)
    assert "\n" not in str(err.value)
    with pytest.raises(MonosemanticError, match="steer.dictionary"):
        steer(_cfg(world, None), feature=0, value=1.0, prompt=PROMPT)
    with pytest.raises(MonosemanticError, match="intervention mode"):
        steering_edits(load_dictionary(Path(world["dicts"]) / "sae"), 0, "double")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e38, -2e6])
def test_non_finite_or_absurd_steering_values_are_refused(world, value):
    """These printed an empty "steered" text with exit 0; now one line before any model is loaded
    (NaN and inf are refused by [steer].values' own check, absurd magnitudes by steer's)."""
    with pytest.raises(MonosemanticError, match=r"--value|steer\.values") as err:
        steer(_cfg(world, "sae", 'steer.mode="add"'), feature=1, value=value, prompt=PROMPT)
    assert "\n" not in str(err.value)


def test_steering_the_shipped_storyworld_lm(tmp_path):
    """On the real shipped LM: a feature whose decoder row is a direction that raises the ' red'
    logit over other colours, added at the last residual stream, makes the model say ' red'; adding 0 or clamping to the current value
    changes nothing."""
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary
    from monosemantic.dictionaries.io import save_dictionary

    lm = load_model("storyworld", device="cpu")
    site = f"blocks.{lm.n_layers - 1}.hook_resid_post"
    (red,) = lm.tokenizer(" red", add_special_tokens=False)["input_ids"]
    torch.manual_seed(0)
    dic = build_dictionary(
        DictionaryConfig(architecture="topk", d_sae=16, k=2, site=site), lm.d_model, lm.d_model
    )
    with torch.no_grad():
        # ' red' against the other colours (their tied embeddings are close), through the final
        # LayerNorm's gain, centred because LayerNorm removes the mean
        W = lm.W_U.float()
        others = [
            lm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" blue", " green", " purple")
        ]
        u = lm.final_norm.weight.float() * (W[:, red] - W[:, others].mean(1))
        u = u - u.mean()
        dic.W_dec[5] = u / u.norm()
    save_dictionary(dic, tmp_path / "d", {"hook_name": site, "model_name": "storyworld"})
    cfg = load_config(None, ['model.name="storyworld"', f'steer.dictionary="{tmp_path / "d"}"', 'device="cpu"',
                             "steer.max_new_tokens=8", "steer.temperature=0", f'steer.out="{tmp_path / "o"}"',
                             f'analyze.out="{tmp_path}"'])  # fmt: skip
    prompt = "Lily the cat went to the beach. She found a"
    same = steer(cfg, 5, 0.0, prompt)
    assert same["steered_ids"] == same["unsteered_ids"]
    out = steer(cfg, 5, 40.0, prompt)
    assert out["steered_ids"].count(red) > out["unsteered_ids"].count(red)
    dic = load_dictionary(tmp_path / "d")
    ids = prompt_ids(lm, prompt)
    codes = _codes(lm, dic, ids)
    f = int(codes[1:].sum(0).argmax())
    plain = lm.run(ids.unsqueeze(0)).logits
    clamped = lm.run(ids.unsqueeze(0), edits=steering_edits(dic, f, "clamp", codes[:, f].unsqueeze(0))).logits
    assert torch.equal(plain, clamped)


def test_one_vocabulary_for_steer_and_circuit_interventions():
    from monosemantic.dictionaries.interventions import MODES, canonical_mode, edit_latent
    from monosemantic.utils.errors import MonosemanticError

    f = torch.tensor([[0.0, 1.5, 3.0]])
    assert MODES == ("add", "set", "scale", "ablate") and canonical_mode("clamp") == "set"
    assert torch.allclose(edit_latent(f, "add", 2.0), f + 2.0)
    assert torch.allclose(edit_latent(f, "clamp", 2.0), torch.full_like(f, 2.0))
    assert torch.allclose(
        edit_latent(f, "set", torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[1.0, 2.0, 3.0]])
    )
    assert torch.allclose(edit_latent(f, "scale", 2.0), 2 * f)
    assert float(edit_latent(f, "ablate").abs().sum()) < 1e-12
    with pytest.raises(MonosemanticError, match="unknown intervention mode 'clmap'"):
        canonical_mode("clmap")


def test_a_temperature_so_small_that_logits_overflow_is_greedy():
    """steer.temperature = 1e-300 made softmax(logits / T) NaN (found by the config fuzzer)."""
    from monosemantic.lm.generate import Sampling, next_tokens

    logits = torch.tensor([[0.5, 3.0, -1.0, 2.9]])
    gen = torch.Generator().manual_seed(0)
    for t in (1e-300, 5e-324, 0.0):
        assert next_tokens(logits, Sampling(t, 1.0, 0), gen).tolist() == [1]


def test_steering_evaluation_with_the_feature_store(world, analysis, lm, tmp_path, capsys):
    """`4x` resolves to 4 x the feature's max activation in the run's store; the concept is its top
    activating tokens there; every arm has `samples` generations scored, written as JSON and PNG."""
    import json

    from monosemantic.store.feature_store import FeatureStore

    with FeatureStore(analysis) as store:
        did = store.dictionary_at(world["dicts"] / "sae")["id"]
        live = [f for f in store.list_features(did, "n_active") if f["n_active"]]
        f = live[0]["idx"]
        top = store.examples(did, f, kind="top")
    cfg = _cfg(world, "sae", f'analyze.out="{analysis.parent}"', "steer.samples=4", "steer.temperature=1.0",
               "steer.top_p=0.9", "steer.seed=2", tmp=tmp_path)  # fmt: skip
    out = steer(cfg, feature=f, value=["2x", "8x", 1.5], prompt=PROMPT)
    assert out["max_activation"] == pytest.approx(live[0]["max_activation"])
    assert [a["multiple"] for a in out["arms"]] == [None, 2.0, 8.0, None]
    assert out["arms"][2]["value"] == pytest.approx(8 * live[0]["max_activation"])
    assert out["concept_kind"] == "tokens (top activations)"
    peaks = {e["tokens"][e["peak"]] for e in top}
    assert set(out["concept"]) <= peaks and out["concept"]
    for arm in out["arms"]:
        assert len(arm["samples"]) == 4 and 0 <= arm["concept_rate"] <= 1
        assert arm["loss"] is None or 0 < arm["loss"] < 20
    files = [Path(p) for p in out["files"]]
    assert [p.suffix for p in files] == [".json", ".png"] and all(p.stat().st_size > 0 for p in files)
    saved = json.loads(files[0].read_text())
    assert saved["arms"][1]["samples"] == out["arms"][1]["samples"]
    printed = capsys.readouterr().out
    assert "2x (" in printed and "8x (" in printed and "concept rate" in printed


def test_concept_counting_and_fluency_are_what_they_say(world, lm):
    from monosemantic.steering.measure import ConceptCounter, generation_loss

    ids = prompt_ids(lm, PROMPT)
    text = " Lily saw the red ball. The red cat"
    toks = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ConceptCounter(lm, [" red", "Red"], [])(toks) == 2  # token text stripped and lower-cased
    assert ConceptCounter(lm, [], ["the"])(toks) == 2 and ConceptCounter(lm, [], ["red ball"])(toks) == 1
    assert ConceptCounter(lm, [], ["th"])(toks) == 0  # whole words only
    nats, n = generation_loss(lm, ids, [toks, toks[:3], []])
    seq = torch.cat([ids, torch.tensor(toks)])
    logp = torch.log_softmax(lm.run(seq[None]).logits[0].float(), -1)
    want = -sum(float(logp[ids.numel() - 1 + i, t]) for i, t in enumerate(toks))
    want += -sum(float(logp[ids.numel() - 1 + i, t]) for i, t in enumerate(toks[:3]))
    assert n == len(toks) + 3 and nats == pytest.approx(want, rel=1e-4)


def test_multiples_without_a_store_and_bad_values_are_one_line(world):
    with pytest.raises(MonosemanticError, match="max activation") as err:
        steer(_cfg(world, "sae"), feature=1, value="4x", prompt=PROMPT)
    assert "\n" not in str(err.value)
    with pytest.raises(MonosemanticError, match="not a number"):
        steer(_cfg(world, "sae"), feature=1, value="4y", prompt=PROMPT)
    with pytest.raises(MonosemanticError, match="--feature"):
        steer(_cfg(world, "sae"), prompt=PROMPT)
    with pytest.raises(MonosemanticError, match="--prompt"):
        steer(_cfg(world, "sae"), feature=1)


def test_steer_cli_takes_every_input_from_config_or_options(world, analysis, tmp_path, cli_runner):
    """The acceptance form (`--feature F --value 4x --samples N --prompt ...`), and the same run from
    [steer] keys alone: config and command line are two ways to give one input."""
    from monosemantic.cli import app

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'device = "cpu"\n[model]\nname = "{world["model"]}"\n[analyze]\nout = "{analysis.parent}"\n'
        f'[steer]\ndictionary = "{world["dicts"] / "sae"}"\nmax_new_tokens = 4\nout = "{tmp_path / "o"}"\n'
    )
    args = ["steer", str(cfg), "--feature", "3", "--value", "4x", "--samples", "3", "--prompt", PROMPT]
    r = cli_runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "concept rate" in r.stdout and "4x (" in r.stdout
    cfg.write_text(cfg.read_text() + f'feature = 3\nvalues = ["4x"]\nsamples = 3\nprompt = "{PROMPT}"\n')
    again = cli_runner.invoke(app, ["steer", str(cfg)])
    assert again.exit_code == 0, again.output
    assert again.stdout == r.stdout  # same seed, same inputs: the same table
    bad = cli_runner.invoke(app, ["steer", str(cfg), "--top-p", "0"])
    assert bad.exit_code == 2 and "top_p" in bad.output


def test_steer_a_chat_prompt(world, lm, tmp_path):
    """--chat renders the conversation with the chat template and the generation prompt (as
    `circuit --chat` does); both generations continue those ids and the result marks the turns."""
    from chat_world import TEMPLATE
    from typer.testing import CliRunner

    from monosemantic.cli import app
    from monosemantic.corpus.chat_prompt import chat_prompt

    template = tmp_path / "chat.jinja"
    template.write_text(TEMPLATE)
    chat = "system: You tell short stories.\nuser: Where did Lily go?"
    cfg = _cfg(world, "transcoder", 'steer.mode="add"', f'data.chat_template="{template}"')
    out = steer(cfg, feature=2, value=40.0, chat=chat)
    messages = [{"role": "system", "content": "You tell short stories."},
                {"role": "user", "content": "Where did Lily go?"}]  # fmt: skip
    ids, _ = chat_prompt(lm.tokenizer, messages, template)
    assert out["unsteered_ids"] == generate(lm, torch.tensor(ids), 6).tolist()
    assert out["steered"] != out["unsteered"] and out["chat"] == messages
    assert [t["role"] for t in out["turns"]] == ["other", "system", "user", "other"]
    assert out["turns"][-1]["end"] == len(ids) and out["prompt"] == lm.tokenizer.decode(ids[1:])
    assert out["prompt"].startswith("<start_of_turn>system\n") and out["prompt"].endswith(
        "<start_of_turn>model\n"
    )
    with pytest.raises(MonosemanticError, match="one of them"):
        steer(cfg, feature=2, value=1.0, prompt=PROMPT, chat=chat)
    with pytest.raises(MonosemanticError, match="no chat template"):  # the tiny LM's tokenizer has none
        steer(_cfg(world, "transcoder"), feature=2, value=1.0, chat=chat)
    toml = tmp_path / "steer.toml"
    toml.write_text(
        f'device = "cpu"\n[model]\nname = "{world["model"]}"\n[steer]\ndictionary = "{world["dicts"] / "sae"}"\n'
    )
    cli = CliRunner().invoke(app, ["steer", str(toml), "--feature", "1"])  # neither --prompt nor --chat
    assert cli.exit_code == 2 and "--chat" in cli.output
