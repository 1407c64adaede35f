// Conveyor dashboard: live updates without a framework. The run page polls its JSON every second while the run
// is not finished; the step page follows its log through server-sent events; the log search filters lines here.
"use strict";
(function () {
  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  var POLL_MS = 1000;

  // -- run page: statuses of the DAG's nodes, the timeline and the totals ------------------------------------
  function pollRun(box) {
    var url = "/api/runs/" + encodeURIComponent(box.dataset.runId) + "?fragments=1";
    function tick() {
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (run) {
        if (!run) { setTimeout(tick, POLL_MS * 3); return; }
        run.steps.forEach(function (s) {
          var node = $all("#dag g.node").filter(function (g) { return g.dataset.step === s.name; })[0];
          if (node && node.dataset.status !== s.status) {
            node.dataset.status = s.status;
            var where = node.querySelector("text.where");
            if (where) { where.textContent = s.status + " · " + s.label; }
          }
          if (node) { node.dataset.where = s.where; }
        });
        var status = $("#run-status");
        if (status) { status.textContent = run.status; status.dataset.status = run.status; status.className = "pill status-" + run.status; }
        box.dataset.status = run.status;
        if (run.timeline_html !== undefined) { $("#timeline").innerHTML = run.timeline_html; }
        if (run.totals_html !== undefined) { $("#totals").innerHTML = run.totals_html; }
        if (run.finished) {
          box.dataset.live = "0";
          var stop = $("#stop-run"); if (stop) { stop.remove(); }
        } else {
          setTimeout(tick, POLL_MS);
        }
      }).catch(function () { setTimeout(tick, POLL_MS * 3); });
    }
    setTimeout(tick, POLL_MS);
  }

  // -- runs list: statuses of running rows -------------------------------------------------------------------
  function pollRuns(table) {
    function tick() {
      fetch("/api/runs" + window.location.search, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (runs) {
        if (!runs) { return; }
        var live = false;
        runs.forEach(function (run) {
          var row = $all("tr[data-run-id]", table).filter(function (tr) { return tr.dataset.runId === run.id; })[0];
          if (!row) { return; }
          var cell = $("td.status", row);
          if (cell.dataset.status !== run.status) {
            cell.dataset.status = run.status;
            cell.innerHTML = "";
            var pill = document.createElement("span");
            pill.className = "pill status-" + run.status;
            pill.textContent = run.status;
            cell.appendChild(pill);
          }
          if (run.status === "running") { live = true; }
        });
        if (live) { setTimeout(tick, POLL_MS * 2); }
      }).catch(function () { setTimeout(tick, POLL_MS * 5); });
    }
    setTimeout(tick, POLL_MS * 2);
  }

  // -- step page: the log, live ------------------------------------------------------------------------------
  function followLog(pre) {
    var search = $("#log-search"), state = $("#log-state"), partial = null;
    function matches(line) {
      var q = search ? search.value.toLowerCase() : "";
      return !q || line.textContent.toLowerCase().indexOf(q) >= 0;
    }
    function append(text) {
      var pieces = text.split("\n");
      pieces.forEach(function (piece, i) {
        var last = i === pieces.length - 1;
        if (partial) {
          partial.textContent += piece;
        } else if (piece || !last) {
          partial = document.createElement("span");
          partial.className = "line";
          partial.textContent = piece;
          pre.appendChild(partial);
        }
        if (!last && partial) {
          partial.textContent += "\n";
          partial.classList.toggle("hidden", !matches(partial));
          partial = null;
        } else if (partial) {
          partial.classList.toggle("hidden", !matches(partial));
        }
      });
      var nearBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 80;
      if (nearBottom) { pre.scrollTop = pre.scrollHeight; }
    }
    if (search) {
      search.addEventListener("input", function () {
        $all("span.line", pre).forEach(function (line) { line.classList.toggle("hidden", !matches(line)); });
      });
    }
    if (!window.EventSource || !pre.dataset.src) { return; }
    var source = new EventSource(pre.dataset.src);
    if (state) { state.textContent = "following…"; }
    source.onmessage = function (e) { append(JSON.parse(e.data).text); };
    source.addEventListener("attempt", function (e) {
      partial = null;
      append("--- attempt " + JSON.parse(e.data).attempt + " ---\n");
    });
    source.addEventListener("end", function (e) {
      source.close();
      if (state) { state.textContent = JSON.parse(e.data).reason || "ended"; }
    });
    source.onerror = function () { if (state) { state.textContent = "reconnecting…"; } };
  }

  document.addEventListener("DOMContentLoaded", function () {
    var run = $("#run");
    if (run && run.dataset.live === "1") { pollRun(run); }
    var runs = $("table#runs");
    if (runs && runs.dataset.live === "1") { pollRuns(runs); }
    var logs = $("pre#logs");
    if (logs) { followLog(logs); }
  });
})();
