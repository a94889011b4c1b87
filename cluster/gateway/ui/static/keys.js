// Keys: every API key with its usage, create (the secret shown once) and revoke.

import { h, num, table, when } from "./dom.js";
import { get, post } from "./api.js";
import { confirm } from "./confirm.js";

async function load(root) {
  const body = root.querySelector("#keys-body");
  try {
    const [{ keys }, usage] = await Promise.all([get("/admin/keys"), get("/admin/usage?since=30d&by=key")]);
    const used = Object.fromEntries(usage.groups.map((g) => [g.key, g]));
    const rows = keys.map((k) => {
      const u = used[k.key_id] || {};
      return [k.name, h("code", {}, k.key_id), k.models.length ? k.models.join(", ") : "all",
        num(u.requests || 0), num((u.prompt_tokens || 0) + (u.completion_tokens || 0)),
        k.revoked_at ? `revoked ${when(k.revoked_at)}` : `since ${when(k.created_at)}`,
        k.revoked_at ? "" : h("button", { class: "danger", "data-action": "revoke", onclick: () => revoke(root, k.name) }, "Revoke")];
    });
    body.replaceChildren(keys.length
      ? table(["name", "id", "models", "requests (30 d)", "tokens (30 d)", "state", ""], rows, new Set([3, 4]))
      : h("p", { class: "muted" }, "No API key yet."));
  } catch (err) {
    body.replaceChildren(h("p", { class: "error" }, err.message));
  }
}

async function revoke(root, name) {
  if (!(await confirm(`Revoke ${name}?`, "Every gateway refuses it within seconds. This cannot be undone."))) return;
  try { await post(`/admin/keys/${encodeURIComponent(name)}/revoke`); } catch (err) { alertIn(root, err.message); }
  load(root);
}

function alertIn(root, text, secret) {
  root.querySelector("#keys-note").replaceChildren(secret
    ? h("div", {}, h("p", {}, text), h("div", { class: "secret", id: "new-secret" }, secret))
    : h("p", { class: "error" }, text));
}

async function create(event, root) {
  event.preventDefault();
  const form = event.target;
  const models = form.models.value.split(",").map((m) => m.trim()).filter(Boolean);
  try {
    const made = await post("/admin/keys", { name: form.name.value.trim(), models });
    alertIn(root, `Key ${made.name} made. Copy it now: it is never shown again.`, made.key);
    form.reset();
    load(root);
  } catch (err) {
    alertIn(root, err.message);
  }
}

export function render(root) {
  const form = h("form", { class: "card row", onsubmit: (e) => create(e, root) },
    h("input", { name: "name", placeholder: "name", required: true }),
    h("input", { name: "models", placeholder: "models (comma-separated; empty: all)" }),
    h("button", { type: "submit" }, "Create key"));
  root.replaceChildren(h("h1", {}, "Keys"), form, h("div", { id: "keys-note" }), h("div", { id: "keys-body" }));
  load(root);
}
