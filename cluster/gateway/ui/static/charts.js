// Charts as SVG, drawn here: a sparkline, and a line chart with axes, units and a legend.

const NS = "http://www.w3.org/2000/svg";
export const COLORS = ["--c0", "--c1", "--c2", "--c3", "--c4", "--c5", "--c6", "--c7", "--c8"]
  .map((v) => `var(${v})`);

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

export function sparkline(values, color = COLORS[0]) {
  const w = 200, hgt = 32, max = Math.max(...values, 1e-9);
  const svg = s("svg", { class: "spark", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none" });
  if (values.length < 2) return svg;
  const pts = values.map((v, i) => `${(i / (values.length - 1)) * w},${hgt - 2 - (v / max) * (hgt - 4)}`);
  svg.append(s("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 1.5, class: "line" }));
  return svg;
}

function niceMax(x) {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= x);
}

function timeLabel(t, span) {
  const d = new Date(t * 1000);
  if (span <= 2 * 86400) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

// series: [{name, values}], x: unix seconds per point; unit formats the y axis.
export function lineChart({ title, x, series, unit = (v) => String(v), yLabel = "" }) {
  const w = 560, hgt = 240, left = 64, right = 36, top = 12, bottom = 40;
  const pw = w - left - right, ph = hgt - top - bottom;
  const all = series.flatMap((d) => d.values);
  const ymax = niceMax(Math.max(0, ...all));
  const x0 = x[0] ?? 0, x1 = x[x.length - 1] ?? 1, span = Math.max(x1 - x0, 1);
  const px = (t) => left + ((t - x0) / span) * pw;
  const py = (v) => top + ph - (v / ymax) * ph;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${w} ${hgt}`, role: "img", "aria-label": title });
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    svg.append(s("line", { class: "grid-line", x1: left, x2: w - right, y1: py(v), y2: py(v) }));
    svg.append(s("text", { x: left - 6, y: py(v) + 4, "text-anchor": "end" }, unit(v)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = x0 + (span * i) / 4;
    svg.append(s("text", { x: px(t), y: hgt - bottom + 16, "text-anchor": "middle" }, timeLabel(t, span)));
  }
  svg.append(s("line", { class: "axis", x1: left, x2: left, y1: top, y2: top + ph }));
  svg.append(s("line", { class: "axis", x1: left, x2: w - right, y1: top + ph, y2: top + ph }));
  series.forEach((d, k) => {
    const color = d.color || COLORS[k % COLORS.length];
    const pts = d.values.map((v, i) => [px(x[i]), py(v)]);
    svg.append(s("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    for (const [cx, cy] of pts) svg.append(s("circle", { class: "point", cx, cy, r: 2, fill: color }));
  });
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((d, k) => {
    const swatch = document.createElement("i");
    swatch.style.background = d.color || COLORS[k % COLORS.length];
    const item = document.createElement("span");
    item.append(swatch, d.name);
    legend.append(item);
  });
  const box = document.createElement("div");
  box.className = "card";
  const heading = document.createElement("h3");
  heading.textContent = yLabel ? `${title} (${yLabel})` : title;
  box.append(heading, svg, legend);
  return box;
}
