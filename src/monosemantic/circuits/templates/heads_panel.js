// Attention panel of the graph viewer: which heads carry a node's inputs or one edge (the head making
// the paths' last hop into the target's position, from graph.json's per-link "heads" and "no_hop"),
// and why a head attends from the query to the key (QK terms: the graph's "qk" list, else, when the
// page is served, GET api/graphs/{id}/qk). Listens to the viewer's "graph:select" and "graph:link"
// events; reads the same embedded graph.
"use strict";
(() => {
  const G = JSON.parse(document.getElementById("graph-data").textContent);
  const meta = G.metadata || {}, links = G.links || [];
  const box = document.getElementById("attention");
  if (!box || !links.some((l) => Array.isArray(l.heads))) return;
  box.hidden = false;
  const byId = new Map((G.nodes || []).map((n) => [n.node_id, n]));
  const tokens = meta.prompt_tokens || [];
  const qkList = (G.qk || []).slice();
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const num = (v, d = 3) => (typeof v === "number" ? (Math.abs(v) >= 1000 ? v.toExponential(2) : v.toFixed(d)) : "–");
  const tok = (p) => `“${esc(String(tokens[p] ?? p).replace(/\n/g, "↵"))}”`;
  const headName = (h) => `L${h.layer}.H${h.head}`;
  const nodeLabel = (id) => {
    const n = byId.get(id);
    if (!n) return esc(id);
    const gist = String(n.clerp || "").split(/;\s*e\.g\.|;/)[0].trim();
    return esc(gist || `${n.feature_type} ${id}`);
  };
  const served = location.protocol.startsWith("http") ? location.pathname.match(/\/graphs\/(\d+)\/?$/) : null;
  const api = served ? location.origin + location.pathname.replace(/graphs\/\d+\/?$/, "") + `api/graphs/${served[1]}/qk` : null;

  /** Heads with their terms summed over `ls`, largest |sum| first, and the no-hop total. */
  function carried(ls) {
    const sum = new Map();
    let noHop = 0;
    for (const l of ls) {
      noHop += l.no_hop || 0;
      for (const h of l.heads || []) {
        const k = headName(h);
        const e = sum.get(k) || { layer: h.layer, head: h.head, weight: 0 };
        e.weight += h.weight;
        sum.set(k, e);
      }
    }
    const hs = [...sum.values()].sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
    const total = hs.reduce((a, h) => a + Math.abs(h.weight), Math.abs(noHop)) || 1;
    return { hs, noHop, total };
  }
  function bars(c, pair, limit = 8) {
    const row = (name, w, attrs = "") => `<tr ${attrs}><td>${name}</td><td class="hbar"><span style="width:${(100 * Math.abs(w) / c.total).toFixed(1)}%" class="${w >= 0 ? "hpos" : "hneg"}"></span></td>` +
      `<td class="w">${w >= 0 ? "+" : ""}${num(w, 4)}</td><td class="w">${(100 * Math.abs(w) / c.total).toFixed(0)}%</td></tr>`;
    let h = '<table class="io heads">';
    for (const x of c.hs.slice(0, limit)) h += row(headName(x), x.weight, pair ? `data-l="${x.layer}" data-h="${x.head}" data-q="${pair[0]}" data-k="${pair[1]}" title="why this head attends here (QK)"` : "");
    if (c.noHop) h += row('<span class="muted">no attention hop</span>', c.noHop);
    return h + "</table>";
  }
  function wire() {
    for (const tr of box.querySelectorAll("tr[data-l]")) tr.onclick = () => showQK(+tr.dataset.l, +tr.dataset.h, +tr.dataset.q, +tr.dataset.k);
  }
  const pos = (id) => +(byId.get(id)?.ctx_idx ?? -1);

  function onNode(n) {
    const inc = links.filter((l) => l.target === n.node_id);
    const cross = inc.filter((l) => pos(l.source) !== n.ctx_idx).sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
    let h = `<p class="small">Heads carrying the inputs of <b>${nodeLabel(n.node_id)}</b> ${tok(n.ctx_idx)}, summed over its ${inc.length} input edges (share of |terms|):</p>`;
    h += bars(carried(inc));
    if (cross.length) h += '<h3>From other positions</h3><p class="muted small">click a head: why it attends from here to the source</p>';
    for (const l of cross.slice(0, 6)) {
      h += `<p class="small">${nodeLabel(l.source)} ${tok(pos(l.source))} → <span class="w ${l.weight >= 0 ? "pos" : "neg"}">${num(l.weight, 4)}</span></p>`;
      h += bars(carried([l]), [n.ctx_idx, pos(l.source)], 3);
    }
    document.getElementById("heads").innerHTML = h;
    document.getElementById("qk").innerHTML = "";
    wire();
  }
  function onLink(l) {
    const q = pos(l.target), k = pos(l.source);
    let h = `<p class="small">Edge ${nodeLabel(l.source)} ${tok(k)} → ${nodeLabel(l.target)} ${tok(q)}: <b>${num(l.weight, 4)}</b></p>`;
    h += bars(carried([l]), q !== k ? [q, k] : null, 12);
    document.getElementById("heads").innerHTML = h;
    document.getElementById("qk").innerHTML = "";
    wire();
    const top = carried([l]).hs[0];
    if (top && q !== k) showQK(top.layer, top.head, q, k);
  }

  const compLabel = (c) => (c.node && byId.has(c.node) ? nodeLabel(c.node) : esc(c.label));
  function renderQK(e) {
    let h = `<h3>Why L${e.layer}.H${e.head} attends from ${tok(e.query)} to ${tok(e.key)}</h3>`;
    h += `<p class="small">score ${num(e.score)}${e.capped != null ? ` (soft-capped ${num(e.capped)})` : ""} · attention weight ${num(e.pattern)} · query × key terms (sum ${num(e.sum_of_terms)}):</p>`;
    h += '<table class="io qk"><tr><th>query side</th><th>key side</th><th>term</th></tr>' + e.pairs.slice(0, 12).map((p) =>
      `<tr><td>${compLabel(p.query)}</td><td>${compLabel(p.key)}</td><td class="w ${p.term >= 0 ? "pos" : "neg"}">${num(p.term, 4)}</td></tr>`).join("") + "</table>";
    const side = (name, xs) => `<p class="small"><b>${name}</b>: ` + xs.slice(0, 5).map((x) => `${compLabel(x)} <span class="${x.value >= 0 ? "pos" : "neg"}">${num(x.value, 3)}</span>`).join(" · ") + "</p>";
    h += side("query side totals", e.query_totals) + side("key side totals", e.key_totals);
    document.getElementById("qk").innerHTML = h;
  }
  async function showQK(layer, head, query, key) {
    const out = document.getElementById("qk");
    const found = qkList.find((e) => e.layer === layer && e.head === head && e.query === query && e.key === key);
    if (found) return renderQK(found);
    if (!api) { out.innerHTML = `<p class="muted small">No QK terms stored for L${layer}.H${head} (${query} → ${key}); open the graph in <code>monosemantic serve</code> to compute them.</p>`; return; }
    out.innerHTML = `<p class="muted small">computing QK terms for L${layer}.H${head}…</p>`;
    try {
      const r = await fetch(`${api}?layer=${layer}&head=${head}&query=${query}&key=${key}`);
      const data = await r.json();
      if (!r.ok) throw new Error(data.detail || r.statusText);
      qkList.push(data);
      renderQK(data);
    } catch (err) { out.innerHTML = `<p class="small neg">${esc(err.message)}</p>`; }
  }
  document.getElementById("qk-form").onsubmit = (ev) => {
    ev.preventDefault();
    const v = (id) => +document.getElementById(id).value;
    showQK(v("qk-layer"), v("qk-head"), v("qk-query"), v("qk-key"));
  };
  document.getElementById("qk-query").value = tokens.length - 1;
  document.addEventListener("graph:select", (ev) => onNode(ev.detail));
  document.addEventListener("graph:link", (ev) => onLink(ev.detail));
})();
