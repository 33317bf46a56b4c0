"""SAELens release ids resolve to the hub folder of the SAE, from SAELens' directory format."""

from __future__ import annotations

from pathlib import Path

import pytest

from monosemantic.dictionaries.io import load_dictionary
from monosemantic.dictionaries.releases import resolve_release
from monosemantic.utils.errors import MonosemanticError

DIRECTORY = Path(__file__).parent / "fixtures" / "pretrained_saes.yaml"


def test_readable_releases_resolve_to_repo_and_path():
    assert (
        resolve_release("toy-res-native:blocks.2.hook_resid_post", DIRECTORY)[0]
        == "someone/toy-saes/layer_2/resid_post"
    )
    repo, entry = resolve_release("toy-dictionary-learning:blocks.3.hook_resid_post__trainer_0", DIRECTORY)
    assert (
        repo == "someone/toy-dl/resid_post_layer_3/trainer_0"
        and entry["conversion_func"] == "dictionary_learning_1"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "toy-res-natve:blocks.1.hook_resid_post",
            "no SAELens release 'toy-res-natve' \\(did you mean toy-res-native",
        ),
        ("toy-res-native:blocks.9.hook_resid_post", "has no SAE .*did you mean blocks.2.hook_resid_post"),
        ("toy-npz:layer_5/width_16k/average_l0_40", "converts with 'gemma_2'.*save_model"),
        ("toy-res-native:", "not a release id"),
    ],
)
def test_bad_release_ids_say_what_to_do(spec, message):
    with pytest.raises(MonosemanticError, match=message):
        resolve_release(spec, DIRECTORY)


def test_release_without_saelens_directory_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("monosemantic.dictionaries.releases.saelens_directory.directory_file", lambda: None)
    with pytest.raises(MonosemanticError, match="pip install sae-lens"):
        load_dictionary("gpt2-small-res-jb:blocks.8.hook_resid_pre")
