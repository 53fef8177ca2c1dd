// The status page: fetches /insight/history and draws it. No dependencies; every string
// from the server goes through textContent.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let sortKey = "rps";
let sortDescending = true;
let last = null;

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(value, unit) {
  if (value === null || value === undefined) return "–";
  if (unit === "%") return (value * 100).toFixed(value >= 0.995 || value === 0 ? 0 : 1) + " %";
  if (unit === "ms") return value < 10 ? value.toFixed(1) + " ms" : Math.round(value) + " ms";
  if (unit === "bytes") {
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
    return (i ? value.toFixed(1) : value) + " " + units[i];
  }
  if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(value < 10 ? 1 : 0);
  return String(value);
}

// A polyline of `values` (nulls are gaps) scaled into a width × height box.
function pathOf(values, width, height, max) {
  const n = values.length;
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || v === undefined) { pen = false; return; }
    const x = n === 1 ? width : (i / (n - 1)) * width;
    const y = height - (max > 0 ? (v / max) * (height - 4) : 0) - 2;
    d += (pen ? "L" : "M") + x.toFixed(1) + "," + y.toFixed(1);
    pen = true;
  });
  if (n === 1 && d) d += "L0," + d.split(",")[1]; // one point: a level line across
  return d;
}

function plot(id, series, options) {
  const svg = document.getElementById(id);
  const w = 320, h = 110;
  const all = series.flat().filter((v) => v !== null && v !== undefined);
  let max = Math.max(options.min || 0, options.target || 0, ...all);
  if (!(max > 0)) max = 1;
  svg.replaceChildren();
  svg.appendChild(el("svg:line", { x1: 0, y1: h - 1, x2: w, y2: h - 1, class: "axis" }));
  if (options.target) {
    const y = h - (options.target / max) * (h - 4) - 2;
    svg.appendChild(el("svg:line", { x1: 0, y1: y, x2: w, y2: y, class: "target" }));
  }
  series.forEach((values, i) => {
    const d = pathOf(values, w, h, max);
    const whole = values.length > 1 && values.every((v) => v !== null && v !== undefined);
    if (i === 0 && whole) svg.appendChild(el("svg:path", { d: d + "L" + w + "," + h + "L0," + h + "Z", class: "area" }));
    svg.appendChild(el("svg:path", { d, class: i ? "line second" : "line", "data-points": values.length }));
  });
  const caption = svg.parentNode.querySelector("figcaption");
  const minutes = Math.round((series[0].length * options.interval) / 60);
  caption.replaceChildren(el("span", {}, caption.dataset.title || (caption.dataset.title = caption.textContent)),
    el("span", {}, "max " + fmt(max, options.unit) + " · last " + (minutes ? minutes + " min" : "minute")));
}

function spark(values) {
  const svg = el("svg:svg", { class: "spark", viewBox: "0 0 120 20", preserveAspectRatio: "none" });
  const max = Math.max(0, ...values.filter((v) => v !== null));
  svg.appendChild(el("svg:path", { d: pathOf(values, 120, 20, max || 1) }));
  return svg;
}

function card(label, value, title) {
  const node = el("div", { class: "card", title: title || "" });
  node.append(el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  return node;
}

function cell(text, cls) {
  return el("td", cls ? { class: cls } : {}, text);
}

function renderRoutes() {
  if (!last) return;
  const filter = document.getElementById("filter").value.trim().toLowerCase();
  const rows = last.routes.filter((r) => !filter || r.name.toLowerCase().includes(filter) || r.upstream.toLowerCase().includes(filter));
  rows.sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    const cmp = typeof x === "string" ? x.localeCompare(y) : (x ?? -1) - (y ?? -1);
    return sortDescending ? -cmp : cmp;
  });
  const body = document.querySelector("#routes tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = el("tr", { "data-route": r.name });
    const overP95 = r.p95_ms !== null && r.p95_ms > r.slo.p95_ms;
    const underHit = r.caches && r.hit_rate !== null && r.hit_rate < r.slo.hit_rate;
    const trend = el("td");
    trend.appendChild(spark(r.series.rps));
    tr.append(cell(r.name), cell(r.upstream), cell(fmt(r.rps), "num"),
      cell(r.caches ? fmt(r.hit_rate, "%") : "no cache", "num" + (underHit ? " over" : "")),
      cell(fmt(r.p50_ms, "ms"), "num"), cell(fmt(r.p95_ms, "ms"), "num" + (overP95 ? " over" : "")),
      cell(fmt(r.p99_ms, "ms"), "num"), cell(fmt(r.refused), "num"), cell(fmt(r.errors), "num" + (r.errors ? " over" : "")), trend);
    return tr;
  }));
  document.getElementById("route-count").textContent = rows.length + " of " + last.routes.length;
}

function render(data) {
  last = data;
  const h = data.health;
  const badge = document.getElementById("health");
  badge.className = "badge " + h.status;
  badge.textContent = h.status + " · " + h.health_score;
  document.getElementById("updated").textContent = "updated " + new Date(data.now_ms).toLocaleTimeString();

  const t = data.totals;
  const m = data.minute;
  const sum = (xs) => xs.reduce((a, b) => a + (b || 0), 0);
  const healthy = data.endpoints.filter((e) => e.state === "healthy").length;
  document.getElementById("cards").replaceChildren(
    card("req/s", fmt(m.rps), "over the last minute"),
    card("hit rate", fmt(m.hit_rate, "%"), "over the last minute"),
    card("p95 · p99", fmt(m.p95_ms, "ms") + " · " + fmt(m.p99_ms, "ms"), "over the last minute"),
    card("5xx (1 min)", fmt(m.errors)),
    card("refused (1 min)", fmt(m.refused)),
    card("cache", fmt(data.cache.entries) + " · " + fmt(data.cache.bytes, "bytes"), "entries · bytes"),
    card("endpoints", healthy + " / " + data.endpoints.length + " healthy"),
    card("redis", data.redis),
    card("reloads", data.reloads.success + " ok · " + data.reloads.error + " refused", "since start; in the plots' window: " +
      data.reloads.in_history.success + " ok, " + data.reloads.in_history.error + " refused"),
    card("5xx, 15 min", fmt(sum(t.errors))));

  const interval = data.interval_seconds;
  plot("plot-rps", [t.rps], { unit: "", interval });
  plot("plot-hit", [t.hit_rate], { unit: "%", min: 1, interval });
  plot("plot-p95", [t.p95_ms], { unit: "ms", target: data.platform_slo.p95_ms, interval });
  plot("plot-errors", [t.errors, t.refused], { unit: "", interval });

  const advice = document.getElementById("advice");
  advice.replaceChildren(...(data.recommendations.length ? data.recommendations.map((a) => {
    const li = el("li", { "data-kind": a.kind });
    li.append(el("span", { class: "kind" }, (a.route ? a.route + ": " : "cache: ") + a.kind.replaceAll("_", " ")), el("span", {}, a.message));
    return li;
  }) : [el("li", { class: "muted" }, "nothing to recommend from the last 15 minutes")]));

  document.querySelector("#factors tbody").replaceChildren(...h.factors.map((f) => {
    const tr = el("tr");
    tr.append(cell(f.name + " (" + f.weight + ")"), cell(f.score === null ? "–" : fmt(f.score, "%"), "num"), cell(f.detail, "detail"));
    return tr;
  }));

  document.querySelector("#endpoints tbody").replaceChildren(...data.endpoints.map((e) => {
    const tr = el("tr");
    tr.append(cell(e.upstream), cell(e.endpoint), cell(e.state, "state-" + e.state), cell(fmt(e.in_flight), "num"),
      cell(fmt(e.tries), "num"), cell(fmt(e.failures), "num" + (e.failures ? " over" : "")),
      cell(fmt(e.p50_ms, "ms"), "num"), cell(fmt(e.p95_ms, "ms"), "num"));
    return tr;
  }));
  renderRoutes();
  document.body.dataset.loaded = "true";
}

async function refresh() {
  try {
    const response = await fetch("/insight/history", { cache: "no-store" });
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    const data = await response.json();
    render(data);
    setTimeout(refresh, Math.min(10, Math.max(2, data.interval_seconds)) * 1000);
  } catch (e) {
    document.getElementById("updated").textContent = "cannot load: " + e.message;
    setTimeout(refresh, 5000);
  }
}

document.getElementById("filter").addEventListener("input", renderRoutes);
document.querySelectorAll("#routes th[data-key]").forEach((th) => th.addEventListener("click", () => {
  if (sortKey === th.dataset.key) sortDescending = !sortDescending;
  else { sortKey = th.dataset.key; sortDescending = th.dataset.key !== "name" && th.dataset.key !== "upstream"; }
  renderRoutes();
}));
refresh();
