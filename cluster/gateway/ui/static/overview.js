// Overview: the cluster's live totals and one card per node.

import { h, bar, figure, gib, num, secs } from "./dom.js";
import { sparkline } from "./charts.js";

function nodeCard(n, history) {
  const used = n.memory_total_bytes ? n.memory_used_bytes / n.memory_total_bytes : 0;
  return h("div", { class: "card node", "data-node": n.name },
    h("div", { class: "row spread" }, h("strong", {}, n.name), h("span", { class: `state ${n.state}` }, n.state)),
    h("div", { class: "muted" }, `${n.engines.join(", ") || "–"} · ${n.accelerator || "cpu"} · ${n.address}`),
    h("div", { class: "muted" }, `memory ${gib(n.memory_used_bytes)} of ${gib(n.memory_total_bytes)}`),
    bar(used),
    h("div", {}, "models: ", n.models.length ? n.models.join(", ") : "none"),
    h("div", { class: "row" }, h("span", {}, `running ${n.running}`), h("span", {}, `waiting ${n.waiting}`),
      h("span", { class: "tps" }, `${num(n.decode_tps, 1)} tok/s${n.tps_measured ? "" : " (est.)"}`)),
    sparkline(history || []),
    n.reason ? h("div", { class: "error" }, n.reason) : null);
}

function totals(data) {
  const r = data.recent || {};
  const ready = data.nodes.filter((n) => n.state === "ready").length;
  const window = r.seconds ? ` (last ${Math.round(r.seconds / 60)} min)` : "";
  return h("div", { class: "totals" },
    figure("nodes ready", `${ready} / ${data.nodes.length}`),
    figure("tokens/s", num(r.tokens_per_s, 1), `output${window}`),
    figure("requests/min", num(r.requests_per_min, 1), window.trim()),
    figure("TTFT p50", secs(r.ttft_p50_s)),
    figure("TTFT p95", secs(r.ttft_p95_s)),
    figure("decode capacity", `${num(data.nodes.reduce((a, n) => a + (n.state === "ready" ? n.decode_tps : 0), 0), 1)} tok/s`, "measured, ready nodes"));
}

export function render(root, state) {
  root.replaceChildren(h("h1", {}, "Overview"), h("div", { id: "overview-body" }));
  refresh(root, state);
}

export function refresh(root, state) {
  const body = root.querySelector("#overview-body");
  const data = state.overview;
  if (!body || !data) return;
  const cards = data.nodes.map((n) => nodeCard(n, state.history[n.node_id]));
  body.replaceChildren(totals(data), h("h2", {}, "Nodes"),
    cards.length ? h("div", { class: "grid" }, cards) : h("p", { class: "muted" }, "No node has joined yet."));
}
