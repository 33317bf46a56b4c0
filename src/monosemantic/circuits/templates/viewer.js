// Attribution-graph viewer (circuit-tracer / Neuronpedia graph.json). One file for the static page
// (inlined, opens from file://) and the served page (/graphs/{id}, which also saves annotations
// through the server's /api/annotations). Layout: one column per prompt position, one row per
// layer (embeddings at the bottom, logits at the top); a column is as wide as the most crowded
// (layer, position) cell it holds, so the positions where the circuit lives get the room.
"use strict";
(() => {
  const G = JSON.parse(document.getElementById("graph-data").textContent);
  const meta = G.metadata || {}, nodes = G.nodes || [], links = G.links || [];
  G.qParams = G.qParams || {};
  const byId = new Map(nodes.map((n) => [n.node_id, n]));
  const pinned = new Set((G.qParams.pinnedIds || []).filter((id) => byId.has(id)));
  const supernodes = (G.qParams.supernodes || []).map((s) => s.slice());
  const tokens = meta.prompt_tokens || [];
  // chat prompts: runs of one role over positions ({role, start, end}), drawn on the token axis
  const turns = Array.isArray(meta.turns) ? meta.turns : [];
  const roleAt = (p) => (turns.find((t) => t.start <= p && p < t.end) || {}).role;
  const nPos = Math.max(tokens.length, 1 + Math.max(0, ...nodes.map((n) => +n.ctx_idx || 0)));
  const nLayers = meta.n_layers ?? Math.max(0, ...nodes.filter((n) => /^\d+$/.test(n.layer) && n.feature_type !== "logit").map((n) => +n.layer + 1));
  const nRows = nLayers + 2;
  const $ = (id) => document.getElementById(id);
  const NS = "http://www.w3.org/2000/svg";
  let selected = null;

  // -- words for humans (the JSON keeps circuit-tracer's feature_type strings) -------------------
  const KINDS = {
    "cross layer transcoder": ["transcoder feature", "#7fb0e0"],
    "sparse autoencoder": ["SAE feature", "#b79be0"],
    "mlp reconstruction error": ["transcoder error", "#bbbbbb"],
    "sae reconstruction error": ["SAE error", "#bbbbbb"],
    "lorsa": ["Lorsa head", "#e39ac0"],
    "attention reconstruction error": ["Lorsa error", "#bbbbbb"],
    "mlp expert error": ["expert error", "#c8b28e"],
    "embedding": ["token embedding", "#99dd99"],
    "logit": ["output logit", "#f0b060"],
  };
  const kind = (n) => (KINDS[n.feature_type] || [n.feature_type, "#7fb0e0"])[0];
  const colour = (n) => (KINDS[n.feature_type] || [0, "#7fb0e0"])[1];
  const isError = (n) => String(n.feature_type).includes("error");
  const isFeature = (n) => !isError(n) && n.feature_type !== "embedding" && n.feature_type !== "logit";
  const show = (t) => String(t ?? "").replace(/\n/g, "↵").replace(/\t/g, "⇥");
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const fmt = (v, d = 3) => (v === null || v === undefined ? "–" : typeof v !== "number" ? String(v) : Number.isNaN(v) ? "–" : Number.isInteger(v) || Math.abs(v) >= 1000 ? v.toLocaleString() : v.toFixed(d));
  // a density as a percentage with two significant digits, never an exponent (as the dashboard)
  const pct = (x) => (x === 0 ? "0%" : (100 * x >= 10 ? (100 * x).toFixed(0) : (100 * x).toFixed(Math.min(20, Math.max(0, 1 - Math.floor(Math.log10(100 * x)))))) + "%");
  const rowOf = (n) => (n.layer === "E" ? 0 : n.feature_type === "logit" ? nLayers + 1 : Math.min(nLayers, +n.layer + 1));
  const tokenOf = (n) => show(tokens[n.ctx_idx] ?? "");
  const rowName = (r) => (r === 0 ? "Emb" : r === nLayers + 1 ? "Logit" : "L" + (r - 1));

  /** The short label drawn under a node: the user's annotation, else the explanation's gist. */
  function shortLabel(n) {
    if (n.annotation) return n.annotation;
    if (n.feature_type === "embedding") return tokenOf(n);
    if (n.feature_type === "logit") return `${show(n.clerp && n.clerp.match(/"(.*)"/) ? n.clerp.match(/"(.*)"/)[1] : n.feature)} ${fmt(n.token_prob, 2)}`;
    if (isError(n) && n.expert !== undefined) return `expert ${n.expert} L${n.layer}`;
    if (isError(n)) return "error L" + n.layer;
    let s = String(n.clerp || "").split(/;\s*e\.g\.|;/)[0].replace(/^fires on /, "").replace(/\s*\(AUROC[^)]*\)/, "").trim();
    return s || `L${n.layer} #${n.feature_index ?? n.feature}`;
  }
  const fullLabel = (n) => n.annotation ? `${n.annotation} (${n.clerp || kind(n)})` : n.clerp || `${kind(n)} L${n.layer} #${n.feature_index ?? n.feature}`;

  // -- layout --------------------------------------------------------------------------------------
  const cells = new Map();
  for (const n of nodes) {
    const key = rowOf(n) + ":" + n.ctx_idx;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(n);
  }
  const order = (n) => (n.feature_type === "logit" ? -(n.token_prob || 0) : n.influence ?? 1);
  for (const list of cells.values()) list.sort((a, b) => order(a) - order(b));
  const colSlots = Array.from({ length: nPos }, () => 1);
  for (const [key, list] of cells) { const p = +key.split(":")[1]; colSlots[p] = Math.max(colSlots[p], list.length); }
  const M = { left: 52, right: 12, top: 14, bottom: turns.length ? 52 : 34 }, COL_MIN = 40, SLOT_MIN = 28, ROW_MIN = 100;
  let geo = null;

  /** Column widths: `slot` pixels per node of the column's most crowded cell, but at least COL_MIN
   * (room for the token under it); `slot` is the largest that fits the pane (scroll below SLOT_MIN). */
  function columnWidths(avail) {
    let slot = SLOT_MIN;
    for (let lo = SLOT_MIN, hi = 400, i = 0; i < 30; i++) {
      const mid = (lo + hi) / 2;
      const need = colSlots.reduce((a, k) => a + Math.max(COL_MIN, k * mid), 0);
      if (need <= avail) { slot = mid; lo = mid; } else hi = mid;
    }
    return { slot, widths: colSlots.map((k) => Math.max(COL_MIN, k * slot)) };
  }

  function layout() {
    const pane = $("main");
    const { slot, widths } = columnWidths(pane.clientWidth - 2 - M.left - M.right);
    const W = M.left + M.right + widths.reduce((a, b) => a + b, 0);
    // crowded rows stagger their labels over two tiers, so each label gets two slots of width
    const stagger = slot < 64;
    const rowH = Math.max(stagger ? 132 : ROW_MIN, (pane.clientHeight - 2 - M.top - M.bottom) / nRows);
    const H = M.top + rowH * nRows + M.bottom;
    const colX = [];
    let x = M.left;
    for (let p = 0; p < nPos; p++) { colX.push(x); x += widths[p]; }
    for (const [key, list] of cells) {
      const [r, p] = key.split(":").map(Number);
      const each = widths[p] / list.length;
      const tiers = stagger && list.length > 1 && each < 64 ? 2 : 1;
      list.forEach((n, i) => {
        n.x = colX[p] + each * (i + 0.5);
        n.y = M.top + (nRows - 1 - r) * rowH + rowH * 0.2;
        // a label spans at most its share of the tier, shrunk (never shifted) to stay in the column
        const half = (Math.min(each * tiers, 160) - 4) / 2;
        const lo = Math.max(n.x - half, colX[p] + 2), hi = Math.min(n.x + half, colX[p] + widths[p] - 2);
        n.labelX = lo;
        n.labelW = Math.max(0, hi - lo);
        n.labelY = n.y + 11 + (i % tiers) * 42;
      });
    }
    geo = { W, H, rowH, colX, widths };
  }

  function el(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function div(cls, text, style, parent) {
    const d = document.createElement("div");
    d.className = cls;
    d.textContent = text;
    Object.assign(d.style, style);
    parent.appendChild(d);
    return d;
  }
  const radius = (n) => n.feature_type === "logit" ? 4 + 6 * (n.token_prob || 0) : isFeature(n) ? 4 + 4 * Math.max(0, 1 - (n.influence ?? 1)) : 5;
  const maxW = Math.max(1e-12, ...links.map((l) => Math.abs(l.weight)));
  let edgeEls = [], snLayer = null;

  function draw() {
    layout();
    const svg = $("svg"), labels = $("labels");
    svg.replaceChildren();
    labels.replaceChildren();
    svg.setAttribute("width", geo.W);
    svg.setAttribute("height", geo.H);
    svg.setAttribute("viewBox", `0 0 ${geo.W} ${geo.H}`);
    Object.assign($("canvas").style, { width: geo.W + "px", height: geo.H + "px" });
    for (let r = 0; r < nRows; r++) {
      const y = M.top + (nRows - 1 - r) * geo.rowH + geo.rowH * 0.2;
      el("line", { class: "gridline", x1: M.left, x2: geo.W - M.right, y1: y, y2: y }, svg);
      div("layer", rowName(r), { left: "4px", top: y - 7 + "px", width: M.left - 8 + "px" }, labels);
    }
    for (let p = 0; p < nPos; p++) {
      const w = geo.widths[p];
      if (p) el("line", { class: "gridline", x1: geo.colX[p], x2: geo.colX[p], y1: M.top, y2: geo.H - M.bottom }, svg);
      const role = roleAt(p);
      const t = div("tok" + (role ? " role-" + role : ""), show(tokens[p] ?? p), { left: geo.colX[p] + 2 + "px", top: geo.H - M.bottom + 8 + "px", width: w - 4 + "px" }, labels);
      t.title = `position ${p}: ${show(tokens[p] ?? "")}` + (role ? ` (${role} turn)` : "");
    }
    for (const turn of turns) {  // a turn boundary: a rule across the graph and the role under its first token
      if (turn.start > 0) el("line", { class: "turn", x1: geo.colX[turn.start], x2: geo.colX[turn.start], y1: M.top, y2: geo.H - 6 }, svg);
      if (turn.role !== "other") div("turn-role role-" + turn.role, turn.role, { left: geo.colX[turn.start] + 2 + "px", top: geo.H - M.bottom + 26 + "px" }, labels);
    }
    snLayer = el("g", {}, svg);
    const edgeLayer = el("g", {}, svg), nodeLayer = el("g", {}, svg);
    edgeEls = [];
    for (const l of links) {
      const s = byId.get(l.source), t = byId.get(l.target);
      if (!s || !t) continue;
      const a = Math.abs(l.weight) / maxW, my = (s.y + t.y) / 2;
      const e = el("path", {
        class: "edge", d: `M${s.x},${s.y} C${s.x},${my} ${t.x},${my} ${t.x},${t.y}`,
        stroke: l.weight >= 0 ? "#2c6fbb" : "#c0392b", "stroke-width": 0.4 + 3 * a, "stroke-opacity": 0.06 + 0.35 * a,
      }, edgeLayer);
      e.link = l;
      e.addEventListener("click", () => document.dispatchEvent(new CustomEvent("graph:link", { detail: l })));
      edgeEls.push(e);
    }
    for (const n of nodes) {
      const r = radius(n);
      n.el = isError(n)
        ? el("rect", { class: "node", x: n.x - r, y: n.y - r, width: 2 * r, height: 2 * r, fill: colour(n) }, nodeLayer)
        : el("circle", { class: "node", cx: n.x, cy: n.y, r, fill: colour(n) }, nodeLayer);
      n.el.dataset.id = n.node_id;
      n.el.addEventListener("mouseenter", (ev) => hover(n, ev));
      n.el.addEventListener("mouseleave", () => hover(null));
      n.el.addEventListener("click", (ev) => (ev.shiftKey ? togglePin(n.node_id) : select(n)));
      n.lbl = div("lbl", shortLabel(n), { left: n.labelX + "px", top: n.labelY + "px", width: n.labelW + "px" }, labels);
    }
    render();
    if (selected) select(selected);
  }

  // -- interaction ---------------------------------------------------------------------------------
  function hover(n, ev) {
    const box = $("hover");
    if (!n) { box.hidden = true; if (!selected) edgeEls.forEach((e) => (e.style.display = "")); return; }
    box.innerHTML = `<b>${esc(kind(n))}</b> · ${esc(rowName(rowOf(n)))} · “${esc(tokenOf(n))}” (pos ${n.ctx_idx})<br>${esc(fullLabel(n))}` +
      (n.activation != null ? `<br>activation ${fmt(n.activation)}` : "") + (n.influence != null ? ` · influence ${fmt(n.influence)}` : "");
    box.hidden = false;
    const main = $("main");
    box.style.left = Math.min(n.x + 12, main.scrollLeft + main.clientWidth - 350) + "px";
    box.style.top = n.y + 12 + "px";
    if (!selected) for (const e of edgeEls) e.style.display = e.link.source === n.node_id || e.link.target === n.node_id ? "" : "none";
  }
  const describe = (id) => { const m = byId.get(id); return m ? `${esc(shortLabel(m))}` : esc(id); };
  function ioTable(ls, other) {
    if (!ls.length) return '<p class="muted small">none in the pruned graph</p>';
    return '<table class="io">' + ls.map((l) => {
      const id = other(l), m = byId.get(id);
      return `<tr data-id="${esc(id)}"><td>${describe(id)}<br><span class="muted">${esc(m ? kind(m) + " · " + rowName(rowOf(m)) : "")}</span></td>` +
        `<td>“${esc(m ? tokenOf(m) : "")}”</td><td class="w ${l.weight >= 0 ? "pos" : "neg"}">${l.weight >= 0 ? "+" : ""}${fmt(l.weight, 4)}</td></tr>`;
    }).join("") + "</table>";
  }
  function example(ex) {
    const mx = Math.max(1e-9, ...ex.activations);
    return '<div class="ex">' + ex.tokens.map((t, i) => `<span style="background:rgba(230,120,0,${Math.max(0, ex.activations[i] / mx).toFixed(2)})" title="${fmt(ex.activations[i])}">${esc(show(t))}</span>`).join("") + "</div>";
  }
  function select(n) {
    if (selected && selected.el) selected.el.classList.remove("selected");
    selected = n;
    n.el.classList.add("selected");
    const byW = (a, b) => Math.abs(b.weight) - Math.abs(a.weight);
    const inc = links.filter((l) => l.target === n.node_id).sort(byW).slice(0, 12);
    const out = links.filter((l) => l.source === n.node_id).sort(byW).slice(0, 12);
    let h = `<b>${esc(shortLabel(n))}</b><br><span class="muted">${esc(kind(n))} · ${esc(rowName(rowOf(n)))} · “${esc(tokenOf(n))}” (position ${n.ctx_idx}) · ${esc(n.node_id)}</span>`;
    if (n.clerp) h += `<p>${esc(n.clerp)}</p>`;
    const kv = [["activation", n.activation], ["cumulative influence", n.influence], ["probability", n.feature_type === "logit" ? n.token_prob : null], ["density", n.density], ["expert", n.expert], ["routing weight", n.expert_weight]];
    h += '<table class="kv">' + kv.filter(([, v]) => v != null).map(([k, v]) => `<tr><td>${k}</td><td>${k === "density" ? pct(v) : fmt(v, 4)}</td></tr>`).join("");
    if (n.dictionary) h += `<tr><td>dictionary</td><td>${esc(n.dictionary)} #${esc(n.feature_index ?? "")}</td></tr>`;
    h += "</table>";
    h += `<div class="row"><button id="pinbtn">${pinned.has(n.node_id) ? "unpin" : "pin to subgraph"}</button></div>`;
    h += `<label class="small">your label<textarea id="note" rows="2" placeholder="name this node (saved with the graph)">${esc(n.annotation || "")}</textarea></label>`;
    h += `<h2>Inputs (${links.filter((l) => l.target === n.node_id).length})</h2>${ioTable(inc, (l) => l.source)}`;
    h += `<h2>Outputs (${links.filter((l) => l.source === n.node_id).length})</h2>${ioTable(out, (l) => l.target)}`;
    if (n.examples && n.examples.length) h += "<h2>Top examples</h2>" + n.examples.map(example).join("");
    $("info").innerHTML = h;
    $("info").classList.remove("muted");
    $("pinbtn").onclick = () => togglePin(n.node_id);
    $("note").oninput = (ev) => { n.annotation = ev.target.value.trim() || undefined; n.lbl.textContent = shortLabel(n); n.lbl.classList.toggle("annotated", !!n.annotation); };
    for (const tr of $("info").querySelectorAll("tr[data-id]")) tr.onclick = () => { const m = byId.get(tr.dataset.id); if (m) select(m); };
    for (const e of edgeEls) e.style.display = e.link.source === n.node_id || e.link.target === n.node_id ? "" : "none";
    document.dispatchEvent(new CustomEvent("graph:select", { detail: n }));  // e.g. the attention panel
  }
  function togglePin(id) {
    if (pinned.has(id)) pinned.delete(id); else pinned.add(id);
    render();
    if (selected && selected.node_id === id) select(selected);
  }

  // -- pins, supernodes, subgraph ----------------------------------------------------------------
  function render() {
    for (const n of nodes) {
      if (!n.el) continue;
      n.el.classList.toggle("pinned", pinned.has(n.node_id));
      n.lbl.classList.toggle("pinned", pinned.has(n.node_id));
      n.lbl.classList.toggle("annotated", !!n.annotation);
    }
    $("pins").innerHTML = [...pinned].map((id) => `<li data-id="${esc(id)}">${describe(id)} <span class="muted">${esc(byId.get(id) ? "“" + tokenOf(byId.get(id)) + "” " + rowName(rowOf(byId.get(id))) : "")}</span></li>`).join("");
    for (const li of $("pins").querySelectorAll("li")) li.onclick = () => togglePin(li.dataset.id);
    $("sns").innerHTML = supernodes.map((s, i) => `<li data-i="${i}"><b>${esc(s[0])}</b>: ${s.slice(1).map(describe).join(", ")} <button data-i="${i}">ungroup</button></li>`).join("");
    for (const b of $("sns").querySelectorAll("button")) b.onclick = () => { supernodes.splice(+b.dataset.i, 1); render(); };
    if (snLayer) {
      snLayer.replaceChildren();
      for (const s of supernodes) {
        const ms = s.slice(1).map((id) => byId.get(id)).filter(Boolean);
        if (!ms.length) continue;
        const xs = ms.map((m) => m.x), ys = ms.map((m) => m.y);
        const x0 = Math.min(...xs) - 14, y0 = Math.min(...ys) - 14;
        el("rect", { class: "sn", x: x0, y: y0, width: Math.max(...xs) - x0 + 14, height: Math.max(...ys) - y0 + 14, rx: 8 }, snLayer);
        el("text", { class: "sn-name", x: x0 + 2, y: y0 - 3 }, snLayer).textContent = s[0];
      }
    }
    subgraph();
  }
  /** Pinned nodes, with each supernode collapsed to one box; edges summed between boxes. */
  function subgraph() {
    const svg = $("subgraph");
    svg.replaceChildren();
    const owner = new Map();
    const items = supernodes.map((s, i) => ({ name: s[0], ids: s.slice(1).filter((id) => byId.has(id)), key: "s" + i }));
    for (const it of items) for (const id of it.ids) owner.set(id, it);
    for (const id of pinned) if (!owner.has(id)) { const it = { name: shortLabel(byId.get(id)), ids: [id], key: id }; items.push(it); owner.set(id, it); }
    if (!items.length) { el("text", { x: 8, y: 20 }, svg).textContent = "Pin nodes (shift-click) to build a subgraph."; return; }
    const W = svg.clientWidth || 350, H = svg.clientHeight || 220;
    for (const it of items) {
      const ms = it.ids.map((id) => byId.get(id));
      it.row = ms.reduce((a, m) => a + rowOf(m), 0) / ms.length;
      it.pos = ms.reduce((a, m) => a + (+m.ctx_idx), 0) / ms.length;
    }
    const rows = [...new Set(items.map((it) => Math.round(it.row)))].sort((a, b) => a - b);
    for (const r of rows) {
      const same = items.filter((it) => Math.round(it.row) === r).sort((a, b) => a.pos - b.pos);
      same.forEach((it, i) => { it.x = (W * (i + 0.5)) / same.length; it.y = H - 20 - ((H - 40) * rows.indexOf(r)) / Math.max(1, rows.length - 1); });
    }
    const sums = new Map();
    for (const l of links) {
      const a = owner.get(l.source), b = owner.get(l.target);
      if (!a || !b || a === b) continue;
      const k = a.key + "|" + b.key;
      sums.set(k, { a, b, w: (sums.get(k)?.w || 0) + l.weight });
    }
    const mw = Math.max(1e-12, ...[...sums.values()].map((s) => Math.abs(s.w)));
    for (const { a, b, w } of sums.values())
      el("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: w >= 0 ? "#2c6fbb" : "#c0392b", "stroke-width": 0.5 + 4 * Math.abs(w) / mw, "stroke-opacity": 0.6 }, svg);
    for (const it of items) {
      const name = it.name.length > 22 ? it.name.slice(0, 21) + "…" : it.name;
      const w = Math.min(W / 2, 12 + 6.2 * name.length);
      el("rect", { x: it.x - w / 2, y: it.y - 9, width: w, height: 18, rx: 4, fill: it.ids.length > 1 ? "#fff7e0" : "#eef4fb", stroke: it.ids.length > 1 ? "#e69500" : "#7fb0e0" }, svg);
      el("text", { x: it.x, y: it.y + 4, "text-anchor": "middle" }, svg).textContent = name;
    }
  }
  $("group").onclick = () => {
    const free = [...pinned].filter((id) => !supernodes.some((s) => s.includes(id)));
    if (free.length < 2) { $("status").textContent = "Pin at least two nodes (shift-click) to group them."; return; }
    supernodes.push([$("snname").value.trim() || "supernode " + (supernodes.length + 1), ...free]);
    $("snname").value = "";
    render();
  };
  $("clear").onclick = () => { pinned.clear(); render(); };

  // -- saving annotations: into graph.json (download) or the server's annotations table ----------
  function state() {
    const annotations = {};
    for (const n of nodes) if (n.annotation) annotations[n.node_id] = n.annotation;
    return { pinnedIds: [...pinned], supernodes, annotations };
  }
  function graphJSON() {
    const s = state();
    Object.assign(G.qParams, { pinnedIds: s.pinnedIds, supernodes: s.supernodes });
    const skip = new Set(["el", "lbl", "x", "y", "labelX", "labelW", "labelY"]);
    return JSON.stringify(G, (k, v) => (skip.has(k) ? undefined : v));
  }
  function download() {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([graphJSON()], { type: "application/json" }));
    a.download = (meta.slug || "graph") + ".json";
    document.body.appendChild(a);
    a.click();
    a.remove();
    $("status").textContent = "Downloaded " + a.download + " with your pins, supernodes and labels.";
  }
  const served = location.protocol.startsWith("http") ? location.pathname.match(/\/graphs\/(\d+)\/?$/) : null;
  // the API sits beside graphs/ (so a server mounted under a prefix works too)
  const api = served ? location.origin + location.pathname.replace(/graphs\/\d+\/?$/, "") + "api/annotations" : null;
  async function save() {
    if (!api) return download();
    try {
      const r = await fetch(api, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ target: "graph", key: served[1], text: JSON.stringify({ viewer: 1, ...state() }) }),
      });
      if (!r.ok) throw new Error(r.status + " " + r.statusText);
      $("status").textContent = "Saved to the server's annotations.";
    } catch (err) {
      $("status").textContent = `The server did not take the annotations (${err.message}); downloading graph.json instead.`;
      download();
    }
  }
  function apply(s) {
    if (!s || typeof s !== "object") return;
    pinned.clear();
    for (const id of s.pinnedIds || []) if (byId.has(id)) pinned.add(id);
    supernodes.splice(0, supernodes.length, ...(s.supernodes || []));
    for (const n of nodes) n.annotation = (s.annotations || {})[n.node_id] || n.annotation;
  }
  async function loadSaved() {
    if (!api) return;
    try {
      const r = await fetch(`${api}?target=graph&key=${served[1]}`);
      if (!r.ok) return;
      const notes = await r.json();
      for (let i = notes.length - 1; i >= 0; i--) {
        try { const s = JSON.parse(notes[i].text); if (s && s.viewer) { apply(s); break; } } catch { /* a plain-text note */ }
      }
      for (const n of nodes) if (n.lbl) n.lbl.textContent = shortLabel(n);
      render();
      $("status").textContent = "Loaded the last saved annotations.";
    } catch { /* no annotations API: nothing saved */ }
  }
  $("save").onclick = save;
  $("download").onclick = download;

  // -- interventions (served only): ablate / clamp / scale feature nodes, logits before and after ---
  const edits = [];
  const ivApi = served ? api.replace(/annotations$/, `graphs/${served[1]}/intervene`) : null;
  const MODEL_WORDS = { free: "free model", frozen: "frozen attention" };
  const canEdit = (n) => n && isFeature(n) && n.feature_index !== undefined && n.feature_index !== null;
  function editWords(e) {
    const n = byId.get(e.node_id);
    const what = e.mode === "ablate" ? "ablate" : e.mode === "scale" ? `scale ×${e.value}` : e.mode === "set" ? `clamp to ${e.value}` : `add ${e.value}`;
    return `${what}: ${n ? shortLabel(n) + " “" + tokenOf(n) + "”" : e.node_id}`;
  }
  function renderEdits() {
    $("iv-list").innerHTML = edits.map((e, i) => `<li data-i="${i}">${esc(editWords(e))} <button data-i="${i}">remove</button></li>`).join("");
    for (const b of $("iv-list").querySelectorAll("button")) b.onclick = () => { edits.splice(+b.dataset.i, 1); renderEdits(); };
  }
  function currentEdit(n) {
    return { node_id: n.node_id, mode: $("iv-mode").value, value: +$("iv-value").value || 0 };
  }
  function logitTable(out) {
    const rows = out.original.map((o, i) => {
      const m = out.intervened[i];
      return `<tr><td>${i + 1}</td><td class="tk">${esc(show(o.token))}</td><td>${fmt(o.prob, 3)}</td><td class="tk">${esc(show(m.token))}</td><td>${fmt(m.prob, 3)}</td></tr>`;
    });
    const targets = out.targets.map((t) => {
      const d = t.prob - t.clean_prob;
      return `<tr class="target"><td>★</td><td class="tk">${esc(show(t.label))}</td><td>${fmt(t.clean_prob, 3)}</td><td class="tk">${esc(show(t.label))}</td><td>${fmt(t.prob, 3)} <span class="${d >= 0 ? "pos" : "neg"}">(${d >= 0 ? "+" : ""}${fmt(d, 3)})</span></td></tr>`;
    });
    return `<table class="iv"><tr><th></th><th colspan="2">original</th><th colspan="2">intervened</th></tr>${rows.join("")}${targets.join("")}</table>` +
      `<p class="muted small">next token after “${esc(show(out.token))}” (position ${out.position}) · KL(original ‖ intervened) ${fmt(out.kl, 4)}</p>`;
  }
  async function runEdits() {
    const list = edits.length ? edits.slice() : canEdit(selected) ? [currentEdit(selected)] : [];
    if (!list.length) { $("iv-status").textContent = "Select a feature node (or add some) first."; return; }
    const model = $("iv-model").value;
    $("iv-run").disabled = true;
    $("iv-status").textContent = `running on the ${MODEL_WORDS[model]}…`;
    try {
      const r = await fetch(ivApi, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ interventions: list, model, top: 10 }) });
      const out = await r.json();
      if (!r.ok) throw new Error(typeof out.detail === "string" ? out.detail : JSON.stringify(out.detail));
      $("iv-status").innerHTML = `<b>${esc(MODEL_WORDS[out.model])}</b>: ${esc(out.label)}<br>${list.map((e) => esc(editWords(e))).join("<br>")}`;
      $("iv-result").innerHTML = logitTable(out);
    } catch (err) {
      $("iv-status").textContent = `The intervention failed: ${err.message}`;
    } finally {
      $("iv-run").disabled = false;
    }
  }
  $("iv-add").onclick = () => {
    if (!canEdit(selected)) { $("iv-status").textContent = "Select a feature node first (errors, embeddings and logits cannot be edited)."; return; }
    edits.push(currentEdit(selected));
    renderEdits();
  };
  $("iv-clear").onclick = () => { edits.length = 0; renderEdits(); $("iv-result").innerHTML = ""; $("iv-status").textContent = ""; };
  $("iv-run").onclick = runEdits;
  $("iv-mode").onchange = () => { $("iv-value").value = { ablate: 0, scale: 2, set: 0, add: 1 }[$("iv-mode").value]; $("iv-value").disabled = $("iv-mode").value === "ablate"; };
  $("iv-value").disabled = true;
  if (!ivApi) {
    for (const id of ["iv-mode", "iv-value", "iv-add", "iv-model", "iv-run", "iv-clear"]) $(id).disabled = true;
    $("iv-note").textContent = "Interventions run on the server: open this graph from `monosemantic serve` (/graphs/ID).";
  }

  // -- header: prompt, scores, legend --------------------------------------------------------------
  $("title").textContent = meta.slug || "attribution graph";
  $("prompt").textContent = meta.prompt || tokens.join("");
  const sc = meta.scores || {};
  const NAMES = {
    replacement_score: "replacement score", completeness_score: "completeness score",
    pruned_replacement_score: "replacement (pruned)", pruned_completeness_score: "completeness (pruned)",
    ablation_faithfulness: "ablation faithfulness", n_nodes: "nodes", n_edges: "edges", target: "target",
    method: "method", active_features: "active features", ablation: "ablation",
  };
  const shown = Object.keys(NAMES).filter((k) => sc[k] !== undefined);
  const rest = Object.keys(sc).filter((k) => !NAMES[k] && typeof sc[k] === "number");
  $("scores").innerHTML = [...shown, ...rest].map((k) => `<tr><td>${esc(NAMES[k] || k.replace(/_/g, " "))}</td><td>${esc(k === "target" ? "“" + show(sc[k]) + "”" : fmt(sc[k]))}</td></tr>`).join("") ||
    `<tr><td>nodes</td><td>${nodes.length}</td></tr><tr><td>edges</td><td>${links.length}</td></tr>`;
  const present = [...new Set(nodes.map((n) => n.feature_type))];
  $("legend").innerHTML = present.map((t) => `<span class="sw" style="background:${(KINDS[t] || [0, "#7fb0e0"])[1]}"></span>${esc((KINDS[t] || [t])[0])}`).join("") +
    '<br>edges: <span class="pos">positive</span> / <span class="neg">negative</span>';

  draw();
  loadSaved();
  // redraw whenever the pane changes size (window resize, side panel reflow, notebook iframe)
  let pending = null, size = "";
  new ResizeObserver(() => {
    const now = $("main").clientWidth + "x" + $("main").clientHeight;
    if (now === size) return;
    size = now;
    clearTimeout(pending);
    pending = setTimeout(draw, 50);
  }).observe($("main"));
})();
