// The alert queue (#/alerts?status=…): filters in the URL, newest first, "load more" by cursor,
// counts beside it, and live updates from the stream applied in place.

import { api } from "../api.js";
import { ALERT_TYPES, clear, fill, h, note, SEVERITIES, STATUSES } from "../dom.js";
import { onAlert } from "../live.js";
import { alertRow, alertTable } from "./alerts-table.js";
import { countsPanel } from "./counts.js";

const FILTERS = ["status", "severity", "type", "tenant", "entity", "since", "until", "suppressed"];
const PAGE = 50; // rows per "load more"; `#/alerts?limit=N` (1-500) overrides it

export function filtersOf(query) {
  const f = {};
  for (const key of FILTERS) {
    const v = (query.get(key) || "").trim();
    if (v) f[key] = v;
  }
  if (!["exclude", "include", "only"].includes(f.suppressed)) f.suppressed = "exclude";
  const limit = Number(query.get("limit"));
  if (Number.isInteger(limit) && limit >= 1 && limit <= 500 && limit !== PAGE) f.limit = limit;
  return f;
}

/** Does `alert` belong in a queue filtered by `f` (the same rules as the API's filters)? */
export function matches(alert, f) {
  const inList = (key, value) => !f[key] || f[key].split(",").map((s) => s.trim()).includes(value);
  if (!inList("status", alert.status) || !inList("severity", alert.severity) || !inList("type", alert.type)) return false;
  if (f.tenant && alert.tenant !== f.tenant) return false;
  if (f.entity) {
    const i = f.entity.indexOf(":");
    const kind = i > 0 ? f.entity.slice(0, i) : "";
    const known = ["subject", "client", "ip", "token", "tenant"].includes(kind) && i < f.entity.length - 1;
    const value = known ? f.entity.slice(i + 1) : f.entity;
    if (alert.entity.value !== value || (known && alert.entity.kind !== kind)) return false;
  }
  const seen = Date.parse(alert.last_seen);
  if (f.since && seen < Date.parse(f.since)) return false;
  if (f.until && seen > Date.parse(f.until)) return false;
  if (f.suppressed === "exclude" && alert.suppression) return false;
  if (f.suppressed === "only" && !alert.suppression) return false;
  return true;
}

function select(name, label, values, current, anyLabel = "any") {
  // A value from the URL that the list lacks (e.g. "high,critical") is kept as an option of its own.
  const all = current && !values.includes(current) ? [...values, current] : values;
  return h("label", {}, label,
    h("select", { name },
      anyLabel === null ? null : h("option", { value: "" }, anyLabel),
      all.map((v) => h("option", { value: v, selected: v === current ? "selected" : null },
        v.replaceAll("_", " ").replaceAll(",", " + ")))));
}

function filterForm(f) {
  // datetime-local holds "YYYY-MM-DDTHH:MM"; the console shows and takes every time in UTC.
  const local = (iso) => (iso ? iso.slice(0, 16) : "");
  return h("form", { class: "filters", id: "filters" },
    select("status", "Status", [...STATUSES, "open,acknowledged"], f.status),
    select("severity", "Severity", [...SEVERITIES, "high,critical"], f.severity),
    select("type", "Type", ALERT_TYPES, f.type),
    h("label", {}, "Tenant", h("input", { name: "tenant", value: f.tenant || "", list: "tenant-list", size: 10 })),
    h("datalist", { id: "tenant-list" }),
    h("label", {}, "Entity", h("input", { name: "entity", value: f.entity || "", placeholder: "kind:value", size: 16 })),
    h("label", {}, "Since (UTC)", h("input", { name: "since", type: "datetime-local", value: local(f.since) })),
    h("label", {}, "Until (UTC)", h("input", { name: "until", type: "datetime-local", value: local(f.until) })),
    select("suppressed", "Suppressed", ["exclude", "include", "only"], f.suppressed, null),
    f.limit ? h("input", { type: "hidden", name: "limit", value: String(f.limit) }) : null,
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Apply"),
      h("a", { href: "#/alerts", class: "reset" }, "Reset")));
}

function hashOf(form) {
  const qs = new URLSearchParams();
  for (const [key, raw] of new FormData(form)) {
    let v = String(raw).trim();
    if (!v || (key === "suppressed" && v === "exclude")) continue;
    if ((key === "since" || key === "until") && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/.test(v)) v += ":00Z";
    qs.set(key, v);
  }
  const s = qs.toString();
  return s ? `#/alerts?${s}` : "#/alerts";
}

export function queueView(root, { query }) {
  const f = filtersOf(query);
  const abort = new AbortController();
  const form = filterForm(f);
  const { table, tbody } = alertTable();
  const status = h("p", { class: "muted", role: "status" }, "Loading…");
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const more = h("button", { type: "button", class: "more", hidden: true }, "Load more");
  const countsBox = h("aside", { class: "side" }, note("Loading counts…"));
  const rows = new Map();
  let cursor = null, countsTimer = null;

  fill(root, 
    h("h1", {}, "Alert queue"),
    form,
    h("div", { class: "split" },
      h("div", { class: "main-col" }, error, h("div", { class: "table-wrap" }, table), h("div", { class: "pager" }, status, more)),
      countsBox));

  form.addEventListener("submit", (ev) => { ev.preventDefault(); location.hash = hashOf(form); });
  form.addEventListener("change", (ev) => {
    if (ev.target.tagName === "SELECT") location.hash = hashOf(form);
  });
  more.addEventListener("click", () => load());

  function showCount() {
    status.textContent = rows.size ? `${rows.size} alert${rows.size === 1 ? "" : "s"} shown` : "No alerts match.";
  }

  async function load() {
    more.disabled = true;
    try {
      const params = { limit: PAGE, ...f };
      if (cursor) params.cursor = cursor;
      const page = await api.alerts(params, abort.signal);
      for (const alert of page.items) {
        if (rows.has(alert.id)) continue;
        const tr = alertRow(alert);
        rows.set(alert.id, tr);
        tbody.appendChild(tr);
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      error.hidden = true;
      showCount();
    } catch (err) {
      if (err.name === "AbortError") return;
      error.textContent = `Could not load alerts: ${err.message}`;
      error.hidden = false;
      status.textContent = "";
    } finally {
      more.disabled = false;
    }
  }

  async function loadCounts() {
    try {
      const counts = await api.counts(abort.signal);
      fill(countsBox, h("h2", {}, "Counts"), countsPanel(counts));
      const list = form.querySelector("#tenant-list");
      clear(list).append(...Object.keys(counts.by_tenant || {}).map((t) => h("option", { value: t })));
    } catch (err) {
      if (err.name !== "AbortError") fill(countsBox, note(`Counts unavailable: ${err.message}`, "error"));
    }
  }

  function apply(alert) {
    const old = rows.get(alert.id);
    if (!matches(alert, f)) {
      if (old) { old.remove(); rows.delete(alert.id); }
    } else {
      const tr = alertRow(alert);
      tr.classList.add("flash");
      if (old) old.replaceWith(tr);
      else tbody.insertBefore(tr, tbody.firstChild);
      rows.set(alert.id, tr);
    }
    showCount();
    clearTimeout(countsTimer);
    countsTimer = setTimeout(loadCounts, 300);
  }

  const unsubscribe = onAlert(apply);
  load();
  loadCounts();
  return () => { unsubscribe(); abort.abort(); clearTimeout(countsTimer); };
}
