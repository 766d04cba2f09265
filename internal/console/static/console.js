// Herald console: live figures and charts (polled), device picking on the push form,
// and a test push's stages shown as they happen (Server-Sent Events).
"use strict";
(function () {
  function fmt(n) {
    if (typeof n !== "number") return "–";
    return n >= 100 ? Math.round(n).toLocaleString() : (Math.round(n * 10) / 10).toString();
  }
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  function fillTable(id, rows, cols) {
    var body = document.querySelector("#" + id + " tbody");
    if (!body) return;
    body.textContent = "";
    if (!rows.length) {
      var tr = document.createElement("tr");
      cell(tr, "none", "hint");
      tr.firstChild.colSpan = cols;
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      r.forEach(function (v) { cell(tr, String(v)); });
      body.appendChild(tr);
    });
  }

  var box = document.getElementById("figures");
  if (box) {
    var src = box.getAttribute("data-src"), prev = null, status = document.getElementById("figures-status");
    var poll = function () {
      fetch(src, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) { location.href = src.replace(/api\/figures$/, "login"); throw new Error("logged out"); }
          return r.json();
        })
        .then(function (f) {
          document.querySelectorAll("[data-k]").forEach(function (el) { el.textContent = fmt(f[el.getAttribute("data-k")]); });
          if (prev) {
            var dt = (Date.parse(f.at) - Date.parse(prev.at)) / 1000;
            document.querySelectorAll("[data-rate]").forEach(function (el) {
              var k = el.getAttribute("data-rate");
              el.textContent = dt > 0 ? fmt((f[k] - prev[k]) / dt) : "–";
            });
          }
          prev = f;
          var fails = Object.keys(f.failures || {}).sort().map(function (k) { return [k, f.failures[k]]; });
          fillTable("failures", fails, 2);
          fillTable("suspended", (f.suspended || []).map(function (s) { return [s.provider, s.app, s.environment, s.reason]; }), 4);
          if (status) status.textContent = "updated " + new Date(f.at).toLocaleTimeString();
        })
        .catch(function (e) { if (status) status.textContent = "not updated: " + e.message; });
    };
    poll();
    setInterval(poll, 2000);
  }

  // Charts: the server's ring buffer (api/series), drawn as plain SVG
  // lines, polled every 2 seconds. A figure names its lines (data-lines:
  // sample fields) or a map field whose keys are the lines (data-map).
  var charts = document.getElementById("charts");
  if (charts) {
    var NS = "http://www.w3.org/2000/svg", W = 600, H = 150, PAD = 4;
    var colours = ["#2f5bd3", "#157f3b", "#b54708", "#b42318", "#7a2eb8", "#0e7490", "#667085", "#a15c07"];
    var svgEl = function (name, attrs) {
      var el = document.createElementNS(NS, name);
      Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
      return el;
    };
    var draw = function (fig, series) {
      var samples = series.samples || [];
      var names = [], value;
      if (fig.getAttribute("data-lines")) {
        names = fig.getAttribute("data-lines").split(",");
        value = function (s, n) { return s[n] || 0; };
      } else {
        var field = fig.getAttribute("data-map"), seen = {};
        samples.forEach(function (s) { Object.keys(s[field] || {}).forEach(function (k) { seen[k] = true; }); });
        names = Object.keys(seen).sort();
        value = function (s, n) { return (s[field] || {})[n] || 0; };
      }
      var max = 0;
      samples.forEach(function (s) { names.forEach(function (n) { max = Math.max(max, value(s, n)); }); });
      var top = max > 0 ? max * 1.1 : 1;
      // The x axis spans the samples kept, at least a minute (a server
      // that just started draws a line, not a sliver at the right).
      var last = samples.length ? Date.parse(samples[samples.length - 1].at) : 0;
      var first = samples.length ? Date.parse(samples[0].at) : 0;
      var span = Math.max(60000, last - first, 1);
      var old = fig.querySelector("svg");
      if (old) old.remove();
      var old2 = fig.querySelector(".legend");
      if (old2) old2.remove();
      var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" });
      svg.appendChild(svgEl("line", { x1: 0, y1: H - PAD, x2: W, y2: H - PAD, "class": "axis" }));
      var legend = document.createElement("div");
      legend.className = "legend";
      names.forEach(function (n, i) {
        var pts = samples.map(function (s) {
          var x = W - (last - Date.parse(s.at)) / span * W;
          var y = H - PAD - value(s, n) / top * (H - 2 * PAD);
          return x.toFixed(1) + "," + y.toFixed(1);
        });
        var c = colours[i % colours.length];
        if (pts.length) svg.appendChild(svgEl("polyline", { points: pts.join(" "), stroke: c, "class": "line", "data-series": n }));
        var now = samples.length ? value(samples[samples.length - 1], n) : 0;
        var key = document.createElement("span");
        key.style.color = c;
        key.textContent = n.replace(/_per_s$|_ms$/, "").replace(/_/g, " ") + " " + fmt(now);
        legend.appendChild(key);
      });
      if (!names.length) {
        var none = document.createElement("span");
        none.className = "hint";
        none.textContent = "none yet";
        legend.appendChild(none);
      }
      var scale = document.createElement("span");
      scale.className = "hint";
      var secs = Math.round(Math.max(0, last - first) / 1000);
      scale.textContent = "max " + fmt(max) + " over the last " + (secs < 120 ? secs + " s" : Math.round(secs / 60) + " min");
      legend.appendChild(scale);
      fig.appendChild(svg);
      fig.appendChild(legend);
      fig.setAttribute("data-points", String(samples.length));
      fig.setAttribute("data-max", String(max));
      fig.classList.toggle("live", max > 0); // a line above zero
    };
    var pollCharts = function () {
      fetch(charts.getAttribute("data-src"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (series) { charts.querySelectorAll("figure.chart").forEach(function (fig) { draw(fig, series); }); })
        .catch(function () {});
    };
    pollCharts();
    setInterval(pollCharts, 2000);
  }

  // Buttons of destructive forms ask first.
  document.querySelectorAll("button[data-confirm]").forEach(function (b) {
    b.form.addEventListener("submit", function (e) {
      if (!window.confirm(b.getAttribute("data-confirm"))) e.preventDefault();
    });
  });

  // Picking a device fills the push ID.
  document.querySelectorAll("input[data-push-id]").forEach(function (el) {
    el.addEventListener("change", function () {
      var f = document.getElementById("push_id");
      if (f) f.value = el.getAttribute("data-push-id");
    });
  });

  // Sending a test push: POST the form to api/push/test for a run ID, then
  // follow the run's event stream, showing each stage as it arrives. The
  // fragments are HTML the server rendered (html/template), the same the
  // whole result page shows. Without EventSource, or when the POST does not
  // answer JSON, the form is submitted as usual and the page shows the
  // whole result when it is done.
  var form = document.getElementById("push-form");
  if (form && form.getAttribute("data-stream") && window.EventSource && window.fetch && window.URLSearchParams) {
    var send = document.getElementById("send");
    var busy = false;
    var showError = function (msg) {
      var p = document.getElementById("error");
      if (!p) {
        p = document.createElement("p");
        p.className = "error";
        p.id = "error";
        var main = document.querySelector("main");
        main.insertBefore(p, main.firstChild);
      }
      p.textContent = msg;
    };
    var clearOld = function () {
      ["error", "report", "phone-section", "phone-missing"].forEach(function (id) {
        var el = document.getElementById(id);
        if (el) el.remove();
      });
    };
    var finish = function () {
      busy = false;
      if (send) send.disabled = false;
    };
    var data = function (e) { return JSON.parse(e.data); };
    var follow = function (url) {
      var es = new EventSource(url), got = false, ended = false;
      var stop = function () { ended = true; es.close(); finish(); };
      es.addEventListener("start", function (e) {
        got = true;
        clearOld();
        form.insertAdjacentHTML("afterend", data(e).html);
      });
      es.addEventListener("stage", function (e) {
        var d = data(e), list = document.querySelector("#report ol.stages");
        if (!list) return;
        // A finished stage replaces its pending announcement.
        var old = null;
        list.querySelectorAll("li[data-stage]").forEach(function (li) {
          if (li.getAttribute("data-stage") === d.name) old = li;
        });
        if (old) {
          old.insertAdjacentHTML("afterend", d.html);
          old.remove();
        } else {
          list.insertAdjacentHTML("beforeend", d.html);
        }
      });
      es.addEventListener("answer", function (e) {
        var a = document.getElementById("answer");
        if (a) a.innerHTML = data(e).html;
      });
      es.addEventListener("phone", function (e) {
        var r = document.getElementById("report");
        if (r) r.insertAdjacentHTML("afterend", data(e).html);
      });
      es.addEventListener("done", function (e) {
        var h = document.getElementById("report-head");
        if (h) h.innerHTML = data(e).html;
        stop();
      });
      es.addEventListener("failed", function (e) {
        var d = data(e);
        var r = document.getElementById("report");
        if (r) r.remove();
        showError(d.code + ": " + d.message);
        stop();
      });
      // The server ends the stream after "done"; any other end (refused,
      // expired, connection lost) stops here rather than reconnecting,
      // which would find the run used up.
      es.onerror = function () {
        if (ended) return;
        stop();
        showError(got
          ? "The stage stream broke off before the push finished: see the delivery log for its outcome."
          : "The stage stream could not be opened (too many at once for this session, or the run expired): try again.");
      };
    };
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (busy) return;
      busy = true;
      if (send) send.disabled = true;
      var body = new URLSearchParams(new FormData(form));
      fetch(form.getAttribute("data-stream"), {
        method: "POST", credentials: "same-origin", body: body,
        headers: { Accept: "application/json", "X-CSRF-Token": body.get("csrf") || "" }
      }).then(function (r) {
        var json = (r.headers.get("Content-Type") || "").indexOf("application/json") === 0;
        if (!json) throw new Error("not JSON");
        return r.json().then(function (d) {
          if (!r.ok) {
            if (r.status === 401) { location.reload(); return; }
            finish();
            showError(d.code + ": " + d.message);
            return;
          }
          follow(d.events);
        });
      }).catch(function () {
        // No usable answer: let the form do it the plain way.
        finish();
        form.submit();
      });
    });
  }
})();
