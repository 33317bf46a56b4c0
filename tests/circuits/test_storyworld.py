"""On the shipped storyworld LM with trained transcoders: the pronoun circuit passes the ablation check.

The storyworld corpus plants the behaviour "a pronoun agrees with the named character introduced
earlier": after "Lily the cat went to the beach." the LM should prefer " She" over " He". Slow: it
trains a transcoder on every MLP.
"""

import pytest
import torch

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.faithfulness import ablation_faithfulness, graph_scores
from monosemantic.circuits.pruning import prune
from monosemantic.circuits.replacement import ReplacementModel

pytestmark = pytest.mark.slow


def _transcoders(model, tmp_path):
    """Trained here, in tmp: never an earlier run's output (runs/demo may be stale or another config's)."""
    from monosemantic.config import Config
    from monosemantic.dictionaries.io import load_dictionary
    from monosemantic.training.trainer import train

    n = model.n_layers
    cfg = Config.model_validate(
        {
            "device": "cpu",
            "model": {"name": "storyworld"},
            "data": {"text": "storyworld", "context_size": 128, "max_tokens": 160_000},
            "sites": {
                "names": [f"blocks.{L}.{k}" for L in range(n) for k in ("mlp.hook_in", "hook_mlp_out")]
            },
            "dictionary": {"architecture": "topk", "expansion": 8, "k": 16},
            "dictionaries": [
                {
                    "name": f"transcoder-L{L}",
                    "site": f"blocks.{L}.mlp.hook_in",
                    "site_out": f"blocks.{L}.hook_mlp_out",
                }
                for L in range(n)
            ],
            "train": {"tokens": 160_000, "batch_size": 2048, "lr": 1e-3, "out": str(tmp_path / "tc")},
        }
    )
    return [load_dictionary(p) for p in train(cfg)]


def test_pronoun_circuit_passes_ablation_check(tmp_path):
    from monosemantic.lm.model import load_model
    from monosemantic.lm.shipped import SHIPPED_DIR

    if not (SHIPPED_DIR / "config.json").exists():
        pytest.skip("the shipped storyworld LM is not built yet")
    model = load_model("storyworld", device="cpu")
    rm = ReplacementModel(model, _transcoders(model, tmp_path))
    prompt = "Lily the cat went to the beach."
    logits = model.hf(rm.tokenize(prompt)[None]).logits[0, -1]
    she, he = (model.tokenizer(t, add_special_tokens=False).input_ids[0] for t in (" She", " He"))
    assert logits[she] > logits[he]  # the planted behaviour is there to explain
    g = attribute(
        rm,
        prompt=prompt,
        target="logit_diff",
        target_token=" She",
        contrast_token=" He",
        batch_size=64,
        show_progress=False,
    )
    pr = prune(g, node_threshold=0.8, edge_threshold=0.98)
    replacement, completeness = graph_scores(g)
    res = ablation_faithfulness(rm, g, pr.node_mask)  # zero ablation outside the circuit
    n_feat = int(pr.node_mask[: g.n_features].sum())
    print(
        f"replacement {replacement:.3f} completeness {completeness:.3f} features {n_feat}/{g.n_features} {res}"
    )
    assert n_feat < g.n_features  # the circuit is a real subset
    assert res["ablation_faithfulness"] > 0.5
    assert torch.isfinite(torch.tensor([replacement, completeness])).all()
