// FleetStream dashboard: asks this page's own process (never Prometheus) for the named queries
// of each panel and the alerts, draws them with uPlot and lists each series' value now.
// Every value a table shows carries data-query, data-series and data-value (the raw number,
// empty when Prometheus could not compute one) for scripts and tests.
"use strict";

const COLOURS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#0a7e8c",
                 "#bf3989", "#57606a", "#fb8500", "#2f81f7"];
const params = new URLSearchParams(window.location.search);
const REFRESH_S = Math.max(Number(params.get("refresh")) || 15, 2);

let panels = [];
let queries = {};
let plots = {};
let busy = false;
let lastResults = null;

function formatter(unit) {
  return (v) => {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    switch (unit) {
      case "ratio": return (v * 100).toFixed(1) + "%";
      case "seconds":
        if (Math.round(v * 1000) < 1000) return (v * 1000).toFixed(0) + " ms";
        return Math.round(v * 100) / 100 < 60 ? v.toFixed(2) + " s" : duration(v * 1000);
      case "records": return Math.round(v).toLocaleString("en-US");
      default:
        if (v === 0) return "0/s";
        if (Math.abs(v) < 9.995) return v.toFixed(2) + "/s";   // 9.9999 is "10.0/s"
        if (Math.abs(v) < 999.95) return v.toFixed(1) + "/s";
        return Math.round(v).toLocaleString("en-US") + "/s";
    }
  };
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJSON(path) {
  let response;
  try {
    response = await fetch(path, {cache: "no-store"});
  } catch (error) {
    throw new Error("The dashboard process does not answer (" + error.message + ").");
  }
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : "HTTP " + response.status + " for " + path);
  }
  return body;
}

function showProblem(message) {
  const problem = document.getElementById("problem");
  problem.textContent = message.replace(/[.\s]*$/, ".") +
    " The charts come back when it answers again.";
  problem.hidden = false;
  document.body.dataset.state = "unreachable";
  document.getElementById("updated").textContent =
    "no data since " + (document.body.dataset.updatedText || "the page loaded");
}

function buildPanels() {
  const main = document.getElementById("panels");
  main.replaceChildren();
  for (const panel of panels) {
    main.append(el("div", {class: "panel", id: "panel-" + panel.id, "data-panel": panel.id},
      el("h2", {title: panel.queries.map((name) => queries[name].promql).join("\n")},
         panel.title),
      el("p", {class: "note"}, panel.note),
      el("div", {class: "chart"}),
      el("table", {class: "now"})));
  }
}

// the label of a series in a panel that draws several queries: "p50 fleet"
function seriesLabel(panel, queryName, seriesName) {
  if (panel.queries.length < 2) return seriesName;
  return queryName.split("_").pop() + " " + seriesName;
}

function drawPanel(panel, results) {
  const node = document.getElementById("panel-" + panel.id);
  const chart = node.querySelector(".chart");
  const fmt = formatter(panel.unit);
  if (plots[panel.id]) { plots[panel.id].destroy(); delete plots[panel.id]; }
  chart.replaceChildren();
  // one x axis: every timestamp of every series, each series null where it has no point
  const lines = [];
  for (const name of panel.queries) {
    for (const series of results[name].series) {
      lines.push({label: seriesLabel(panel, name, series.name),
                  points: new Map(series.points.map(([t, v]) => [t, v]))});
    }
  }
  lines.sort((a, b) => a.label.localeCompare(b.label));
  const colour = new Map(lines.map((line, i) => [line.label, COLOURS[i % COLOURS.length]]));
  if (lines.length === 0) {
    chart.append(el("p", {class: "empty"}, "No series: nothing reports this yet."));
  } else {
    const xs = [...new Set(lines.flatMap((line) => [...line.points.keys()]))].sort((a, b) => a - b);
    const data = [xs, ...lines.map((line) => xs.map((x) => line.points.has(x) ? line.points.get(x) : null))];
    const width = Math.max(node.clientWidth - 32, 240);
    // the whole range asked for, also where Prometheus has no data yet
    const first = results[panel.queries[0]];
    plots[panel.id] = new uPlot({
      width: width, height: 220,
      scales: {x: {time: true, range: () => [first.start, first.end]}, y: {range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1]}},
      axes: [{}, {size: 70, values: (u, splits) => splits.map(fmt)}],
      series: [{}, ...lines.map((line) => ({label: line.label, stroke: colour.get(line.label),
                                            width: 1.5, value: (u, v) => fmt(v)}))],
      legend: {show: true},
    }, data, chart);
  }
  // the value of every series now, as Prometheus computes it
  const table = node.querySelector("table.now");
  table.replaceChildren(el("tr", {}, el("th", {}, "series"), el("th", {class: "value"}, "now")));
  let rows = 0;
  for (const name of panel.queries) {
    for (const item of results[name].now) {
      const label = seriesLabel(panel, name, item.name);
      const swatch = el("span", {class: "swatch"});
      swatch.style.background = colour.get(label) || "#999";
      table.append(el("tr", {},
        el("td", {}, swatch, label),
        el("td", {class: "value", "data-query": name, "data-series": item.name,
                  "data-value": item.value === null ? "" : String(item.value)}, fmt(item.value))));
      rows += 1;
    }
  }
  if (rows === 0) table.append(el("tr", {}, el("td", {class: "muted", colSpan: 2}, "no series now")));
}

function drawAlerts(alerts) {
  const box = document.getElementById("alerts");
  box.dataset.count = String(alerts.length);
  if (alerts.length === 0) {
    box.replaceChildren(el("p", {class: "none"}, "No alerts firing."));
    return;
  }
  const table = el("table", {}, el("tr", {}, el("th", {}, "alert"), el("th", {}, "state"),
                                   el("th", {}, "severity"), el("th", {}, "since"),
                                   el("th", {}, "summary")));
  for (const alert of alerts) {
    table.append(el("tr", {"data-alert": alert.name},
      el("td", {class: alert.state}, alert.name), el("td", {class: alert.state}, alert.state),
      el("td", {}, alert.severity || "–"),
      el("td", {}, alert.active_at ? new Date(alert.active_at).toLocaleTimeString() : "–"),
      el("td", {}, alert.summary || "")));
  }
  box.replaceChildren(table);
}

function duration(ms) {
  const s = Math.max(Math.round(ms / 1000), 0);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60), sec = s % 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + sec + "s";
  return sec + "s";
}

// live jobs, then the three newest ended ones (Flink lists ended jobs for an hour)
function drawJobs(jobs) {
  const box = document.getElementById("jobs");
  const live = jobs.filter((job) => job.live);
  const ended = jobs.filter((job) => !job.live);
  const parts = [];
  if (live.length === 0) parts.push(el("p", {class: "pending"}, "No job runs on Flink."));
  const shown = live.concat(ended.slice(0, 3));
  if (shown.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "job"), el("th", {}, "state"),
                                     el("th", {}, "running for"), el("th", {}, "id")));
    for (const job of shown) {
      const style = job.trouble ? "firing" : job.state === "RUNNING" ? "none"
        : job.live ? "pending" : "muted";
      table.append(el("tr", {"data-job": job.id, "data-state": job.state},
        el("td", {}, job.name), el("td", {class: style}, job.state),
        el("td", {}, job.live ? duration(job.duration_ms) : "–"), el("td", {class: "muted"}, job.id)));
    }
    if (ended.length > 3) {
      table.append(el("tr", {}, el("td", {class: "muted", colSpan: 4},
                                   "and " + (ended.length - 3) + " older ended jobs")));
    }
    parts.push(table);
  }
  box.replaceChildren(...parts);
}

// Flink's answer, or why there is none, in the job list only: the charts do not need Flink
async function refreshJobs() {
  const box = document.getElementById("jobs");
  try {
    drawJobs((await getJSON("api/jobs")).jobs);
    box.dataset.state = "ok";
  } catch (error) {
    box.dataset.state = "unreachable";
    box.replaceChildren(el("p", {class: "firing"}, error.message));
  }
}

function drawAll() {
  if (!lastResults) return;
  for (const panel of panels) drawPanel(panel, lastResults);
}

async function refresh() {
  if (busy) return;
  busy = true;
  const jobs = refreshJobs();
  try {
    const range = document.getElementById("range").value;
    const names = [...new Set(panels.flatMap((panel) => panel.queries))];
    const [alerts, ...answers] = await Promise.all([
      getJSON("api/alerts"),
      ...names.map((name) => getJSON("api/query/" + encodeURIComponent(name) + "?range=" + range))]);
    const results = {};
    names.forEach((name, i) => { results[name] = answers[i]; });
    document.getElementById("problem").hidden = true;
    document.body.dataset.state = "ok";   // shows the panels before they are measured
    lastResults = results;
    drawAlerts(alerts.alerts);
    drawAll();
    const now = new Date();
    document.body.dataset.updated = String(now.getTime());
    document.body.dataset.updatedText = now.toLocaleTimeString();
    document.getElementById("updated").textContent =
      "updated " + now.toLocaleTimeString() + ", every " + REFRESH_S + " s";
  } catch (error) {
    showProblem(error.message);
  } finally {
    await jobs;
    busy = false;
  }
}

async function start() {
  try {
    const answer = await getJSON("api/panels");
    panels = answer.panels;
    queries = answer.queries;
    document.getElementById("source").textContent =
      "Prometheus at " + answer.prometheus + " · Flink at " + answer.flink;
  } catch (error) {
    showProblem(error.message);
    return;
  }
  buildPanels();
  document.getElementById("range").addEventListener("change", refresh);
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(drawAll, 200);
  });
  await refresh();
  setInterval(refresh, REFRESH_S * 1000);
}

start();
