// The console's core: element builder (text only, never HTML from data), API calls with the
// session cookie, the window selector and the hash router. Pages live in pages.js.
"use strict";

var G = window.G = window.G || {};

G.h = function (tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
};

G.win = sessionStorage.getItem("guardian.window") || "";

G.query = function (params) {
  const q = new URLSearchParams();
  if (G.win) q.set("since", G.win);
  for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
};

G.api = async function (path, opts) {
  const o = Object.assign({credentials: "same-origin", headers: {}}, opts || {});
  if (o.json !== undefined) {
    o.method = o.method || "POST";
    o.headers["Content-Type"] = "application/json";
    o.body = JSON.stringify(o.json);
    delete o.json;
  }
  const r = await fetch(path, o);
  if (r.status === 401) { location.reload(); throw new Error("signed out"); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((data && (data.detail || data.error)) || ("HTTP " + r.status));
  return data;
};

G.tool = function (name, args) {
  const a = Object.assign({}, args || {});
  if (G.win) a.since = G.win;
  return G.api("/v1/tools/" + encodeURIComponent(name), {json: a});
};

G.HEX32 = /^[0-9a-f]{32}$/;
G.traceLink = function (id) {
  return G.HEX32.test(id || "") ? G.h("a", {href: "#/trace/" + id, class: "mono", "data-trace": id}, id)
                                : G.h("span", {class: "mono"}, String(id));
};
G.serviceLink = (name) => G.h("a", {href: "#/service/" + encodeURIComponent(name)}, name);
G.pct = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(x < 0.01 && x > 0 ? 2 : 1) + "%";
G.ms = (x) => (x === null || x === undefined) ? "–" : (x >= 1000 ? (x / 1000).toFixed(2) + " s" : x.toFixed(x < 10 ? 2 : 1) + " ms");
G.rate = (x) => (x === null || x === undefined) ? "–" : x.toFixed(x < 10 ? 2 : 1) + "/s";
G.time = (ns) => new Date(ns / 1e6).toISOString().replace("T", " ").slice(0, 19) + "Z";
G.healthPill = (h) => G.h("span", {class: "pill " + (h === "ok" ? "ok" : /fail|error|new/.test(h) ? "bad" : "warn")}, h);
G.table = function (headers, rows) {
  return G.h("table", {}, G.h("thead", {}, G.h("tr", {}, headers.map(
    (x) => G.h("th", {class: x.endsWith("#") ? "num" : ""}, x.replace(/#$/, ""))))),
    G.h("tbody", {}, rows.map((r) => G.h("tr", {}, r.map((c, i) => G.h("td", {class: headers[i].endsWith("#") ? "num" : ""}, c))))));
};

G.show = function (...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
};

G.fail = (e) => G.show(G.h("p", {class: "error"}, "Could not load: " + e.message));

const routes = {
  map: () => G.pages.map(),
  service: (name) => G.pages.service(name),
  traces: (_, params) => G.pages.traces(params),
  trace: (id) => G.pages.trace(id),
  timeline: () => G.pages.timeline(),
  investigate: () => G.pages.investigate(),
  investigation: (id) => G.pages.investigation(id),
};

G.route = function () {
  const [path, qs] = (location.hash.replace(/^#\/?/, "") || "map").split("?");
  const [page, ...rest] = path.split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  const fn = routes[page] || routes.map;
  document.querySelectorAll("header nav a").forEach((a) =>
    a.classList.toggle("active", a.dataset.nav === page || (page === "service" && a.dataset.nav === "map")
                                 || (page === "trace" && a.dataset.nav === "traces")
                                 || (page === "investigation" && a.dataset.nav === "investigate")));
  if (G.stopPolling) { G.stopPolling(); G.stopPolling = null; }
  Promise.resolve(fn(arg, new URLSearchParams(qs || ""))).catch(G.fail);
};

document.getElementById("window").value = G.win;
document.getElementById("window").addEventListener("change", (ev) => {
  G.win = ev.target.value;
  sessionStorage.setItem("guardian.window", G.win);
  G.route();
});
document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/console/logout", {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"}, body: "{}"});
  location.replace("/");
});
window.addEventListener("hashchange", G.route);
G.route();
