"""Literal LIKE search in one dictionary and FTS5 search across every dictionary of a store."""

from __future__ import annotations

from monosemantic.store.feature_store import FeatureStore
from monosemantic.store.search import fts_query, search_features


def _store(path):
    with FeatureStore.fresh(path) as s:
        for name in ("a", "b"):
            did = s.add_dictionary(name, d_sae=4)
            s.upsert_features(did, [
                {"idx": 0, "explanation": "100% sure about dogs", "density": 0.2},
                {"idx": 1, "explanation": "snake_case names", "logit_top": [{"id": 5, "token": " Dragon", "value": 1.0}],
                 "density": 0.002},
                {"idx": 2, "explanation": "plain words", "concept": "weather:rain", "density": 0.00003},
                {"idx": 3, "explanation": "dead dogs", "density": 0.0},
            ])  # fmt: skip
    return FeatureStore(path)


def test_like_wildcards_are_literal(tmp_path):
    s = _store(tmp_path / "f.db")
    assert [f["idx"] for f in s.list_features(1, search="%")] == [0]
    assert [f["idx"] for f in s.list_features(1, search="_")] == [1]
    assert [f["idx"] for f in s.list_features(1, search="e_c")] == [1]  # not "any character"
    assert s.count_features(1, search="\\") == 0


def test_fts_search_spans_dictionaries_and_follows_changes(tmp_path):
    path = tmp_path / "f.db"
    s = _store(path)
    before = path.read_bytes()
    hits = search_features(s, "dogs")
    assert [(h["dictionary"], h["idx"]) for h in hits] == [("a", 0), ("b", 0)]
    assert [(h["dictionary"], h["idx"]) for h in search_features(s, "drag")] == [
        ("a", 1),
        ("b", 1),
    ]  # top token, prefix
    assert [h["idx"] for h in search_features(s, "rain")] == [2, 2]  # concept
    assert search_features(s, "sure dogs", limit=1) == hits[:1]  # every word must match
    assert search_features(s, "sure cats") == [] and search_features(s, "%%") == []
    assert search_features(s, '("dogs" *') == hits  # FTS5 syntax is plain text, never an error
    assert search_features(s, 'NEAR("dogs" AND') == []  # NEAR and AND are words no feature holds
    assert path.read_bytes() == before  # searching never writes the file
    assert search_features(s, "cats", version=1) == []
    s.set_explanation(1, 2, "cats on mats", "human")
    assert search_features(s, "cats", version=1) == []  # same version: the index as built
    assert [(h["dictionary"], h["idx"]) for h in search_features(s, "cats", version=2)] == [("a", 2)]


def test_fts_query_quotes_words():
    assert fts_query('say "hi" AND bye*') == '"say"* "hi"* "AND"* "bye"*'
    assert fts_query("  %% ") is None


def test_dead_features_are_hidden_unless_asked_for_and_density_filters(tmp_path):
    """A dead feature (never fired: density 0) matches the words but is left out of search and
    of filtered lists by default; density bounds pick a band."""
    s = _store(tmp_path / "f.db")
    assert [(h["dictionary"], h["idx"]) for h in search_features(s, "dogs")] == [("a", 0), ("b", 0)]
    both = search_features(s, "dogs", include_dead=True)
    assert {(h["dictionary"], h["idx"]) for h in both} == {("a", 0), ("b", 0), ("a", 3), ("b", 3)}
    assert [h["idx"] for h in search_features(s, "dogs", min_density=0.5)] == []
    assert [f["idx"] for f in s.list_features(1, include_dead=False)] == [0, 1, 2]
    assert s.count_features(1, include_dead=False) == 3 and s.count_features(1) == 4
    assert [f["idx"] for f in s.list_features(1, min_density=1e-4, max_density=0.01)] == [1]
