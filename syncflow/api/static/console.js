/* syncflow console: plain JavaScript, no dependencies. Data from the JSON API; the token the
   operator types is kept in sessionStorage and sent as a bearer header. */
(function () {
  "use strict";
  const CFG = JSON.parse(document.getElementById("console-config").textContent);
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "syncflow.console.token";
  const PAGE = 25;
  const DETAIL = $("detail");  // kept: it moves in and out of the sessions table
  const state = { offset: 0, total: 0, detail: null, instances: [], shown: [], selected: new Set(), window: "7d", openRecords: new Set(), checks: new Map(), gaps: new Map() };

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
  function fmtEta(sec) {
    if (sec === null || sec === undefined) return "–";
    if (sec < 1) return "< 1 s";
    if (sec < 60) return Math.round(sec) + " s";
    if (sec < 3600) return Math.floor(sec / 60) + " m " + String(Math.round(sec % 60)).padStart(2, "0") + " s";
    return Math.floor(sec / 3600) + " h " + String(Math.round((sec % 3600) / 60)).padStart(2, "0") + " m";
  }
  // Short session ids: the unique prefixes the API answers (short_id), remembered for the ids
  // the page shows elsewhere (retry of, a batch just started); 8 characters until known.
  const shortIds = new Map();
  function rememberShort(s) { if (s && s.session_id && s.short_id) shortIds.set(s.session_id, s.short_id); }
  const shortId = (id) => (id ? shortIds.get(id) || id.slice(0, 8) : "–");
  function sessionCode(id) { return el("code", { title: id, dataset: { sessionId: id } }, shortId(id)); }
  // A flow-run id, linked to the Prefect UI when the server knows PREFECT_UI_URL.
  function flowRunLink(id, label) {
    if (!id) return "–";
    if (!CFG.prefectUi) return el("code", { title: "flow run " + id }, label || id);
    return el("a", { href: CFG.prefectUi + "/runs/flow-run/" + encodeURIComponent(id), target: "_blank", rel: "noopener", class: "flow-run", title: "open in the Prefect UI" }, label || id);
  }
  // Items done / expected, percent, rate and ETA: computed by the server (syncflow.schemas.measure_progress).
  function progressText(p, done, unit) {
    let t = fmtNum(done) + (p.expected !== null && p.expected !== undefined ? " / " + fmtNum(p.expected) : "") + (unit ? " " + unit : "");
    if (p.percent !== null && p.percent !== undefined) t += " (" + p.percent + " %)";
    if (p.rate_per_second) t += " · " + fmtNum(Math.round(p.rate_per_second)) + "/s";
    if (p.eta_seconds !== null && p.eta_seconds !== undefined) t += " · ETA " + fmtEta(p.eta_seconds);
    return t;
  }
  function progressBar(percent, status) {
    const pct = percent === null || percent === undefined ? 0 : Math.max(0, Math.min(100, percent));
    return el("span", { class: "bar-outer" }, el("span", { class: "bar-inner " + (status || ""), "data-pct": pct }));
  }
  function sizeBars(root) { for (const bar of root.querySelectorAll(".bar-inner")) bar.style.width = bar.dataset.pct + "%"; }
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
  // The chart shows the buckets that have data (from the first session on, at least MIN_SLOTS
  // buckets, ending now), integer y ticks on a 1-2-5 scale, and bars no wider than MAX_BAR.
  const MIN_SLOTS = 12, MAX_BAR = 36;
  const total = (p) => p.completed + p.failed + p.cancelled + (p.running || 0);
  function niceStep(max) {
    const raw = Math.max(1, max / 4);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return Math.max(1, m * mag);
    return 10 * mag;
  }
  function visiblePoints(points) {
    const first = points.findIndex((p) => total(p) > 0);
    if (first < 0) return points.slice(-MIN_SLOTS);
    return points.slice(Math.max(0, Math.min(first, points.length - MIN_SLOTS)));
  }
  function drawChart(allPoints, bucket) {
    const NS = "http://www.w3.org/2000/svg";
    const W = 720, H = 180, PAD_L = 34, PAD_B = 22, PAD_T = 8;
    const points = visiblePoints(allPoints);
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "chart-svg");
    const peak = Math.max(0, ...points.map(total));
    const step = niceStep(peak);
    const top = Math.max(step, Math.ceil(peak / step) * step);
    const n = Math.max(points.length, 1);
    const slot = (W - PAD_L - 4) / n;
    const bw = Math.min(Math.max(slot * 0.8, 1), MAX_BAR);
    const y = (v) => H - PAD_B - (v / top) * (H - PAD_B - PAD_T);
    const add = (tag, attrs, text) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.append(e);
      return e;
    };
    for (let v = 0; v <= top; v += step) {
      add("line", { x1: PAD_L, x2: W, y1: y(v), y2: y(v), class: "grid" });
      add("text", { x: PAD_L - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, String(v));
    }
    points.forEach((p, i) => {
      const x = PAD_L + i * slot + (slot - bw) / 2;
      let base = 0;
      for (const [key, cls] of [["completed", "ok"], ["failed", "bad"], ["cancelled", "other"], ["running", "run"]]) {
        const v = p[key];
        if (!v) continue;
        const r = add("rect", { x, width: bw, y: y(base + v), height: y(base) - y(base + v), class: "bar " + cls });
        const t = document.createElementNS(NS, "title");
        t.textContent = `${fmtTime(p.start)}: ${v} ${key}`;
        r.append(t);
        base += v;
      }
    });
    const every = Math.max(1, Math.ceil(n / 8));
    points.forEach((p, i) => {
      if (i % every) return;
      const label = bucket === "hour" ? p.start.slice(5, 13).replace("T", " ") + "h" : p.start.slice(5, 10);
      add("text", { x: PAD_L + i * slot + slot / 2, y: H - 6, class: "axis", "text-anchor": "middle" }, label);
    });
    if (!peak) add("text", { x: (W + PAD_L) / 2, y: H / 2, class: "axis empty", "text-anchor": "middle" }, "no session in this window");
    const box = $("chart");
    box.replaceChildren(svg);
    box.dataset.points = String(allPoints.length);
    box.dataset.shown = String(points.length);
    box.dataset.ymax = String(top);
    box.dataset.completed = String(allPoints.reduce((a, p) => a + p.completed, 0));
    box.dataset.failed = String(allPoints.reduce((a, p) => a + p.failed, 0));
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
    return el("td", { class: "progress" }, progressBar(pct, s.status),
      ` ${done}/${total}` + (s.failed_instances ? ` (${s.failed_instances} failed)` : ""));
  }
  function openFromRow(ev, id) {
    if (ev.target.closest("button, a, input, select")) return;
    openDetail(id).catch(showError);
  }
  async function loadList() {
    const page = await api("GET", CFG.api + "/sessions?" + listQuery());
    state.total = page.total;
    page.items.forEach(rememberShort);
    const rows = page.items.map((s) =>
      el("tr", { dataset: { sessionId: s.session_id, shortId: s.short_id, status: s.status }, class: "session-row" + (state.detail === s.session_id ? " selected" : ""), onclick: (ev) => openFromRow(ev, s.session_id) },
        el("td", {}, fmtTime(s.started_at)),
        el("td", {}, el("code", { title: s.session_id, class: "sid" }, s.short_id), s.retry_of ? el("span", { class: "muted", title: "retry of " + s.retry_of }, " ↻") : null),
        el("td", {}, s.sync_type),
        el("td", {}, s.sync_category),
        el("td", { class: "status" }, badge(s.status)),
        progressCell(s),
        el("td", { class: "num" }, fmtNum(s.items_synced)),
        el("td", {}, fmtDur(s.duration_seconds)),
        el("td", { class: "actions" }, actionButtons(s))));
    $("sessions-body").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 9, class: "muted" }, "no session"))]));
    sizeBars($("sessions-body"));
    placeDetail();
    const last = Math.min(state.offset + PAGE, page.total);
    $("list-info").textContent = page.total ? `${state.offset + 1}–${last} of ${page.total}` : "";
    $("prev").disabled = state.offset === 0;
    $("next").disabled = last >= page.total;
  }
  for (const id of ["f-type", "f-category", "f-status"]) $(id).addEventListener("change", () => { state.offset = 0; loadList().catch(showError); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadList().catch(showError); });
  $("next").addEventListener("click", () => { state.offset += PAGE; loadList().catch(showError); });

  // ------------------------------------------------------------------ detail
  // The session detail opens where the eye is: in the sessions table, right under the clicked
  // row (at the top of the table when the session is not on this page), scrolled into view.
  function placeDetail() {
    const d = DETAIL;
    const body = $("sessions-body");
    let holder = body.querySelector("tr.detail-row");
    if (!state.detail) {
      if (holder) holder.remove();
      d.hidden = true;
      $("detail-home").append(d);
      return;
    }
    if (!holder) holder = el("tr", { class: "detail-row" }, el("td", { colspan: 9 }));
    if (d.parentNode !== holder.firstChild) holder.firstChild.append(d);
    const row = [...body.querySelectorAll("tr.session-row")].find((r) => r.dataset.sessionId === state.detail);
    for (const r of body.querySelectorAll("tr.session-row.selected")) if (r !== row) r.classList.remove("selected");
    if (row) { row.classList.add("selected"); if (row.nextSibling !== holder) row.after(holder); }
    else if (body.firstChild !== holder) body.prepend(holder);
  }
  async function openDetail(id) {
    state.detail = id;
    state.openRecords.clear();
    const u = new URL(location.href);
    u.searchParams.set("session", id);
    history.replaceState(null, "", u);
    placeDetail();
    await loadDetail();
    DETAIL.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }
  function detailMeta(s) {
    if (s.status === "queued")
      return [["flow run", flowRunLink(s.flow_run_id, s.flow_run_name + " (" + s.flow_run_id + ")")], ["flow run state", s.flow_run_state], ["expected start", fmtTime(s.expected_start_time)]];
    const retry = s.retry_of
      ? el("a", { href: "?session=" + encodeURIComponent(s.retry_of), class: "retry-of", onclick: (ev) => { ev.preventDefault(); openDetail(s.retry_of).catch(showError); } }, sessionCode(s.retry_of))
      : "–";
    return [["type", s.sync_type], ["category", s.sync_category],
      ["created by", s.created_by || "–"], ["started", fmtTime(s.started_at)], ["completed", fmtTime(s.completed_at)],
      ["duration", fmtDur(s.duration_seconds)], ["instances", `${s.total_instances} (${s.successful_instances} ok, ${s.failed_instances} failed` + (s.skipped_instances ? `, ${s.skipped_instances} skipped)` : ")")],
      ["items synced", fmtNum(s.items_synced)], ["flow run", flowRunLink(s.flow_run_id)], ["retry of", retry],
      ["error", s.error_message || "–"]].concat(metadataMeta(s));
  }
  // A messages session: the metadata session it ran first, and what went wrong there (warnings).
  function metadataMeta(s) {
    const m = s.metadata_session;
    const rows = [];
    if (m) rows.push(["metadata first", el("a", { href: "?session=" + encodeURIComponent(m.session_id), class: "metadata-session", onclick: (ev) => { ev.preventDefault(); openDetail(m.session_id).catch(showError); } }, sessionCode(m.session_id), " " + m.status + (m.failed_instances ? ` (${m.failed_instances} failed: ${m.failed.join(", ")})` : ""))]);
    for (const w of s.warnings || []) rows.push(["warning", el("span", { class: "warning" }, w)]);
    return rows;
  }
  function sessionProgress(s) {
    const box = $("detail-progress");
    const p = s.progress;
    box.hidden = !p;
    if (!p) { box.replaceChildren(); delete box.dataset.eta; return; }
    box.dataset.eta = p.eta_seconds === null ? "" : String(p.eta_seconds);
    box.replaceChildren(progressBar(p.percent, "running"),
      el("span", {}, ` ${p.instances_done}/${p.instances_total} instances done · ${progressText(p, p.items_synced, "items")}`),
      el("span", { class: "muted" }, p.eta_seconds === null ? " · ETA once every instance has started and reported its total" : ""));
    sizeBars(box);
  }
  async function loadDetail() {
    const asked = state.detail;
    if (!asked) return;
    let s;
    try {
      s = await api("GET", CFG.api + "/sessions/" + encodeURIComponent(asked));
    } catch (e) {
      if (state.detail !== asked) return;  // another session was opened meanwhile
      DETAIL.hidden = false;
      $("detail-id").textContent = shortId(state.detail);
      $("detail-status").replaceChildren(badge("unknown"));
      $("detail-meta").replaceChildren(el("dt", {}, "error"), el("dd", {}, e.message));
      $("detail-records").replaceChildren();
      $("detail-progress").hidden = true;
      return;
    }
    // a late answer (the refresh of the session shown before, a slow click) never takes the
    // detail back from the session the operator opened since
    if (state.detail !== asked) return;
    if (s.session_id !== asked) { state.detail = s.session_id; placeDetail(); }  // a prefix was asked
    rememberShort(s);
    DETAIL.hidden = false;
    DETAIL.dataset.status = s.status;
    DETAIL.dataset.sessionId = s.session_id;
    $("detail-id").textContent = s.short_id || shortId(s.session_id);
    $("detail-id").title = s.session_id;
    $("detail-id").dataset.sessionId = s.session_id;
    $("detail-status").replaceChildren(badge(s.status));
    $("detail-actions").replaceChildren(...actionButtons({ ...s, failed_instances: s.failed_instances || 0 }).slice(1));
    sessionProgress(s);
    $("detail-meta").replaceChildren(...detailMeta(s).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("detail-records").replaceChildren(...s.records.flatMap((r) => {
      const rows = [recordRow(r)];
      if (state.openRecords.has(r.id)) rows.push(recordDetail(r));
      return rows;
    }));
    sizeBars($("detail-records"));
  }
  // One record: its counts and, while it runs, done / expected, rate and ETA.
  function recordProgress(r) {
    const p = r.progress;
    if (!p) return el("td", { class: "prog" });
    return el("td", { class: "prog", dataset: { eta: p.eta_seconds === null ? "" : String(p.eta_seconds), expected: p.expected === null ? "" : String(p.expected) } },
      progressBar(p.percent, r.status), " " + progressText(p, r.items_synced),
      p.eta_seconds === null && p.batches && p.remaining === null ? el("span", { class: "muted" }, " · no ETA: the source gives no total") : null);
  }
  function changesOf(r) {
    const d = r.sync_details || {};
    const list = Array.isArray(d.changes) ? d.changes.map(String) : [];
    const total = Number.isInteger(d.changes_total) ? Math.max(d.changes_total, list.length) : list.length;
    return { list, total };
  }
  function toggleRecord(r) {
    if (state.openRecords.has(r.id)) state.openRecords.delete(r.id); else state.openRecords.add(r.id);
    loadDetail().catch(showError);
  }
  function recordRow(r) {
    const ch = changesOf(r);
    const open = state.openRecords.has(r.id);
    const label = (open ? "▾ " : "▸ ") + (ch.total ? `${fmtNum(ch.total)} change${ch.total === 1 ? "" : "s"}` : "details");
    return el("tr", { class: "record-row" + (open ? " open" : ""), dataset: { instance: r.instance_name, status: r.status, recordId: r.id, changes: ch.total } },
      el("td", {}, r.instance_name, r.title ? el("div", { class: "muted chat-title" }, r.title) : null), el("td", { class: "status" }, badge(r.status)),
      el("td", { class: "num synced" }, fmtNum(r.items_synced)), el("td", { class: "num" }, fmtNum(r.items_created)),
      el("td", { class: "num" }, fmtNum(r.items_updated)), el("td", { class: "num" }, fmtNum(r.items_unchanged)),
      el("td", { class: "num" }, fmtNum(r.items_deleted)), el("td", {}, fmtDur(r.duration_seconds)),
      el("td", { class: "num" }, fmtNum(r.items_per_second)), recordProgress(r),
      el("td", { class: "error" }, r.error_message || (r.warning ? el("span", { class: "warning" }, "warning: " + r.warning) : "")),
      el("td", {}, el("button", { type: "button", class: "secondary record-toggle" + (ch.total ? " has-changes" : ""), "aria-expanded": String(open), onclick: () => toggleRecord(r) }, label)));
  }
  // The record detail, right under its row: what it changed (the first lines, and how many
  // more), its flow run, and the facts of its sync_details.
  const CHANGE_LINES = 25;
  const LIST_KEYS = new Set(["changes", "created", "updated", "deleted", "changes_truncated", "changes_total"]);
  function fmtDetail(v) {
    if (v === null || v === undefined) return "–";
    if (Array.isArray(v)) return v.length > 12 ? JSON.stringify(v.slice(0, 12)).slice(0, -1) + ", …]" : JSON.stringify(v);
    if (typeof v === "object") return JSON.stringify(v);
    return typeof v === "number" ? fmtNum(v) : String(v);
  }
  function recordDetail(r) {
    const ch = changesOf(r);
    const parts = [];
    if (ch.total) {
      const shown = ch.list.slice(0, CHANGE_LINES);
      const items = shown.map((line) => el("li", {}, line));
      if (ch.total > shown.length) items.push(el("li", { class: "more muted" }, `… and ${fmtNum(ch.total - shown.length)} more` + (ch.total > ch.list.length ? " (syncflow changes --json lists the first " + ch.list.length + ")" : "")));
      parts.push(el("h3", {}, `${fmtNum(ch.total)} change${ch.total === 1 ? "" : "s"}: ${r.items_created} created, ${r.items_updated} updated, ${r.items_deleted} deleted`),
        el("ul", { class: "changes" }, items));
    } else if (r.status === "completed" && ["account", "config", "metadata", "capacity"].includes(r.sync_category)) {
      parts.push(el("p", { class: "muted no-changes" }, "no change: the snapshot matched what was stored"));
    }
    const d = r.sync_details || {};
    const facts = [["flow run", flowRunLink(r.flow_run_id)], ["started", fmtTime(r.started_at)], ["completed", fmtTime(r.completed_at)]];
    for (const [k, v] of Object.entries(d)) if (!LIST_KEYS.has(k)) facts.push([k, fmtDetail(v)]);
    parts.push(el("dl", { class: "meta facts" }, facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
    return el("tr", { class: "record-detail", dataset: { instance: r.instance_name, recordId: r.id } }, el("td", { colspan: 12 }, parts));
  }
  $("detail-close").addEventListener("click", () => {
    state.detail = null;
    state.openRecords.clear();
    placeDetail();
    const u = new URL(location.href);
    u.searchParams.delete("session");
    history.replaceState(null, "", u);
  });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && state.detail && !ev.target.closest("input, select, textarea")) $("detail-close").click(); });

  // ------------------------------------------------------------------ actions
  async function cancelSession(id) {
    if (needToken()) return;
    if (!confirm("Cancel session " + shortId(id) + "? Running syncs stop at their next batch; committed batches stay.")) return;
    try {
      const r = await api("POST", CFG.api + "/sessions/" + encodeURIComponent(id) + "/cancel", { reason: "cancelled from the console" });
      flash("session " + shortId(id) + " cancelled" + (r.prefect ? " — " + r.prefect : ""), "ok");
    } catch (e) { showError(e); }
    refreshAll();
  }
  async function retrySession(id) {
    if (needToken()) return;
    try {
      const r = await api("POST", CFG.api + "/sessions/" + encodeURIComponent(id) + "/retry-failed", { created_by: $("batch-created-by").value || null });
      flash("retry started: session " + shortId(r.session_id) + " over " + r.instances.join(", "), "ok");
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
    renderInstancePanel();
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
      res.replaceChildren("started session ", sessionCode(r.session_id), ` over ${r.instances.join(", ")}`,
        r.held ? el("strong", {}, " (category paused: held until resume)") : "", " ",
        el("button", { type: "button", class: "secondary", onclick: () => openDetail(r.session_id) }, "follow"));
      state.detail = r.session_id;
      refreshAll();
    } catch (e) { showError(e); } finally { $("batch-submit").disabled = false; }
  });

  // ------------------------------------------------------------------ instances panel: check
  // POST /sync_sessions/api/instances/{name}/check answers {instance, ok, checks: [{check, ok, detail}]};
  // the result table opens right under the instance's row.
  function renderInstancePanel() {
    const rows = state.instances.flatMap((i) => {
      const res = state.checks.get(i.name);
      const row = el("tr", { dataset: { instance: i.name } },
        el("td", {}, i.name), el("td", {}, i.kind), el("td", {}, i.categories.join(", ")),
        el("td", {}, i.tags.join(", ") || "–"), el("td", {}, i.enabled ? "yes" : el("span", { class: "muted" }, "no")),
        el("td", { class: "actions" }, el("button", { type: "button", class: "secondary check", disabled: res && res.busy, onclick: () => checkInstance(i.name) }, res && res.busy ? "checking…" : "check"),
          i.categories.includes("messages") && i.kind !== "telegram"
            ? el("button", { type: "button", class: "secondary gaps-toggle", "aria-expanded": String(state.gaps.has(i.name)), onclick: () => toggleGaps(i.name) }, "gaps") : null));
      const gaps = state.gaps.get(i.name);
      return [row, ...(res && !res.busy ? [checkResultRow(i.name, res)] : []), ...(gaps ? [gapsRow(i.name, gaps)] : [])];
    });
    $("instances-body").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no instance registered: syncflow instances add ..."))]));
  }
  function checkResultRow(name, res) {
    let body;
    if (res.error) {
      body = [el("p", { class: "check-error" }, res.error)];
    } else {
      const checks = res.checks || [];
      const bad = checks.filter((c) => !c.ok).length;
      body = [
        el("p", { class: "check-summary " + (res.ok ? "ok" : "bad") }, res.ok ? `✓ ${name}: all ${checks.length} checks passed` : `✗ ${name}: ${bad} of ${checks.length} checks failed`),
        el("table", { class: "check-table" },
          el("thead", {}, el("tr", {}, el("th", {}, "check"), el("th", {}, "ok"), el("th", {}, "detail"))),
          el("tbody", {}, checks.map((c) => el("tr", { class: c.ok ? "ok" : "bad", dataset: { check: c.check, ok: String(!!c.ok) } },
            el("td", {}, c.check), el("td", {}, c.ok ? "✓" : "✗"), el("td", {}, c.detail || ""))))),
      ];
    }
    return el("tr", { class: "check-result", dataset: { instance: name, ok: String(!!res.ok) } },
      el("td", { colspan: 6 }, body, el("button", { type: "button", class: "secondary check-close", onclick: () => { state.checks.delete(name); renderInstancePanel(); } }, "hide")));
  }
  async function checkInstance(name) {
    state.checks.set(name, { busy: true });
    renderInstancePanel();
    let res;
    try {
      res = await api("POST", CFG.api + "/instances/" + encodeURIComponent(name) + "/check", {});
    } catch (e) {
      let msg = e.message;
      if (e.status === 401 || e.status === 403) msg = "checking needs the API token (top right): " + e.message;
      else if (e.status === 404 && /^not found$/i.test(e.message)) msg = "this server has no check endpoint: upgrade syncflow (syncflow instances check " + name + " works from the CLI)";
      res = { ok: false, error: msg, checks: [] };
    }
    state.checks.set(name, res);
    renderInstancePanel();
  }

  // ------------------------------------------------------------------ instances panel: gaps
  // GET /sync_sessions/api/instances/{name}/gaps answers {instance, counts: {open, filled, ...},
  // gaps: [{from_seq, to_seq, width, status, found, checks, first_seen, last_checked}]}.
  async function toggleGaps(name) {
    if (state.gaps.has(name)) { state.gaps.delete(name); renderInstancePanel(); return; }
    state.gaps.set(name, { busy: true });
    renderInstancePanel();
    let res;
    try { res = await api("GET", CFG.api + "/instances/" + encodeURIComponent(name) + "/gaps?limit=200"); }
    catch (e) { res = { error: e.message }; }
    state.gaps.set(name, res);
    renderInstancePanel();
  }
  function gapsRow(name, res) {
    let body;
    if (res.busy) body = [el("p", { class: "muted" }, "loading the gap ledger…")];
    else if (res.error) body = [el("p", { class: "check-error" }, res.error)];
    else {
      const c = res.counts || {};
      const summary = el("p", { class: "gaps-summary" }, `seq holes of ${name}: ${fmtNum(c.open || 0)} open, ${fmtNum(c.filled || 0)} filled, ` +
        `${fmtNum(c.partly_filled || 0)} partly filled, ${fmtNum(c.confirmed_empty || 0)} confirmed empty`);
      // g.seqs is the exact text: seqs pass 2^53, where JavaScript numbers round
      const rows = (res.gaps || []).map((g) => el("tr", { class: "gap " + g.status, dataset: { status: g.status, seqs: g.seqs } },
        el("td", {}, g.seqs), el("td", { class: "num" }, fmtNum(g.width)),
        el("td", {}, g.status), el("td", { class: "num" }, fmtNum(g.found)), el("td", { class: "num" }, fmtNum(g.checks)),
        el("td", {}, fmtTime(g.first_seen)), el("td", {}, fmtTime(g.last_checked))));
      body = [summary, rows.length
        ? el("table", { class: "check-table gaps-table" },
          el("thead", {}, el("tr", {}, ...["seqs", "width", "status", "found", "checks", "first seen", "last checked"].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows))
        : el("p", { class: "muted" }, "no hole recorded: every seq was served in order")];
    }
    return el("tr", { class: "gaps-result", dataset: { instance: name } },
      el("td", { colspan: 6 }, body, el("button", { type: "button", class: "secondary gaps-close", onclick: () => { state.gaps.delete(name); renderInstancePanel(); } }, "hide")));
  }

  // ------------------------------------------------------------------ what changed
  async function loadChanges() {
    const q = new URLSearchParams({ limit: 10 });
    if ($("c-category").value) q.set("category", $("c-category").value);
    const page = await api("GET", CFG.api + "/changes?" + q.toString());
    const items = page.items.map((c) => {
      const lines = c.changes.slice(0, 3).map((l) => el("li", {}, l));
      if (c.changes_total > lines.length) lines.push(el("li", { class: "more muted" }, `… and ${fmtNum(c.changes_total - lines.length)} more`));
      shortIds.set(c.session_id, c.short_id);
      return el("div", { class: "change-entry", dataset: { sessionId: c.session_id, instance: c.instance_name } },
        el("div", { class: "change-head" }, el("span", { class: "muted" }, fmtTime(c.changed_at)), " ", el("strong", {}, c.instance_name), ` ${c.sync_category} · `,
          el("a", { href: "?session=" + encodeURIComponent(c.session_id), onclick: (ev) => { ev.preventDefault(); openDetail(c.session_id).catch(showError); } }, "session ", sessionCode(c.session_id)),
          ` · ${c.changes_total} change${c.changes_total === 1 ? "" : "s"} (+${c.items_created} ~${c.items_updated} −${c.items_deleted})`),
        el("ul", { class: "changes" }, lines));
    });
    $("changes-list").replaceChildren(...(items.length ? items : [el("span", { class: "muted" }, "no change recorded yet")]));
  }
  $("c-category").addEventListener("change", () => loadChanges().catch(showError));

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
  loadChanges().catch(showError);
  refreshAll();
  setInterval(() => { if (!document.hidden) { Promise.all([loadList(), loadDetail()]).catch(showError); } }, 2000);
  setInterval(() => { if (!document.hidden) { loadStats().catch(showError); loadQueue().catch(() => {}); loadChanges().catch(() => {}); } }, 10000);
})();
