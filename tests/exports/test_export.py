"""`monosemantic export` on a real analysis (the `analysis` fixture: a real harvest analysed by
`analyze`, explained by the offline explainer): the static site's data files say what the store
says, the site is self-contained and written atomically, and the Neuronpedia JSON is well formed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monosemantic.config import load_config
from monosemantic.exports import run as export_mod
from monosemantic.exports.neuronpedia import write_neuronpedia
from monosemantic.exports.run import export, write_site
from monosemantic.store.feature_store import FeatureStore
from monosemantic.utils.errors import MonosemanticError


@pytest.fixture(scope="module")
def explained(analysis: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the analysis with offline explanations and scores."""
    from monosemantic.explanation.run import explain

    db = tmp_path_factory.mktemp("export") / "features.db"
    shutil.copyfile(analysis, db)
    explain(load_config(None, [f'explain.db="{db}"']))
    return db


def read_calls(path: Path, call: str) -> list:
    """The JSON arguments of the `call(...)` a data file makes."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith(call + "(") and text.rstrip().endswith(");")
    return json.loads("[" + text[len(call) + 1 : text.rstrip().rindex(")")] + "]")


def test_site_data_matches_store(explained: Path, tmp_path: Path):
    out = write_site(FeatureStore(explained), tmp_path / "site")
    store = FeatureStore(explained)
    (site,) = read_calls(out / "data" / "site.js", "MONO.site")
    assert [d["name"] for d in site["dictionaries"]] == ["sae", "transcoder"]
    assert site["meta"]["n_tokens"] == store.meta()["n_tokens"]
    tc = next(d for d in site["dictionaries"] if d["name"] == "transcoder")
    assert tc["transcoder"] and tc["hook_name_out"] == "blocks.0.hook_mlp_out"
    for d in store.dictionaries():
        did, rows = read_calls(out / "data" / f"d{d['id']}" / "index.js", "MONO.index")
        assert did == d["id"] and [r["idx"] for r in rows] == list(range(d["d_sae"]))
        feats = {}
        for c in sorted((out / "data" / f"d{d['id']}").glob("c*.js")):
            _, n, chunk = read_calls(c, "MONO.chunk")
            assert all(int(i) // site["chunk"] == n for i in chunk)
            feats.update({int(i): f for i, f in chunk.items()})
        assert sorted(feats) == list(range(d["d_sae"]))
        for idx in (0, d["d_sae"] // 2, d["d_sae"] - 1):
            f, row, want = feats[idx], rows[idx], store.feature(d["id"], idx)
            assert f["density"] == pytest.approx(want["density"], rel=1e-3)
            assert row["explanation"] == want["explanation"] == f["explanation"]
            top = store.examples(d["id"], idx, kind="top")
            assert [e["t"] for e in f["top"]] == [e["tokens"] for e in top]
            assert [e["a"] for e in f["top"]] == [
                [pytest.approx(a or 0, rel=1e-2, abs=1e-6) for a in e["activations"]] for e in top
            ]
            n_q = len(store.examples(d["id"], idx, kind="quantile"))
            assert sum(len(b["examples"]) for b in f["quantiles"]) == n_q
            if want["histogram"] and want["histogram"]["counts"]:
                assert sum(f["histogram"]["counts"]) == sum(want["histogram"]["counts"])
                assert len(f["histogram"]["counts"]) <= 40
            if top:  # the index lists the peak tokens of the top examples
                assert top[0]["tokens"][top[0]["peak"]] in row["tokens"]
        # transcoders show their input-side tokens, SAEs their logit lens
        sample = feats[0]
        assert (sample["input_top"] is not None) == (d["name"] == "transcoder")
        assert sample["logit_top"] and len(sample["neighbours"]) == 5


def test_site_is_self_contained(explained: Path, tmp_path: Path):
    out = write_site(FeatureStore(explained), tmp_path / "site")
    for name in ("index.html", "app.js", "style.css"):
        text = (out / name).read_text().replace("http://www.w3.org/2000/svg", "")  # a namespace, not a fetch
        assert not re.search(r"https?://|//cdn|@import", text), name
    html = (out / "index.html").read_text()
    assert '<script src="data/site.js">' in html and "fetch(" not in html


def test_script_close_in_token_is_escaped(tmp_path: Path):
    with FeatureStore.fresh(tmp_path / "f.db") as s:
        did = s.add_dictionary("x", d_sae=1)
        s.upsert_features(did, [{"idx": 0, "density": 0.5, "explanation": "</script><b>"}])
        s.add_examples(did, [{"feature": 0, "kind": "top", "peak": 0, "max_activation": 1.0,
                              "tokens": ["</script>"], "activations": [1.0]}])  # fmt: skip
    out = write_site(FeatureStore(tmp_path / "f.db"), tmp_path / "site")
    for f in (out / "data" / f"d{did}").glob("*.js"):
        assert "</script>" not in f.read_text()
    (_, _, chunk) = read_calls(out / "data" / f"d{did}" / "c0.js", "MONO.chunk")
    assert chunk["0"]["top"][0]["t"] == ["</script>"]


def test_chunks_split_features(explained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(export_mod, "CHUNK", 16)
    out = write_site(FeatureStore(explained), tmp_path / "site")
    sae = FeatureStore(explained).dictionary("sae")
    files = sorted((out / "data" / f"d{sae['id']}").glob("c*.js"))
    assert [f.name for f in files] == [f"c{i}.js" for i in range(4)]  # 64 features / 16
    _, n, chunk = read_calls(files[2], "MONO.chunk")
    assert n == 2 and sorted(map(int, chunk)) == list(range(32, 48))


def test_export_is_atomic(explained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = tmp_path / "site"
    write_site(FeatureStore(explained), site)
    (site / "stale.txt").write_text("old")
    before = (site / "data" / "site.js").read_text()

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_mod, "payload_from", broken)
    with pytest.raises(RuntimeError):
        write_site(FeatureStore(explained), site)
    assert (site / "stale.txt").exists() and (site / "data" / "site.js").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temp folder left behind
    monkeypatch.undo()
    write_site(FeatureStore(explained), site)
    assert not (site / "stale.txt").exists()


def test_refuses_to_replace_a_foreign_folder(explained: Path, tmp_path: Path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    for write in (write_site, write_neuronpedia):
        with pytest.raises(MonosemanticError, match="not an earlier export"):
            write(FeatureStore(explained), mine)
    assert (mine / "thesis.tex").read_text() == "precious"
    write_neuronpedia(FeatureStore(explained), tmp_path / "np")
    write_neuronpedia(FeatureStore(explained), tmp_path / "np")  # an earlier export is replaced


def test_missing_store_is_one_line(tmp_path: Path):
    cfg = load_config(None, [f'analyze.out="{tmp_path}"', f'export.html="{tmp_path / "site"}"'])
    with pytest.raises(MonosemanticError, match="run `monosemantic analyze") as err:
        export(cfg)
    assert "\n" not in str(err.value)


def test_neuronpedia_json(explained: Path, tmp_path: Path):
    store = FeatureStore(explained)
    out = write_neuronpedia(store, tmp_path / "np", model_id="storyworld-tiny")
    assert sorted(p.name for p in out.iterdir()) == ["0-res-mono", "0-transcoder-mono", "neuronpedia.json"]
    assert json.loads((out / "neuronpedia.json").read_text())["layers"]["0-res-mono"] == "sae"
    feats = json.loads((out / "0-res-mono" / "batch-0.json").read_text())
    sae = store.dictionary("sae")
    assert [f["index"] for f in feats] == [str(i) for i in range(sae["d_sae"])]
    for f in feats:
        want = store.feature(sae["id"], int(f["index"]))
        assert f["modelId"] == "storyworld-tiny" and f["layer"] == "0-res-mono"
        assert f["frac_nonzero"] == pytest.approx(want["density"])
        assert f["pos_str"] == [t["token"] for t in want["logit_top"]]
        assert len(f["pos_values"]) == len(f["pos_str"]) and all(v < 0 for v in f["neg_values"])
        assert len(f["freq_hist_data_bar_heights"]) == len(f["freq_hist_data_bar_values"])
        assert len(f["topkCosSimIndices"]) == len(f["topkCosSimValues"]) == 5
        for a in f["activations"]:
            assert len(a["tokens"]) == len(a["values"])
            assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"] == max(a["values"])
        if want["explanation"]:
            assert f["explanations"][0]["description"] == want["explanation"]
    quant = [a for f in feats for a in f["activations"] if a["binMin"] is not None]
    assert quant and all(
        a["binMin"] - 1e-3 <= a["values"][a["qualifyingTokenIndex"]] <= a["binMax"] + 1e-3 for a in quant
    )
    live = [store.feature(sae["id"], int(f["index"])) for f in feats if f["frac_nonzero"]]
    assert {len(w["quantiles"]) - 1 for w in live} == {3}  # analyze.quantiles=3: equal-mass thirds
    assert all(a["binContains"] == pytest.approx(1 / 3) for a in quant)
    for f in feats:  # every record carries its feature's key, as Neuronpedia's records do
        key = (f["modelId"], f["layer"], f["layer"], f["index"])
        for r in f["activations"] + f["explanations"]:
            assert (r["modelId"], r["layer"], r["source"], r["index"]) == key


def test_cli_export(explained: Path, tmp_path: Path):
    from monosemantic.cli import app

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[export]\ndb = "{explained}"\n')
    res = CliRunner().invoke(app, ["export", str(cfg), "--html", str(tmp_path / "site"),
                                   "--neuronpedia", str(tmp_path / "np")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "np" / "0-res-mono" / "batch-0.json").is_file()


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", "not a SQLite database"),
        (b"not a database, just notes\n" * 10, "not a SQLite database"),
        (None, "no meta table"),
    ],
)
def test_export_of_a_file_that_is_not_a_store_leaves_it_untouched(tmp_path: Path, content, why):
    """sqlite3 would turn these into an empty feature store (and export an empty site) without a word."""
    import sqlite3

    db = tmp_path / "features.db"
    if content is None:  # someone else's SQLite database
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE notes (t TEXT)")
        con.close()
    else:
        db.write_bytes(content)
    before = db.read_bytes()
    cfg = load_config(None, [f'export.db="{db}"', f'export.html="{tmp_path / "site"}"'])
    with pytest.raises(MonosemanticError, match=why) as err:
        export(cfg)
    assert "\n" not in str(err.value)
    assert db.read_bytes() == before and not (tmp_path / "site").exists()
