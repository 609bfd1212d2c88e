// One alert (#/alerts/<id>): facts, suppression, reasons, evidence timeline, the entity's risk chart,
// triage (PATCH /v1/alerts/{id}), audit trail and notes. Live changes to this alert re-render it.

import { api } from "../api.js";
import { riskChart } from "../chart.js";
import { badge, entityHref, entityLink, fill, fmtDuration, fmtScore, h, note, show, STATUSES, time } from "../dom.js";
import { announce, onAlert } from "../live.js";
import { fetchEntity, riskNowTable } from "./risk.js";

function facts(a) {
  const row = (label, value) => [h("dt", {}, label), h("dd", { dataset: { field: label.toLowerCase() } }, value)];
  return h("dl", { class: "facts" },
    row("Type", a.type), row("Severity", badge("sev", a.severity)), row("Tenant", a.tenant),
    row("Entity", entityLink(a.entity)), row("First seen", time(a.first_seen)), row("Last seen", time(a.last_seen)),
    row("Count", String(a.count)), row("Risk", fmtScore(a.risk)), row("Status", badge("status", a.status)),
    row("Assignee", a.assignee || "unassigned"),
    a.close_reason ? row("Closed because", a.close_reason) : null);
}

function suppression(s) {
  if (!s) return null;
  return h("section", { class: "box suppressed" },
    h("h2", {}, "Suppressed"),
    h("dl", { class: "facts" },
      h("dt", {}, "Rule"), h("dd", {}, s.rule), h("dt", {}, "Owner"), h("dd", {}, s.owner),
      h("dt", {}, "Expires"), h("dd", {}, time(s.expires)),
      s.reason ? [h("dt", {}, "Reason"), h("dd", {}, s.reason)] : null));
}

function chips(values) {
  return values && values.length
    ? h("ul", { class: "chips" }, values.map((v) => h("li", {}, h("code", {}, show(v)))))
    : h("p", { class: "muted" }, "none");
}

function kvTable(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("p", { class: "muted" }, "none");
  return h("table", { class: "kv" }, h("tbody", {}, entries.map(([k, v]) =>
    h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, h("code", {}, show(v)))))));
}

function evidence(a) {
  const ev = a.evidence || {};
  const other = Object.fromEntries(Object.entries(ev).filter(([k]) => !["event_ids", "token_fps", "figures", "entities"].includes(k)));
  const span = fmtDuration(a.first_seen, a.last_seen);
  return h("section", { class: "box evidence" },
    h("h2", {}, "Evidence"),
    h("ol", { class: "timeline" },
      h("li", {}, time(a.first_seen), h("span", {}, "first seen")),
      h("li", { class: "mid" }, h("span", {}, `${a.count} signal${a.count === 1 ? "" : "s"}${span ? ` over ${span}` : ""}`)),
      h("li", {}, time(a.last_seen), h("span", {}, "last seen"))),
    h("h3", {}, "Event ids"), chips(ev.event_ids),
    h("h3", {}, "Token fingerprints"), chips(ev.token_fps),
    h("h3", {}, "Detector figures"), kvTable(ev.figures),
    Array.isArray(ev.entities) && ev.entities.length
      ? [h("h3", {}, "Entities involved"), h("ul", { class: "chips" }, ev.entities.map((e) => h("li", {}, entityLink(e))))]
      : null,
    Object.keys(other).length ? [h("h3", {}, "Other evidence"), kvTable(other)] : null);
}

function auditTrail(a) {
  const rows = a.audit || [];
  return h("section", { class: "box" },
    h("h2", {}, "Audit trail"),
    rows.length
      ? h("table", { class: "audit" },
        h("thead", {}, h("tr", {}, ["When", "Who", "Field", "From", "To", "Reason"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, time(r.at)), h("td", {}, r.actor), h("td", {}, r.field),
          h("td", {}, show(r.from)), h("td", {}, show(r.to)), h("td", {}, r.reason || "")))))
      : h("p", { class: "muted" }, "No triage yet."));
}

function notes(a) {
  const list = a.notes || [];
  return h("section", { class: "box" },
    h("h2", {}, "Notes"),
    list.length
      ? h("ul", { class: "notes" }, list.map((n) => h("li", {},
        h("div", { class: "meta" }, h("strong", {}, n.author), " · ", time(n.at)), h("p", { class: "text" }, n.text))))
      : h("p", { class: "muted" }, "No notes."));
}

const CLOSING = ["resolved", "false_positive"]; // the API needs a reason for these
const QUICK = [["acknowledged", "Acknowledge"], ["resolved", "Resolve"], ["false_positive", "False positive"], ["open", "Reopen"]];

function triage(a, save, draft = "") {
  const form = h("form", { class: "box triage", id: "triage" },
    h("h2", {}, "Triage"),
    h("div", { class: "quick" }, QUICK.filter(([s]) => s !== a.status).map(([s, label]) =>
      h("button", { type: "button", class: `quick-${s}`, dataset: { status: s } }, label))),
    h("label", {}, "Status", h("select", { name: "status" }, STATUSES.map((s) =>
      h("option", { value: s, selected: s === a.status ? "selected" : null }, s.replace("_", " "))))),
    h("label", {}, "Assignee", h("input", { name: "assignee", value: a.assignee || "", placeholder: "unassigned", maxlength: 200 })),
    h("label", {}, "Close reason", h("input", { name: "reason", value: "", placeholder: "needed to resolve or mark a false positive", maxlength: 500 })),
    h("label", {}, "Note", h("textarea", { name: "note", rows: 3, maxlength: 4000 })),
    h("p", { class: "error", role: "alert", hidden: true }),
    h("p", { class: "ok", role: "status", hidden: true }),
    h("button", { type: "submit" }, "Save"));
  form.elements.note.value = draft;
  const [error, ok] = [form.querySelector(".error"), form.querySelector(".ok")];

  async function submit() {
    const body = {};
    const status = form.elements.status.value;
    const assignee = form.elements.assignee.value.trim() || null;
    const text = form.elements.note.value.trim();
    const reason = form.elements.reason.value.trim();
    if (status !== a.status) body.status = status;
    if (CLOSING.includes(status) && reason) { body.status = status; body.reason = reason; }
    if (assignee !== (a.assignee || null)) body.assignee = assignee;
    if (text) body.note = text;
    error.hidden = ok.hidden = true;
    if (!Object.keys(body).length) {
      ok.textContent = "Nothing to change.";
      ok.hidden = false;
      return;
    }
    form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      await save(body);
    } catch (err) {
      error.textContent = err.status ? `${err.message} (${err.status})` : err.message;
      error.hidden = false;
      form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    }
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); submit(); });
  form.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-status]");
    if (!btn) return;
    form.elements.status.value = btn.dataset.status;
    submit();
  });
  return form;
}

export function alertView(root, { params }) {
  const id = params[0];
  const abort = new AbortController();
  let destroyChart = () => {}, current = null;
  const head = h("div", { class: "page-head" });
  const left = h("div", { class: "col" });
  const right = h("div", { class: "col" });
  const riskBox = h("section", { class: "box risk" }, h("h2", {}, "Entity risk over time"), note("Loading…"));
  fill(root, note("Loading alert…"));

  function render(a, message = "") {
    current = a;
    const draft = root.querySelector("#triage textarea")?.value || "";
    fill(head, 
      h("p", { class: "crumbs" }, h("a", { href: "#/alerts" }, "← Alert queue")),
      h("h1", {}, a.type, " ", badge("sev", a.severity), " ", badge("status", a.status)),
      h("p", { class: "muted mono" }, a.id));
    fill(left, 
      h("section", { class: "box" }, h("h2", {}, "Alert"), facts(a)),
      suppression(a.suppression),
      h("section", { class: "box alert-reasons" }, h("h2", {}, "Reasons"),
        a.reasons && a.reasons.length ? h("ol", { class: "reasons" }, a.reasons.map((r) => h("li", {}, r))) : note("none")),
      evidence(a));
    const form = triage(a, save, message ? "" : draft);
    if (message) {
      const ok = form.querySelector(".ok");
      ok.textContent = message;
      ok.hidden = false;
    }
    fill(right, form, riskBox, auditTrail(a), notes(a));
  }

  async function save(body) {
    const updated = await api.triage(id, body);
    render(updated, "Saved.");
    announce(updated);
  }

  async function loadRisk(a) {
    try {
      const { data, missing } = await fetchEntity(a.entity.kind, a.entity.value, abort.signal);
      const title = h("h2", {}, "Entity risk over time ", h("a", { href: entityHref(a.entity.kind, a.entity.value), class: "small" }, "entity page →"));
      if (missing) return fill(riskBox, title, note(missing));
      const chartBox = h("div", { class: "chart-box" });
      const mine = (data.risk || []).filter((r) => r.tenant === a.tenant);
      fill(riskBox, title, chartBox, riskNowTable(mine.length ? mine : data.risk));
      destroyChart = riskChart(chartBox, data.history);
    } catch (err) {
      if (err.name !== "AbortError") fill(riskBox, h("h2", {}, "Entity risk over time"), note(`Risk unavailable: ${err.message}`, "error"));
    }
  }

  (async () => {
    try {
      const a = await api.alert(id, abort.signal);
      fill(root, head, h("div", { class: "two-col" }, left, right));
      render(a);
      loadRisk(a);
    } catch (err) {
      if (err.name === "AbortError") return;
      fill(root, h("p", { class: "crumbs" }, h("a", { href: "#/alerts" }, "← Alert queue")),
        note(err.status === 404 ? "No such alert (or it is not in your tenants)." : `Could not load the alert: ${err.message}`, "error"));
    }
  })();

  const unsubscribe = onAlert((a) => {
    if (current && a.id === current.id && JSON.stringify(a) !== JSON.stringify(current)) render(a);
  });
  return () => { unsubscribe(); abort.abort(); destroyChart(); };
}
