// Traffic: requests, tokens and TTFT over time by model, node, key or client, errors by outcome,
// over a chosen range, and the same figures as CSV.

import { h } from "./dom.js";
import { get } from "./api.js";
import { lineChart } from "./charts.js";
import { picker, query } from "./range.js";

const chosen = { range: "day", by: "model" };
const STALE_MS = 30000; // the series are asked for again this often while the page is open
let loaded = 0;
const OUTCOMES = ["ok", "failed_over", "cancelled", "error"];

const perGroup = (groups, f) => Object.entries(groups).map(([name, g]) => ({ name, values: g.requests.map((_, i) => f(g, i)) }));

async function load(root) {
  loaded = Date.now();
  const body = root.querySelector("#traffic-body");
  const q = query(chosen);
  q.set("by", chosen.by);
  root.querySelector("#csv").href = `/ui/api/traffic?${q}&format=csv`;
  try {
    const t = await get(`/ui/api/traffic?${q}`);
    const x = t.buckets.map((b) => b + t.step / 2);
    const step = t.step >= 3600 ? `${t.step / 3600} h` : `${t.step / 60} min`;
    const outcomes = OUTCOMES.filter((o) => o !== "ok").map((o) => ({
      name: o.replace("_", "-"),
      values: t.buckets.map((_, i) => Object.values(t.groups).reduce((a, g) => a + g[o][i], 0)),
    }));
    const empty = Object.keys(t.groups).length === 0;
    body.replaceChildren(
      empty ? h("p", { class: "muted" }, "No requests in this range.") : "",
      h("div", { class: "charts" },
        lineChart({ title: `Requests per ${step}`, x, series: perGroup(t.groups, (g, i) => g.requests[i]), yLabel: "requests" }),
        lineChart({ title: `Tokens per ${step}`, x, series: perGroup(t.groups, (g, i) => g.prompt_tokens[i] + g.completion_tokens[i]), yLabel: "tokens" }),
        lineChart({ title: "Mean time to first token", x, series: perGroup(t.groups, (g, i) => (g.ttft_n[i] ? g.ttft_sum[i] / g.ttft_n[i] : 0)), yLabel: "s", unit: (v) => v.toFixed(2) }),
        lineChart({ title: `Errors per ${step}, by outcome`, x, series: outcomes, yLabel: "requests" })));
  } catch (err) {
    body.replaceChildren(h("p", { class: "error" }, err.message));
  }
}

export function refresh(root) {
  if (Date.now() - loaded > STALE_MS) load(root);
}

export function render(root) {
  const by = h("select", { "aria-label": "by", id: "by" }, ["model", "node", "key", "client", "outcome"].map((b) => h("option", { value: b, selected: b === chosen.by }, b)));
  by.addEventListener("change", () => { chosen.by = by.value; load(root); });
  const controls = h("div", { class: "row" }, picker(chosen, (c) => { Object.assign(chosen, c); load(root); }),
    "by", by, h("a", { id: "csv", download: "traffic.csv" }, "Export CSV"));
  root.replaceChildren(h("h1", {}, "Traffic"), controls, h("div", { id: "traffic-body" }));
  load(root);
}
