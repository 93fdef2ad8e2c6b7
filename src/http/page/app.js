// orderflow ops board. Plain JS, no build step. Every customer-provided
// string is put in the page with textContent, never as HTML.
"use strict";

// Signed in once with a token, the page holds only an HttpOnly session
// cookie (the server's); no token is kept here or put in a URL.
const $ = (id) => document.getElementById(id);
let me = null;           // { name, role } of the session, once signed in
const RANKS = { viewer: 0, operator: 1, refunder: 2, admin: 3 };
let stream = null;       // AbortController of the live event stream
let retryMs = 1000;
let rendered = new Map(); // order id → { key, node } of the rows on the page
let loads = 0;            // the newest load() is the one shown
let opened = null;        // the order whose panel is open
let logOf = null;         // the endpoint whose delivery log is shown
let endpointRows = new Map(); // endpoint id → { key, node }
let gatewayRows = new Map(); // gateway event id → { key, node }
let logRows = new Map();  // log line → { key, node }, for the endpoint `logOf`

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

async function api(path, options = {}) {
  const res = await fetch(path, { credentials: "same-origin", ...options });
  if (res.status === 401) { logout("Signed out: the session ended or the token was revoked."); throw new Error("unauthorized"); }
  const body = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) throw new Error((body && body.error && body.error.message) || res.statusText);
  return body;
}

function money(cents, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency.toUpperCase() }).format(cents / 100);
  } catch (_) { return (cents / 100).toFixed(2) + " " + currency; }
}

function ago(ts) {
  if (!ts) return "never checked";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  if (s < 60) return "checked " + s + " s ago";
  if (s < 3600) return "checked " + Math.round(s / 60) + " min ago";
  return "checked " + Math.round(s / 3600) + " h ago";
}

function source(state, main) {
  return el("td", {},
    el("span", {}, main || "—"),
    el("span", { class: "age", "data-ts": state.checked_at || "" }, ago(state.checked_at)),
    state.stale ? el("span", { class: "stale", title: "last refresh failed or is old" }, "stale") : null);
}

async function act(order, action) {
  const verb = action === "cancel" ? "Cancel" : "Retry the delivery of";
  if (!confirm(verb + " order " + order.id.slice(0, 8) + "?")) return;
  try {
    await api("/api/v1/orders/" + order.id + "/" + action, { method: "POST" });
    toast(action === "cancel" ? "Order cancelled." : "Delivery queued again.");
    await api("/api/v1/dashboard/refresh", { method: "POST" });
  } catch (e) { toast("Failed: " + e.message); }
}

function row(o) {
  const actions = el("td", { class: "actions" });
  const delivery = (o.delivery && o.delivery.status) || "";
  if (delivery === "failed") {
    actions.append(el("button", { class: "ghost retry", onclick: () => act(o, "retry-delivery") }, "Retry delivery"));
  }
  // A delivery attempt without an answer may have made the shipment: no
  // cancel (the server refuses it too) until an attempt learns the outcome.
  const unknown = !!(o.delivery && o.delivery.outcome_unknown);
  if (o.status === "payment_pending" || (o.status === "paid" && delivery !== "requested" && !unknown)) {
    actions.append(el("button", { class: "danger cancel", onclick: () => act(o, "cancel") }, "Cancel"));
  }
  const stock = (o.warehouse.items || []).map((i) => i.sku + ": " + (i.available ?? "?") + " in stock").join(", ");
  const ship = o.shipping.status ? o.shipping.status + (o.shipping.tracking_number ? " · " + o.shipping.tracking_number : "") : "";
  return el("tr", { "data-id": o.id, class: o.id === opened ? "selected" : "" },
    el("td", { class: "id", title: o.id }, el("button", { class: "open", onclick: () => openOrder(o.id) }, o.id.slice(0, 8))),
    el("td", { class: "customer" }, o.customer_name || ""),
    el("td", {}, el("span", { class: "pill" }, o.status),
      delivery === "failed" ? el("span", { class: "stale" }, " delivery failed") : null,
      unknown ? el("span", { class: "stale unknown", title: "the last delivery attempt got no answer; the shipment may exist" }, " shipment unknown") : null,
      o.attention ? el("span", { class: "stale attention", title: "attempts used up: ops must look" }, " needs attention: " + o.attention) : null,
      o.stuck ? el("span", { class: "stale stuck", title: "since " + new Date(o.stuck.since).toLocaleString() }, " stuck: " + o.stuck.reason) : null),
    el("td", {}, money(o.total_cents, o.currency)),
    source(o.payment, o.payment.status),
    source(o.shipping, ship),
    source(o.warehouse, stock),
    actions);
}

// First deliveries wait for the oldest open transaction (the log's
// horizon): when either is old, the tile says which.
function webhookTile(w) {
  const why = w.horizon_age_seconds >= w.lag_seconds && w.stalled
    ? "a transaction open " + Math.round(w.horizon_age_seconds) + " s holds them back"
    : "oldest event not yet tried";
  return el("div", { class: "tile webhook-tile" + (w.stalled ? " bad" : ""), title: why },
    el("div", { class: "n" }, Math.round(w.lag_seconds) + " s"),
    el("div", { class: "l" }, w.stalled ? "webhooks stalled" : "webhook lag"));
}

function renderSummary(s) {
  const tiles = $("tiles");
  tiles.replaceChildren(...Object.entries(s.orders_by_status).map(([k, v]) =>
    el("div", { class: "tile" }, el("div", { class: "n" }, v), el("div", { class: "l" }, k))),
    el("div", { class: "tile" }, el("div", { class: "n" }, Math.round(s.outbox_lag_seconds) + " s"), el("div", { class: "l" }, "outbox lag")),
    el("div", { class: "tile" + (s.needs_attention ? " bad" : "") }, el("div", { class: "n" }, s.needs_attention || 0), el("div", { class: "l" }, "needs attention")),
    el("div", { class: "tile stuck-tile" + (s.stuck ? " bad" : "") }, el("div", { class: "n" }, s.stuck || 0), el("div", { class: "l" }, "stuck")),
    webhookTile(s.webhooks));
  $("partners").replaceChildren(...Object.entries(s.partners).map(([name, p]) =>
    el("div", { class: "partner " + (p.healthy ? "ok" : "bad") },
      el("div", {}, name + " ", el("b", {}, p.healthy ? "healthy" : "unhealthy")),
      el("div", { class: "muted" }, "errors " + Math.round(p.error_rate * 100) + " % · last ok " + (p.last_success_at ? new Date(p.last_success_at).toLocaleTimeString() : "never")))));
  $("queues").tBodies[0].replaceChildren(...Object.entries(s.queues).map(([kind, q]) =>
    el("tr", {}, el("td", {}, kind), el("td", {}, q.pending), el("td", {}, q.running), el("td", {}, q.done), el("td", {}, q.failed), el("td", {}, q.dead))));
  $("last-refresh").textContent = s.last_refresh
    ? "refreshed " + new Date(s.last_refresh.finished_at).toLocaleTimeString() + " in " + s.last_refresh.duration_ms + " ms"
    : "not refreshed yet";
}

// What a row shows, but its check times: every refresh moves those, and
// they are updated in place.
function rowKey(o) {
  return JSON.stringify(o, (k, v) => (k === "checked_at" ? undefined : v));
}

// Renders `items` into `body`, a row each, known by `id`: a row whose `key`
// did not change stays the same DOM node (`update` may touch it in place),
// so a re-render never swaps a button away from under the pointer of
// someone about to click it. Returns the rows now shown, for the next call.
function keepRows(body, shown, items, id, key, build, update) {
  const next = new Map();
  const nodes = items.map((item) => {
    const k = key(item);
    const old = shown.get(id(item));
    if (old && old.key === k) {
      if (update) update(old.node, item);
      next.set(id(item), old);
      return old.node;
    }
    const node = build(item);
    next.set(id(item), { key: k, node });
    return node;
  });
  const unchanged = nodes.length === body.children.length && nodes.every((n, i) => body.children[i] === n);
  if (!unchanged) body.replaceChildren(...nodes);
  return next;
}

// Board rows keep their node while only their "checked … ago" moves.
function renderRows(orders) {
  rendered = keepRows($("rows"), rendered, orders, (o) => o.id, rowKey, row, (node, o) => {
    const ages = node.querySelectorAll(".age");
    [o.payment, o.shipping, o.warehouse].forEach((state, i) => {
      ages[i].setAttribute("data-ts", state.checked_at || "");
      ages[i].textContent = ago(state.checked_at);
    });
  });
  $("empty").hidden = orders.length > 0;
}

async function load() {
  const seq = ++loads;
  const filter = $("filter").value;
  const q = "?limit=200" + (filter ? "&status=" + encodeURIComponent(filter) : "");
  // Stuck marks come from the orders API (the database, now), not from the
  // board (as of its last refresh), so the page, the list and the summary
  // agree on which orders are stuck.
  const [summary, board, stuck] = await Promise.all([
    api("/api/v1/dashboard/summary"),
    api("/api/v1/dashboard/orders" + q),
    api("/api/v1/orders?stuck=true&limit=200" + (filter ? "&status=" + encodeURIComponent(filter) : "")),
  ]);
  if (seq !== loads) return; // a newer load (another filter, a later refresh) wins
  const stuckNow = new Map(stuck.orders.map((o) => [o.id, o.stuck]));
  board.orders.forEach((o) => { o.stuck = stuckNow.get(o.id) || null; });
  renderSummary(summary);
  renderRows($("stuck-only").checked ? board.orders.filter((o) => o.stuck) : board.orders);
  loadEndpoints().catch(() => {});
  loadGatewayEvents().catch(() => {});
  if (opened) loadOrder(opened).catch(() => {});
}

// The order panel: its timeline (events, oldest first) and its webhook
// deliveries. Event data is customer-provided: text nodes only.

function openOrder(id) {
  opened = id;
  for (const r of document.querySelectorAll("#rows tr")) r.classList.toggle("selected", r.dataset.id === id);
  $("panel").hidden = false;
  loadOrder(id).catch((e) => toast("Could not load the order: " + e.message));
}

// What moved between two snapshots of an order, as "field: before → after".
function changes(before, after) {
  const pick = (o) => o ? {
    status: o.status, delivery: o.delivery.status, attempts: o.delivery.attempts,
    payment: o.payment.status, error: o.delivery.last_error, tracking: o.delivery.tracking_number,
    refund: o.payment.refund && o.payment.refund.source, dispute: o.payment.dispute && o.payment.dispute.status,
  } : {};
  const a = pick(before), b = pick(after);
  return Object.keys(b).filter((k) => a[k] !== b[k] && b[k] !== null && b[k] !== undefined)
    .map((k) => k + ": " + (a[k] === undefined || a[k] === null ? "" : a[k] + " → ") + b[k]).join(" · ");
}

function deliveryCells(d) {
  const answer = d.response_status ? "HTTP " + d.response_status : (d.error || "—");
  const when = d.attempted_at || d.next_attempt_at;
  return [el("td", {}, d.attempt), el("td", {}, el("span", { class: "pill" }, d.status)),
    el("td", { class: "changes" }, answer + (d.response_status && d.error ? " · " + d.error : "")),
    el("td", {}, when ? new Date(when).toLocaleTimeString() : "")];
}

async function loadOrder(id) {
  const [events, deliveries] = await Promise.all([
    api("/api/v1/orders/" + id + "/events"), api("/api/v1/orders/" + id + "/webhook-deliveries")]);
  if (opened !== id) return;
  $("panel-id").textContent = id;
  const last = events.events.length ? events.events[events.events.length - 1].data.order : null;
  $("panel-customer").textContent = last ? last.customer.name + " · " + last.customer.email : "";
  $("panel-payment").textContent = last ? paymentLine(last.payment) : "";
  let prev = null;
  $("timeline").tBodies[0].replaceChildren(...events.events.map((e) => {
    const row = el("tr", { "data-type": e.type }, el("td", {}, e.sequence), el("td", {}, e.type),
      el("td", {}, new Date(e.created_at).toLocaleString()), el("td", { class: "changes" }, changes(prev, e.data.order)));
    prev = e.data.order;
    return row;
  }));
  $("order-deliveries").tBodies[0].replaceChildren(...deliveries.deliveries.map((d) =>
    el("tr", {}, el("td", { class: "mono" }, d.endpoint_id.slice(0, 11)), el("td", {}, d.type), ...deliveryCells(d))));
  $("order-deliveries-empty").hidden = deliveries.deliveries.length > 0;
}

// The payment as the panel says it: intent, status, refund, dispute.
function paymentLine(p) {
  const parts = ["payment " + (p.intent_id || "—") + " · " + (p.status || "no status")];
  if (p.decline_code) parts.push("declined: " + p.decline_code);
  if (p.refund) parts.push("refund " + (p.refund.id || "") + " by " + (p.refund.source || "orderflow"));
  if (p.dispute) {
    const due = p.dispute.evidence_due_by ? ", evidence due " + new Date(p.dispute.evidence_due_by).toLocaleString() : "";
    parts.push("disputed (" + (p.dispute.reason || "no reason") + "): " + p.dispute.status + due);
  }
  return parts.join(" · ");
}

// The gateway's events: what arrived, what became of it, replay.

async function loadGatewayEvents() {
  const status = $("gateway-status").value;
  const list = await api("/api/v1/gateway-events?limit=50" + (status ? "&status=" + encodeURIComponent(status) : ""));
  // Unchanged rows keep their node, so a Replay button stays the one clicked.
  gatewayRows = keepRows($("gateway-events").tBodies[0], gatewayRows, list.events, (e) => e.id, JSON.stringify, (e) =>
    el("tr", { "data-id": e.id, "data-status": e.status },
      el("td", { class: "mono" }, e.id), el("td", {}, e.type),
      el("td", { class: "mono" }, e.order_id ? e.order_id.slice(0, 8) : "—"),
      el("td", {}, el("span", { class: "pill" }, e.status)),
      el("td", {}, new Date(e.received_at).toLocaleTimeString()),
      el("td", { class: "changes" }, e.error || ""),
      el("td", {}, e.status === "pending" ? null
        : el("button", { class: "ghost replay", onclick: () => replayGatewayEvent(e.id) }, "Replay"))));
  $("gateway-events-empty").hidden = list.events.length > 0;
}

async function replayGatewayEvent(id) {
  try {
    await api("/api/v1/gateway-events/" + encodeURIComponent(id) + "/replay", { method: "POST" });
    toast("Replay queued.");
    setTimeout(() => loadGatewayEvents().catch(() => {}), 1000);
  } catch (e) { toast("Failed: " + e.message); }
}

// The webhooks view: endpoints, their health, their delivery log, resend.

function health(h) {
  if (h.failing_since) return "failing since " + new Date(h.failing_since).toLocaleTimeString() + " (" + h.consecutive_failures + " failures)";
  return h.last_success_at ? "ok · last success " + new Date(h.last_success_at).toLocaleTimeString() : "no delivery yet";
}

async function loadEndpoints() {
  const list = await api("/api/v1/webhook-endpoints");
  endpointRows = keepRows($("endpoints").tBodies[0], endpointRows, list.endpoints, (w) => w.id, JSON.stringify, (w) =>
    el("tr", { "data-id": w.id },
      el("td", { class: "mono", title: w.url }, w.id.slice(0, 11), el("span", { class: "age" }, w.url)),
      el("td", {}, w.events.join(", ")),
      el("td", { class: "description" }, w.description),
      el("td", { class: w.health.failing_since ? "stale" : "" }, w.enabled ? health(w.health) : "disabled"),
      el("td", {}, el("button", { class: "ghost log", onclick: () => showLog(w.id) }, "Deliveries"))));
  $("endpoints-empty").hidden = list.endpoints.length > 0;
  if (logOf) await showLog(logOf);
}

async function showLog(id) {
  if (logOf !== id) logRows = new Map();
  logOf = id;
  const log = await api("/api/v1/webhook-endpoints/" + id + "/deliveries?limit=50");
  if (logOf !== id) return; // another endpoint's log was asked for meanwhile
  $("endpoint-log").hidden = false;
  $("endpoint-log-id").textContent = id;
  // A line is known by what it says (and which of its equals it is): an
  // unchanged line keeps its node, and its button.
  const seen = new Map();
  const lines = log.deliveries.map((d) => {
    const text = JSON.stringify(d);
    const n = (seen.get(text) || 0) + 1;
    seen.set(text, n);
    return { d, id: text + "#" + n };
  });
  logRows = keepRows($("endpoint-log-rows"), logRows, lines, (l) => l.id, (l) => l.id, ({ d }) =>
    el("tr", { "data-event": d.event_id }, el("td", {}, d.type), el("td", { class: "mono" }, d.order_id.slice(0, 8)), ...deliveryCells(d),
      el("td", {}, el("button", { class: "ghost resend", onclick: () => resend(id, d.event_id) }, "Resend"))));
}

async function resend(endpoint, event) {
  try {
    await api("/api/v1/webhook-endpoints/" + endpoint + "/events/" + event + "/resend", { method: "POST" });
    toast("Resend queued.");
    setTimeout(() => showLog(endpoint).catch(() => {}), 1000);
  } catch (e) { toast("Failed: " + e.message); }
}

function setLive(on) {
  $("live").classList.toggle("on", on);
  $("live-text").textContent = on ? "live" : (document.hidden ? "paused" : "reconnecting");
}

async function listen() {
  if (stream || document.hidden || !me) return;
  const ctl = new AbortController();
  stream = ctl;
  try {
    const res = await fetch("/api/v1/dashboard/events", { credentials: "same-origin", signal: ctl.signal });
    if (!res.ok || !res.body) throw new Error("stream " + res.status);
    setLive(true);
    retryMs = 1000;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const message = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (message.startsWith("event: refresh")) load().catch(() => {});
      }
    }
  } catch (_) { /* aborted or dropped */ }
  if (stream === ctl) stream = null;
  setLive(false);
  if (!ctl.signal.aborted && !document.hidden) {
    setTimeout(listen, retryMs);
    retryMs = Math.min(retryMs * 2, 15000);
  }
}

function stop() {
  if (stream) { stream.abort(); stream = null; }
  setLive(false);
}

function logout(message) {
  stop();
  if (me && !message) fetch("/api/v1/session", { method: "DELETE", credentials: "same-origin" }).catch(() => {});
  me = null;
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
}

// Search (GET /api/v1/orders?q=): the results open like board rows.
async function search(q) {
  const body = await api("/api/v1/orders?limit=20&q=" + encodeURIComponent(q));
  const rows = $("search-rows");
  rows.replaceChildren(...body.orders.map((o) => el("tr", {},
    el("td", { class: "id", title: o.id }, el("button", { class: "open", onclick: () => openOrder(o.id) }, o.id.slice(0, 8))),
    el("td", {}, o.customer.name + " · " + o.customer.email),
    el("td", {}, o.status),
    el("td", {}, o.created_at))));
  $("search-results").hidden = body.orders.length === 0;
  $("search-empty").hidden = body.orders.length !== 0;
}

// The audit trail (admins): the newest 50 entries. Names and targets are
// text nodes.
async function loadAudit() {
  const body = await api("/api/v1/audit?limit=50");
  $("audit-rows").replaceChildren(...body.entries.map((e) => el("tr", {},
    el("td", {}, e.at), el("td", {}, e.actor.type + ": " + e.actor.name), el("td", {}, e.action),
    el("td", { class: "mono" }, e.target || ""), el("td", {}, e.outcome), el("td", {}, e.client_ip || ""))));
  $("audit-table").hidden = false;
}

// Buttons a role may not use are not shown (the server refuses them anyway).
function showRole() {
  const rank = RANKS[me.role] || 0;
  document.body.classList.toggle("can-operate", rank >= RANKS.operator);
  document.body.classList.toggle("can-refund", rank >= RANKS.refunder);
  document.body.classList.toggle("can-admin", rank >= RANKS.admin);
  $("whoami").textContent = me.name + " (" + me.role + ")";
}

async function start() {
  showRole();
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  try { await load(); } catch (e) { if (me) toast("Could not load: " + e.message); return; }
  listen();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    fetch("/api/v1/session", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
    }).then(async (res) => {
      if (!res.ok) { logout("The token was refused."); return; }
      me = await res.json();
      start();
    }).catch(() => logout("Could not reach the server."));
  });
  $("logout").addEventListener("click", () => logout());
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("search-q").value.trim();
    if (q) search(q).catch((e) => toast(e.message));
  });
  $("audit-load").addEventListener("click", () => loadAudit().catch((e) => toast(e.message)));
  $("filter").addEventListener("change", () => load().catch((e) => toast(e.message)));
  $("stuck-only").addEventListener("change", () => load().catch((e) => toast(e.message)));
  $("gateway-status").addEventListener("change", () => loadGatewayEvents().catch((e) => toast(e.message)));
  $("panel-close").addEventListener("click", () => { opened = null; $("panel").hidden = true; });
  $("refresh").addEventListener("click", () => api("/api/v1/dashboard/refresh", { method: "POST" })
    .then(() => toast("Refresh requested.")).catch((e) => toast(e.message)));
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stop(); else if (me) { load().catch(() => {}); listen(); }
  });
  setInterval(() => {
    for (const n of document.querySelectorAll(".age")) n.textContent = ago(n.getAttribute("data-ts"));
  }, 1000);
  // A session from before (the cookie) signs the page in again.
  fetch("/api/v1/session", { credentials: "same-origin" })
    .then(async (res) => { if (res.ok) { me = await res.json(); start(); } })
    .catch(() => {});
});
