"""The exported dashboard in a real browser (Debian's chromium driven by Playwright), from file://."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monosemantic.config import load_config
from monosemantic.exports.run import write_site
from monosemantic.store.feature_store import FeatureStore

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed at /usr/bin/chromium (`make setup` installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(world: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The analysis world's SAE and transcoder, and its concept probe (1 live feature, 7 dead)."""
    from analysis_world import analyze_config

    from monosemantic.analysis.run import analyze
    from monosemantic.explanation.run import explain

    root = tmp_path_factory.mktemp("browser")
    dicts = root / "dicts"
    dicts.mkdir()
    for src in (world["dicts"] / "sae", world["dicts"] / "transcoder", world["probe"] / "probe"):
        shutil.copytree(src, dicts / src.name)
    db = analyze(analyze_config(world, dicts, root))
    explain(load_config(None, [f'explain.db="{db}"']))
    return write_site(FeatureStore(db), root / "site"), db


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append("request failed: " + r.url))
    page.goto(url)
    page.wait_for_selector("#feature .ex .tok", timeout=15_000)
    return page, errors


def test_dashboard_opens_on_the_best_dictionary_and_a_representative_feature(browser, site):
    """With nothing in the URL: the dictionary and feature `choose.py` picks (the same for the
    static export as for the server), not the mostly dead probe; dead features are hidden until
    asked for."""
    from monosemantic.exports.dashboard import site_summary

    out, db = site
    summary = site_summary(FeatureStore(db))
    by_name = {d["name"]: d for d in summary["dictionaries"]}
    best = next(d for d in summary["dictionaries"] if d["id"] == summary["default_dictionary"])
    assert best["name"] != "probe" and (by_name["probe"]["n_live"], by_name["probe"]["n_dead"]) == (1, 7)
    page, errors = _open(browser, (out / "index.html").as_uri())
    assert page.inner_text("#feature .crumbs").startswith(best["name"])
    assert page.inner_text("#feature h1") == f"Feature {best['representative']}"
    page.goto((out / "index.html").as_uri() + f"#/{by_name['probe']['id']}")
    page.wait_for_function("document.querySelector('#feature .crumbs').textContent.startsWith('probe')")
    assert page.inner_text("#feature h1") == "Feature 0"  # its one live feature
    assert page.locator("#list li").count() == 1 and page.inner_text("#n-dead") == "7"
    page.check("#show-dead")
    assert page.locator("#list li").count() == 8 and page.locator("#list li.dead").count() == 7
    assert errors == []


def test_dashboard_renders_and_search_filters(browser, site, tmp_path):
    out, db = site
    store = FeatureStore(db)
    sae = store.dictionary("sae")
    page, errors = _open(browser, (out / "index.html").as_uri() + f"#/{sae['id']}")
    page.screenshot(path=str(tmp_path / "dashboard.png"))
    # a representative feature opens (typical density, at least the median score), with highlighted examples
    from monosemantic.exports.dashboard.choose import representative

    assert page.inner_text("#feature h1") == f"Feature {representative(store.feature_summaries(sae['id']))}"
    densest = store.list_features(sae["id"], order_by="density", limit=1)[0]  # for the search below
    lit = page.eval_on_selector_all(
        "#feature .tok",
        "els => els.filter(e => getComputedStyle(e).backgroundColor !== 'rgba(0, 0, 0, 0)').length",
    )
    assert lit > 0
    assert page.locator("#feature svg.hist rect").count() > 0
    titles = page.eval_on_selector_all("#feature .tok.on", "els => els.map(e => e.getAttribute('title'))")
    assert titles and all(": " in t for t in titles)  # per-token values on hover
    density = page.inner_text("#feature .stats .stat .v >> nth=0")
    assert density.endswith("%") and "e" not in density  # a percentage, never 2.5e-1%
    n_all = page.locator("#list li").count()
    assert n_all == store.count_features(sae["id"], include_dead=False)
    # a density band: only features inside it are listed
    levels = sorted({f["density"] for f in store.feature_summaries(sae["id"])})
    mid = (levels[len(levels) // 2] + levels[len(levels) // 2 + 1]) / 2  # between two densities: no ties
    page.fill("#dmin", f"{100 * mid:.6f}")
    page.wait_for_timeout(100)
    band = [int(i) for i in page.eval_on_selector_all("#list li", "els => els.map(e => e.dataset.idx)")]
    want = {f["idx"] for f in store.list_features(sae["id"], min_density=mid)}
    assert band and set(band) == want and len(band) < n_all
    page.fill("#dmin", "")
    # typing filters the list to what the store's explanations and top tokens match
    top = store.examples(sae["id"], densest["idx"], kind="top")
    word = next(t.strip() for t in (e["tokens"][e["peak"]] for e in top) if len(t.strip()) > 1)
    page.fill("#search", word)
    page.wait_for_timeout(100)
    shown = [int(i) for i in page.eval_on_selector_all("#list li", "els => els.map(e => e.dataset.idx)")]
    assert 0 < len(shown) < n_all and densest["idx"] in shown
    for idx in shown:
        f = store.feature(sae["id"], idx)
        tops = [e["tokens"][e["peak"]] for e in store.examples(sae["id"], idx, kind="top")]
        hay = [f["explanation"] or "", f["concept"] or "", *tops, *[t["token"] for t in f["logit_top"][:5]]]
        assert any(word.lower() in s.lower() for s in hay)
    page.fill("#search", "zzzz-no-such-feature")
    page.wait_for_timeout(100)
    assert page.locator("#list li").count() == 0
    assert errors == []


def test_dictionary_selector_and_navigation(browser, site):
    out, db = site
    store = FeatureStore(db)
    tc = store.dictionary("transcoder")
    page, errors = _open(browser, (out / "index.html").as_uri())
    page.check("#show-dead")
    page.select_option("#dictionary", str(tc["id"]))
    page.wait_for_function("document.querySelector('#feature .crumbs').textContent.startsWith('transcoder')")
    assert page.locator("#list li").count() == tc["n_features"]
    assert "input tokens" in page.inner_text("#feature").lower()  # transcoders show their input side
    page.select_option("#order", "idx")
    page.click("#list li >> nth=3")
    page.wait_for_function("document.querySelector('#feature h1').textContent === 'Feature 3'")
    assert page.evaluate("location.hash") == f"#/{tc['id']}/3"
    page.click("#feature .nbrs a >> nth=0")
    page.wait_for_function("document.querySelector('#feature h1').textContent !== 'Feature 3'")
    assert errors == []


def test_show_inlines_one_feature_for_notebooks(browser, site, tmp_path):
    """`monosemantic.show(db, dictionary, feature)`: the same dashboard, every asset inlined."""
    import monosemantic

    _, db = site
    store = FeatureStore(db)
    sae = store.dictionary("sae")
    idx = store.list_features(sae["id"], order_by="density", limit=1)[0]["idx"]
    view = monosemantic.show(db, "sae", idx)
    assert "<script src" not in view.html and "<link" not in view.html
    assert view._repr_html_().startswith("<iframe srcdoc=")
    page, errors = _open(browser, view.save(tmp_path / "feature.html").as_uri())
    assert page.inner_text("#feature h1") == f"Feature {idx}"
    assert page.locator("#list li").count() == store.count_features(sae["id"], include_dead=False)
    assert errors == []


def test_lorsa_examples_mark_the_keys_each_head_attends_to(browser, world, tmp_path):
    """A Lorsa head's example underlines the key tokens it attends to from the peak, each with its
    stored attention weight (in the tooltip too)."""
    import torch
    from analysis_world import analyze_config

    import monosemantic
    from monosemantic.analysis.run import analyze
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary
    from monosemantic.dictionaries.io import save_dictionary

    site, site_out = "blocks.0.ln1.hook_normalized", "blocks.0.hook_attn_out"
    torch.manual_seed(2)
    cfg = DictionaryConfig(
        architecture="lorsa", d_sae=8, k=2, n_qk_heads=2, d_qk_head=8, site=site, site_out=site_out
    )
    meta = {"model_name": str(world["model"]), "hook_name": site, "hook_name_out": site_out}
    save_dictionary(build_dictionary(cfg, 32, 32), tmp_path / "dicts" / "lorsa", meta)
    db = analyze(analyze_config(world, tmp_path / "dicts", tmp_path / "out"))
    store = FeatureStore(db)
    (d,) = store.dictionaries()
    head, ex = next(
        (h, e)
        for h in range(8)
        for e in store.examples(d["id"], h, kind="top")[:1]
        if any(0 <= i < len(e["tokens"]) for i, _ in e["attended"])
    )
    page, errors = _open(
        browser, monosemantic.show(db, d["name"], head).save(tmp_path / "head.html").as_uri()
    )
    first = page.locator("#feature .ex").first
    marks = first.locator(".tok.key")
    shown = [
        (
            int(first.locator(".tok").evaluate_all("(els, m) => els.indexOf(m)", m)),
            float(m.get_attribute("data-key-weight")),
        )
        for m in marks.element_handles()
    ]
    want = [(i, w) for i, w in ex["attended"] if 0 <= i < len(ex["tokens"])]
    assert sorted(i for i, _ in shown) == sorted(i for i, _ in want)
    for i, w in shown:
        assert w == pytest.approx(dict(want)[i], abs=1e-3)
    assert all("attended from the peak: weight" in m.get_attribute("title") for m in marks.element_handles())
    assert (
        page.eval_on_selector("#feature .ex .tok.key", "e => getComputedStyle(e).textDecorationLine")
        == "underline"
    )
    assert errors == []
