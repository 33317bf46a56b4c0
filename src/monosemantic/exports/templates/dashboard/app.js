// monosemantic feature viewer: one implementation for the static export and the live server.
// Static: data/site.js calls MONO.site(...); per-dictionary index and feature chunks arrive as
// <script> files (file:// forbids fetch). Live: data/site.js calls MONO.live("api") and the same
// JSON comes from the server's /api endpoints.
"use strict";

const MONO = (() => {
  let site = null, live = null, started = false;
  const indexes = {}, chunks = {}, scripts = {};
  const state = { did: null, idx: null, rows: [] };
  const $ = (id) => document.getElementById(id);

  // -- data ---------------------------------------------------------------------------------------
  function loadScript(src) {
    if (!scripts[src]) {
      scripts[src] = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = src;
        s.onload = resolve;
        s.onerror = () => reject(new Error("could not load " + src));
        document.head.appendChild(s);
      });
    }
    return scripts[src];
  }
  async function getJSON(url) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }
  async function getIndex(did) {
    if (!indexes[did]) {
      if (live) indexes[did] = (await getJSON(`${live}/dictionaries/${did}/features?dead=true`)).features;
      else await loadScript(`data/d${did}/index.js`);
    }
    return indexes[did];
  }
  async function getFeature(did, idx) {
    if (live) return getJSON(`${live}/dictionaries/${did}/features/${idx}`);
    const c = Math.floor(idx / site.chunk);
    if (!chunks[did + ":" + c]) await loadScript(`data/d${did}/c${c}.js`);  // inline pages preload it
    return (chunks[did + ":" + c] || {})[idx];
  }

  // -- helpers ------------------------------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "style") el.style.cssText = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const fmt = (x, d = 3) => (x === null || x === undefined ? "–" : Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(1) : (+x.toPrecision(d)).toString());
  // densities as percentages: two significant digits, never an exponent (0.0025 -> "0.25%")
  const pct = (x) => {
    if (x === null || x === undefined) return "–";
    if (x === 0) return "0%";
    const p = 100 * x;
    return (p >= 10 ? p.toFixed(0) : p.toFixed(Math.min(20, Math.max(0, 1 - Math.floor(Math.log10(p)))))) + "%";
  };
  const show = (t) => (t === null || t === undefined || t === "" ? "∅" : t.replace(/\n/g, "↵").replace(/\t/g, "⇥"));
  const SPECIAL = /^(<\|[^|]*\|>|<\/?s>|<pad>|<unk>|\[(CLS|SEP|PAD|UNK|MASK)\])$/;
  const dict = () => site.dictionaries.find((d) => d.id === state.did);

  // Activation colour: orange with opacity proportional to the activation (relative to the max).
  const heat = (a, max) => (a > 0 && max > 0 ? `rgba(238, 118, 35, ${Math.min(1, 0.12 + 0.88 * (a / max)).toFixed(3)})` : "");

  const tip = () => $("tip");
  function tipOn(ev, text) {
    const t = tip();
    t.textContent = text;
    t.style.display = "block";
    const r = ev.target.getBoundingClientRect();
    t.style.left = Math.min(window.innerWidth - t.offsetWidth - 8, Math.max(8, r.left + r.width / 2 - t.offsetWidth / 2)) + "px";
    t.style.top = r.top - t.offsetHeight - 6 + "px";
  }
  const tipOff = () => (tip().style.display = "none");

  // -- index (sidebar) ----------------------------------------------------------------------------
  function matches(row, q) {
    if (!q) return true;
    if (q.replace(/^#/, "") === String(row.idx)) return true;
    const hay = [row.explanation || "", row.concept || "", ...(row.tokens || []), ...(row.logit || [])];
    return hay.some((s) => s.toLowerCase().includes(q));
  }
  function sorted(rows, order) {
    if (order === "random") {  // live features in a per-page-load shuffle, dead ones last
      for (const r of rows) if (r.rand === undefined) r.rand = Math.random();
      return rows.slice().sort((a, b) => (!b.density - !a.density) || a.rand - b.rand);
    }
    const key = { density: "density", max: "max", score: "score", idx: "idx" }[order] || "idx";
    const desc = key !== "idx";
    return rows.slice().sort((a, b) => {
      const x = a[key], y = b[key];
      if (x === null || x === undefined) return y === null || y === undefined ? a.idx - b.idx : 1;
      if (y === null || y === undefined) return -1;
      return (desc ? y - x : x - y) || a.idx - b.idx;
    });
  }
  // dead features (`dead`, one definition server-side) are hidden unless asked for; a density band filters
  function shown(r) {
    if (r.dead && !$("show-dead").checked) return false;
    const lo = parseFloat($("dmin").value), hi = parseFloat($("dmax").value);
    const d = 100 * (r.density || 0);
    return !(Number.isFinite(lo) && d < lo) && !(Number.isFinite(hi) && d > hi);
  }
  function renderList() {
    const q = $("search").value.trim().toLowerCase();
    const rows = sorted(state.rows.filter((r) => shown(r) && matches(r, q)), $("order").value);
    const list = $("list");
    list.replaceChildren();
    const maxDensity = Math.max(1e-9, ...state.rows.map((r) => r.density || 0));
    for (const r of rows.slice(0, 2000)) {
      const label = r.explanation || (r.tokens.length ? r.tokens.map(show).join(" · ") : "no activations");
      list.appendChild(h("li", { class: "item" + (r.idx === state.idx ? " active" : "") + (r.dead ? " dead" : ""), "data-idx": r.idx, onclick: () => go(state.did, r.idx) },
        h("div", { class: "row1" }, h("span", { class: "idx" }, "#" + r.idx), h("span", { class: "label" }, label)),
        h("div", { class: "row2" },
          h("span", { class: "dbar" }, h("span", { style: `width:${(100 * (r.density || 0)) / maxDensity}%` })),
          h("span", {}, pct(r.density)), h("span", {}, "max " + fmt(r.max)),
          r.score !== null && r.score !== undefined ? h("span", {}, "score " + fmt(r.score, 2)) : null)));
    }
    const dead = state.rows.filter((r) => r.dead).length;
    $("n-dead").textContent = dead.toLocaleString();
    $("count").textContent = `${rows.length} of ${(state.rows.length - dead).toLocaleString()} live`;
  }

  // -- feature panel ------------------------------------------------------------------------------
  function card(title, ...body) {
    return h("section", { class: "card" }, h("h3", {}, title), ...body);
  }
  function histogram(hist, edges) {
    if (!hist) return h("p", { class: "muted" }, "This feature never fired on the analysed tokens.");
    const W = 420, H = 130, pad = 22, n = hist.counts.length, top = Math.max(...hist.counts, 1);
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H + pad}`);
    svg.setAttribute("class", "hist");
    const bw = W / n, last = hist.hi[n - 1] || 1;
    hist.counts.forEach((c, i) => {
      const bh = (c / top) * (H - 4);
      const r = document.createElementNS(svg.namespaceURI, "rect");
      r.setAttribute("x", (i * bw + 0.5).toFixed(1));
      r.setAttribute("y", (H - bh).toFixed(1));
      r.setAttribute("width", Math.max(1, bw - 1).toFixed(1));
      r.setAttribute("height", bh.toFixed(1));
      r.setAttribute("fill", heat(hist.hi[i], last) || "#eee");
      r.addEventListener("mouseenter", (ev) => tipOn(ev, `${fmt(hist.lo[i])} – ${fmt(hist.hi[i])}: ${c.toLocaleString()} tokens`));
      r.addEventListener("mouseleave", tipOff);
      svg.appendChild(r);
    });
    const text = (x, s, anchor) => {
      const t = document.createElementNS(svg.namespaceURI, "text");
      t.setAttribute("x", x); t.setAttribute("y", H + 15); t.setAttribute("text-anchor", anchor);
      t.textContent = s; svg.appendChild(t);
    };
    text(0, fmt(hist.lo[0]), "start");
    text(W / 2, fmt((hist.lo[0] + last) / 2), "middle");
    text(W, fmt(last), "end");
    const zeros = hist.zeros ? `silent on ${hist.zeros.toLocaleString()} tokens · ` : "";
    return h("div", {}, svg, h("p", { class: "muted small" }, `${zeros}${(edges || []).length > 1 ? "quantile edges " + edges.map((e) => fmt(e)).join(" · ") : ""}`));
  }
  function chips(items, cls) {
    if (!items || !items.length) return h("p", { class: "muted" }, "–");
    return h("div", { class: "chips" }, items.map(([t, v]) => h("span", { class: "chip " + cls }, h("span", { class: "tk" }, show(t)), h("b", {}, fmt(v, 2)))));
  }
  function example(ex, max) {
    // a Lorsa head's example: the key positions it attends to from the peak, underlined with an
    // opacity proportional to the attention weight (the weight is in the tooltip)
    const keys = new Map((ex.keys || []).filter(([i]) => i >= 0 && i < ex.t.length));
    const earlier = (ex.keys || []).filter(([i]) => i < 0);
    const toks = ex.t.map((t, i) => {
      const a = ex.a[i] || 0, w = keys.get(i);
      const attended = w === undefined ? "" : `  ·  attended from the peak: weight ${fmt(w, 3)}`;
      const style = [a > 0 ? `background-color:${heat(a, max)}` : "",
        w === undefined ? "" : `text-decoration-color:rgba(28,126,214,${(0.2 + 0.8 * Math.min(1, w)).toFixed(3)})`].filter(Boolean).join(";");
      return h("span", {
        class: "tok" + (i === ex.peak ? " peak" : "") + (a > 0 ? " on" : "") + (SPECIAL.test(t) ? " special" : "") + (w === undefined ? "" : " key"),
        style: style || null, "data-act": a, "data-key-weight": w === undefined ? null : w,
        title: `${JSON.stringify(t)}: ${fmt(a, 4)}${attended}`,
        onmouseenter: (ev) => tipOn(ev, `${JSON.stringify(t)}  →  ${fmt(a, 4)}${attended}`), onmouseleave: tipOff,
      }, show(t));
    });
    const note = earlier.length ? h("span", { class: "muted small keynote" },
      ` also attends before this window: ${earlier.map(([i, w]) => `${-i} token${i === -1 ? "" : "s"} before it (weight ${fmt(w, 3)})`).join(", ")}`) : null;
    return h("div", { class: "ex" }, h("span", { class: "exmax" }, fmt(ex.max, 3)), h("span", { class: "toks" }, toks), note);
  }
  function neighbours(list) {
    if (!list.length) return h("p", { class: "muted" }, "–");
    const byIdx = new Map(state.rows.map((r) => [r.idx, r]));
    return h("ul", { class: "nbrs" }, list.map(([i, cos]) => {
      const r = byIdx.get(i);
      return h("li", {}, h("a", { href: `#/${state.did}/${i}` }, "#" + i), h("span", { class: "cos" }, fmt(cos, 2)),
        h("span", { class: "muted" }, r ? r.explanation || r.tokens.map(show).join(" · ") : ""));
    }));
  }
  function layerNorms(L) {
    // CLT / crosscoder latent: decoder norm per output layer, the home layer outlined
    const W = 420, H = 90, pad = 18, n = L.layers.length, top = Math.max(...L.decoder_norms, 1e-9);
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H + pad}`);
    svg.setAttribute("class", "hist");
    const bw = W / n;
    L.layers.forEach((layer, i) => {
      const v = L.decoder_norms[i], bh = (v / top) * (H - 4);
      const r = document.createElementNS(svg.namespaceURI, "rect");
      r.setAttribute("x", (i * bw + 4).toFixed(1)); r.setAttribute("y", (H - bh).toFixed(1));
      r.setAttribute("width", Math.max(1, bw - 8).toFixed(1)); r.setAttribute("height", bh.toFixed(1));
      r.setAttribute("fill", layer === L.home_layer ? "#d9480f" : "#4c6ef5");
      const label = (L.labels || [])[i] || `L${layer}`;
      r.addEventListener("mouseenter", (ev) => tipOn(ev, `${label}: decoder norm ${fmt(v, 3)}`));
      r.addEventListener("mouseleave", tipOff);
      svg.appendChild(r);
      const t = document.createElementNS(svg.namespaceURI, "text");
      t.setAttribute("x", i * bw + bw / 2); t.setAttribute("y", H + 14); t.setAttribute("text-anchor", "middle");
      t.textContent = label; svg.appendChild(t);
    });
    const home = L.home_layer === null || L.home_layer === undefined ? "" : `home layer ${L.home_layer} (reads its input there) · `;
    // model diffing: the share of decoder norm on model A (decoders in training scale)
    const share = L.share_a === null || L.share_a === undefined ? "" : ` · share on model A ${fmt(L.share_a, 2)} (1: A only, 0: B only)`;
    return h("div", {}, svg, h("p", { class: "muted small" }, `${home}norm of its decoder into each site${share}`));
  }
  function renderFeature(f) {
    const d = dict(), main = $("feature");
    main.replaceChildren();
    if (!f) { main.appendChild(h("div", { class: "empty" }, "Pick a feature.")); return; }
    const badges = [];
    const few = f.explanation_source === "too few examples";
    if (f.explanation_source) badges.push(h("span", { class: "badge" + (few ? " few" : "") }, f.explanation_source));
    if (f.scores_note && !few) badges.push(h("span", { class: "badge few" }, f.scores_note));
    for (const [k, v] of Object.entries(f.scores || {})) badges.push(h("span", { class: "badge score" }, `${k} ${fmt(v, 2)}`));
    if (f.concept) badges.push(h("span", { class: "badge concept" }, `concept ${f.concept} · AUROC ${fmt(f.concept_auroc, 2)}`));
    const site = d.transcoder ? `${d.hook_name} → ${d.hook_name_out}` : d.hook_name;
    main.append(
      h("div", { class: "fhead" },
        h("div", { class: "crumbs" }, `${d.name} · ${d.architecture || "?"}${d.k ? " k=" + d.k : ""} · ${site || ""} · ${d.d_sae} features`),
        h("h1", {}, `Feature ${f.idx}`),
        h("p", { class: "expl" + (f.explanation ? "" : " muted") }, f.explanation || (few ? `Too few examples to explain or score (${(f.scores_note || "").replace(/^too few examples: /, "")}).` : "No explanation yet (run `monosemantic explain`).")),
        h("div", { class: "badges" }, badges)),
      h("div", { class: "stats" },
        [["density", pct(f.density)], ["max activation", fmt(f.max)], ["mean when active", fmt(f.mean)], ["active tokens", (f.n_active || 0).toLocaleString()]]
          .map(([k, v]) => h("div", { class: "stat" }, h("div", { class: "v" }, v), h("div", { class: "k" }, k)))),
    );
    const left = h("div", { class: "col" },
      card("Activation density", histogram(f.histogram, f.quantile_edges)),
      f.layers ? card("Decoder norm per layer", layerNorms(f.layers)) : null,
      f.logit_top ? card("Logit lens · promoted", chips(f.logit_top, "pos")) : null,
      f.logit_bottom ? card("Logit lens · suppressed", chips(f.logit_bottom, "neg")) : null,
      f.input_top ? card("Input tokens (transcoder encoder)", chips(f.input_top, "inp")) : null,
      card("Nearest features (decoder cosine)", neighbours(f.neighbours || [])));
    const max = f.max || Math.max(1e-9, ...f.top.flatMap((e) => e.a));
    const right = h("div", { class: "col wide" },
      card(`Top activations`, f.top.length ? f.top.map((e) => example(e, max)) : h("p", { class: "muted" }, "–")),
      f.quantiles.map((q) => card(`Interval ${fmt(q.lo)} – ${fmt(q.hi)}`, q.examples.map((e) => example(e, max)))));
    main.appendChild(h("div", { class: "grid" }, left, right));
    main.scrollTop = 0;
  }

  // -- navigation ---------------------------------------------------------------------------------
  async function go(did, idx) {
    const hash = `#/${did}/${idx}`;
    if (location.hash !== hash) { location.hash = hash; return; } // hashchange calls route()
    await route();
  }
  async function route() {
    const m = location.hash.match(/^#\/(\d+)(?:\/(\d+))?/);
    // no choice in the URL: the best live trained dictionary (chosen server-side, `choose.py`)
    const first = site.default_dictionary ?? site.dictionaries[0].id;
    let did = m ? +m[1] : first;
    if (!site.dictionaries.some((d) => d.id === did)) did = first;
    if (did !== state.did) {
      state.did = did;
      $("dictionary").value = String(did);
      state.rows = await getIndex(did);
      state.idx = null;
      // open on something worth reading: the best explanation score, else a random live feature
      if (!state.userOrder) $("order").value = state.rows.some((r) => r.score !== null && r.score !== undefined) ? "score" : "random";
    }
    let idx = m && m[2] !== undefined ? +m[2] : null;
    if (idx === null) {  // a representative feature (typical density, a decent score), else the list's first
      const rep = dict().representative;
      const top = sorted(state.rows.filter(shown), $("order").value)[0];
      idx = rep !== null && rep !== undefined ? rep : top ? top.idx : null;
    }
    state.idx = idx;
    renderList();
    const act = document.querySelector("#list .active");
    if (act) act.scrollIntoView({ block: "nearest" });
    try {
      renderFeature(idx === null ? null : await getFeature(did, idx));
    } catch (err) {
      $("feature").replaceChildren(h("div", { class: "empty" }, String(err.message || err)));
    }
  }
  function start() {
    if (started || !site || document.readyState === "loading") return;
    started = true;
    const sel = $("dictionary");
    for (const d of site.dictionaries) {
      const kind = d.transcoder ? "transcoder" : "SAE";
      const live = d.n_live !== undefined && d.n_live + d.n_dead > 0 ? ` · ${pct(d.n_live / (d.n_live + d.n_dead))} live` : "";
      sel.appendChild(h("option", { value: d.id }, `${d.name} — ${d.fitted ? "baseline " : ""}${kind}, ${d.d_sae} @ ${d.hook_name_out || d.hook_name}${live}`));
    }
    $("dict-wrap").style.display = site.dictionaries.length > 1 ? "" : "none";
    const m = site.meta || {};
    $("meta").textContent = [m.model ? "model " + String(m.model).split("/").pop() : null, m.n_tokens ? `${m.n_tokens.toLocaleString()} tokens analysed` : null]
      .filter(Boolean).join(" · ");
    for (const g of site.graphs || []) $("graphs").appendChild(h("a", { href: g.url, title: g.prompt || "" }, "graph: " + (g.name || g.id)));
    sel.addEventListener("change", () => go(+sel.value, ""));
    $("search").addEventListener("input", renderList);
    for (const id of ["show-dead", "dmin", "dmax"]) $(id).addEventListener("input", renderList);
    $("order").addEventListener("change", () => { state.userOrder = true; renderList(); });
    window.addEventListener("hashchange", route);
    if (!site.dictionaries.length) { $("feature").replaceChildren(h("div", { class: "empty" }, "The feature store holds no dictionaries.")); return; }
    route();
  }
  document.addEventListener("DOMContentLoaded", start);

  return {
    site(s) { site = s; start(); },
    live(base) { live = base; getJSON(base + "/site").then((s) => { site = s; start(); }); },
    index(did, rows) { indexes[did] = rows; },
    chunk(did, c, feats) { chunks[did + ":" + c] = feats; },
  };
})();
