// The alert table shared by the queue and the entity page: one row per alert, updatable in place.

import { alertHref, badge, entityLink, fmtScore, h, time } from "../dom.js";

export function alertRow(alert) {
  const status = [badge("status", alert.status)];
  if (alert.suppression) status.push(" ", h("span", { class: "muted-tag", title: `suppressed by ${alert.suppression.rule}` }, "muted"));
  return h("tr", { dataset: { id: alert.id, severity: alert.severity, status: alert.status } },
    h("td", {}, time(alert.last_seen)),
    h("td", {}, badge("sev", alert.severity)),
    h("td", {}, h("a", { href: alertHref(alert.id), class: "alert-link" }, alert.type)),
    h("td", {}, alert.tenant),
    h("td", {}, entityLink(alert.entity)),
    h("td", { class: "num" }, String(alert.count)),
    h("td", { class: "num" }, fmtScore(alert.risk)),
    h("td", {}, status),
    h("td", {}, alert.assignee || "–"));
}

export function alertTable(alerts = []) {
  const tbody = h("tbody", {}, alerts.map(alertRow));
  // A click anywhere on a row opens the alert (the type cell is the keyboard-reachable link).
  tbody.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) return;
    const tr = ev.target.closest("tr[data-id]");
    if (tr) location.hash = alertHref(tr.dataset.id);
  });
  const table = h("table", { class: "alerts" },
    h("thead", {}, h("tr", {}, ["Last seen", "Severity", "Type", "Tenant", "Entity", "Count", "Risk",
      "Status", "Assignee"].map((c) => h("th", { scope: "col" }, c)))),
    tbody);
  return { table, tbody };
}
