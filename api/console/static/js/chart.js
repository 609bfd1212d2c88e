// The entity's risk over time: one line per tenant, score 0-100 (uPlot, vendored in /console/vendor).

import { fill, h, note } from "./dom.js";

const COLOURS = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2"];

/** history: [{at, tenant, score, level}] -> [xs, ys per tenant] aligned on one time axis. */
export function seriesOf(history) {
  const rows = (history || [])
    .map((r) => ({ t: Date.parse(r.at) / 1000, tenant: String(r.tenant), score: Number(r.score) }))
    .filter((r) => Number.isFinite(r.t) && Number.isFinite(r.score))
    .sort((a, b) => a.t - b.t);
  const tenants = [...new Set(rows.map((r) => r.tenant))].sort();
  const xs = [...new Set(rows.map((r) => r.t))];
  const index = new Map(xs.map((t, i) => [t, i]));
  const ys = tenants.map(() => xs.map(() => null));
  rows.forEach((r) => { ys[tenants.indexOf(r.tenant)][index.get(r.t)] = r.score; });
  return { tenants, data: [xs, ...ys] };
}

/** The time axis's span: the data's, or an hour around a lone instant — left to itself, uPlot spreads a
 * single point's zero-width range over years. */
export function xRange(min, max) {
  if (min == null || max == null || min !== max) return [min, max];
  return [min - 1800, max + 1800];
}

/** Draw into `container`; returns a destroy() for the view's cleanup. */
export function riskChart(container, history) {
  const { tenants, data } = seriesOf(history);
  if (!data[0].length) {
    fill(container, note("No risk history for this entity yet."));
    return () => {};
  }
  if (typeof window.uPlot !== "function") {
    fill(container, note("The chart library did not load.", "error"));
    return () => {};
  }
  const box = h("div", { class: "chart", role: "img", "aria-label": "risk score over time" });
  fill(container, box);
  const width = () => Math.max(280, Math.floor(container.clientWidth || 600));
  const opts = {
    width: width(),
    height: 220,
    // Times in UTC, like every other time in the console.
    tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    scales: { x: { time: true, range: (_u, min, max) => xRange(min, max) }, y: { range: [0, 100] } },
    axes: [{}, { label: "risk", size: 50 }],
    cursor: { drag: { x: true, y: false } },
    series: [
      { label: "time (UTC)" },
      ...tenants.map((tenant, i) => ({
        label: tenant,
        stroke: COLOURS[i % COLOURS.length],
        width: 2,
        spanGaps: true,
        points: { show: data[0].length < 60 },
        value: (_u, v) => (v == null ? "–" : v.toFixed(1)),
      })),
    ],
  };
  const plot = new window.uPlot(opts, data, box);
  const observer = new ResizeObserver(() => plot.setSize({ width: width(), height: 220 }));
  observer.observe(container);
  return () => { observer.disconnect(); plot.destroy(); };
}
