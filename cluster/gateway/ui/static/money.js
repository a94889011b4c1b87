// Money: what owning the cluster cost against what the same tokens would have cost from a
// cloud, over time and to date; $/Mtok per node beside the reference prices; breakeven.

import { h, figure, num, table, usd } from "./dom.js";
import { get } from "./api.js";
import { lineChart } from "./charts.js";
import { picker, query } from "./range.js";

const chosen = { range: "day" };
const STALE_MS = 30000; // the series are asked for again this often while the page is open
let loaded = 0;
const perMtok = (usdAmount, tokens) => (tokens ? (usdAmount / tokens) * 1e6 : null);

function nodeRows(nodes) {
  return nodes.map((n) => [n.name, num(n.tokens.total), usd(n.cost_usd.total), usd(n.cost_usd.hardware),
    `${usd(n.cost_usd.energy)} (${n.energy.source})`, usd(n.usd_per_mtok, 4), usd(n.marginal_usd_per_mtok, 4),
    usd(perMtok(n.cloud_equivalent_usd, n.tokens.total), 4), usd(n.savings_usd), n.breakeven || (n.paid_off ? "paid off" : "–")]);
}

function priceRows(prices) {
  const used = new Set(Object.values(prices.references || {}));
  return Object.entries(prices.table).map(([name, p]) => [used.has(name) ? `${name} (in use)` : name,
    usd(p.input), usd(p.output), p.cached_input === null ? "–" : usd(p.cached_input)]);
}

function rentedRows(rented) {
  return rented.map((r) => [r.provider, num(r.requests), num(r.tokens.total), usd(r.cost_usd), usd(r.usd_per_mtok, 4)]);
}

async function load(root) {
  loaded = Date.now();
  const body = root.querySelector("#money-body");
  try {
    const m = await get(`/ui/api/money?${query(chosen)}`);
    const s = m.series, ever = m.ever, t = ever.total;
    const x = s.buckets.map((b) => b + s.step);
    const lines = [{ name: "owned (hardware + energy)", values: s.owned_usd }, { name: "cloud-equivalent", values: s.cloud_usd }];
    if (s.rented_usd.some((v) => v > 0)) lines.push({ name: "rented spend", values: s.rented_usd });
    const nums = new Set([1, 2, 3, 4, 5, 6, 7, 8]);
    body.replaceChildren(
      h("div", { class: "totals" },
        figure("saved to date", usd(t.savings_usd), "cloud-equivalent − owned, all time"),
        figure("owned cost to date", usd(t.cost_usd.total), `energy: ${t.energy.source}`),
        figure("cloud-equivalent", usd(t.cloud_equivalent_usd)),
        figure("$/Mtok owned", usd(t.usd_per_mtok, 4), `marginal ${usd(t.marginal_usd_per_mtok, 4)}`),
        figure("breakeven", t.breakeven || (t.paid_off ? "paid off" : "–"), "the whole cluster")),
      h("div", { class: "charts" }, lineChart({ title: "Cumulative cost over the range", x, series: lines, yLabel: "US$", unit: (v) => usd(v, v < 10 ? 2 : 0) })),
      h("h2", {}, "Per node (all time)"),
      table(["node", "tokens", "owned", "hardware", "energy (source)", "$/Mtok amortised", "$/Mtok marginal", "$/Mtok cloud-eq.", "saved", "breakeven"], nodeRows(ever.nodes), nums),
      ever.rented.length ? h("h2", {}, "Rented (all time)") : "",
      ever.rented.length ? table(["provider", "requests", "tokens", "spend", "$/Mtok"], rentedRows(ever.rented), new Set([1, 2, 3, 4])) : "",
      h("h2", {}, "Reference cloud prices ($/Mtok)"),
      h("p", { class: "muted" }, `As of ${ever.prices.as_of} (${ever.prices.origin}); default ${ever.prices.default}.`),
      table(["price", "input", "output", "cached input"], priceRows(ever.prices), new Set([1, 2, 3])));
  } catch (err) {
    body.replaceChildren(h("p", { class: "error" }, err.message));
  }
}

export function refresh(root) {
  if (Date.now() - loaded > STALE_MS) load(root);
}

export function render(root) {
  root.replaceChildren(h("h1", {}, "Money"), h("div", { class: "row" }, picker(chosen, (c) => { Object.assign(chosen, c); load(root); })),
    h("div", { id: "money-body" }));
  load(root);
}
