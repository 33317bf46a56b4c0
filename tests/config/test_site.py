"""`Site`: the site mini-language parsed once (layers, hook path, model of a pair), round-tripping to
the same strings the caches, checkpoints and streams use."""

from __future__ import annotations

import re

import pytest

from monosemantic.config.site import Site, SiteError, concrete_sites, site_group, site_groups


@pytest.mark.parametrize(
    "text, layers, hook, models, group",
    [
        ("blocks.3.hook_resid_post", (3,), "hook_resid_post", ("a",), False),
        ("blocks.0.ln2.hook_normalized", (0,), "ln2.hook_normalized", ("a",), False),
        ("blocks.1.attn.hook_z", (1,), "attn.hook_z", ("a",), False),
        ("blocks.*.mlp.hook_in", None, "mlp.hook_in", ("a",), True),
        ("blocks.{0,2}.hook_mlp_out", (0, 2), "hook_mlp_out", ("a",), True),
        ("blocks.{3}.mlp.hook_in", (3,), "mlp.hook_in", ("a",), True),  # a stream key of one layer
        ("b:blocks.2.hook_resid_post", (2,), "hook_resid_post", ("b",), False),
        ("{a,b}:blocks.2.hook_resid_post", (2,), "hook_resid_post", ("a", "b"), True),
        ("hook_embed", (), "hook_embed", ("a",), False),
        ("activations", (), "activations", ("a",), False),  # a tensor file's stream
    ],
)
def test_parse_and_round_trip(text, layers, hook, models, group):
    site = Site.parse(text)
    assert (site.layers, site.hook, site.models, site.is_group) == (layers, hook, models, group)
    assert str(site) == text and Site.parse(str(site)) == site


def test_groups_list_their_sites_in_concatenation_order():
    assert [str(s) for s in Site.parse("{a,b}:blocks.2.hook_x").sites()] == [
        "blocks.2.hook_x",
        "b:blocks.2.hook_x",
    ]
    assert Site.parse("{a,b}:blocks.2.hook_x").layer_list() == [2, 2]
    glob = Site.parse("blocks.*.mlp.hook_in")
    assert str(glob.with_layers([1, 3])) == "blocks.{1,3}.mlp.hook_in"
    available = [
        "blocks.2.mlp.hook_in",
        "blocks.0.mlp.hook_in",
        "blocks.0.hook_mlp_out",
        "b:blocks.1.mlp.hook_in",
    ]
    assert str(glob.expand(available)) == "blocks.{0,2}.mlp.hook_in"
    assert site_group(["blocks.0.mlp.hook_in", "blocks.1.mlp.hook_in"]) == Site.parse(
        "blocks.{0,1}.mlp.hook_in"
    )
    assert site_group(["blocks.2.hook_x", "b:blocks.2.hook_x"]) == Site.parse("{a,b}:blocks.2.hook_x")
    keys = ["blocks.{0,1}.mlp.hook_in", "blocks.1.mlp.hook_in", "blocks.0.hook_resid_post"]
    assert site_groups(keys) == {keys[0]: ["blocks.0.mlp.hook_in", "blocks.1.mlp.hook_in"]}
    assert concrete_sites(keys) == [
        "blocks.0.mlp.hook_in",
        "blocks.1.mlp.hook_in",
        "blocks.0.hook_resid_post",
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("blocks.x.hook_mlp_in", "write one layer (blocks.3.hook_X)"),
        ("blocks.*", "write one layer"),
        ("blocks.{0,0}.hook_x", "lists a layer twice"),
        ("{a,b}:blocks.*.hook_x", "a model pair names one layer"),
        ("{a,b}:hook_embed", "a model pair names one block site"),
        (" blocks.0.hook_x", "is not a site name"),
    ],
)
def test_malformed_sites_are_one_line_config_errors(text, message):
    with pytest.raises(SiteError, match=re.escape(message)) as e:
        Site.parse(text)
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)


def test_a_single_site_has_one_layer_and_a_group_has_none():
    assert Site.parse("blocks.4.hook_x").layer == 4 and Site.parse("hook_embed").layer is None
    with pytest.raises(SiteError, match="names several sites"):
        _ = Site.parse("blocks.{0,1}.hook_x").layer
    with pytest.raises(SiteError, match="expand it over layers first"):
        Site.parse("blocks.*.hook_x").sites()
    with pytest.raises(SiteError, match="no blocks.N.hook_y among the available sites"):
        Site.parse("blocks.*.hook_y").expand(["blocks.0.hook_x"])
