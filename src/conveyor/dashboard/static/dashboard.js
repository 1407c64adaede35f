// Conveyor dashboard: live updates without a framework. The run page polls its JSON every second while the run
// is not finished; the runs list polls its JSON every 2 s (new runs, statuses, durations); the step page follows
// its log through server-sent events; the log search filters lines here.
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

  // -- runs list: live statuses and durations; on the first page, new runs appear at the top -----------------
  function pollRuns(table) {
    var first = table.dataset.page === "1";
    function cell(text, className) {
      var td = document.createElement("td");
      td.textContent = text;
      if (className) { td.className = className; }
      return td;
    }
    function newRow(run) {  // the same cells as templates/runs.html draws, built as text (names are never HTML)
      var tr = document.createElement("tr"), link = document.createElement("a"), name = cell("");
      tr.dataset.runId = run.id;
      link.href = "/runs/" + encodeURIComponent(run.id);
      link.textContent = run.name;
      name.appendChild(link);
      [name, cell(run.pipeline), cell("", "status"), cell(run.stack), cell(run.started), cell(run.duration, "duration")]
        .forEach(function (td) { tr.appendChild(td); });
      return tr;
    }
    function showStatus(td, status) {
      if (td.dataset.status === status) { return; }
      td.dataset.status = status;
      td.innerHTML = "";
      var pill = document.createElement("span");
      pill.className = "pill status-" + status;
      pill.textContent = status;
      td.appendChild(pill);
    }
    function tick() {
      fetch("/api/runs" + window.location.search, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (runs) {
        if (!runs) { setTimeout(tick, POLL_MS * 5); return; }
        var body = $("tbody", table), live = false, left = {};
        $all("tr[data-run-id]", table).forEach(function (tr) { left[tr.dataset.runId] = tr; });
        runs.forEach(function (run) {
          var row = left[run.id];
          delete left[run.id];
          if (!row && !first) { return; }  // an older page keeps its rows: it only follows their statuses
          row = row || newRow(run);
          showStatus($("td.status", row), run.status);
          var duration = $("td.duration", row);
          if (duration) { duration.textContent = run.duration; }
          if (first) { body.appendChild(row); }  // in the list's order, newest first
          if (run.status === "running") { live = true; }
        });
        if (first) {  // the first page is what a reload would show: runs pushed to the next page leave it
          Object.keys(left).forEach(function (id) { left[id].remove(); });
          var empty = $("tr.empty", body);
          if (empty && runs.length) { empty.remove(); }
        }
        if (first || live) { setTimeout(tick, POLL_MS * (document.hidden ? 10 : 2)); }
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
    if (runs && (runs.dataset.live === "1" || runs.dataset.page === "1")) { pollRuns(runs); }
    var logs = $("pre#logs");
    if (logs) { followLog(logs); }
  });
})();
