
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
    var m = String(s.maintenance);
    chip(chips, "maintenance", m, m === "off" ? null : "bad");
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
      td.colSpan = 7;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    s.certificates.forEach(function (c) {
      var tr = el("tr");
      tr.appendChild(el("td", null, c.file));
      tr.appendChild(el("td", null, c.key_type));
      tr.appendChild(el("td", "names", c.names.join(", ")));
      tr.appendChild(el("td", null, c.issuer));
      tr.appendChild(el("td", null, String(c.not_after).replace("T", " ").replace("Z", " UTC")));
      var cls = c.days_left < 0 ? "num bad" : c.days_left < 14 ? "num warn" : "num";
      tr.appendChild(el("td", cls, c.days_left < 0 ? "expired" : num(c.days_left)));
      var acme = "—";
      if (c.acme) {
        acme = c.acme.state + ", next " + String(c.acme.next_attempt).replace("T", " ").replace("Z", " UTC");
        if (c.acme.last_error) {
          acme += "; last error: " + c.acme.last_error;
        }
      }
      tr.appendChild(el("td", c.acme && c.acme.last_error ? "warn" : null, acme));
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


  // -------------------------------------------------------------------------
  // Charts of the last 15 minutes (/api/history), drawn as SVG. Every series
  // is a count per 2 s interval made a rate here (or a gauge, or a latency).
  // Each chart exposes what it drew: data-points (points with a value) and
  // data-series (the series' names).
  // -------------------------------------------------------------------------
  var SVG = "http://www.w3.org/2000/svg";
  var WINDOW_MS = 15 * 60 * 1000;
  var CLASS_COLOURS = { "1xx": 7, "2xx": 0, "3xx": 1, "4xx": 2, "5xx": 3 };

  function perSecond(h, counts) {
    return counts.map(function (n, i) {
      var dt = i > 0 ? (h.t[i] - h.t[i - 1]) / 1000 : h.step_ms / 1000;
      return n === null || dt <= 0 ? null : n / dt;
    });
  }
  var CHARTS = [
    { id: "requests", title: "Requests per second", unit: "/s", series: function (h) {
      return ["2xx", "3xx", "4xx", "5xx", "1xx"].map(function (c) {
        return { name: c, colour: CLASS_COLOURS[c], values: perSecond(h, h.responses[c]) };
      }).filter(function (s) { return s.name !== "1xx" || s.values.some(function (v) { return v > 0; }); });
    } },
    { id: "latency", title: "Latency", unit: " ms", series: function (h) {
      function ms(v) { return v === null ? null : v / 1000; }
      return [{ name: "p50", colour: 1, values: h.latency_us.p50.map(ms) },
              { name: "p99", colour: 4, values: h.latency_us.p99.map(ms) }];
    } },
    { id: "connections", title: "Connections open", unit: "", series: function (h) {
      return [{ name: "open", colour: 5, values: h.connections }];
    } },
    { id: "handshakes", title: "TLS handshakes per second", unit: "/s", series: function (h) {
      return [{ name: "full", colour: 1, values: perSecond(h, h.handshakes.full) },
              { name: "resumed", colour: 0, values: perSecond(h, h.handshakes.resumed) },
              { name: "failed", colour: 3, values: perSecond(h, h.handshakes.failed) }];
    } },
    { id: "servers", title: "Requests per second by server", unit: "/s", series: function (h) {
      return h.servers.map(function (sv, i) {
        return { name: sv.name, colour: i % 8, values: perSecond(h, sv.requests) };
      });
    } },
    { id: "failures", title: "Failures per second by server", unit: "/s", series: function (h) {
      return h.servers.map(function (sv, i) {
        return { name: sv.name, colour: i % 8, values: perSecond(h, sv.failures) };
      });
    } }
  ];

  function svg(tag, attrs, parent) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (parent) { parent.appendChild(e); }
    return e;
  }
  /// The smallest of 1, 2, 5 x 10^k at or above v.
  function niceCeiling(v) {
    if (!(v > 0)) { return 1; }
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; ++i) {
      if (steps[i] * p >= v) { return steps[i] * p; }
    }
    return 10 * p;
  }
  function short(v) {
    if (v >= 1e6) { return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M"; }
    if (v >= 1e3) { return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k"; }
    return v >= 10 || v === 0 ? String(Math.round(v)) : v.toFixed(1);
  }

  function drawChart(def, h, end) {
    var fig = document.querySelector('figure.chart[data-chart="' + def.id + '"]');
    if (!fig) {
      fig = el("figure", "chart");
      fig.dataset.chart = def.id;
      fig.appendChild(el("figcaption"));
      fig.appendChild(svg("svg", { role: "img", "aria-label": def.title }));
      $("charts").appendChild(fig);
    }
    var series = def.series(h);
    var caption = fig.querySelector("figcaption");
    caption.replaceChildren(el("b", null, def.title));
    var max = 0, points = 0;
    series.forEach(function (s) {
      var last = null;
      s.values.forEach(function (v) {
        if (v !== null) { max = Math.max(max, v); points += 1; last = v; }
      });
      var key = el("span", "key c" + s.colour);
      key.appendChild(el("i"));
      key.appendChild(document.createTextNode(s.name + " " + (last === null ? "\u2013" : short(last) + def.unit)));
      caption.appendChild(key);
    });
    fig.dataset.points = String(points);
    fig.dataset.series = series.map(function (s) { return s.name; }).join(",");

    var box = fig.querySelector("svg");
    var W = Math.max(240, Math.round(box.getBoundingClientRect().width) || 360), H = 150;
    var left = 40, right = 6, top = 14, bottom = 18;
    box.setAttribute("viewBox", "0 0 " + W + " " + H);
    box.replaceChildren();
    var top_ = niceCeiling(max);
    // The window grows with the history (a minute at least) up to its 15
    // minutes, so that a young gateway's points are not crowded at the edge.
    var span = h.t.length ? end - h.t[0] + h.step_ms : 0;
    var win = Math.min(WINDOW_MS, Math.max(60000, span));
    var start = end - win;
    function x(t) { return left + (W - left - right) * (t - start) / win; }
    function y(v) { return top + (H - top - bottom) * (1 - v / top_); }
    [0, 0.5, 1].forEach(function (f) {
      var gy = y(top_ * f);
      svg("line", { "class": "grid", x1: left, x2: W - right, y1: gy, y2: gy }, box);
      svg("text", { "class": "axis", x: left - 4, y: gy + 3.5, "text-anchor": "end" }, box).textContent =
        short(top_ * f);
    });
    var tick = [15000, 30000, 60000, 120000, 300000].filter(function (t) { return win / t <= 5; })[0] || 300000;
    for (var ago = 0; ago <= win; ago += tick) {
      var tx = x(end - ago);
      var anchor = ago === 0 ? "end" : ago + tick > win ? "start" : "middle";
      svg("text", { "class": "axis", x: tx, y: H - 4, "text-anchor": anchor }, box).textContent =
        ago === 0 ? "now" : "\u2212" + (ago >= 60000 ? ago / 60000 + " min" : ago / 1000 + " s");
    }
    series.forEach(function (s) {
      var d = "", pen = false;
      s.values.forEach(function (v, i) {
        var gap = i > 0 && h.t[i] - h.t[i - 1] > 1.5 * h.step_ms;
        if (v === null || h.t[i] < start) { pen = false; return; }
        d += (pen && !gap ? "L" : "M") + x(h.t[i]).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
      });
      if (d) { svg("path", { "class": "line c" + s.colour, d: d }, box).dataset.series = s.name; }
    });
    h.ha.forEach(function (mark, i) {
      if (mark.t < start) { return; }
      var mx = x(mark.t);
      svg("line", { "class": "mark", x1: mx, x2: mx, y1: top - 2, y2: H - bottom }, box);
      // Labels alternate between two rows, and turn left near the right edge.
      var nearEnd = mx > W - 90;
      var label = svg("text", { "class": "mark-label", x: nearEnd ? mx - 3 : mx + 3, y: top + 8 + (i % 2) * 12,
                                "text-anchor": nearEnd ? "end" : "start" }, box);
      label.textContent = "VRRP " + mark.state;
      svg("title", {}, label).textContent = "VRRP " + mark.state + " at " + clock(new Date(mark.t));
    });
    fig.dataset.marks = String(h.ha.length);
  }

  function renderHistory(h) {
    var end = h.t.length ? h.t[h.t.length - 1] : Date.now();
    CHARTS.forEach(function (def) { drawChart(def, h, end); });
    var minutes = h.t.length * h.step_ms / 60000;
    $("history-note").textContent = "every " + h.step_ms / 1000 + " s \u00b7 " +
      (minutes < 15 ? (minutes < 1 ? Math.round(minutes * 60) + " s" : minutes.toFixed(1) + " min") +
                      " kept so far, up to 15 min" : "15 min") + " \u00b7 VRRP state changes are marked";
    document.body.dataset.historyPoints = String(h.t.length);
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
    function get(path) {
      return fetch(path, { headers: authHeaders(), cache: "no-store", credentials: "same-origin",
                           signal: ctl.signal })
        .then(function (r) {
          if (r.status === 401 || r.status === 403) {
            throw { auth: true, message: getToken() ? "the admin API refused the token (HTTP " + r.status + ")"
                                                    : "the admin API needs a token (HTTP " + r.status + ")" };
          }
          if (!r.ok) { throw { message: "HTTP " + r.status + " from " + path }; }
          return r.json();
        });
    }
    // One after the other: a refused token is learned from the first.
    get("/api/status")
      .then(function (s) {
        return get("/api/history").then(function (history) { return [s, history]; });
      })
      .then(function (both) {
        render(both[0]);
        renderHistory(both[1]);
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
