// The range picker the Traffic and Money pages share: hour, day, week, month or custom.

import { h } from "./dom.js";

export const RANGES = ["hour", "day", "week", "month", "custom"];

const toInput = (t) => new Date(t * 1000 - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16);
const fromInput = (v) => new Date(v).getTime() / 1000;

export function picker(chosen, onchange) {
  const now = Date.now() / 1000;
  const select = h("select", { "aria-label": "range", id: "range" }, RANGES.map((r) => h("option", { value: r, selected: r === chosen.range }, r)));
  const from = h("input", { type: "datetime-local", "aria-label": "from", value: toInput(chosen.from ?? now - 86400) });
  const to = h("input", { type: "datetime-local", "aria-label": "to", value: toInput(chosen.to ?? now) });
  const custom = h("span", { class: "row" }, from, to);
  custom.hidden = chosen.range !== "custom";
  const fire = () => {
    custom.hidden = select.value !== "custom";
    onchange({ range: select.value, from: fromInput(from.value), to: fromInput(to.value) });
  };
  for (const el of [select, from, to]) el.addEventListener("change", fire);
  return h("span", { class: "row" }, select, custom);
}

export function query(chosen) {
  const q = new URLSearchParams({ range: chosen.range });
  if (chosen.range === "custom") { q.set("from", String(Math.floor(chosen.from))); q.set("to", String(Math.ceil(chosen.to))); }
  return q;
}
