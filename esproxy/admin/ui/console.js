// esproxy console: every few seconds one request, /_esproxy/ui/refresh?after=T, brings the panel (HTML the
// server renders) and the samples taken since T (the charts'); pause / resume / stop go to /_esproxy/sync/ as `esproxy sync`.
// The admin header, when the port requires one the browser cannot send by itself, is kept in sessionStorage.
(function () {
  "use strict";
  var EVERY = 5000, HOUR = 3600, KEY = "esproxy.admin.header", SVG = "http://www.w3.org/2000/svg";
  var doc = document, $ = function (id) { return doc.getElementById(id); };
  var panel = $("panel"), note = $("note"), login = $("login"), updated = $("updated");
  var points = [], fields = [], lastT = 0, timer = 0;
  doc.documentElement.className += " js";

  function header() {
    var h = {};
    try {
      var v = JSON.parse(sessionStorage.getItem(KEY) || "null");
      if (v && v.name) h[v.name] = v.value;
    } catch (e) { /* nothing kept */ }
    return h;
  }
  function ask(method, path) {
    return fetch(path, { method: method, headers: header(), credentials: "same-origin", cache: "no-store" });
  }
  function say(text, ok) {
    note.textContent = text;
    note.className = ok ? "note ok" : "note";
    note.hidden = !text;
  }
  function refused(r) {
    if (r.status !== 401) return false;
    login.hidden = false;
    say("The admin port refused the request: enter its header below.");
    return true;
  }

  function refresh() {
    clearTimeout(timer);
    timer = setTimeout(refresh, EVERY);
    ask("GET", "/_esproxy/ui/refresh?after=" + lastT).then(function (r) {
      if (refused(r)) return;
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json().then(function (d) {
        panel.innerHTML = d.panel;
        login.hidden = true;
        var v = $("verdict");
        if (v) doc.title = "esproxy: " + v.textContent;
        updated.textContent = "updated " + new Date().toLocaleTimeString();
        var s = d.series;
        fields = s.fields;
        s.points.forEach(function (p) { if (p[0] > lastT) { points.push(p); lastT = p[0]; } });
        if (points.length > s.bound) points.splice(0, points.length - s.bound);
        draw();
      });
    }).catch(function (e) { updated.textContent = "cannot reach esproxy (" + e.message + "); retrying"; });
  }

  function column(name) { return fields.indexOf(name); }
  function values(name) {
    var i = column(name);
    return points.map(function (p) { return [p[0], p[i]]; });
  }
  function rates(name) {
    var i = column(name), out = [];
    for (var k = 1; k < points.length; k++) {
      var dt = points[k][0] - points[k - 1][0];
      if (dt > 0) out.push([points[k][0], Math.max(0, (points[k][i] - points[k - 1][i]) / dt)]);
    }
    return out;
  }
  function el(name, attrs, parent) {
    var e = doc.createElementNS(SVG, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    parent.appendChild(e);
    return e;
  }
  function fmt(v) { return v >= 100 ? Math.round(v).toString() : v >= 10 ? v.toFixed(1) : v.toFixed(2); }

  function chart(id, lines) {
    var svg = $(id);
    if (!svg) return;
    var w = Math.max(200, Math.round(svg.getBoundingClientRect().width) || 600), h = 160, pad = 18;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    // the last hour, or since the first sample when the process is younger
    var end = points.length ? points[points.length - 1][0] : Date.now() / 1000;
    var start = Math.max(end - HOUR, points.length ? points[0][0] : end - HOUR), span = Math.max(end - start, 1);
    var top = 0;
    lines.forEach(function (l) { l.forEach(function (p) { if (p[0] >= start && p[1] > top) top = p[1]; }); });
    top = top > 0 ? top * 1.1 : 1;
    [0, 0.5, 1].forEach(function (f) {
      var y = pad + (h - 2 * pad) * f;
      el("line", { x1: 0, x2: w, y1: y, y2: y, "class": "grid" }, svg);
    });
    el("text", { x: 4, y: 12 }, svg).textContent = fmt(top);
    el("text", { x: 4, y: h - 4 }, svg).textContent = "-" + (span >= 120 ? Math.round(span / 60) + " min" : Math.round(span) + " s");
    el("text", { x: w - 4, y: h - 4, "text-anchor": "end" }, svg).textContent = "now";
    lines.forEach(function (l, n) {
      var xy = l.filter(function (p) { return p[0] >= start; }).map(function (p) {
        var x = (p[0] - start) / span * w, y = h - pad - (h - 2 * pad) * p[1] / top;
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      if (xy.length) el("polyline", { points: xy.join(" "), "class": "l" + n }, svg);
    });
  }
  function draw() {
    if (!fields.length) return;
    chart("chart-lag", [values("lag_seconds")]);
    chart("chart-throughput", [rates("requests"), rates("captured"), rates("replayed")]);
    chart("chart-errors", [rates("errors")]);
  }

  panel.addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("button.act") : null;
    if (!b) return;
    var rule = b.getAttribute("data-rule"), action = b.getAttribute("data-action");
    var what = { pause: "its writes wait, in order, until resume",
                 resume: "it follows again from where it waits",
                 stop: "its B indices stay as they are and no longer follow; a stopped rule cannot be resumed" }[action];
    if (!window.confirm(action + " sync rule " + rule + "? " + what)) return;
    b.disabled = true;
    ask("POST", "/_esproxy/sync/rules/" + encodeURIComponent(rule) + "/_" + action).then(function (r) {
      if (refused(r)) return;
      return r.json().then(function (d) {
        if (r.ok) say("rule " + rule + ": " + d.state, true);
        else say("esproxy sync " + action + " " + rule + ": " + ((d.error && d.error.reason) || "HTTP " + r.status));
      });
    }).catch(function (e) { say("cannot reach esproxy: " + e.message); }).then(refresh);
  });

  login.addEventListener("submit", function (ev) {
    ev.preventDefault();
    sessionStorage.setItem(KEY, JSON.stringify({ name: login.elements.namedItem("name").value.trim(), value: login.elements.namedItem("value").value }));
    login.elements.namedItem("value").value = "";
    say("");
    refresh();
  });
  $("forget").addEventListener("click", function () { sessionStorage.removeItem(KEY); say("header forgotten"); });
  window.addEventListener("resize", draw);
  refresh();
}());
