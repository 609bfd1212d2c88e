// Entity risk pieces shared by the alert page, the entity page and the overview.

import { api } from "../api.js";
import { badge, entityLink, fmtScore, h, time } from "../dom.js";

/** GET /v1/entities/{kind}/{value}, or {missing: message} when the server has none (404). */
export async function fetchEntity(kind, value, signal) {
  try {
    return { data: await api.entity(kind, value, signal) };
  } catch (err) {
    if (err.status === 404) return { missing: "No risk record for this entity." };
    throw err;
  }
}

export function scoreBar(score) {
  const n = Math.max(0, Math.min(100, Number(score) || 0));
  const meter = h("meter", { min: 0, max: 100, low: 40, high: 75, optimum: 0, value: n, title: fmtScore(n) });
  return h("span", { class: "score" }, meter, " ", fmtScore(n));
}

export function levelBadge(level) {
  return badge("sev", level || "low");
}

export function actionBadge(action) {
  return badge("action", action || "allow");
}

function reasonsList(reasons) {
  return reasons && reasons.length ? h("ol", { class: "reasons compact" }, reasons.map((r) => h("li", {}, r))) : "–";
}

/** Current risk per tenant: [{tenant, score, level, action, reasons, as_of}]. */
export function riskNowTable(rows) {
  if (!rows || !rows.length) return h("p", { class: "muted" }, "No current risk score.");
  return h("table", { class: "risk-now" },
    h("thead", {}, h("tr", {}, ["Tenant", "Score", "Level", "Action", "Reasons", "As of"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", { dataset: { tenant: r.tenant } },
      h("td", {}, r.tenant), h("td", {}, scoreBar(r.score)), h("td", {}, levelBadge(r.level)),
      h("td", {}, actionBadge(r.action)), h("td", {}, reasonsList(r.reasons)), h("td", {}, time(r.as_of))))));
}

/** Holds of one entity: [{tenant, type, reason, since, until}] — what the gateway decision denies it for. */
export function holdsTable(holds) {
  return h("table", { class: "holds" },
    h("thead", {}, h("tr", {}, ["Tenant", "Because", "Reason", "Since", "Until"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, holds.map((x) => h("tr", { dataset: { type: x.type } },
      h("td", {}, x.tenant), h("td", {}, x.type), h("td", {}, x.reason), h("td", {}, time(x.since)),
      h("td", {}, time(x.until))))));
}

/** The overview's riskiest entities: [{tenant, kind, value, score, level, action, reasons, as_of}]. */
export function riskiestTable(items) {
  if (!items || !items.length) return h("p", { class: "muted" }, "No entity carries any risk right now.");
  return h("table", { class: "riskiest" },
    h("thead", {}, h("tr", {}, ["Entity", "Tenant", "Score", "Level", "Action", "Top reason", "As of"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((r) => h("tr", { dataset: { kind: r.kind, value: r.value } },
      h("td", {}, entityLink({ kind: r.kind, value: r.value })), h("td", {}, r.tenant),
      h("td", {}, scoreBar(r.score)), h("td", {}, levelBadge(r.level)), h("td", {}, actionBadge(r.action)),
      h("td", {}, (r.reasons && r.reasons[0]) || "–"), h("td", {}, time(r.as_of))))));
}
