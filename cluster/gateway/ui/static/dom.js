// Building the page from data: elements made with text nodes (never HTML strings), and the
// number formats every page shares.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function bar(fraction) {
  const fill = h("span");
  fill.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
  return h("div", { class: "bar" }, fill);
}

export function table(headers, rows, numeric = new Set()) {
  const head = h("tr", {}, headers.map((t, i) => h("th", { class: numeric.has(i) ? "num" : "" }, t)));
  const body = rows.map((r) =>
    h("tr", {}, r.map((c, i) => h("td", { class: numeric.has(i) ? "num" : "" }, c))));
  return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
}

export const num = (x, digits = 0) =>
  x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US", { maximumFractionDigits: digits });
export function usd(x, digits = 2) {
  if (x === null || x === undefined) return "–";
  const v = Number(x);
  if (v !== 0 && Math.abs(v) < 0.01) return `$${v.toPrecision(2)}`; // small sums stay visible
  return `$${v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })}`;
}
export const gib = (bytes) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
export const secs = (s) => (s === null || s === undefined ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);
export const when = (t) => new Date(t * 1000).toLocaleString();

export function figure(label, value, note) {
  return h("div", { class: "card figure" }, h("div", { class: "label" }, label),
    h("div", { class: "value" }, value), note ? h("div", { class: "muted" }, note) : null);
}
