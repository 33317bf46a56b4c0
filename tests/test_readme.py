"""The README stays true: its config reference is the one generated from the config models."""

from pathlib import Path

from monosemantic.config.reference import config_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_reference_is_current():
    text = README.read_text()
    assert config_reference() in text, "regenerate with: python -m monosemantic.config.reference_update"


def test_readme_names_the_two_commands_and_every_verb():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    for verb in [
        "lm train",
        "harvest",
        "train",
        "evaluate",
        "analyze",
        "explain",
        "export",
        "steer",
        "circuit",
        "serve",
        "demo",
    ]:
        assert f"monosemantic {verb}" in text, verb
