// Models: desired against ready replicas, where each runs and how far each load is; deploy
// (with its placement previewed), undeploy, drain and uncordon, rebalance (dry run first).
// Every action goes through a confirmation and calls the admin API's own route.

import { h, bar, gib, table } from "./dom.js";
import { post } from "./api.js";
import { confirm } from "./confirm.js";

let current = null; // the state the page was last drawn from, for the actions' refresh

function note(text, error = false) {
  const el = document.getElementById("models-note");
  if (el) { el.textContent = text; el.className = error ? "error" : "muted"; }
}

async function act(title, lines, call, done) {
  if (!(await confirm(title, ...lines))) return;
  try {
    const answer = await call();
    note(done(answer));
  } catch (err) {
    note(err.message, true);
  }
}

function replicaCell(r) {
  const loading = r.bytes_total > 0 && r.state === "loading";
  return h("div", { class: "replica" }, `${r.node} `, h("span", { class: `state ${r.state}` }, r.state),
    r.stage ? h("span", { class: "muted" }, ` ${r.stage}`) : null,
    loading ? bar(r.bytes_done / r.bytes_total) : null,
    r.reason ? h("div", { class: "error" }, r.reason) : null);
}

function modelRows(models) {
  return models.map((m) => [
    m.model,
    m.desired === null || m.desired === undefined ? "–" : String(m.desired),
    String(m.ready ?? m.ready_nodes.length),
    m.replicas ? h("div", {}, m.replicas.map(replicaCell)) : m.nodes.join(", ") || "–",
    m.desired === null || m.desired === undefined ? h("span", { class: "muted" }, "not deployed")
      : h("button", { class: "danger", "data-action": "undeploy", onclick: () => undeploy(m.model) }, "Undeploy"),
  ]);
}

function nodeRows(nodes) {
  return nodes.map((n) => [
    n.name, h("span", { class: `state ${n.state}` }, n.state), n.models.join(", ") || "–",
    n.state === "draining"
      ? h("button", { class: "quiet", "data-action": "uncordon", onclick: () => cordon(n, false) }, "Uncordon")
      : h("button", { class: "quiet", "data-action": "drain", disabled: n.state !== "ready", onclick: () => cordon(n, true) }, "Drain"),
  ]);
}

function undeploy(model) {
  act(`Undeploy ${model}?`, ["Every replica of it is unloaded, and the deployment is forgotten."],
    () => post("/admin/undeploy", { model }), () => `${model} is being undeployed.`);
}

function cordon(node, draining) {
  const verb = draining ? "drain" : "uncordon";
  const lines = draining ? ["No new request goes to it; its replicas are placed elsewhere first; requests in flight finish."]
    : ["It takes requests again."];
  act(`${draining ? "Drain" : "Uncordon"} ${node.name}?`, lines,
    () => post(`/admin/nodes/${encodeURIComponent(node.node_id)}/${verb}`), (a) => `${node.name} is ${a.node.state}.`);
}

function placementLines(answer) {
  const where = answer.placement.map((r) => `${r.node} (about ${gib(r.estimate_bytes)}${r.on_disk ? ", on disk" : ""})`);
  return [`${answer.placement.length} replica(s): ${where.join(", ") || "nowhere"}`,
    ...answer.unplaced.map((u) => `not placed: ${u.reason}`)];
}

async function deploy(event) {
  event.preventDefault();
  const form = event.target;
  const body = { model: form.model.value.trim(), replicas: Number(form.replicas.value) || 1 };
  if (form.node.value) body.nodes = [form.node.value];
  try {
    const preview = await post("/admin/deployments", { ...body, dry_run: true });
    await act(`Deploy ${preview.model}?`, placementLines(preview),
      () => post("/admin/deployments", body), (a) => `${a.model}: ${a.placement.length} replica(s) placed.`);
  } catch (err) {
    note(err.message, true);
  }
}

async function rebalance() {
  try {
    const plan = await post("/admin/rebalance?since=1h&dry_run=true");
    const moves = plan.moves.map((m) => `${m.model}: ${m.from} → ${m.to} (${m.reason})`);
    if (!moves.length) return note("Rebalance: nothing to move.");
    await act("Rebalance?", moves, () => post("/admin/rebalance?since=1h"), (a) => `${a.moves.length} move(s) started.`);
  } catch (err) {
    note(err.message, true);
  }
}

export function render(root, state) {
  current = state;
  const nodes = (state.overview?.nodes || []).map((n) => h("option", { value: n.node_id }, n.name));
  const form = h("form", { class: "card row", id: "deploy-form", onsubmit: deploy },
    h("input", { name: "model", placeholder: "model (path, hub id or demo)", required: true }),
    h("input", { name: "replicas", type: "number", min: 1, value: 1, class: "narrow", "aria-label": "replicas" }),
    h("select", { name: "node", "aria-label": "node" }, h("option", { value: "" }, "any node"), nodes),
    h("button", { type: "submit" }, "Deploy…"),
    h("button", { type: "button", class: "quiet", onclick: rebalance }, "Rebalance…"));
  root.replaceChildren(h("h1", {}, "Models"), form, h("p", { id: "models-note", class: "muted" }),
    h("div", { id: "models-body" }));
  refresh(root, state);
}

export function refresh(root, state) {
  current = state;
  const body = root.querySelector("#models-body");
  const data = current.overview;
  if (!body || !data) return;
  body.replaceChildren(
    table(["model", "desired", "ready", "where", ""], modelRows(data.models)),
    h("h2", {}, "Nodes"),
    table(["node", "state", "models", ""], nodeRows(data.nodes)));
}
