"""The feature store: round trip, schema version, atomic fresh builds, ordering and search."""

from __future__ import annotations

import sqlite3

import pytest

from monosemantic.store.feature_store import SCHEMA_VERSION, FeatureStore
from monosemantic.utils.errors import DataError, MonosemanticError


def _fill(store: FeatureStore) -> int:
    did = store.add_dictionary(
        "sae", path="/x/sae", architecture="topk", hook_name="blocks.0.hook_resid_post", d_in=4, d_sae=3,
        model="m", cfg={"k": 2},
    )  # fmt: skip
    store.upsert_features(did, [
        {"idx": 0, "density": 0.1, "max_activation": 2.0, "quantiles": [0, 1, 2], "logit_top": [{"id": 5, "token": " red", "value": 1.5}]},
        {"idx": 1, "density": 0.3, "max_activation": 1.0, "concept": "colour:red", "concept_auroc": 0.9},
        {"idx": 2, "density": None, "max_activation": 5.0},
    ])  # fmt: skip
    store.add_examples(did, [
        {"feature": 0, "kind": "top", "rank": 0, "tokens": ["a", " red"], "token_ids": [1, 5], "activations": [0.0, 2.0], "peak": 1},
        {"feature": 0, "kind": "negative", "rank": 0, "tokens": ["b"], "token_ids": [2], "activations": [0.0], "peak": 0},
        {"feature": 0, "kind": "quantile", "bin": 1, "rank": 0, "tokens": ["c"], "token_ids": [3], "activations": [1.5], "peak": 0},
    ])  # fmt: skip
    return did


def test_round_trip_and_schema(tmp_path):
    path = tmp_path / "features.db"
    with FeatureStore.fresh(path) as store:
        did = _fill(store)
        store.set_meta(n_tokens=123, cache="acts")
    assert path.is_file() and not list(tmp_path.glob(".features.db.tmp-*"))
    with FeatureStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        meta = store.meta()
        assert meta["n_tokens"] == 123 and int(meta["schema_version"]) == SCHEMA_VERSION
        (d,) = store.dictionaries()
        assert d["name"] == "sae" and d["cfg"] == {"k": 2} and d["n_features"] == 3
        assert store.dictionary("sae")["id"] == did
        f = store.feature(did, 0)
        assert f["quantiles"] == [0, 1, 2] and f["logit_top"][0]["token"] == " red"
        ex = store.examples(did, 0)
        assert [e["kind"] for e in ex] == ["top", "quantile", "negative"]
        assert ex[0]["tokens"] == ["a", " red"] and ex[0]["activations"] == [0.0, 2.0]
        assert [e["kind"] for e in store.examples(did, 0, kind="negative")] == ["negative"]
        # upsert touches only the named columns
        store.upsert_features(did, [{"idx": 0, "neighbours": [{"feature": 1, "cosine": 0.5}]}])
        assert store.feature(did, 0)["density"] == 0.1
        store.set_explanation(did, 1, "red things", "offline")
        store.set_scores(did, 1, {"detection": {"score": 0.75}, "fuzzing": {"score": 0.5}}, "offline-keyword")
        f1 = store.feature(did, 1)
        assert (f1["explanation"], f1["explanation_source"], f1["score_detection"], f1["scorer"]) == (
            "red things", "offline", 0.75, "offline-keyword",
        )  # fmt: skip
        gid = store.add_graph("g", {"nodes": [], "links": []}, prompt="hi")
        assert store.graphs()[0]["name"] == "g" and store.graph(gid) == {"nodes": [], "links": []}


def test_ordering_and_search(tmp_path):
    with FeatureStore.fresh(tmp_path / "f.db") as store:
        did = _fill(store)
        assert [f["idx"] for f in store.list_features(did)] == [0, 1, 2]
        assert [f["idx"] for f in store.list_features(did, order_by="density")] == [1, 0, 2]  # None last
        assert [f["idx"] for f in store.list_features(did, order_by="max_activation", limit=2)] == [2, 0]
        assert [f["idx"] for f in store.list_features(did, search="red")] == [0, 1]
        assert store.count_features(did, search="colour") == 1
        assert [f["idx"] for f in store.list_features(did, min_density=0.2)] == [1]
        with pytest.raises(MonosemanticError, match="cannot order"):
            store.list_features(did, order_by="density; DROP TABLE features")
        with pytest.raises(MonosemanticError, match="already"):
            store.add_dictionary("sae")


def test_examples_round_trip_through_blobs_and_vocab(tmp_path):
    """Ids and activations come back exactly, strings from the vocabulary (or as given when a row
    has no ids); a whole dictionary read in one scan equals the per-feature reads."""
    with FeatureStore.fresh(tmp_path / "f.db") as store:
        did = _fill(store)
        store.add_examples(did, [
            {"feature": 2, "kind": "top", "rank": 0, "token_ids": [5, 7], "tokens": [" red", "\"x"],
             "activations": [0.125, -3.5e-7], "peak": 0},
            {"feature": 2, "kind": "top", "rank": 1, "tokens": ["only", "strings"], "activations": [1.0, 2.0]},
        ])  # fmt: skip
        (a, b) = store.examples(did, 2)
        assert (a["token_ids"], a["tokens"], a["activations"]) == ([5, 7], [" red", '"x'], [0.125, -3.5e-7])
        assert (b["token_ids"], b["tokens"]) == (None, ["only", "strings"])
        assert store.vocab()[5] == " red" and store.examples(did, 0)[0]["tokens"] == ["a", " red"]
        scanned = list(store.features_with_examples(did))
        assert [f["idx"] for f, _ in scanned] == [0, 1, 2]
        assert [ex for _, ex in scanned] == [store.examples(did, i) for i in range(3)]
        tops = [ex for _, ex in store.features_with_examples(did, kind="top")]
        assert tops == [store.examples(did, i, kind="top") for i in range(3)]


def test_failed_fresh_build_leaves_old_store(tmp_path):
    path = tmp_path / "features.db"
    with FeatureStore.fresh(path) as store:
        _fill(store)
    with pytest.raises(RuntimeError), FeatureStore.fresh(path) as store:
        store.add_dictionary("other")
        raise RuntimeError("killed")
    with FeatureStore(path) as store:
        assert [d["name"] for d in store.dictionaries()] == ["sae"]
    assert not list(tmp_path.glob(".features.db.tmp-*"))


def test_schema_mismatch_and_missing(tmp_path):
    with pytest.raises(DataError, match="analyze"):
        FeatureStore(tmp_path / "nope.db")
    path = tmp_path / "old.db"
    FeatureStore(path, create=True).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(DataError, match="schema version 0"):
        FeatureStore(path)


def test_a_store_written_before_the_attended_column_opens_and_gains_it(tmp_path):
    path = tmp_path / "features.db"
    with FeatureStore.fresh(path) as store:
        did = _fill(store)
    db = sqlite3.connect(path)  # the examples table as stores written before Lorsa's keys had it
    db.execute("ALTER TABLE examples DROP COLUMN attended")
    db.commit()
    assert "attended" not in {r[1] for r in db.execute("PRAGMA table_info(examples)")}
    db.close()
    with FeatureStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        old = store.examples(did, 0)
        assert [e["kind"] for e in old] == ["top", "quantile", "negative"]
        assert all(e["attended"] is None for e in old) and old[0]["tokens"] == ["a", " red"]
        store.add_examples(did, [
            {"feature": 1, "kind": "top", "tokens": ["x", "y"], "token_ids": [7, 8], "activations": [0.0, 1.0],
             "peak": 1, "attended": [[0, 0.75], [1, 0.25]]},
        ])  # fmt: skip
        assert store.examples(did, 1)[0]["attended"] == [[0, 0.75], [1, 0.25]]
