"""The console's HTML, CSS and script: served by the console itself (no build step, no CDN).

Every value that reaches a page came from the topics, so from the agents being watched: the
server escapes what it renders, and the script only ever sets ``textContent``.
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.soc.console_state import WorkflowView

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d2733;background:#fafbfc}
header{background:#1d2733;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header b{font-size:18px;margin-right:12px}
main{padding:14px 18px}table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{border-bottom:1px solid #e3e6ea;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}.sev-critical{color:#fff;background:#b3261e;padding:1px 6px;border-radius:4px}
.sev-high{color:#fff;background:#e06c00;padding:1px 6px;border-radius:4px}
.sev-medium{background:#ffe08a;padding:1px 6px;border-radius:4px}.sev-low,.sev-info{background:#e3e6ea;padding:1px 6px;border-radius:4px}
tr.revocation td{color:#444;background:#f6f9ff}form.filters{margin-bottom:10px;display:flex;gap:8px}
form.filters input,form.filters select{padding:4px}#status{font-size:12px;color:#8a96a3}
.kv td:first-child{font-weight:bold;width:160px}svg.chain{background:#fff;border:1px solid #e3e6ea}
tr.new{animation:flash 1.5s}@keyframes flash{from{background:#fff3bf}to{background:inherit}}
"""


def page(title: str, body: str, *, nav: bool = True) -> str:
    """A page with the console's header."""
    links = (
        '<a href="/">Live feed</a><a href="/health">Pipeline health</a>'
        '<form method="post" action="/logout" style="margin-left:auto">'
        '<button type="submit">Sign out</button></form>'
        if nav
        else ""
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>tether · {escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><b>tether</b>{links}</header><main>{body}</main>"
        '<script src="/static/console.js"></script></body></html>'
    )


def login_page(*, error: bool) -> str:
    """Sign-in with the configured credential."""
    msg = '<p id="login-error" style="color:#b3261e">Wrong credential.</p>' if error else ""
    return page(
        "Sign in",
        f"<h2>Sign in</h2>{msg}<form method=post action=/login>"
        '<input type=password name=token id=token placeholder="console credential" size=40> '
        "<button type=submit id=signin>Sign in</button></form>",
        nav=False,
    )


def feed_page(filters: dict[str, str]) -> str:
    """The live feed: rows arrive over server-sent events."""
    sev = "".join(
        f'<option value="{s}"{" selected" if filters.get("severity") == s else ""}>{s or "any severity"}</option>'
        for s in ("", "info", "low", "medium", "high", "critical")
    )
    inputs = "".join(
        f'<input name="{k}" placeholder="{k}" value="{escape(filters.get(k, ""))}">'
        for k in ("code", "workload", "workflow")
    )
    return page(
        "Live feed",
        '<h2>Live feed <span id="status">connecting…</span></h2>'
        f'<form class="filters" method="get"><select name="severity">{sev}</select>{inputs}'
        '<button type="submit">Filter</button></form>'
        '<table id="feed"><thead><tr><th>time</th><th>kind</th><th>severity</th>'
        "<th>code</th><th>workflow</th><th>workload</th><th>what</th></tr></thead>"
        "<tbody></tbody></table>",
    )


def workflow_page(wf: WorkflowView, svg: str) -> str:
    """A workflow's grant, delegation chain and timeline."""
    grant = (
        "".join(
            f"<tr><td>{escape(str(k))}</td><td>{escape(json.dumps(v))}</td></tr>"
            for k, v in wf.grant.items()
        )
        if wf.grant
        else "<tr><td colspan=2>no workflow.started seen</td></tr>"
    )
    rows = "".join(
        f'<tr class="{escape(str(e.get("what", "")).split(":")[0])}"><td>{escape(str(e.get("t")))}</td>'
        f"<td>{escape(str(e.get('what')))}</td><td>{escape(str(e.get('detail')))}</td></tr>"
        for e in wf.ordered()
    )
    dropped = f"<p>{wf.dropped} older entries not kept.</p>" if wf.dropped else ""
    return page(
        f"Workflow {wf.workflow_id}",
        f'<h2>Workflow <code id="wf-id">{escape(wf.workflow_id)}</code></h2>'
        f"<p>initiator: <code>{escape(wf.initiator or '?')}</code> · findings: {wf.findings}</p>"
        f'<h3>Delegation chain</h3><div id="chain">{svg}</div>'
        f'<h3>Grant</h3><table class="kv" id="grant">{grant}</table>'
        f'<h3>Timeline (event time)</h3>{dropped}<table id="timeline"><thead><tr><th>time</th>'
        f"<th>what</th><th>detail</th></tr></thead><tbody>{rows}</tbody></table>",
    )


def health_page() -> str:
    """Pipeline health, refreshed by the script from /api/health."""
    return page(
        "Pipeline health",
        "<h2>Pipeline health</h2><h3>Workers</h3><table id=workers><thead><tr><th>worker</th>"
        "<th>alive</th><th>last heartbeat (s ago)</th><th>watermark</th><th>input lag (s)</th>"
        "<th>input lag (records)</th></tr></thead><tbody></tbody></table>"
        "<h3>Revocation latency (last 5 minutes)</h3><table class=kv id=latency></table>"
        "<h3>Dead letters by reason</h3><table class=kv id=deadletters></table>",
    )


CONSOLE_JS = r"""
(function () {
  "use strict";
  function td(text, cls) {
    var c = document.createElement("td");
    if (cls) { var s = document.createElement("span"); s.className = cls; s.textContent = text; c.appendChild(s); }
    else { c.textContent = text == null ? "" : String(text); }
    return c;
  }
  function link(href, text) {
    var c = document.createElement("td"), a = document.createElement("a");
    a.href = href; a.textContent = text; c.appendChild(a); return c;
  }
  var feed = document.querySelector("#feed tbody");
  if (feed) {
    var status = document.getElementById("status"), n = 0;
    var es = new EventSource("/events" + window.location.search);
    es.onopen = function () { status.textContent = "live"; };
    es.onerror = function () { status.textContent = "reconnecting…"; };
    es.addEventListener("gap", function (e) { status.textContent = "live (" + e.data + " skipped: browser too slow)"; });
    es.onmessage = function (e) {
      var it = JSON.parse(e.data), tr = document.createElement("tr");
      tr.className = it.kind + " new";
      var id = it.kind === "finding" ? it.finding_id : it.revocation_id;
      tr.id = (it.kind === "finding" ? "finding-" : "revocation-") + id;
      tr.appendChild(td(it.kind === "finding" ? it.event_time : it.issued_at));
      tr.appendChild(td(it.kind));
      tr.appendChild(td(it.severity, "sev-" + it.severity));
      tr.appendChild(td(it.kind === "finding" ? it.code : it.reason));
      tr.appendChild(link("/workflow/" + encodeURIComponent(it.workflow_id), it.workflow_id));
      tr.appendChild(td(it.kind === "finding" ? it.workload_id : (it.target.kind + ":" + it.target.id)));
      tr.appendChild(td(it.kind === "finding" ? ((it.title ? it.title + ": " : "") + it.summary) : "revoked until " + it.not_after));
      feed.insertBefore(tr, feed.firstChild);
      n += 1;
      while (feed.rows.length > 1000) { feed.deleteRow(feed.rows.length - 1); }
      status.textContent = "live · " + n + " received";
    };
  }
  var workers = document.querySelector("#workers tbody");
  if (workers) {
    function kv(table, obj) {
      table.textContent = "";
      Object.keys(obj).forEach(function (k) {
        var tr = document.createElement("tr"); tr.appendChild(td(k)); tr.appendChild(td(obj[k])); table.appendChild(tr);
      });
    }
    function refresh() {
      fetch("/api/health", {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (h) {
        workers.textContent = "";
        h.workers.forEach(function (w) {
          var tr = document.createElement("tr");
          [w.source, w.alive ? "yes" : "NO", w.seconds_since_heartbeat, w.watermark, w.input_lag_s, w.input_lag_records]
            .forEach(function (v) { tr.appendChild(td(v)); });
          workers.appendChild(tr);
        });
        kv(document.getElementById("latency"), h.revocation_latency_s);
        kv(document.getElementById("deadletters"), h.deadletters);
      });
    }
    refresh(); setInterval(refresh, 2000);
  }
})();
"""
