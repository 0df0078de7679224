#include "gateway/control/status_page.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <concepts>
#include <cstdio>
#include <ctime>
#include <type_traits>

#ifndef RAMPART_VERSION
#define RAMPART_VERSION "unknown"
#endif

namespace rampart::gateway {
namespace {

// ---------------------------------------------------------------------------
// The page. Kept as three pieces so that the CSP can allow exactly this
// style and this script by their hashes (no 'unsafe-inline'). Every value
// from /api/status reaches the DOM through textContent, never innerHTML, and
// the page has no inline event handlers or style attributes (the CSP would
// refuse them).
// ---------------------------------------------------------------------------

constexpr std::string_view page_css = R"css(
:root {
  --bg: #f4f6f9; --fg: #1d2430; --muted: #5d6878; --card: #ffffff; --line: #dde2ea;
  --head: #17202e; --head-fg: #e8edf5; --accent: #2f6fdf;
  --up: #18794e; --up-bg: #dcf5e7; --down: #b42318; --down-bg: #fde4e1;
  --drain: #4a5567; --drain-bg: #e4e8ee; --eject: #a15c00; --eject-bg: #fdefd6;
  --warn: #a15c00; --warn-bg: #fff4de; --bad: #b42318; --bad-bg: #fde4e1;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #10151d; --fg: #dbe2ec; --muted: #8c98aa; --card: #18202b; --line: #2a3442;
    --head: #0a0e14; --accent: #6ea1ff;
    --up: #5dd39e; --up-bg: #163526; --down: #ff8a80; --down-bg: #3d1b1a;
    --drain: #b7c1d0; --drain-bg: #2a3442; --eject: #f5b95c; --eject-bg: #3a2a12;
    --warn: #f5b95c; --warn-bg: #3a2a12; --bad: #ff8a80; --bad-bg: #3d1b1a;
  }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header.top { background: var(--head); color: var(--head-fg); padding: 14px 24px;
  display: flex; flex-wrap: wrap; align-items: center; gap: 10px 24px; }
.brand { display: flex; align-items: baseline; gap: 12px; }
.brand h1 { margin: 0; font-size: 20px; font-weight: 650; letter-spacing: .2px; }
.brand .site { font-size: 15px; color: #9fb3cf; font-weight: 500; }
.chips { display: flex; flex-wrap: wrap; gap: 6px; flex: 1; }
.chip { background: rgba(255,255,255,.08); border: 1px solid rgba(255,255,255,.12); border-radius: 999px;
  padding: 2px 10px; font-size: 12.5px; white-space: nowrap; }
.chip b { font-weight: 600; }
.chip.good { background: rgba(46,160,67,.25); border-color: rgba(46,160,67,.5); }
.chip.bad { background: rgba(248,81,73,.25); border-color: rgba(248,81,73,.55); }
.chip.info { background: rgba(56,139,253,.22); border-color: rgba(56,139,253,.5); }
.token { display: flex; align-items: center; gap: 6px; font-size: 12.5px; }
.token input { width: 150px; padding: 4px 8px; border-radius: 6px; border: 1px solid #3a475a;
  background: #0f1620; color: var(--head-fg); font: inherit; }
.token.need { background: #7a2e00; padding: 6px 10px; border-radius: 8px; outline: 2px solid #f5b95c; }
.token.need input { width: 220px; border-color: #f5b95c; }
.token .state { color: #9fb3cf; }
button { font: inherit; font-size: 12.5px; padding: 3px 10px; border-radius: 6px; cursor: pointer;
  border: 1px solid var(--line); background: var(--card); color: var(--fg); }
button:hover:not(:disabled) { border-color: var(--accent); color: var(--accent); }
button:disabled { opacity: .4; cursor: default; }
header button { background: #243043; border-color: #3a475a; color: var(--head-fg); }
.banner { margin: 16px 24px 0; padding: 10px 14px; border-radius: 8px; font-weight: 500;
  background: var(--bad-bg); color: var(--bad); border: 1px solid var(--bad); }
.banner.notice { background: var(--up-bg); color: var(--up); border-color: var(--up); }
main { padding: 8px 24px 24px; }
body.stale main { opacity: .55; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; margin: 16px 0 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .5px; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; margin-top: 2px; }
.card .sub { color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
.card .sub.warn { color: var(--warn); }
h2 { font-size: 16px; margin: 22px 0 8px; display: flex; align-items: baseline; gap: 10px; flex-wrap: wrap; }
h2 .sub { color: var(--muted); font-size: 13px; font-weight: 400; }
.panel { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 10px; text-align: left; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { color: var(--muted); font-size: 12px; font-weight: 600; text-transform: uppercase; letter-spacing: .4px;
  background: rgba(127,127,127,.06); }
tr:last-child td { border-bottom: 0; }
tbody tr:hover { background: rgba(127,127,127,.06); }
td.num, th.num { text-align: right; }
td .addr { color: var(--muted); font-size: 12px; margin-left: 6px; }
td:first-child, th:first-child { padding-left: 14px; }
td:last-child, th:last-child { padding-right: 14px; }
td.names { white-space: normal; }
.badge { display: inline-block; min-width: 70px; text-align: center; padding: 2px 8px; border-radius: 6px;
  font-size: 12px; font-weight: 700; letter-spacing: .4px; }
.badge.up { background: var(--up-bg); color: var(--up); }
.badge.down { background: var(--down-bg); color: var(--down); }
.badge.drained { background: var(--drain-bg); color: var(--drain); }
.badge.ejected { background: var(--eject-bg); color: var(--eject); }
.note { color: var(--muted); font-size: 12px; margin-left: 6px; }
.ok { color: var(--up); }
.warn, .warn-text { color: var(--warn); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
td.warn { background: var(--warn-bg); }
td.bad { background: var(--bad-bg); }
.muted { color: var(--muted); }
.actions { display: flex; gap: 6px; }
.empty { padding: 14px; color: var(--muted); }
footer { padding: 0 24px 24px; color: var(--muted); font-size: 12.5px; }
)css";

constexpr std::string_view page_js = R"js(
"use strict";
(function () {
  var REFRESH_MS = 2000;
  var TOKEN_KEY = "rampart-admin-token";
  var prev = null;
  var busy = false;
  var timer = null;
  var updates = 0;
  var lastOk = null;
  var again = false;
  var message = null;  // the outcome of the last button: { text, kind, until }

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }
  function setToken(v) {
    try {
      if (v) { sessionStorage.setItem(TOKEN_KEY, v); } else { sessionStorage.removeItem(TOKEN_KEY); }
    } catch (e) { /* storage disabled: the token lives for this request only */ }
  }
  function authHeaders() {
    var t = getToken();
    return t ? { "Authorization": "Bearer " + t } : {};
  }
  function num(n) { return Number(n || 0).toLocaleString("en-US"); }
  function rate(r) {
    if (r === null || !isFinite(r)) { return "\u2013"; }
    return r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US");
  }
  function duration(s) {
    s = Math.max(0, Math.floor(s));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d > 0) { return d + "d " + h + "h " + m + "m"; }
    if (h > 0) { return h + "h " + m + "m"; }
    if (m > 0) { return m + "m " + (s % 60) + "s"; }
    return s + "s";
  }
  function clock(d) {
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }
  function delta(now, before, dt) {
    if (before === undefined || before === null || dt <= 0 || now < before) { return null; }
    return (now - before) / dt;
  }

  function banner(text, kind) {
    var b = $("banner");
    b.textContent = text || "";
    b.className = "banner" + (kind ? " " + kind : "");
    b.hidden = !text;
  }
  function say(text, kind) {
    message = { text: text, kind: kind, until: Date.now() + 10000 };
    banner(text, kind);
  }
  function needToken(yes) {
    $("token-box").className = "token" + (yes ? " need" : "");
    if (yes) { $("token").focus(); }
  }
  function showTokenState() {
    $("token-state").textContent = getToken() ? "token set" : "";
  }

  function chip(parent, label, value, kind) {
    var c = el("span", "chip" + (kind ? " " + kind : ""));
    c.appendChild(document.createTextNode(label + " "));
    c.appendChild(el("b", null, value));
    parent.appendChild(c);
  }
  function card(parent, label, value) {
    var c = el("div", "card");
    c.appendChild(el("div", "label", label));
    c.appendChild(el("div", "value", value));
    for (var i = 3; i < arguments.length; ++i) {
      var sub = arguments[i];
      if (typeof sub === "string") { sub = { text: sub }; }
      c.appendChild(el("div", "sub" + (sub.cls ? " " + sub.cls : ""), sub.text));
    }
    parent.appendChild(c);
  }

  function renderHeader(s, reqRate) {
    $("site").textContent = s.site;
    document.title = "Rampart \u00b7 " + s.site;
    var chips = $("chips");
    chips.replaceChildren();
    chip(chips, "version", s.version);
    chip(chips, "config generation", s.generation);
    var reload = String(s.last_reload);
    chip(chips, "last reload", reload, reload === "ok" ? "good" : reload.indexOf("failed") === 0 ? "bad" : null);
    chip(chips, "uptime", duration(s.uptime_s));
    var v = String(s.vrrp_state).toUpperCase();
    chip(chips, "VRRP", v, v === "MASTER" ? "good" : v === "BACKUP" ? "info" : v === "FAULT" ? "bad" : null);
    chip(chips, "workers", s.workers + (s.worker_restarts ? " (" + s.worker_restarts + " restarted)" : ""),
         s.worker_restarts ? "bad" : null);

    var cards = $("cards");
    cards.replaceChildren();
    card(cards, "Connections open", num(s.connections.open),
         "client connections now \u00b7 " + num(s.connections.tunnels) + " WebSocket");
    card(cards, "Connections total", num(s.connections.total), "accepted since start");
    card(cards, "Requests per second", rate(reqRate), "over the last refresh");
    card(cards, "Requests total", num(s.requests_total), "since start");
    var r = s.responses;
    card(cards, "Responses 2xx", num(r["2xx"]),
         { text: "3xx " + num(r["3xx"]) + " \u00b7 4xx " + num(r["4xx"]) + " \u00b7 5xx " + num(r["5xx"]),
           cls: r["5xx"] ? "warn" : null });
    var hs = s.handshakes;
    card(cards, "TLS handshakes", num(hs.full + hs.resumed),
         "full " + num(hs.full) + " \u00b7 resumed " + num(hs.resumed),
         { text: "failed " + num(hs.failed), cls: hs.failed ? "warn" : null });
  }

  var STATE_TEXT = { up: "UP", down: "DOWN", drained: "DRAINED", ejected: "EJECTED" };

  function stateCell(sv) {
    var td = el("td");
    var text = STATE_TEXT[sv.state] || String(sv.state).toUpperCase();
    if (sv.state === "ejected") { text += " " + Math.ceil(sv.ejected_ms / 1000) + " s"; }
    td.appendChild(el("span", "badge " + (STATE_TEXT[sv.state] ? sv.state : "down"), text));
    if (sv.state === "drained" && !sv.healthy) { td.appendChild(el("span", "note", "also down")); }
    if (sv.active > 0 && (sv.state === "drained" || sv.state === "down")) {
      td.appendChild(el("span", "note", sv.active + " finishing"));
    }
    return td;
  }
  function checkCell(pool, sv) {
    if (!pool.health) { return el("td", "muted", "no checks"); }
    if (sv.last_check === 0) { return el("td", "muted", "pending"); }
    if (sv.last_check < 0) { return el("td", "bad", "no response"); }
    return el("td", sv.last_check === pool.health.expect_status ? "ok" : "bad", "HTTP " + sv.last_check);
  }
  function errorCell(dReq, dFail) {
    if (dReq === null || dFail === null) { return el("td", "num muted", "\u2013"); }
    if (dReq === 0) { return el("td", "num muted", dFail > 0 ? "\u2013" : "0 %"); }
    var pct = 100 * Math.min(1, dFail / dReq);
    var cls = pct >= 5 ? "num bad" : pct > 0 ? "num warn" : "num";
    return el("td", cls, (pct > 0 && pct < 10 ? pct.toFixed(1) : Math.round(pct)) + " %");
  }
  function actionButton(sv, action, label, disabled) {
    var b = el("button", null, label);
    b.type = "button";
    b.dataset.server = sv.name;
    b.dataset.action = action;
    b.disabled = disabled;
    b.title = action === "drain" ? "Stop new requests to " + sv.name + "; requests in flight finish"
                                 : "Send requests to " + sv.name + " again";
    b.addEventListener("click", function () { act(sv.name, action, b); });
    return b;
  }

  function renderPools(s, dt, seen) {
    var root = $("pools");
    root.replaceChildren();
    s.pools.forEach(function (pool) {
      var h = el("h2", null, "Pool " + pool.name);
      var parts = [pool.balance.replace(/_/g, " "), "queue " + num(pool.queue)];
      if (pool.queue_timeouts) { parts.push(num(pool.queue_timeouts) + " queue timeouts"); }
      if (pool.rate_limited) { parts.push(num(pool.rate_limited) + " rate limited"); }
      if (pool.health) {
        parts.push("checks GET " + pool.health.path + " every " + pool.health.interval_ms / 1000 + " s, rise " +
                   pool.health.rise + ", fall " + pool.health.fall);
      }
      h.appendChild(el("span", "sub", parts.join(" \u00b7 ")));
      root.appendChild(h);
      var panel = el("div", "panel");
      var table = el("table");
      table.dataset.pool = pool.name;
      var head = el("tr");
      [["Server"], ["State"], ["Weight", 1], ["Active", 1], ["Requests", 1], ["Req/s", 1], ["Failures", 1],
       ["Error rate", 1], ["Last check"], ["Checks ok/failed", 1], ["Actions"]].forEach(function (c) {
        head.appendChild(el("th", c[1] ? "num" : null, c[0]));
      });
      table.appendChild(el("thead")).appendChild(head);
      var body = el("tbody");
      pool.servers.forEach(function (sv) {
        var key = pool.name + "/" + sv.name;
        var before = prev && prev.servers[key];
        seen[key] = { requests: sv.requests, failures: sv.failures };
        var dReq = before ? delta(sv.requests, before.requests, 1) : null;
        var dFail = before ? delta(sv.failures, before.failures, 1) : null;
        var tr = el("tr");
        tr.dataset.server = sv.name;
        tr.dataset.state = sv.state;
        var name = el("td");
        name.appendChild(el("b", null, sv.name));
        name.appendChild(el("span", "addr", sv.address.indexOf(":") >= 0 ? "[" + sv.address + "]:" + sv.port
                                                                          : sv.address + ":" + sv.port));
        tr.appendChild(name);
        tr.appendChild(stateCell(sv));
        tr.appendChild(el("td", "num", sv.weight));
        tr.appendChild(el("td", "num", num(sv.active)));
        tr.appendChild(el("td", "num", num(sv.requests)));
        tr.appendChild(el("td", "num", rate(dReq === null ? null : dReq / dt)));
        tr.appendChild(el("td", "num" + (sv.failures ? " warn-text" : ""), num(sv.failures)));
        tr.appendChild(errorCell(dReq, dFail));
        tr.appendChild(checkCell(pool, sv));
        tr.appendChild(el("td", "num", num(sv.checks_passed) + " / " + num(sv.checks_failed)));
        var td = el("td");
        var box = el("div", "actions");
        box.appendChild(actionButton(sv, "drain", "Drain", sv.drained));
        box.appendChild(actionButton(sv, "enable", "Enable", !sv.drained));
        td.appendChild(box);
        tr.appendChild(td);
        body.appendChild(tr);
      });
      table.appendChild(body);
      panel.appendChild(table);
      root.appendChild(panel);
    });
  }

  function renderCerts(s) {
    var body = $("certs-body");
    body.replaceChildren();
    if (!s.certificates.length) {
      var tr = el("tr");
      var td = el("td", "muted", "No certificates (no HTTPS listener).");
      td.colSpan = 5;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    s.certificates.forEach(function (c) {
      var tr = el("tr");
      tr.appendChild(el("td", null, c.file));
      tr.appendChild(el("td", null, c.key_type));
      tr.appendChild(el("td", "names", c.names.join(", ")));
      tr.appendChild(el("td", null, String(c.not_after).replace("T", " ").replace("Z", " UTC")));
      var cls = c.days_left < 0 ? "num bad" : c.days_left < 14 ? "num warn" : "num";
      tr.appendChild(el("td", cls, c.days_left < 0 ? "expired" : num(c.days_left)));
      body.appendChild(tr);
    });
  }

  function renderProtocols(s) {
    var body = $("protocols-body");
    body.replaceChildren();
    s.protocols.forEach(function (p) {
      var tr = el("tr");
      tr.dataset.protocol = p.protocol;
      tr.appendChild(el("td", "protocol", p.protocol));
      tr.appendChild(el("td", "num", num(p.open)));
      tr.appendChild(el("td", "num", num(p.total)));
      tr.appendChild(el("td", "num", num(p.requests)));
      body.appendChild(tr);
    });
  }

  function render(s) {
    var t = performance.now();
    var dt = prev ? (t - prev.t) / 1000 : 0;
    var reqRate = prev ? delta(s.requests_total, prev.requests_total, dt) : null;
    var seen = {};
    renderHeader(s, reqRate);
    renderPools(s, dt, seen);
    renderProtocols(s);
    renderCerts(s);
    // A refresh right after a button keeps the older sample, so rates stay
    // averaged over at least a second.
    if (!prev || dt >= 1) { prev = { t: t, requests_total: s.requests_total, servers: seen }; }
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  function refresh() {
    if (busy) { return; }
    busy = true;
    var ctl = new AbortController();
    var abort = setTimeout(function () { ctl.abort(); }, 5000);
    fetch("/api/status", { headers: authHeaders(), cache: "no-store", credentials: "same-origin",
                           signal: ctl.signal })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) {
          throw { auth: true, message: getToken() ? "the admin API refused the token (HTTP " + r.status + ")"
                                                  : "the admin API needs a token (HTTP " + r.status + ")" };
        }
        if (!r.ok) { throw { message: "HTTP " + r.status + " from /api/status" }; }
        return r.json();
      })
      .then(function (s) {
        render(s);
        updates += 1;
        lastOk = new Date();
        document.body.dataset.updates = String(updates);
        document.body.classList.remove("stale");
        $("updated").textContent = clock(lastOk);
        needToken(false);
        if (message && Date.now() > message.until) { message = null; }
        banner(message && message.text, message && message.kind);
      })
      .catch(function (e) {
        var why = e && e.name === "AbortError" ? "no answer within 5 s" : (e && e.message) || String(e);
        if (e && e.auth) {
          needToken(true);
          banner("Enter the admin API token above: " + why + ".");
        } else {
          banner("Cannot fetch /api/status: " + why + "." +
                 (lastOk ? " Showing the data of " + clock(lastOk) + "." : ""));
        }
        document.body.classList.add("stale");
      })
      .finally(function () {
        clearTimeout(abort);
        busy = false;
        schedule(again ? 0 : REFRESH_MS);
        again = false;
      });
  }

  function act(name, action, button) {
    button.disabled = true;
    fetch("/api/servers/" + encodeURIComponent(name) + "/" + action,
          { method: "POST", headers: authHeaders(), cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) {
          needToken(true);
          throw new Error("the admin API needs a valid token (HTTP " + r.status + ")");
        }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        say(name + (action === "drain" ? " drained: no new requests; requests in flight finish."
                                       : " enabled: taking requests again."), "notice");
      })
      .catch(function (e) {
        say("Could not " + action + " " + name + ": " + e.message + ".", null);
      })
      .finally(function () {
        if (busy) { again = true; } else { schedule(0); }
      });
  }

  function saveToken() {
    setToken($("token").value.trim());
    $("token").value = "";
    showTokenState();
    schedule(0);
  }
  $("token-save").addEventListener("click", saveToken);
  $("token").addEventListener("keydown", function (e) { if (e.key === "Enter") { saveToken(); } });
  $("token-clear").addEventListener("click", function () { setToken(""); showTokenState(); schedule(0); });
  showTokenState();
  refresh();
})();
)js";

constexpr std::string_view page_head = R"html(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Rampart status</title>
<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Crect width='16' height='16' rx='3' fill='%232f6fdf'/%3E%3Cpath d='M5 13V3h4a3 3 0 0 1 0 6H5m3 0 3 4' stroke='%23fff' stroke-width='1.8' fill='none'/%3E%3C/svg%3E">
<style>)html";

constexpr std::string_view page_middle = R"html(</style>
</head>
<body>
<header class="top">
  <div class="brand"><h1>Rampart</h1><span class="site" id="site"></span></div>
  <div class="chips" id="chips"></div>
  <div class="token" id="token-box">
    <label for="token">API token</label>
    <input id="token" type="password" autocomplete="off" spellcheck="false" placeholder="bearer token">
    <button type="button" id="token-save">Use</button>
    <button type="button" id="token-clear">Forget</button>
    <span class="state" id="token-state"></span>
  </div>
</header>
<div class="banner" id="banner" role="status" hidden></div>
<main>
  <section class="cards" id="cards"></section>
  <section id="pools"><p class="empty">Loading&hellip;</p></section>
  <h2>Client protocols</h2>
  <div class="panel">
    <table id="protocols">
      <thead><tr><th>Protocol</th><th class="num">Connections open</th><th class="num">Connections total</th><th class="num">Requests</th></tr></thead>
      <tbody id="protocols-body"></tbody>
    </table>
  </div>
  <h2>Certificates</h2>
  <div class="panel">
    <table id="certs">
      <thead><tr><th>File</th><th>Key</th><th>Names</th><th>Not after</th><th class="num">Days left</th></tr></thead>
      <tbody id="certs-body"></tbody>
    </table>
  </div>
</main>
<footer>Last update <span id="updated">never</span> &middot; refreshes every 2 s from <code>/api/status</code></footer>
<script>)html";

constexpr std::string_view page_tail = "</script>\n</body>\n</html>\n";

/// 'sha256-<base64>' of `text`, the CSP source that allows one inline block.
std::string csp_hash(std::string_view text) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
    unsigned char encoded[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    const int n = EVP_EncodeBlock(encoded, digest, static_cast<int>(length));
    return "'sha256-" + std::string(reinterpret_cast<const char*>(encoded), static_cast<std::size_t>(n)) + "'";
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// Length of the valid UTF-8 sequence at `s[i]`, or 0 when it is not one
/// (overlong forms, surrogates and code points above U+10FFFF are invalid).
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = byte(i);
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xbf;
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (i + len > s.size()) {
        return 0;
    }
    if (byte(i + 1) < lo || byte(i + 1) > hi) {
        return 0;
    }
    for (std::size_t k = 2; k < len; ++k) {
        if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) {
            return 0;
        }
    }
    return len;
}

/// A JSON text built in one string: objects and arrays nest, commas are
/// placed automatically. Keys and strings go through json_string_body().
class json_writer {
public:
    json_writer& begin_object() { return open('{'); }
    json_writer& end_object() { return close('}'); }
    json_writer& begin_array() { return open('['); }
    json_writer& end_array() { return close(']'); }

    json_writer& key(std::string_view k) {
        separate();
        out_ += '"';
        out_ += json_string_body(k);
        out_ += "\":";
        after_key_ = true;
        return *this;
    }
    json_writer& value(std::string_view s) {
        separate();
        out_ += '"';
        out_ += json_string_body(s);
        out_ += '"';
        return *this;
    }
    json_writer& value(const char* s) { return value(std::string_view(s)); }
    json_writer& value(const std::string& s) { return value(std::string_view(s)); }
    json_writer& value(bool b) {
        separate();
        out_ += b ? "true" : "false";
        return *this;
    }
    template <std::integral T>
    requires(!std::same_as<T, bool>) json_writer& value(T n) {
        separate();
        out_ += std::to_string(n);
        return *this;
    }
    json_writer& null() {
        separate();
        out_ += "null";
        return *this;
    }
    template <class T> json_writer& field(std::string_view k, const T& v) {
        key(k);
        return value(v);
    }

    std::string take() {
        out_ += '\n';
        return std::move(out_);
    }

private:
    json_writer& open(char c) {
        separate();
        out_ += c;
        first_.push_back(true);
        return *this;
    }
    json_writer& close(char c) {
        out_ += c;
        first_.pop_back();
        return *this;
    }
    void separate() {
        if (after_key_) {
            after_key_ = false;
            return;
        }
        if (!first_.empty()) {
            if (!first_.back()) {
                out_ += ',';
            }
            first_.back() = false;
        }
    }

    std::string out_;
    std::vector<bool> first_;
    bool after_key_ = false;
};

std::string iso8601_utc(std::int64_t unix_seconds) {
    const std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    if (::gmtime_r(&t, &tm) == nullptr) {
        return "";
    }
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/// Whole days from `now` to `then`, rounded down (negative once expired).
std::int64_t days_between(std::int64_t now, std::int64_t then) {
    const std::int64_t diff = then - now;
    return diff >= 0 ? diff / 86400 : -((-diff + 86399) / 86400);
}

const char* server_state_name(const server_health& s, mono_ns now) {
    if (s.drained()) {
        return "drained";
    }
    if (!s.healthy()) {
        return "down";
    }
    if (s.ejected_until() > now) {
        return "ejected";
    }
    return "up";
}

} // namespace

std::string json_string_body(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
            out += buf;
        } else if (c >= 0x80) {
            const std::size_t len = utf8_sequence(text, i);
            if (len == 0) {
                out += "\xef\xbf\xbd"; // U+FFFD
                ++i;
            } else {
                out.append(text.substr(i, len));
                i += len;
            }
            continue;
        } else {
            out += static_cast<char>(c);
        }
        ++i;
    }
    return out;
}

std::string_view status_page_html() {
    static const std::string page = [] {
        std::string p;
        p.reserve(page_head.size() + page_css.size() + page_middle.size() + page_js.size() + page_tail.size());
        p.append(page_head).append(page_css).append(page_middle).append(page_js).append(page_tail);
        return p;
    }();
    return page;
}

std::string_view status_page_csp() {
    static const std::string csp = "default-src 'none'; script-src " + csp_hash(page_js) + "; style-src " +
                                   csp_hash(page_css) +
                                   "; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                                   "frame-ancestors 'none'";
    return csp;
}

std::string status_json(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                        const status_extra& extra, std::chrono::system_clock::time_point now) {
    const std::int64_t now_unix = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    const mono_ns mono = mono_now();
    const unsigned workers = std::min<unsigned>(extra.workers, max_workers);
    auto sum = [&](auto member) {
        std::uint64_t total = 0;
        for (unsigned w = 0; w < workers; ++w) {
            total += (shared.workers[w].*member).load(std::memory_order_relaxed);
        }
        return total;
    };

    json_writer j;
    j.begin_object();
    j.field("site", cfg.site);
    j.field("version", RAMPART_VERSION);
    j.field("generation", extra.generation);
    j.field("last_reload", extra.last_reload);
    j.field("uptime_s", extra.started_unix > 0 ? std::max<std::int64_t>(0, now_unix - extra.started_unix) : 0);
    j.field("vrrp_state", extra.vrrp_state);
    j.field("workers", workers);
    j.field("worker_restarts", extra.worker_restarts);

    j.key("connections").begin_object();
    j.field("open", sum(&worker_counters::connections_active));
    j.field("total", sum(&worker_counters::connections_total));
    j.field("tunnels", sum(&worker_counters::tunnels_active));
    j.field("tunnels_total", sum(&worker_counters::tunnels_total));
    j.end_object();
    j.field("requests_total", sum(&worker_counters::requests_total));
    // Connections per protocol: h2 is what ALPN chose; http/1.1 is every
    // other connection (HTTP/1.0 clients, the port-80 redirect, handshakes
    // in progress).
    {
        const auto open = sum(&worker_counters::connections_active);
        const auto total = sum(&worker_counters::connections_total);
        const auto requests = sum(&worker_counters::requests_total);
        const auto h2_open = std::min(open, sum(&worker_counters::h2_connections_active));
        const auto h2_total = std::min(total, sum(&worker_counters::h2_connections_total));
        const auto h2_requests = std::min(requests, sum(&worker_counters::h2_requests_total));
        j.key("protocols").begin_array();
        j.begin_object()
            .field("protocol", "h2")
            .field("open", h2_open)
            .field("total", h2_total)
            .field("requests", h2_requests)
            .end_object();
        j.begin_object()
            .field("protocol", "http/1.1")
            .field("open", open - h2_open)
            .field("total", total - h2_total)
            .field("requests", requests - h2_requests)
            .end_object();
        j.end_array();
    }
    j.key("responses").begin_object();
    for (unsigned c = 1; c <= 5; ++c) {
        std::uint64_t total = 0;
        for (unsigned w = 0; w < workers; ++w) {
            total += shared.workers[w].responses_by_class[c].load(std::memory_order_relaxed);
        }
        j.field(std::to_string(c) + "xx", total);
    }
    j.end_object();
    j.key("handshakes").begin_object();
    j.field("full", sum(&worker_counters::handshakes_full));
    j.field("resumed", sum(&worker_counters::handshakes_resumed));
    j.field("failed", sum(&worker_counters::handshake_failures));
    j.end_object();

    j.key("pools").begin_array();
    for (std::size_t p = 0; p < cfg.gw.pools.size() && p < max_pools; ++p) {
        const config::pool& pool = cfg.gw.pools[p];
        const pool_state& ps = shared.pools[slots.pools.empty() ? p : slots.pools[p]];
        j.begin_object();
        j.field("name", pool.name);
        j.field("balance", config::to_string(pool.algorithm));
        j.field("queue", ps.queued.load(std::memory_order_relaxed));
        j.field("queue_timeouts", ps.queue_timeouts.load(std::memory_order_relaxed));
        j.field("rate_limited", ps.rate_limited.load(std::memory_order_relaxed));
        j.key("health");
        if (pool.health) {
            j.begin_object();
            j.field("path", pool.health->path);
            j.field("expect_status", pool.health->expect_status);
            j.field("interval_ms", static_cast<std::int64_t>(pool.health->interval.count()));
            j.field("rise", pool.health->rise);
            j.field("fall", pool.health->fall);
            j.end_object();
        } else {
            j.null();
        }
        j.key("servers").begin_array();
        for (const config::pool_member& m : pool.members) {
            const config::server* srv = cfg.find_server(m.name);
            if (srv == nullptr) {
                continue; // validated configs never get here
            }
            const auto index = static_cast<std::size_t>(srv - cfg.servers.data());
            if (index >= max_servers) {
                continue;
            }
            const server_health& s = shared.servers[slots.servers.empty() ? index : slots.servers[index]];
            const mono_ns until = s.ejected_until();
            j.begin_object();
            j.field("name", srv->name);
            j.field("address", m.address.host);
            j.field("port", static_cast<unsigned>(m.address.port));
            // A weight set through the runtime API wins over the configured one.
            j.field("weight", s.weight() != 0 ? static_cast<unsigned>(s.weight()) : m.weight);
            j.field("state", server_state_name(s, mono));
            j.field("healthy", s.healthy());
            j.field("drained", s.drained());
            j.field("ejected_ms", until > mono ? (until - mono) / 1'000'000 : 0);
            j.field("active", s.active());
            j.field("requests", s.requests());
            j.field("failures", s.failures());
            j.field("last_check", s.last_check());
            j.field("checks_passed", s.checks_passed());
            j.field("checks_failed", s.checks_failed());
            j.end_object();
        }
        j.end_array();
        j.end_object();
    }
    j.end_array();

    j.key("certificates").begin_array();
    for (const cert_info& c : extra.certificates) {
        j.begin_object();
        j.field("file", c.file);
        j.field("key_type", c.key_type);
        j.key("names").begin_array();
        for (const std::string& n : c.names) {
            j.value(n);
        }
        j.end_array();
        j.field("not_after", iso8601_utc(c.not_after_unix));
        j.field("days_left", days_between(now_unix, c.not_after_unix));
        j.end_object();
    }
    j.end_array();
    j.end_object();
    return j.take();
}

std::string status_json(const config::snapshot& cfg, const shared_block& shared, const slot_map& slots,
                        const status_extra& extra) {
    return status_json(cfg, shared, slots, extra, std::chrono::system_clock::now());
}

} // namespace rampart::gateway
