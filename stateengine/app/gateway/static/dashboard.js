// stateengine dashboard: plain JS, no build step.
// Tables come from /api/states (arena reads), live updates from the SSE feed /api/feed,
// server figures from /api/stats every 2 s. Write rates are table-version deltas over a
// sliding window (the version rises once per write command), so they stay right even
// when feed events were missed.
"use strict";

const RATE_WINDOW = 5;     // seconds
const HISTORY = 60;        // sparkline points (one per second)
const tables = new Map();  // name -> {info, samples: [[t, version]], history: [], row}
let selected = null;
let page = 0;
let seq = 0;
let recordsTimer = null;

const $ = (id) => document.getElementById(id);
const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const fmtRate = (r) => (r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2));

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1).replace(/\.0$/, "") : n) + " " + units[i];
}

function fmtDuration(s) {
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}

// Values come with the wire's JSON escapes (README "Values in JSON"): shown, not decoded.
function showValue(v, nested = false) {
  if (v === null) return "null";
  if (typeof v === "string") return nested ? JSON.stringify(v) : v;
  if (typeof v !== "object") return String(v);
  const inner = (x) => showValue(x, true);
  if (Array.isArray(v)) return "[" + v.map(inner).join(", ") + "]";
  const keys = Object.keys(v);
  if (keys.length === 1) {
    if (keys[0] === "$b64") return "b64:" + v.$b64;
    if (keys[0] === "$float") return { nan: "NaN", inf: "Infinity", "-inf": "-Infinity" }[v.$float] || v.$float;
    if (keys[0] === "$map") return "{" + v.$map.map(([k, x]) => inner(k) + ": " + inner(x)).join(", ") + "}";
    if (keys[0] === "$lit") v = v.$lit;
  }
  return "{" + Object.keys(v).map((k) => JSON.stringify(k) + ": " + inner(v[k])).join(", ") + "}";
}

async function api(path) {
  const res = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error ? `${body.error.type}: ${body.error.message}` : res.statusText);
  return body;
}

function sparkline(svg, values) {
  const max = Math.max(1, ...values);
  const n = values.length;
  const pts = values.map((v, i) => `${(i / Math.max(1, n - 1)) * 120},${23 - (v / max) * 21}`);
  svg.innerHTML = `<polyline points="${pts.join(" ")}"/>`;
}

// --- tables -------------------------------------------------------------------------------

function ensureRow(name) {
  let t = tables.get(name);
  if (t) return t;
  t = { info: null, samples: [], history: new Array(HISTORY).fill(0), row: null, leases: 0 };
  const tr = document.createElement("tr");
  tr.dataset.table = name;
  tr.innerHTML = `<td class="name"></td><td class="num count"></td><td class="num version"></td>` +
    `<td class="num rate">0</td><td><svg class="spark" viewBox="0 0 120 24" preserveAspectRatio="none"></svg></td>` +
    `<td class="num leases">0</td>`;
  tr.querySelector(".name").textContent = name;
  tr.addEventListener("click", () => select(name));
  t.row = tr;
  tables.set(name, t);
  const body = document.querySelector("#tables tbody");
  const after = [...body.children].find((r) => r.dataset.table > name);
  body.insertBefore(tr, after || null);
  return t;
}

function update(name, size, version) {
  const t = ensureRow(name);
  const count = t.row.querySelector(".count"), ver = t.row.querySelector(".version");
  if (size !== null && size !== undefined && count.textContent !== fmtInt(size)) {
    count.textContent = fmtInt(size);
    count.classList.remove("flash"); void count.offsetWidth; count.classList.add("flash");
  }
  if (version !== null && version !== undefined) {
    ver.textContent = fmtInt(version);
    t.samples.push([performance.now() / 1000, version]);
  }
  t.info = { ...(t.info || {}), size, version };
  refreshEmpty();
}

function removeTable(name) {
  const t = tables.get(name);
  if (!t) return;
  t.row.remove();
  tables.delete(name);
  if (selected === name) { selected = null; $("records-title").textContent = "— pick a table"; }
  refreshEmpty();
}

function refreshEmpty() {
  $("tables-empty").hidden = tables.size > 0;
  $("tables-count").textContent = tables.size ? `(${tables.size})` : "";
}

function rateOf(t, now) {
  const s = t.samples;
  while (s.length > 2 && s[1][0] < now - RATE_WINDOW) s.shift();
  if (s.length < 2) return 0;
  const [t0, v0] = s[0][0] < now - RATE_WINDOW ? [now - RATE_WINDOW, s[0][1]] : s[0];
  const [, v1] = s[s.length - 1];
  return Math.max(0, (v1 - v0) / Math.max(1, now - t0));
}

function tick() {
  const now = performance.now() / 1000;
  for (const t of tables.values()) {
    if (t.info && t.info.version !== undefined) t.samples.push([now, t.info.version]);
    const r = rateOf(t, now);
    t.row.querySelector(".rate").textContent = fmtRate(r);
    t.history.push(r); t.history.shift();
    sparkline(t.row.querySelector("svg"), t.history);
  }
}

async function loadTables() {
  const { states } = await api("/api/states");
  const seen = new Set();
  for (const info of states) { seen.add(info.name); update(info.name, info.size, info.version); }
  for (const name of [...tables.keys()]) if (!seen.has(name)) removeTable(name);
  if (!selected && states.length) select(states[0].name);
}

// --- records of the selected table ----------------------------------------------------------

function select(name) {
  if (selected !== name) page = 0;
  selected = name;
  for (const r of document.querySelectorAll("#tables tbody tr")) r.classList.toggle("selected", r.dataset.table === name);
  $("records-title").textContent = "— " + name;
  loadRecords();
}

async function loadRecords() {
  if (!selected) return;
  const size = Number($("page-size").value);
  const params = new URLSearchParams({ offset: page * size, limit: size });
  const order = $("order-by").value.trim();
  if (order) params.set("order_by", order);
  try {
    const res = await api(`/api/states/${encodeURIComponent(selected)}/records?${params}`);
    $("records-error").hidden = true;
    renderRecords(res.records);
    const last = Math.max(0, Math.ceil(res.size / size) - 1);
    if (page > last) { page = last; return loadRecords(); }
    $("page-info").textContent = res.size
      ? `${res.offset + 1}–${res.offset + res.records.length} of ${fmtInt(res.size)}`
      : "empty";
    $("prev").disabled = page === 0;
    $("next").disabled = page >= last;
  } catch (err) {
    $("records-error").textContent = err.message;
    $("records-error").hidden = false;
  }
}

function renderRecords(records) {
  const cols = [];
  for (const r of records) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const thead = document.querySelector("#records thead"), tbody = document.querySelector("#records tbody");
  thead.innerHTML = "";
  tbody.innerHTML = "";
  const hr = document.createElement("tr");
  for (const c of cols) { const th = document.createElement("th"); th.textContent = c; hr.appendChild(th); }
  thead.appendChild(hr);
  for (const r of records) {
    const tr = document.createElement("tr");
    for (const c of cols) {
      const td = document.createElement("td");
      td.textContent = c in r ? showValue(r[c]) : "";
      td.title = td.textContent;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

let tablesTimer = null;
function tablesSoon() {  // re-read the table list at most twice a second
  if (tablesTimer) return;
  tablesTimer = setTimeout(() => { tablesTimer = null; loadTables().catch(() => {}); }, 500);
}

function recordsSoon() {  // at most ~3 refreshes a second while a table is busy
  if (recordsTimer) return;
  recordsTimer = setTimeout(() => { recordsTimer = null; loadRecords(); }, 300);
}

$("prev").onclick = () => { page = Math.max(0, page - 1); loadRecords(); };
$("next").onclick = () => { page += 1; loadRecords(); };
$("page-size").onchange = () => { page = 0; loadRecords(); };
$("order-by").onchange = () => { page = 0; loadRecords(); };

// --- server figures ---------------------------------------------------------------------------

const rpsHistory = new Array(HISTORY).fill(0);
let lastRequests = null;

async function loadStats() {
  try {
    const s = await api("/api/stats");
    seq = Math.max(seq, s.seq);
    $("seq").textContent = fmtInt(seq);
    $("server-line").textContent = `server pid ${s.pid}`;
    const a = s.arena;
    if (a) {
      const used = a.size - a.free_bytes;
      $("stat-arena").innerHTML = `${fmtBytes(used)} <small>/ ${fmtBytes(a.size)}</small>`;
      $("stat-arena-bar").style.width = `${Math.min(100, (100 * used) / a.size)}%`;
      $("stat-readers").textContent = `${a.reader_slots_used} / ${a.reader_slots}`;
    } else {
      $("stat-arena").textContent = "off";
      $("stat-readers").textContent = "–";
    }
    $("stat-queue").textContent = fmtInt(s.last_pass_size);
    const rps = lastRequests === null ? 0 : Math.max(0, (s.requests - lastRequests) / 2);
    lastRequests = s.requests;
    rpsHistory.push(rps); rpsHistory.shift();
    $("stat-rps").textContent = fmtRate(rps);
    sparkline($("stat-rps-spark"), rpsHistory);
    $("stat-store").textContent = s.store ? `${s.store.backend} · fsync ${s.store.fsync}` : "none (memory)";
    $("stat-uptime").textContent = fmtDuration(s.uptime);
    const c = s.cluster;  // a cluster node: how far behind its stream, and whether stale
    $("stat-cluster-card").hidden = !c;
    if (c) {
      const lag = c.behind_entries === null ? "? entries" : `${fmtInt(c.behind_entries)} entries`;
      $("stat-cluster").textContent = c.stale
        ? `${c.name} · STALE: ${c.stale}`
        : `${c.name} · ${lag} · ${fmtInt(c.behind_ms)} ms behind`;
      $("stat-cluster").title = `applied ${c.applied}, stream ${c.stream_last}`;
      $("stat-cluster-card").classList.toggle("stale", Boolean(c.stale));
    }
    for (const [name, t] of Object.entries(s.tables)) {
      const row = tables.get(name);
      if (row) row.row.querySelector(".leases").textContent = fmtInt(t.leases);
    }
    const g = s.gateway;
    $("gateway-line").textContent = g ? `Gateway pid ${g.pid}: ${g.sse_clients} feed client(s), ${fmtInt(g.feed_events)} events.` : "";
  } catch (err) {
    $("server-line").textContent = "server unreachable: " + err.message;
  }
}

// --- the change feed ------------------------------------------------------------------------

function connectFeed() {
  const es = new EventSource("/api/feed");
  const status = $("feed-status");
  es.addEventListener("hello", () => {
    status.textContent = "live"; status.className = "pill on";
    loadTables().catch(() => {});  // subscribed: now read, so nothing falls between
  });
  es.addEventListener("change", (ev) => {
    const c = JSON.parse(ev.data);
    seq = Math.max(seq, c.seq);
    $("seq").textContent = fmtInt(seq);
    if (c.dropped || c.size === null) { tablesSoon(); return; }  // no arena: ask
    update(c.table, c.size, c.version);
    if (c.gap) tablesSoon();
    if (c.table === selected) recordsSoon();
  });
  es.onerror = () => { status.textContent = "reconnecting…"; status.className = "pill off"; };
}

connectFeed();
loadTables().catch(() => {});
loadStats();
setInterval(tick, 1000);
setInterval(loadStats, 2000);
setInterval(() => loadTables().catch(() => {}), 10000);  // a safety net under the feed
