// The console's pages: each reads the /v1 API and renders with G.h (text nodes only).
"use strict";
var G = window.G = window.G || {};
const h = (...a) => G.h(...a);
const enc = encodeURIComponent;

function windowNote(w) {
  return w ? h("p", {class: "muted"}, `Window ${G.time(w.start_ns)} to ${G.time(w.end_ns)}`) : null;
}

G.pages = {};

G.pages.map = async function () {
  const [graph, an] = await Promise.all([
    G.api("/v1/service-graph" + G.query()),
    G.api("/v1/anomalies" + G.query()).catch(() => ({anomalies: []})),
  ]);
  const anomalies = an.anomalies || [];
  const hot = new Set(anomalies.map((a) => a.service));
  const legend = h("div", {class: "legend"}, Object.entries(G.KIND_COLOR).map(([k, c]) => {
    const s = h("span", {}, k); s.style.setProperty("--c", c); return s;
  }), h("span", {}, "red outline: anomalous"));
  const svg = G.graph(graph.nodes, graph.edges, hot, (n) => {
    location.hash = n.kind === "service" ? "#/service/" + enc(n.name) : "#/traces?peer=" + enc(n.name);
  });
  G.show(
    h("h1", {}, "Service map"), windowNote(graph.window), legend,
    h("div", {class: "map"}, svg),
    h("h2", {}, `Anomalies (${anomalies.length})`),
    anomalies.length ? G.table(["service", "kind", "what changed", "traces"], anomalies.slice(0, 20).map((a) => [
      G.serviceLink(a.service), a.kind, a.description, (a.trace_ids || [])[0] ? G.traceLink(a.trace_ids[0]) : ""]))
      : h("p", {class: "muted"}, "No anomalies against the window before."),
    h("h2", {}, "Edges"),
    G.table(["client", "server", "rate#", "errors#", "p95#", "health"], graph.edges.map((e) => [
      G.serviceLink(e.client), e.server, G.rate(e.rate_per_s), G.pct(e.error_rate), G.ms(e.p95_ms), G.healthPill(e.health)])),
  );
};

G.pages.service = async function (name) {
  const [series, ops, queries, errors] = await Promise.all([
    G.api(`/v1/services/${enc(name)}/series` + G.query()),
    G.tool("red", {service: name, by: "operation", limit: 20}),
    G.tool("slow_queries", {service: name, limit: 10}).catch(() => ({queries: []})),
    G.tool("errors", {service: name, limit: 10}).catch(() => ({groups: []})),
  ]);
  const pts = series.points || [];
  const at = (p) => p.interval_start_ns;
  G.show(
    h("h1", {}, "Service ", h("span", {class: "mono"}, name)), windowNote(series.window),
    h("div", {class: "grid"},
      G.lineChart("Requests per second", pts.map((p) => ({x: at(p), y: p.rate_per_s})), (y) => y.toFixed(1)),
      G.lineChart("Error rate", pts.map((p) => ({x: at(p), y: p.error_rate})), G.pct, "#c53030"),
      G.lineChart("Latency p95", pts.map((p) => ({x: at(p), y: p.p95_ms})), G.ms, "#805ad5")),
    h("h2", {}, "Top operations"),
    G.table(["operation", "rate#", "errors#", "p50#", "p95#", "health", "example"], (ops.items || []).map((o) => [
      o.operation, G.rate(o.current.rate_per_s), G.pct(o.current.error_rate), G.ms(o.current.p50_ms),
      G.ms(o.current.p95_ms), G.healthPill(o.health || "ok"), (o.sample_trace_ids || []).slice(0, 1).map(G.traceLink)])),
    h("h2", {}, "Slowest and failing queries"),
    (queries.queries || []).length ? G.table(["query", "system", "calls#", "avg#", "max#", "errors#", "callers", "example"],
      queries.queries.map((q) => [h("code", {}, q.statement), q.db_system, q.count, G.ms(q.avg_ms), G.ms(q.max_ms), q.errors,
        (q.callers || []).join(", "), (q.sample_trace_ids || []).slice(0, 1).map(G.traceLink)]))
      : h("p", {class: "muted"}, "No queries from this service in the window."),
    h("h2", {}, "Recent errors"),
    (errors.groups || []).length ? G.table(["service", "operation", "code", "message", "count#", "new", "example"],
      errors.groups.map((e) => [e.service, e.operation, e.code, e.message, e.count, e.new ? "new" : "",
        (e.sample_trace_ids || []).slice(0, 1).map(G.traceLink)]))
      : h("p", {class: "muted"}, "No errors in the window."),
  );
};

G.pages.traces = async function (params) {
  const f = (k) => params.get(k) || "";
  const field = (label, name, attrs) => h("label", {}, label, h("input", Object.assign({name, value: f(name)}, attrs || {})));
  const status = h("select", {name: "status"}, ["", "ERROR", "OK"].map((v) => {
    const o = h("option", {value: v}, v || "any"); if (v === f("status")) o.selected = true; return o;
  }));
  const form = h("form", {class: "search card"},
    field("service", "service"), field("operation", "operation"), h("label", {}, "status", status),
    field("min duration (ms)", "min_ms", {type: "number", min: 0, step: "any"}),
    field("attribute (key=value)", "attr", {placeholder: "http.response.status_code=503"}),
    field("from", "start", {placeholder: "ISO time (optional)"}), field("to", "end", {placeholder: "ISO time"}),
    field("peer", "peer", {placeholder: "a dependency"}),
    h("button", {type: "submit"}, "Search"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = "#/traces?" + q.toString();
  });
  const args = {limit: 50};
  if (f("service")) args.service = f("service");
  if (f("operation")) args.operation = f("operation");
  if (f("status")) args.status = f("status");
  if (f("min_ms")) { args.min_duration_ms = Number(f("min_ms")); args.order = "duration_desc"; }
  if (f("attr").includes("=")) { const [k, ...v] = f("attr").split("="); args.attributes = {[k.trim()]: v.join("=").trim()}; }
  if (f("start")) { args.start = f("start"); if (f("end")) args.end = f("end"); }
  let result;
  try {
    if (f("peer")) {
      const svc = await G.api("/v1/service-graph" + G.query());
      const callers = svc.edges.filter((e) => e.server === f("peer")).map((e) => e.client);
      args.service = args.service || callers[0];
      args.kind = "CLIENT";
    }
    if (args.start) { const s = G.win; G.win = ""; try { result = await G.tool("search_spans", args); } finally { G.win = s; } }
    else result = await G.tool("search_spans", args);
  } catch (e) { result = {spans: [], error: e.message}; }
  const spans = result.spans || [];
  G.show(h("h1", {}, "Traces"), form,
    result.error ? h("p", {class: "error"}, result.error) : null,
    result.truncated ? h("p", {class: "muted"}, `Showing the first ${spans.length} matches` +
      (result.suggestion ? ` (to narrow: ${result.suggestion})` : "") + ".") : null,
    G.table(["start", "service", "operation", "kind", "duration#", "status", "trace"], spans.map((s) => [
      G.time(s.start_ns), s.service, s.name, s.kind, G.ms(s.duration_ms),
      h("span", {class: "pill " + (s.status === "ERROR" ? "bad" : "ok")}, s.status), G.traceLink(s.trace_id)])));
};

G.pages.trace = async function (id) {
  const data = await G.api("/v1/traces/" + enc(id));
  const spans = data.spans;
  const svc = (s) => (s.resource || {})["service.name"] || "?";
  const ids = new Set(spans.map((s) => s.span_id));
  const children = {};
  spans.forEach((s) => { const p = ids.has(s.parent_span_id) ? s.parent_span_id : "_root"; (children[p] = children[p] || []).push(s); });
  const ordered = [];
  const walk = (p, d) => (children[p] || []).sort((a, b) => a.start_time_unix_nano - b.start_time_unix_nano)
    .forEach((s) => { ordered.push([s, d]); walk(s.span_id, d + 1); });
  walk("_root", 0);
  const t0 = Math.min(...spans.map((s) => s.start_time_unix_nano)), t1 = Math.max(...spans.map((s) => s.end_time_unix_nano));
  const crit = G.criticalPath(spans);
  const detail = h("div", {class: "card", id: "span-detail"}, h("p", {class: "muted"}, "Click a span to see its attributes."));
  const byId = Object.fromEntries(spans.map((s) => [s.span_id, s]));
  const rows = ordered.map(([s, d]) => {
    const dur = (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6;
    const bar = h("div", {class: "wf-bar" + (s.status_code === "ERROR" ? " error" : "") + (crit.has(s.span_id) ? " critical" : "")});
    bar.style.left = (100 * (s.start_time_unix_nano - t0) / Math.max(1, t1 - t0)) + "%";
    bar.style.width = (100 * (s.end_time_unix_nano - s.start_time_unix_nano) / Math.max(1, t1 - t0)) + "%";
    const name = h("div", {class: "wf-name", title: `${svc(s)} ${s.name}`}, h("b", {}, svc(s)), " ", s.name);
    name.style.paddingLeft = (6 + 14 * d) + "px";
    const row = h("div", {class: "wf-row", "data-span": s.span_id}, name, h("div", {class: "wf-track"}, bar), h("div", {class: "wf-dur"}, G.ms(dur)));
    row.addEventListener("click", () => select(s, row));
    return row;
  });
  function select(s, row) {
    document.querySelectorAll(".wf-row.selected").forEach((r) => r.classList.remove("selected"));
    (row || document.querySelector(`.wf-row[data-span="${s.span_id}"]`)).classList.add("selected");
    const parent = byId[s.parent_span_id];
    const kids = children[s.span_id] || [];
    const linkTo = (o) => { const a = h("a", {href: "#/trace/" + id}, `${svc(o)} ${o.name} (${o.kind})`);
      a.addEventListener("click", (ev) => { ev.preventDefault(); select(o); }); return a; };
    const attrs = Object.entries(s.attributes || {}).map(([k, v]) => [k, h("span", {class: "mono"}, String(v))]);
    detail.replaceChildren(
      h("h2", {}, `${svc(s)} · ${s.name}`),
      G.table(["field", "value"], [
        ["span id", h("span", {class: "mono"}, s.span_id)], ["kind", s.kind], ["status", s.status_code + (s.status_message ? ": " + s.status_message : "")],
        ["start", G.time(s.start_time_unix_nano)], ["duration", G.ms((s.end_time_unix_nano - s.start_time_unix_nano) / 1e6)],
        ["on critical path", crit.has(s.span_id) ? "yes" : "no"],
        ["linked from (parent)", parent ? linkTo(parent) : "none (root)"],
        ["links to (children)", kids.length ? h("span", {}, kids.map((k, i) => [i ? ", " : "", linkTo(k)])) : "none"],
        ...attrs]));
    detail.querySelector("table").classList.add("attrs");
  }
  G.show(h("h1", {}, "Trace ", h("span", {class: "mono"}, id)),
    h("p", {class: "muted"}, `${spans.length} spans · ${G.ms((t1 - t0) / 1e6)} · ${new Set(spans.map(svc)).size} services · outlined: critical path`),
    h("div", {class: "waterfall", id: "waterfall"}, rows), detail);
};

G.pages.timeline = async function () {
  const [an, reports, alerts, invs] = await Promise.all([
    G.api("/v1/anomalies" + G.query()).catch(() => ({anomalies: []})),
    G.api("/v1/reports?limit=200").catch(() => ({reports: []})),
    G.api("/v1/alerts?limit=200").catch(() => ({alerts: []})),
    G.api("/v1/investigations?limit=200").catch(() => ({investigations: []})),
  ]);
  const items = [];
  const end = an.window ? an.window.end_ns : Date.now() * 1e6;
  (an.anomalies || []).forEach((a) => items.push({lane: "anomaly", at_ns: end, label: a.description}));
  (reports.reports || []).forEach((r) => {
    items.push({lane: "report", at_ns: r.at_ns, label: `report ${r.trigger}: ${r.anomaly_count} anomalies`});
    (r.anomalies || []).forEach((a) => items.push({lane: "anomaly", at_ns: r.at_ns, label: a.description}));
  });
  (alerts.alerts || []).forEach((a) => items.push({lane: "alert", at_ns: a.at * 1e9, label: `${a.name}: ${a.action}`}));
  (invs.investigations || []).forEach((j) => items.push({lane: "investigation", at_ns: j.created_at * 1e9, label: j.question}));
  const times = items.map((i) => i.at_ns).concat(an.window ? [an.window.start_ns, an.window.end_ns] : []);
  const start = times.length ? Math.min(...times) : end - 3600e9;
  G.show(h("h1", {}, "Timeline"),
    h("div", {class: "timeline"}, G.timeline(items, start, Math.max(end, ...times))),
    h("h2", {}, "Scheduled and on-demand anomaly reports"),
    (reports.reports || []).length ? G.table(["time", "trigger", "anomalies#", "top finding"], reports.reports.map((r) => [
      G.time(r.at_ns), r.trigger, r.anomaly_count, ((r.anomalies || [])[0] || {}).description || ""]))
      : h("p", {class: "muted"}, "No reports yet (schedule them with schedule.interval_s or run one from the API)."),
    h("h2", {}, "Current anomalies"),
    G.table(["service", "kind", "what changed"], (an.anomalies || []).map((a) => [G.serviceLink(a.service), a.kind, a.description])),
    h("h2", {}, "Alerts received"),
    G.table(["time", "alert", "status", "action", "investigation"], (alerts.alerts || []).map((a) => [
      new Date(a.at * 1000).toISOString().slice(0, 19) + "Z", a.name, a.status, a.action,
      a.investigation ? h("a", {href: "#/investigation/" + enc(a.investigation)}, a.investigation) : ""])));
};

G.pages.investigate = async function () {
  const q = h("textarea", {name: "question", rows: 2, cols: 70, required: true, placeholder: "Why is checkout failing?"});
  const since = h("select", {name: "since"}, ["2m", "5m", "15m", "30m", "1h", "6h"].map((v) => h("option", {value: v, selected: v === "15m" ? "" : null}, "last " + v)));
  if (G.win) since.value = G.win;
  // Or an absolute window (ISO-8601 or unix time), e.g. from just before a fault to just before now.
  const start = h("input", {name: "start", size: 22, placeholder: "from (ISO or unix, optional)"});
  const end = h("input", {name: "end", size: 22, placeholder: "to (optional)"});
  const err = h("p", {class: "error"});
  const form = h("form", {class: "card search", id: "ask"}, h("label", {}, "question", q), h("label", {}, "window", since),
    h("label", {}, "or from", start), h("label", {}, "to", end), h("button", {type: "submit"}, "Investigate"), err);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {question: q.value, async: true};
    if (start.value.trim()) { body.start = start.value.trim(); if (end.value.trim()) body.end = end.value.trim(); }
    else body.since = since.value;
    try {
      const r = await G.api("/v1/investigate", {json: body});
      location.hash = "#/investigation/" + enc(r.id);
    } catch (e) { err.textContent = e.message; }
  });
  const past = await G.api("/v1/investigations?limit=50");
  G.show(h("h1", {}, "Investigate"), form, h("h2", {}, "Past investigations"),
    G.table(["started", "source", "question", "status", ""], past.investigations.map((j) => [
      new Date(j.created_at * 1000).toISOString().slice(0, 19) + "Z", j.source, j.question, j.status,
      h("a", {href: "#/investigation/" + enc(j.id)}, "open")])));
};

function renderReport(job) {
  const rep = job.report;
  const causes = rep.root_causes.map((rc) => h("div", {class: "cause"},
    h("div", {}, h("b", {}, `${rc.rank}. ${rc.service}`), rc.operation ? ` ${rc.operation}` : "", ` · ${rc.kind} · confidence ${Math.round(rc.confidence * 100)}%`),
    h("div", {}, rc.description),
    rc.evidence.map((ev) => h("div", {class: "evidence"}, "trace ", G.traceLink(ev.trace_id),
      ev.verified ? "" : " (unverified id)", ": ", ev.description))));
  const cause = h("input", {placeholder: "real cause: service [operation]", size: 40});
  const note = h("p", {class: "muted"});
  const mark = async (outcome) => {
    const body = {outcome};
    if (cause.value.trim()) { const [svc, ...op] = cause.value.trim().split(" "); body.cause = {service: svc}; if (op.length) body.cause.operation = op.join(" "); }
    try { const r = await G.api(`/v1/investigations/${enc(job.id)}/outcome`, {json: body});
      note.textContent = `Marked ${r.outcome}; cause ${r.cause_service || "?"}. It will be used for similar incidents.`; }
    catch (e) { note.textContent = e.message; }
  };
  return h("div", {class: "card report"},
    h("h2", {}, "Summary"), h("p", {}, rep.summary),
    h("h2", {}, "Root causes"), causes.length ? causes : h("p", {class: "muted"}, "No root cause found."),
    h("h2", {}, "Blast radius"), h("p", {}, "services: " + (rep.blast_radius.services.join(", ") || "none seen")),
    h("h2", {}, "Suggested fix"), h("p", {}, rep.suggested_fix || "None suggested."),
    (rep.similar || []).length ? [h("h2", {}, "Seen before"), G.table(["investigation", "outcome", "confirmed cause", "similarity#"],
      rep.similar.map((p) => [h("a", {href: "#/investigation/" + enc(p.id)}, p.id), p.outcome,
        `${p.cause.service || ""} ${p.cause.operation || ""}`.trim() + (p.cause.note ? ": " + p.cause.note : ""), p.similarity]))] : null,
    (rep.prior || []).length ? h("p", {class: "muted"}, "Memory adjusted: " + rep.prior.map((a) => `${a.service} ${a.from}→${a.to}`).join(", ")) : null,
    h("h2", {}, "Was this right?"),
    h("div", {}, h("button", {type: "button", id: "mark-right", onclick: () => mark("right")}, "Right"), " ",
      cause, " ", h("button", {type: "button", class: "secondary", id: "mark-wrong", onclick: () => mark("wrong")}, "Wrong")), note);
}

G.pages.investigation = async function (id) {
  // Steps arrive as Server-Sent Events while the investigation runs; polling is the fallback
  // when the stream cannot be opened or breaks.
  let timer = null, source = null;
  const job = await G.api("/v1/investigations/" + enc(id));
  const steps = h("ol", {class: "steps"});
  const status = h("span", {id: "status"});
  const rest = h("div", {id: "outcome"});
  const setStatus = (st) => { status.textContent = st; status.className = "pill " + (st === "failed" ? "bad" : st === "done" ? "ok" : "warn"); };
  const drawStep = (s, i) => {
    const li = h("li", {"data-index": i}, h("span", {class: "when"}, new Date(s.at * 1000).toISOString().slice(11, 23)),
      h("b", {}, s.step), " ", s.detail, s.times ? ` (×${s.times})` : "");
    if (steps.children[i]) steps.replaceChild(li, steps.children[i]); else steps.appendChild(li);
  };
  const finish = (j) => {
    j.steps.forEach(drawStep);
    setStatus(j.status);
    rest.replaceChildren(...[j.error ? h("p", {class: "error"}, j.error) : null, j.report ? renderReport(j) : null].filter(Boolean));
  };
  const poll = async () => {
    const j = await G.api("/v1/investigations/" + enc(id));
    j.steps.forEach(drawStep);
    setStatus(j.status);
    if (j.status === "done" || j.status === "failed") finish(j); else timer = setTimeout(poll, 500);
  };
  G.show(h("h1", {}, "Investigation ", h("span", {class: "mono"}, id)),
    h("p", {}, h("b", {}, job.question), " · ", status,
      job.window ? ` · ${G.time(job.window.start_ns)} to ${G.time(job.window.end_ns)}` : "", job.source ? ` · from ${job.source}` : ""),
    h("h2", {}, "Steps"), steps, rest);
  G.stopPolling = () => { clearTimeout(timer); if (source) source.close(); };
  if (job.status === "done" || job.status === "failed") { finish(job); return; }
  job.steps.forEach(drawStep);
  setStatus(job.status);
  if (!window.EventSource) { timer = setTimeout(poll, 500); return; }
  source = new EventSource("/v1/investigations/" + enc(id) + "/events");
  source.addEventListener("step", (ev) => { const s = JSON.parse(ev.data); drawStep(s, s.index); });
  source.addEventListener("status", (ev) => setStatus(JSON.parse(ev.data).status));
  source.addEventListener("done", (ev) => { source.close(); source = null; finish(JSON.parse(ev.data)); });
  source.onerror = () => { if (source) { source.close(); source = null; timer = setTimeout(poll, 500); } };
};
