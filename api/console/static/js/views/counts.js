// The alert counts (GET /v1/alerts/counts) as small link lists: each count opens the filtered queue.

import { h, SEVERITIES, STATUSES } from "../dom.js";

// Severities worst first and statuses in workflow order; types and tenants by count.
const ORDER = { severity: [...SEVERITIES].reverse(), status: STATUSES };

function rank(param, key) {
  const i = (ORDER[param] || []).indexOf(key);
  return i < 0 ? Infinity : i;
}

function group(title, counts, param) {
  const entries = Object.entries(counts || {})
    .sort((a, b) => rank(param, a[0]) - rank(param, b[0]) || b[1] - a[1] || a[0].localeCompare(b[0]));
  return h("section", { class: "count-group", dataset: { group: param } },
    h("h3", {}, title),
    entries.length
      ? h("ul", {}, entries.map(([key, n]) => h("li", {},
        h("a", { href: `#/alerts?${new URLSearchParams({ [param]: key, suppressed: "include" })}` }, key),
        h("span", { class: "n" }, String(n)))))
      : h("p", { class: "muted" }, "none"));
}

export function countsPanel(counts) {
  return h("div", { class: "counts", dataset: { testid: "counts" } },
    h("div", { class: "totals" },
      h("div", {}, h("span", { class: "big", dataset: { count: "total" } }, String(counts.total ?? 0)), " alerts"),
      h("div", {}, h("span", { class: "big", dataset: { count: "suppressed" } }, String(counts.suppressed ?? 0)),
        " suppressed")),
    group("By severity", counts.by_severity, "severity"),
    group("By status", counts.by_status, "status"),
    group("By type", counts.by_type, "type"),
    group("By tenant", counts.by_tenant, "tenant"));
}
