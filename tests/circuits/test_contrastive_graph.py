"""Contrastive graphs: edges against finite differences on the frozen/free model, IG completeness."""

import pytest
from circuit_checks import check_contrastive_edges, check_ig_completeness
from tiny_families import load64

from monosemantic.circuits.contrastive_graph import contrastive_graph
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.utils.errors import MonosemanticError

from .conftest import CORRUPTED, PROMPT, make_dicts


@pytest.fixture(scope="module")
def built(tiny_paths):
    gpt2 = load64(tiny_paths["gpt2"])
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers, seed=1), names=["tc0", "tc1"])
    graph, effect, res = contrastive_graph(rm, PROMPT, CORRUPTED, steps=32, batch_size=8)
    return rm, graph, effect, res


def test_edges_match_finite_differences(built):
    rm, graph, effect, res = built
    check_contrastive_edges(rm, graph, res, PROMPT)


def test_integrated_gradients_completeness(built):
    rm, graph, effect, res = built
    check_ig_completeness(graph, effect, res, CORRUPTED)


def test_prompts_of_different_length_are_refused(built):
    rm = built[0]
    with pytest.raises(MonosemanticError, match="same number of tokens") as e:
        contrastive_graph(rm, PROMPT, "Tom the cat went to the beach. She")
    assert "\n" not in str(e.value)
