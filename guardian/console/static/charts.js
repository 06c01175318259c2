// SVG drawings without a library: line charts, the service graph, the trace waterfall helpers.
"use strict";
var G = window.G = window.G || {};
const SVG = "http://www.w3.org/2000/svg";

G.s = function (tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
};

// points: [{x (ns), y}], fmt: y formatter
G.lineChart = function (title, points, fmt, color) {
  const W = 420, H = 150, L = 52, B = 22, T = 8;
  const svg = G.s("svg", {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": title});
  if (!points.length) {
    svg.appendChild(G.s("text", {x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6b7280"}, "no data in the window"));
  } else {
    const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
    const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1, y1 = Math.max(...ys, 0) * 1.1 || 1;
    const X = (x) => L + (W - L - 6) * (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0));
    const Y = (y) => T + (H - T - B) * (1 - y / y1);
    for (const f of [0, 0.5, 1]) {
      svg.appendChild(G.s("line", {x1: L, x2: W - 6, y1: Y(y1 * f), y2: Y(y1 * f), stroke: "#e5e7eb"}));
      svg.appendChild(G.s("text", {x: L - 4, y: Y(y1 * f) + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7280"}, fmt(y1 * f)));
    }
    svg.appendChild(G.s("text", {x: L, y: H - 6, "font-size": 10, fill: "#6b7280"}, G.time(x0).slice(11, 16)));
    svg.appendChild(G.s("text", {x: W - 6, y: H - 6, "font-size": 10, fill: "#6b7280", "text-anchor": "end"}, G.time(x1).slice(11, 16)));
    svg.appendChild(G.s("polyline", {fill: "none", stroke: color || "#2b6cb0", "stroke-width": 1.6,
      points: points.map((p) => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(" ")}));
  }
  return G.h("div", {class: "card chart"}, G.h("div", {class: "title"}, title), svg);
};

const KIND_COLOR = {service: "#2b6cb0", database: "#805ad5", cache: "#b83280", broker: "#dd6b20", dns: "#319795", external: "#718096"};
G.KIND_COLOR = KIND_COLOR;

// Layered layout: a node's column is its longest distance from a caller-less node.
G.graph = function (nodes, edges, anomalous, onClick) {
  const depth = {};
  nodes.forEach((n) => { depth[n.name] = 0; });
  for (let i = 0; i < nodes.length; i++) {
    let changed = false;
    for (const e of edges) {
      if (e.client === e.server) continue;
      const d = (depth[e.client] || 0) + 1;
      if (d > (depth[e.server] || 0) && d < nodes.length) { depth[e.server] = d; changed = true; }
    }
    if (!changed) break;
  }
  const cols = {};
  nodes.forEach((n) => { (cols[depth[n.name]] = cols[depth[n.name]] || []).push(n); });
  const NW = 170, NH = 46, CW = 370, RH = 92, PAD = 30;
  const pos = {};
  let maxRows = 1;
  // Depths can skip numbers (call cycles push them up): lay out the columns that exist, side by side.
  Object.keys(cols).map(Number).sort((a, b) => a - b).forEach((d, c) => {
    const list = cols[d];
    maxRows = Math.max(maxRows, list.length);
    list.forEach((n, r) => { pos[n.name] = {x: PAD + c * CW, y: PAD + r * RH}; });
  });
  const W = PAD * 2 + (Object.keys(cols).length - 1) * CW + NW, H = PAD * 2 + (maxRows - 1) * RH + NH;
  const svg = G.s("svg", {viewBox: `0 0 ${W} ${H}`, height: Math.min(H, 900), role: "img", "aria-label": "service map"});
  svg.appendChild(G.s("defs", {}, G.s("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto"},
    G.s("path", {d: "M0,0 L10,5 L0,10 z", fill: "#94a3b8"}))));
  for (const e of edges) {
    const a = pos[e.client], b = pos[e.server];
    if (!a || !b) continue;
    const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
    const bad = e.health && e.health !== "ok";
    const color = /fail|error|new/.test(e.health || "") ? "#c53030" : bad ? "#dd6b20" : "#94a3b8";
    const g = G.s("g", {class: "edge", "data-edge": e.client + "->" + e.server});
    g.appendChild(G.s("path", {d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, fill: "none", stroke: color,
      "stroke-width": bad ? 2.4 : 1.4, "marker-end": "url(#arrow)"}));
    const label = `${G.rate(e.rate_per_s)} · ${G.pct(e.error_rate)} err · p95 ${G.ms(e.p95_ms)}`;
    g.appendChild(G.s("text", {x: mx, y: (y1 + y2) / 2 - 5, "text-anchor": "middle", "font-size": 11, fill: color === "#94a3b8" ? "#475569" : color}, label));
    svg.appendChild(g);
  }
  for (const n of nodes) {
    const p = pos[n.name];
    const hot = anomalous.has(n.name);
    const g = G.s("g", {class: "node", "data-node": n.name, transform: `translate(${p.x},${p.y})`, tabindex: 0});
    g.appendChild(G.s("rect", {width: NW, height: NH, rx: 6, fill: "#fff", stroke: hot ? "#c53030" : KIND_COLOR[n.kind] || "#718096", "stroke-width": hot ? 3 : 1.5}));
    g.appendChild(G.s("rect", {width: 6, height: NH, rx: 2, fill: KIND_COLOR[n.kind] || "#718096"}));
    const name = n.name.length > 22 ? n.name.slice(0, 21) + "…" : n.name;
    g.appendChild(G.s("text", {x: 14, y: 18, "font-size": 13, "font-weight": 600, fill: "#1d2330"}, name));
    const sub = n.red ? `${G.rate(n.red.rate_per_s)} · ${G.pct(n.red.error_rate)} err` : n.kind;
    g.appendChild(G.s("text", {x: 14, y: 35, "font-size": 11, fill: hot ? "#c53030" : "#6b7280"}, sub));
    g.appendChild(G.s("title", {}, `${n.name} (${n.kind})`));
    g.addEventListener("click", () => onClick(n));
    svg.appendChild(g);
  }
  return svg;
};

// The critical path: from the root, the child that finishes last, recursively.
G.criticalPath = function (spans) {
  const byParent = {};
  const ids = new Set(spans.map((s) => s.span_id));
  spans.forEach((s) => { const p = ids.has(s.parent_span_id) ? s.parent_span_id : "_root"; (byParent[p] = byParent[p] || []).push(s); });
  const onPath = new Set();
  let level = byParent._root || [];
  while (level.length) {
    const last = level.reduce((a, b) => (b.end_time_unix_nano > a.end_time_unix_nano ? b : a));
    onPath.add(last.span_id);
    level = byParent[last.span_id] || [];
  }
  return onPath;
};

G.timeline = function (items, start, end) {
  const W = 1000, H = 120, L = 10;
  const svg = G.s("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "timeline"});
  const pad = (end - start) * 0.03 + 1;
  const X = (t) => L + (W - 2 * L) * Math.max(0, Math.min(1, (t - start + pad) / Math.max(1, end - start + 2 * pad)));
  const lanes = {anomaly: 25, report: 50, alert: 75, investigation: 100};
  const names = {anomaly: "anomalies", report: "reports", alert: "alerts", investigation: "investigations"};
  const colors = {anomaly: "#c53030", report: "#2b6cb0", alert: "#dd6b20", investigation: "#2f855a"};
  for (const [lane, y] of Object.entries(lanes)) {
    svg.appendChild(G.s("line", {x1: L, x2: W - L, y1: y, y2: y, stroke: "#e5e7eb"}));
    svg.appendChild(G.s("text", {x: L, y: y - 6, "font-size": 10, fill: "#6b7280"}, names[lane]));
  }
  for (const it of items) {
    const c = G.s("circle", {cx: X(it.at_ns), cy: lanes[it.lane], r: 5, fill: colors[it.lane]});
    c.appendChild(G.s("title", {}, it.label));
    svg.appendChild(c);
  }
  svg.appendChild(G.s("text", {x: L + 120, y: H - 2, "font-size": 10, fill: "#6b7280"}, G.time(start)));
  svg.appendChild(G.s("text", {x: W - L, y: H - 2, "font-size": 10, fill: "#6b7280", "text-anchor": "end"}, G.time(end)));
  return svg;
};
