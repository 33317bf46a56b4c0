// monosemantic live views (served only): search every dictionary, test activations on typed text,
// steer with plain and steered generations side by side (streamed), trace a prompt as a job; each
// takes a chat prompt ("chat" box: lines 'role: text') and shows its turn boundaries.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));

  async function api(path, body) {
    const r = await fetch("api/" + path, body === undefined ? {} : {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(problem(data.detail) || r.statusText);
    return data;
  }
  // a 422's detail (a list of field errors) or any other detail, as one line
  const problem = (d) => (Array.isArray(d) ? d.map((e) => `${e.loc.slice(-1)[0]}: ${e.msg}`).join("; ") : d);
  function fail(el, err) { el.innerHTML = `<span class="err">${esc(err.message || err)}</span>`; }
  async function busy(button, fn) {
    button.disabled = true;
    try { await fn(); } finally { button.disabled = false; }
  }

  // -- search ---------------------------------------------------------------------------------
  $("search-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("search-results");
    try {
      const { results } = await api("search?q=" + encodeURIComponent($("q").value) + ($("q-dead").checked ? "&dead=true" : ""));
      out.innerHTML = results.length ? results.map((r) =>
        `<li><a href="./#/${r.dictionary_id}/${r.idx}">${esc(r.dictionary)} #${r.idx}</a> ${esc(r.explanation || r.concept || "")}</li>`).join("")
        : "<li class=muted>no match</li>";
    } catch (err) { fail(out, err); }
  });

  // -- chat prompts: a "chat" box sends the text as lines 'role: text'; results mark the turns ------
  const asChat = (box, text) => ($(box).checked ? { chat: text } : null);
  // Token spans (data-i = position) with a role label where each turn starts and a role tint below.
  function tokenSpans(tokens, turns, style, tip) {
    const roleAt = (i) => (turns || []).find((t) => t.start <= i && i < t.end);
    return tokens.map((tok, i) => {
      const t = roleAt(i), mark = t && t.start === i && t.role !== "other" ? `<b class="turn role-${t.role}">${esc(t.role)}</b>` : "";
      const cls = t ? ` class="r-${t.role}"` : "";
      return `${mark}<span data-i="${i}"${cls} style="${style ? style(i) : ""}" title="${esc(tip ? tip(i) : (t ? t.role + " turn" : ""))}">${esc(tok)}</span>`;
    }).join("");
  }

  // -- activation tester ------------------------------------------------------------------------
  function showToken(res, t) {
    document.querySelectorAll("#act-tokens span[data-i]").forEach((s, i) => s.classList.toggle("sel", i === t));
    const feats = res.features[t];
    $("act-detail").innerHTML = feats.length ? feats.map((f) =>
      `<li><a href="./#/${res.dictionary}/${f.feature}">#${f.feature}</a> ${fmt(f.value)}</li>`).join("")
      : `<li class=muted>${t === 0 && res.bos ? "BOS: dictionaries are not run on it" : "no active feature"}</li>`;
  }
  $("act-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy($("act-run"), async () => {
      const f = $("act-feature").value;
      const body = { dictionary: +$("act-dict").value, ...(asChat("act-chat", $("act-text").value) || { text: $("act-text").value }) };
      if (f !== "") body.feature = +f;
      try {
        const res = await api("activations", body);
        const vals = res.activations || res.features.map((fs) => (fs.length ? fs[0].value : 0));
        const max = Math.max(1e-9, ...vals);
        $("act-tokens").innerHTML = tokenSpans(res.tokens, res.turns,
          (i) => `background: rgba(217,100,30,${(0.75 * Math.max(0, vals[i]) / max).toFixed(3)})`,
          (i) => res.activations ? `#${res.feature}: ${fmt(vals[i])}` : res.features[i].map((x) => `#${x.feature} ${fmt(x.value)}`).join(", "));
        document.querySelectorAll("#act-tokens span[data-i]").forEach((s) => s.addEventListener("click", () => showToken(res, +s.dataset.i)));
        showToken(res, res.tokens.length - 1);
      } catch (err) { fail($("act-tokens"), err); $("act-detail").innerHTML = ""; }
    });
  });

  // -- steering (server-sent events over a POST: read the body stream) --------------------------------
  $("steer-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy($("steer-run"), async () => {
      const out = { plain: $("steer-plain"), steered: $("steer-steered") };
      out.plain.textContent = out.steered.textContent = "";
      $("steer-eval").innerHTML = "";
      const words = $("steer-words").value.split(",").map((w) => w.trim()).filter(Boolean);
      const body = {
        dictionary: +$("steer-dict").value, feature: +$("steer-feature").value, mode: $("steer-mode").value,
        values: $("steer-value").value.split(",").map((v) => v.trim()).filter(Boolean), max_new_tokens: +$("steer-n").value,
        samples: +$("steer-samples").value, temperature: +$("steer-temp").value, top_p: +$("steer-top-p").value,
        seed: +$("steer-seed").value, words, stream: true,
        ...(asChat("steer-chat", $("steer-prompt").value) || { prompt: $("steer-prompt").value }),
      };
      $("steer-turns").innerHTML = "";
      try {
        const r = await fetch("api/steer", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
        if (!r.ok) { const d = await r.json().catch(() => ({})); throw new Error(problem(d.detail) || r.statusText); }
        const reader = r.body.getReader(), dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
            const kind = (block.match(/^event: (.*)$/m) || [])[1] || "message";
            const data = JSON.parse((block.match(/^data: (.*)$/m) || [])[1] || "null");
            if (kind === "message") out[data.which].textContent += data.text;
            else if (kind === "done") {
              out.plain.textContent = data.plain; out.steered.textContent = data.steered;
              if (data.turns) $("steer-turns").innerHTML = tokenSpans(data.prompt_tokens, data.turns);
              $("steer-eval").innerHTML = evaluation(data);
            }
            else if (kind === "error") throw new Error(data.detail);
          }
        }
      } catch (err) { fail(out.steered, err); }
    });
  });

  // the steering evaluation: one row per arm (plain, then each value), as `monosemantic steer` prints it
  const pct = (x) => (x === 0 ? "0%" : (100 * x >= 10 ? (100 * x).toFixed(0) : (100 * x).toFixed(Math.min(20, Math.max(0, 1 - Math.floor(Math.log10(100 * x)))))) + "%");
  function evaluation(r) {
    const rows = r.arms.map((a) => `<tr><td>${esc(a.label)}</td><td>${pct(a.concept_rate)}</td><td>${a.concept_per_100.toFixed(1)}</td>` +
      `<td>${a.loss === null ? "–" : a.loss.toFixed(2)}</td><td>${a.mean_tokens.toFixed(1)}</td><td class="ex">${esc((a.texts[0] || "").slice(0, 120))}</td></tr>`).join("");
    return `<table class="eval"><tr><th>value</th><th>concept rate</th><th>per 100 tok</th><th>loss</th><th>tokens</th><th>first sample</th></tr>${rows}</table>` +
      `<p class="muted">${r.samples} samples per row · concept = ${esc(r.concept_kind)}: ${esc(r.concept.map((t) => JSON.stringify(t)).join(", "))}` +
      `${r.max_activation ? ` · max activation ${fmt(r.max_activation)}` : ""} · loss = the plain model's nats per generated token</p>`;
  }

  // -- trace this prompt ----------------------------------------------------------------------------
  async function listGraphs() {
    const gs = await api("graphs");
    $("graph-list").innerHTML = gs.map((g) =>
      `<li><a href="graphs/${g.id}">${esc(g.prompt || g.name)}</a> <span class=muted>${esc(g.created || "")}</span></li>`).join("");
  }
  $("trace-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy($("trace-run"), async () => {
      const status = $("trace-status"), bar = $("trace-bar");
      bar.style.width = "0";
      try {
        const { job } = await api("circuits", { ...(asChat("trace-chat", $("trace-prompt").value) || { prompt: $("trace-prompt").value }), ...(await traceOptions()) });
        for (;;) {
          const j = await api("jobs/" + job);
          bar.style.width = `${Math.round(100 * j.progress)}%`;
          status.textContent = `job ${j.id}: ${j.stage} (${j.seconds.toFixed(1)} s)`;
          if (j.status === "failed") throw new Error(j.error);
          if (j.status === "done") {
            status.innerHTML = `done in ${j.seconds.toFixed(1)} s: <a id="trace-link" href="${j.result.url}">open the graph</a>`;
            listGraphs();
            break;
          }
          await new Promise((res) => setTimeout(res, 400));
        }
      } catch (err) { fail(status, err); }
    });
  });

  // -- what a trace explains: every [circuit].target, and head loadings ------------------------------
  const TARGET_FIELDS = { token: ["trace-token"], logit_diff: ["trace-token", "trace-contrast"], feature: ["trace-feature"],
                          direction: ["trace-direction"] };
  function showTargetFields() {
    const want = TARGET_FIELDS[$("trace-target").value] || [];
    for (const id of ["trace-token", "trace-contrast", "trace-feature", "trace-direction"]) $(id).hidden = !want.includes(id);
  }
  $("trace-target").addEventListener("change", showTargetFields);
  /** A direction file (safetensors, tensor "direction" [d_model], optional metadata layer/position) as numbers. */
  async function readDirection(file) {
    const buf = await file.arrayBuffer(), view = new DataView(buf);
    const n = Number(view.getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, n)));
    const t = header.direction;
    if (!t) throw new Error(`${file.name} has no tensor "direction"`);
    const [a, b] = t.data_offsets, start = 8 + n + a, count = t.shape.reduce((x, y) => x * y, 1);
    const half = (h) => { const e = (h >> 10) & 31, f = h & 1023, s = h >> 15 ? -1 : 1;
      return e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15); };
    const read = { F32: (i) => view.getFloat32(start + 4 * i, true), F64: (i) => view.getFloat64(start + 8 * i, true),
                   F16: (i) => half(view.getUint16(start + 2 * i, true)),
                   BF16: (i) => new Float32Array(new Uint32Array([view.getUint16(start + 2 * i, true) << 16]).buffer)[0] }[t.dtype];
    if (!read || t.shape.length !== 1 || b - a < count) throw new Error(`"direction" must be a float vector, not ${t.dtype} ${JSON.stringify(t.shape)}`);
    return { numbers: Array.from({ length: count }, (_, i) => read(i)), meta: header.__metadata__ || {} };
  }
  async function traceOptions() {
    const target = $("trace-target").value, o = { target, heads: $("trace-heads").checked };
    if (target === "token" || target === "logit_diff") o.target_token = $("trace-token").value;
    if (target === "logit_diff") o.contrast_token = $("trace-contrast").value;
    if (target === "feature") o.target_feature = $("trace-feature").value.trim();
    if (target === "direction") {
      const file = $("trace-direction-file").files[0];
      if (!file) throw new Error("choose a direction file (.safetensors with a tensor \"direction\")");
      const { numbers, meta } = await readDirection(file);
      o.direction = numbers;
      const layer = $("trace-layer").value !== "" ? +$("trace-layer").value : meta.layer !== undefined ? +meta.layer : undefined;
      if (layer !== undefined) o.target_layer = layer;
      o.target_position = $("trace-position").value !== "" ? +$("trace-position").value : meta.position !== undefined ? +meta.position : -1;
    }
    return o;
  }

  // -- dictionaries -----------------------------------------------------------------------------------
  // -- dictionaries, and prompts from the run's own data (the store's top examples) --------------------
  api("site").then((site) => {
    const ds = site.dictionaries;
    const opts = ds.map((d) => `<option value="${d.id}">${esc(d.name)} (${d.transcoder ? "transcoder" : "SAE"}, ${d.d_sae})</option>`).join("");
    document.querySelectorAll("select.dicts").forEach((s) => {
      s.innerHTML = opts;
      if (site.default_dictionary !== null && site.default_dictionary !== undefined) s.value = String(site.default_dictionary);
    });
    const best = ds.find((d) => d.id === site.default_dictionary);
    if (best && best.representative !== null && best.representative !== undefined) $("steer-feature").value = best.representative;
    const ps = site.prompts || [];
    if (ps.length) {
      $("act-text").value = ps[0].text;
      $("steer-prompt").value = ps[Math.min(1, ps.length - 1)].prefix;
      $("trace-prompt").value = ps[Math.min(2, ps.length - 1)].prefix;
    }
    $("meta").textContent = `${ds.length} dictionaries`;
    document.body.dataset.ready = "1";
    listGraphs();
  }).catch((err) => fail($("meta"), err));
})();
