// Herald console: live figures (polled) and device picking on the push form.
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

  // Picking a device fills the push ID.
  document.querySelectorAll("input[data-push-id]").forEach(function (el) {
    el.addEventListener("change", function () {
      var f = document.getElementById("push_id");
      if (f) f.value = el.getAttribute("data-push-id");
    });
  });
})();
