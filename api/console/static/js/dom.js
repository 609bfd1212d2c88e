// Small DOM helpers. Everything from the API is rendered as text (textContent), never as HTML.

/** h("tr", {class: "x", dataset: {id}}, child, "text", [more]) -> element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replace el's children (null/undefined/false children are left out, arrays flattened). */
export function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

/** "2026-11-28T10:00:00.500Z" -> "2026-11-28 10:00:00 UTC" (the raw value goes in a title). */
export function fmtTime(iso) {
  if (!iso) return "–";
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(String(iso));
  return m ? `${m[1]} ${m[2]} UTC` : String(iso);
}

export function time(iso) {
  return h("time", { datetime: iso || undefined, title: iso || undefined }, fmtTime(iso));
}

export function fmtScore(n) {
  return typeof n === "number" && Number.isFinite(n) ? n.toFixed(1) : "–";
}

export function fmtDuration(fromIso, toIso) {
  const ms = Date.parse(toIso) - Date.parse(fromIso);
  if (!Number.isFinite(ms) || ms < 0) return "";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** A value of unknown shape as display text. */
export function show(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export const SEVERITIES = ["low", "medium", "high", "critical"];
export const STATUSES = ["open", "acknowledged", "resolved", "false_positive"];
export const ALERT_TYPES = [
  "replay.nonce", "replay.token_context", "replay.refresh_reuse", "token.revoked_use",
  "token.expired_use", "token.cross_tenant", "token.jti_collision", "token.invalid",
  "token.unencrypted", "traffic.rate_limit", "traffic.ip_not_allowed", "traffic.llm_budget",
  "anomaly.behaviour",
];

export function badge(kind, value) {
  return h("span", { class: `badge ${kind}-${String(value).replace(/[^a-z_]/gi, "")}` },
    String(value).replace("_", " "));
}

export function alertHref(id) {
  return `#/alerts/${encodeURIComponent(id)}`;
}

export function entityHref(kind, value) {
  return `#/entities/${encodeURIComponent(kind)}/${encodeURIComponent(value)}`;
}

export function entityLink(entity) {
  if (!entity) return "–";
  return h("a", { href: entityHref(entity.kind, entity.value), class: "entity" },
    h("span", { class: "kind" }, entity.kind), " ", entity.value);
}

/** A placeholder paragraph: loading, empty, unavailable, error. */
export function note(text, cls = "muted") {
  return h("p", { class: cls }, text);
}
