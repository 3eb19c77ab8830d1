/* syncflow console: plain JavaScript, no dependencies. Data from the JSON API; the token the
   operator types is kept in sessionStorage and sent as a bearer header. */
(function () {
  "use strict";
  const CFG = JSON.parse(document.getElementById("console-config").textContent);
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "syncflow.console.token";
  const PAGE = 25;
  const state = { offset: 0, total: 0, detail: null, instances: [], shown: [], selected: new Set(), window: "7d" };

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
  function headers(json) {
    const h = { Accept: "application/json" };
    if (json) h["Content-Type"] = "application/json";
    if (token()) h.Authorization = "Bearer " + token();
    return h;
  }
  async function api(method, url, body) {
    const res = await fetch(url, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) {
      let msg = res.status + " " + res.statusText;
      if (data && data.detail) {
        msg = Array.isArray(data.detail)
          ? data.detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; ")
          : data.detail;
      }
      const err = new Error(msg);
      err.status = res.status;
      throw err;
    }
    return data;
  }
  function flash(msg, kind) {
    const f = $("flash");
    f.textContent = msg;
    f.className = "flash " + (kind || "info");
    f.hidden = false;
    clearTimeout(flash.t);
    flash.t = setTimeout(() => { f.hidden = true; }, kind === "error" ? 12000 : 6000);
  }
  const fmtTime = (s) => (s ? s.replace("T", " ").replace(/\.\d+/, "").replace(/(\+00:00|Z)$/, "") : "–");
  function fmtDur(sec) {
    if (sec === null || sec === undefined) return "–";
    if (sec < 60) return sec.toFixed(1) + " s";
    if (sec < 3600) return Math.floor(sec / 60) + " m " + Math.round(sec % 60) + " s";
    return Math.floor(sec / 3600) + " h " + Math.round((sec % 3600) / 60) + " m";
  }
  const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const badge = (status) => el("span", { class: "badge " + status }, status);
  function needToken() {
    if (!CFG.writeEnabled) { flash("writes are disabled: the server has no API token configured", "error"); return true; }
    if (!token()) { flash("enter the API token first (top right)", "error"); $("token").focus(); return true; }
    return false;
  }

  // ------------------------------------------------------------------ token
  function showTokenState() {
    $("token-state").textContent = token() ? "token set for this tab" : (CFG.readAuth ? "reads need the token" : "");
  }
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("token").value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    $("token").value = "";
    showTokenState();
    refreshAll();
  });
  $("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showTokenState(); });

  // ------------------------------------------------------------------ statistics + chart
  function windowSince() {
    const hours = { "24h": 24, "7d": 24 * 7, "30d": 24 * 30 }[state.window];
    return new Date(Date.now() - hours * 3600 * 1000).toISOString();
  }
  async function loadStats() {
    const bucket = state.window === "24h" ? "hour" : (state.window === "7d" ? "hour" : "day");
    const s = await api("GET", CFG.api + "/statistics?bucket=" + bucket + "&since=" + encodeURIComponent(windowSince()));
    $("stat-total").textContent = fmtNum(s.total_sessions);
    $("stat-running").textContent = fmtNum(s.by_status.running || 0);
    $("stat-completed").textContent = fmtNum(s.by_status.completed || 0);
    $("stat-failed").textContent = fmtNum(s.by_status.failed || 0);
    $("stat-rate").textContent = s.success_rate === null ? "–" : (100 * s.success_rate).toFixed(1) + " %";
    $("stat-p50").textContent = fmtDur(s.duration_seconds.p50) + " / " + fmtDur(s.duration_seconds.p95);
    $("stat-tput").textContent = s.throughput.items_per_second === null ? "–" : fmtNum(s.throughput.items_per_second);
    for (const l of document.querySelectorAll(".window-label")) l.textContent = $("window").selectedOptions[0].textContent;
    drawChart(s.timeline, bucket);
  }
  function drawChart(points, bucket) {
    const NS = "http://www.w3.org/2000/svg";
    const W = 720, H = 180, PAD_L = 34, PAD_B = 22, PAD_T = 8;
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "chart-svg");
    const max = Math.max(1, ...points.map((p) => p.completed + p.failed + p.cancelled));
    const n = Math.max(points.length, 1);
    const bw = (W - PAD_L - 4) / n;
    const y = (v) => H - PAD_B - (v / max) * (H - PAD_B - PAD_T);
    const add = (tag, attrs, text) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.append(e);
      return e;
    };
    for (const frac of [0, 0.5, 1]) {
      const v = Math.round(max * frac);
      add("line", { x1: PAD_L, x2: W, y1: y(v), y2: y(v), class: "grid" });
      add("text", { x: PAD_L - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, String(v));
    }
    points.forEach((p, i) => {
      const x = PAD_L + i * bw + bw * 0.1, w = Math.max(bw * 0.8, 1);
      let base = 0;
      for (const [key, cls] of [["completed", "ok"], ["failed", "bad"], ["cancelled", "other"]]) {
        const v = p[key];
        if (!v) continue;
        const r = add("rect", { x, width: w, y: y(base + v), height: y(base) - y(base + v), class: "bar " + cls });
        const t = document.createElementNS(NS, "title");
        t.textContent = `${fmtTime(p.start)}: ${v} ${key}`;
        r.append(t);
        base += v;
      }
    });
    const step = Math.max(1, Math.ceil(n / 8));
    points.forEach((p, i) => {
      if (i % step) return;
      const label = bucket === "hour" ? p.start.slice(5, 13).replace("T", " ") + "h" : p.start.slice(5, 10);
      add("text", { x: PAD_L + i * bw, y: H - 6, class: "axis" }, label);
    });
    const box = $("chart");
    box.replaceChildren(svg);
    box.dataset.points = String(points.length);
    box.dataset.completed = String(points.reduce((a, p) => a + p.completed, 0));
    box.dataset.failed = String(points.reduce((a, p) => a + p.failed, 0));
  }
  $("window").addEventListener("change", () => { state.window = $("window").value; loadStats().catch(showError); });

  // ------------------------------------------------------------------ session list
  function listQuery() {
    const q = new URLSearchParams({ limit: PAGE, offset: state.offset });
    for (const [id, key] of [["f-type", "sync_type"], ["f-category", "sync_category"], ["f-status", "status"]]) {
      if ($(id).value) q.set(key, $(id).value);
    }
    return q.toString();
  }
  function actionButtons(s) {
    const out = [];
    out.push(el("button", { type: "button", class: "secondary details", onclick: () => openDetail(s.session_id) }, "details"));
    if (s.status === "running" || s.status === "queued")
      out.push(el("button", { type: "button", class: "danger cancel", onclick: () => cancelSession(s.session_id) }, "cancel"));
    if (s.status === "failed" && s.failed_instances > 0)
      out.push(el("button", { type: "button", class: "retry", onclick: () => retrySession(s.session_id) }, "retry failed"));
    return out;
  }
  function progressCell(s) {
    const c = s.record_counts || {};
    const done = (c.completed || 0) + (c.failed || 0) + (c.cancelled || 0) + (c.skipped || 0);
    const total = s.total_instances || 0;
    const pct = total ? Math.round((100 * done) / total) : 0;
    return el("td", { class: "progress" },
      el("span", { class: "bar-outer" }, el("span", { class: "bar-inner " + s.status, "data-pct": pct })),
      ` ${done}/${total}` + (s.failed_instances ? ` (${s.failed_instances} failed)` : ""));
  }
  async function loadList() {
    const page = await api("GET", CFG.api + "/sessions?" + listQuery());
    state.total = page.total;
    const rows = page.items.map((s) =>
      el("tr", { dataset: { sessionId: s.session_id, status: s.status }, class: state.detail === s.session_id ? "selected" : "" },
        el("td", {}, fmtTime(s.started_at)),
        el("td", {}, el("code", { title: s.session_id }, s.session_id.slice(0, 8)), s.retry_of ? el("span", { class: "muted", title: "retry of " + s.retry_of }, " ↻") : null),
        el("td", {}, s.sync_type),
        el("td", {}, s.sync_category),
        el("td", { class: "status" }, badge(s.status)),
        progressCell(s),
        el("td", { class: "num" }, fmtNum(s.items_synced)),
        el("td", {}, fmtDur(s.duration_seconds)),
        el("td", { class: "actions" }, actionButtons(s))));
    $("sessions-body").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 9, class: "muted" }, "no session"))]));
    for (const bar of document.querySelectorAll(".bar-inner")) bar.style.width = bar.dataset.pct + "%";
    const last = Math.min(state.offset + PAGE, page.total);
    $("list-info").textContent = page.total ? `${state.offset + 1}–${last} of ${page.total}` : "";
    $("prev").disabled = state.offset === 0;
    $("next").disabled = last >= page.total;
  }
  for (const id of ["f-type", "f-category", "f-status"]) $(id).addEventListener("change", () => { state.offset = 0; loadList().catch(showError); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadList().catch(showError); });
  $("next").addEventListener("click", () => { state.offset += PAGE; loadList().catch(showError); });

  // ------------------------------------------------------------------ detail
  async function openDetail(id) {
    state.detail = id;
    const u = new URL(location.href);
    u.searchParams.set("session", id);
    history.replaceState(null, "", u);
    await loadDetail();
    $("detail").scrollIntoView({ behavior: "smooth", block: "start" });
  }
  async function loadDetail() {
    if (!state.detail) return;
    let s;
    try {
      s = await api("GET", CFG.api + "/sessions/" + encodeURIComponent(state.detail));
    } catch (e) {
      $("detail").hidden = false;
      $("detail-id").textContent = state.detail;
      $("detail-status").replaceChildren(badge("unknown"));
      $("detail-meta").replaceChildren(el("dt", {}, "error"), el("dd", {}, e.message));
      $("detail-records").replaceChildren();
      return;
    }
    $("detail").hidden = false;
    $("detail").dataset.status = s.status;
    $("detail-id").textContent = s.session_id;
    $("detail-status").replaceChildren(badge(s.status));
    $("detail-actions").replaceChildren(...actionButtons({ ...s, failed_instances: s.failed_instances || 0 }).slice(1));
    const meta = s.status === "queued"
      ? [["flow run", s.flow_run_name + " (" + s.flow_run_id + ")"], ["flow run state", s.flow_run_state], ["expected start", fmtTime(s.expected_start_time)]]
      : [["type", s.sync_type], ["category", s.sync_category], ["created by", s.created_by || "–"], ["started", fmtTime(s.started_at)],
         ["completed", fmtTime(s.completed_at)], ["duration", fmtDur(s.duration_seconds)],
         ["instances", `${s.total_instances} (${s.successful_instances} ok, ${s.failed_instances} failed)`],
         ["items synced", fmtNum(s.items_synced)], ["flow run", s.flow_run_id || "–"], ["retry of", s.retry_of || "–"],
         ["error", s.error_message || "–"]];
    $("detail-meta").replaceChildren(...meta.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("detail-records").replaceChildren(...s.records.map((r) => {
      let prog = "";
      if (r.progress) {
        const p = r.progress;
        prog = (p.percent !== null ? p.percent + " %" : "") + (p.batches !== null ? ` · ${p.batches} batches` : "") +
               (p.cursor !== null ? ` · seq ${p.cursor}` : "") + (p.elapsed_seconds !== null ? ` · ${fmtDur(p.elapsed_seconds)}` : "");
      }
      return el("tr", { dataset: { instance: r.instance_name, status: r.status } },
        el("td", {}, r.instance_name, r.title ? el("div", { class: "muted chat-title" }, r.title) : null), el("td", { class: "status" }, badge(r.status)),
        el("td", { class: "num synced" }, fmtNum(r.items_synced)), el("td", { class: "num" }, fmtNum(r.items_created)),
        el("td", { class: "num" }, fmtNum(r.items_updated)), el("td", { class: "num" }, fmtNum(r.items_unchanged)),
        el("td", { class: "num" }, fmtNum(r.items_deleted)), el("td", {}, fmtDur(r.duration_seconds)),
        el("td", { class: "num" }, fmtNum(r.items_per_second)), el("td", { class: "prog" }, prog),
        el("td", { class: "error" }, r.error_message || ""));
    }));
  }
  $("detail-close").addEventListener("click", () => {
    state.detail = null;
    $("detail").hidden = true;
    const u = new URL(location.href);
    u.searchParams.delete("session");
    history.replaceState(null, "", u);
  });

  // ------------------------------------------------------------------ actions
  async function cancelSession(id) {
    if (needToken()) return;
    if (!confirm("Cancel session " + id + "? Running syncs stop at their next batch; committed batches stay.")) return;
    try {
      const r = await api("POST", CFG.api + "/sessions/" + encodeURIComponent(id) + "/cancel", { reason: "cancelled from the console" });
      flash("session " + id.slice(0, 8) + " cancelled" + (r.prefect ? " — " + r.prefect : ""), "ok");
    } catch (e) { showError(e); }
    refreshAll();
  }
  async function retrySession(id) {
    if (needToken()) return;
    try {
      const r = await api("POST", CFG.api + "/sessions/" + encodeURIComponent(id) + "/retry-failed", { created_by: $("batch-created-by").value || null });
      flash("retry started: session " + r.session_id + " over " + r.instances.join(", "), "ok");
      state.detail = r.session_id;
    } catch (e) { showError(e); }
    refreshAll();
  }

  // ------------------------------------------------------------------ manual batch form
  function mode() { return document.querySelector("input[name=mode]:checked").value; }
  // The instances shown: the API's answer for the category and the filters (kind, account,
  // chat type, text in the name / chat title); the selection survives filter changes.
  function filterQuery() {
    const q = new URLSearchParams({ category: $("batch-category").value });
    for (const [id, key] of [["batch-kind", "kind"], ["batch-account", "account"], ["batch-chat-type", "type"]]) {
      if ($(id).value && !$(id).hidden) q.set(key, $(id).value);
    }
    const text = $("batch-search").value.trim();
    if (text) q.set("q", text);
    return q.toString();
  }
  function renderFilters() {
    const kinds = [...new Set(state.instances.map((i) => i.kind))].sort();
    const accounts = [...new Set(state.instances.filter((i) => i.account).map((i) => i.account))].sort();
    const keep = (id, values, label) => {
      const cur = $(id).value;
      $(id).replaceChildren(el("option", { value: "" }, label), ...values.map((v) => el("option", { value: v }, v)));
      if (values.includes(cur)) $(id).value = cur;
    };
    keep("batch-kind", kinds, "any kind");
    keep("batch-account", accounts, "any account");
    const chats = accounts.length > 0 && (!$("batch-kind").value || $("batch-kind").value === "telegram");
    $("batch-account").hidden = !chats;
    $("batch-chat-type").hidden = !chats;
  }
  function renderInstances() {
    const cat = $("batch-category").value;
    const list = state.shown;
    $("batch-instances").replaceChildren(...(list.length ? list.map((i) =>
      el("label", { class: "inline" + (i.enabled ? "" : " muted"), dataset: { kind: i.kind } },
        el("input", { type: "checkbox", name: "instance", value: i.name, disabled: !i.enabled, checked: state.selected.has(i.name),
                      onchange: (ev) => { if (ev.target.checked) state.selected.add(i.name); else state.selected.delete(i.name); countSelected(); } }),
        " " + i.name, i.title ? el("span", { class: "title" }, " " + i.title) : null,
        el("span", { class: "muted" }, ` ${i.chat_type ? i.chat_type + " · " : ""}${i.kind}${i.tags.length ? " [" + i.tags.join(", ") + "]" : ""}`)))
      : [el("span", { class: "muted" }, "no instance supports " + cat + (filterQuery().includes("&") ? " with these filters" : ""))]));
    $("batch-instances").hidden = mode() !== "names";
    $("batch-filter").hidden = mode() !== "names";
    $("batch-tags").hidden = mode() !== "tags";
    countSelected();
  }
  function countSelected() {
    const cat = $("batch-category").value;
    const n = selectedFor(cat).length;
    $("batch-count").textContent = `${state.shown.length} shown · ${n} selected`;
  }
  function selectedFor(cat) {
    const ok = new Set(state.instances.filter((i) => i.enabled && i.categories.includes(cat)).map((i) => i.name));
    return [...state.selected].filter((n) => ok.has(n));
  }
  async function loadShown() {
    state.shown = await api("GET", CFG.api + "/instances?" + filterQuery());
    renderInstances();
  }
  async function loadInstances() {
    state.instances = await api("GET", CFG.api + "/instances");
    renderFilters();
    await loadShown();
  }
  let searchTimer = null;
  $("batch-search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(() => loadShown().catch(showError), 250); });
  $("batch-kind").addEventListener("change", () => { renderFilters(); loadShown().catch(showError); });
  for (const id of ["batch-account", "batch-chat-type", "batch-category"]) $(id).addEventListener("change", () => loadShown().catch(showError));
  $("batch-select-shown").addEventListener("click", () => { for (const i of state.shown) if (i.enabled) state.selected.add(i.name); renderInstances(); });
  $("batch-clear").addEventListener("click", () => { state.selected.clear(); renderInstances(); });
  for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", renderInstances);
  $("batch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (needToken()) return;
    const body = { category: $("batch-category").value, created_by: $("batch-created-by").value.trim() || null };
    if (mode() === "names") {
      body.instances = selectedFor(body.category);
      if (!body.instances.length) { flash("pick at least one instance that supports " + body.category, "error"); return; }
    }
    else if (mode() === "tags") body.tags = $("batch-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
    else body.all = true;
    const pr = $("batch-priorities").value.trim();
    if (pr) {
      body.priorities = {};
      for (const part of pr.split(",")) {
        const [k, v] = part.split("=").map((x) => (x || "").trim());
        if (!k || !/^-?\d+$/.test(v || "")) { flash("priorities: write name=number, comma separated", "error"); return; }
        body.priorities[k] = parseInt(v, 10);
      }
    }
    $("batch-submit").disabled = true;
    try {
      const r = await api("POST", CFG.api + "/sessions", body);
      const res = $("batch-result");
      res.hidden = false;
      res.dataset.sessionId = r.session_id;
      res.replaceChildren("started session ", el("code", {}, r.session_id), ` over ${r.instances.join(", ")}`,
        r.held ? el("strong", {}, " (category paused: held until resume)") : "", " ",
        el("button", { type: "button", class: "secondary", onclick: () => openDetail(r.session_id) }, "follow"));
      state.detail = r.session_id;
      refreshAll();
    } catch (e) { showError(e); } finally { $("batch-submit").disabled = false; }
  });

  // ------------------------------------------------------------------ queue admin
  async function loadQueue() {
    const cat = $("q-category").value;
    const q = await api("GET", CFG.queueApi + "/stats/" + cat);
    const runs = q.runs;
    const rows = [
      ["paused", q.pause.paused ? "yes (since " + fmtTime(q.pause.paused_at) + ")" : "no"],
      ["queued / upcoming", runs ? `${runs.queued} / ${runs.upcoming}` : "?"],
      ["running", runs ? runs.running : "?"], ["awaiting retry", runs ? runs.awaiting_retry : "?"],
      ["failed runs (24 h)", runs ? runs.failed : "?"], ["skipped records (24 h)", q.store.skipped],
      ["failed sessions not retried", q.store.failed_sessions_not_retried],
      ["last processed", fmtTime(q.store.last_processed_at)], ["last failed", fmtTime(q.store.last_failed_at)],
    ];
    if (q.prefect_error) rows.push(["prefect", q.prefect_error]);
    $("queue-stats").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("queue-stats").dataset.paused = String(q.pause.paused);
  }
  async function queueAction(method, suffix, what) {
    if (needToken()) return;
    const cat = $("q-category").value;
    if (what === "clear" && !confirm("Cancel every queued (not running) " + cat + " run?")) return;
    try {
      const r = await api(method, CFG.queueApi + "/" + cat + suffix, method === "DELETE" ? undefined : {});
      const n = r.cancelled ? r.cancelled.length : (r.triggered ? r.triggered.length : (r.deployments || []).length);
      flash(`${cat}: ${what} done (${n} ${r.cancelled ? "runs cancelled" : r.triggered ? "retries started" : "deployments"})`, "ok");
    } catch (e) { showError(e); }
    loadQueue().catch(showError);
  }
  $("q-category").addEventListener("change", () => loadQueue().catch(showError));
  $("q-pause").addEventListener("click", () => queueAction("POST", "/pause", "pause"));
  $("q-resume").addEventListener("click", () => queueAction("POST", "/resume", "resume"));
  $("q-retry").addEventListener("click", () => queueAction("POST", "/retry-failed", "retry failed"));
  $("q-clear").addEventListener("click", () => queueAction("DELETE", "/clear", "clear"));

  // ------------------------------------------------------------------ refresh loop
  function showError(e) {
    if (e && e.status === 401 && CFG.readAuth && !token()) { flash("this server needs the API token for reads too", "error"); return; }
    flash(e && e.message ? e.message : String(e), "error");
  }
  let busy = false;
  async function refreshAll() {
    if (busy) return;
    busy = true;
    try {
      await Promise.all([loadList(), loadDetail(), loadStats()]);
    } catch (e) { showError(e); } finally { busy = false; }
  }
  showTokenState();
  const initial = new URL(location.href).searchParams.get("session");
  if (initial) state.detail = initial;
  loadInstances().catch(showError);
  loadQueue().catch(showError);
  refreshAll();
  setInterval(() => { if (!document.hidden) { Promise.all([loadList(), loadDetail()]).catch(showError); } }, 2000);
  setInterval(() => { if (!document.hidden) { loadStats().catch(showError); loadQueue().catch(() => {}); } }, 10000);
})();
