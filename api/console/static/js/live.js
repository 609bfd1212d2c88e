// Live alert updates: one stream per signed-in tab, fanned out to whichever views are listening.

import { openStream } from "./sse.js";

const listeners = new Set();
let stream = null;
let statusEl = null;

const LABELS = {
  connecting: ["connecting…", "pending"],
  live: ["live", "ok"],
  retrying: ["reconnecting…", "pending"],
  unavailable: ["live updates unavailable", "off"],
  stopped: ["", "off"],
};

function setState(state) {
  if (!statusEl) return;
  const [text, cls] = LABELS[state] || [state, "off"];
  statusEl.textContent = text;
  statusEl.className = `live ${cls}`;
  statusEl.dataset.state = state;
  statusEl.title = state === "unavailable"
    ? "The server has no alert stream (GET /v1/alerts/stream): reload to see new alerts."
    : "Alerts stream in as they are raised or change.";
  statusEl.hidden = !text;
}

export function startLive(el) {
  statusEl = el;
  if (stream) return;
  stream = openStream("/v1/alerts/stream", {
    onState: setState,
    onEvent(ev) {
      if (ev.event !== "alert") return;
      let alert;
      try { alert = JSON.parse(ev.data); } catch (_) { return; }
      if (!alert || typeof alert.id !== "string") return;
      for (const fn of listeners) fn(alert);
    },
  });
}

export function stopLive() {
  if (stream) stream.stop();
  stream = null;
}

/** Call `fn(alert)` for every new or changed alert; returns the unsubscribe function. */
export function onAlert(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Tell the listening views about a change this tab made itself (e.g. triage), without the stream. */
export function announce(alert) {
  for (const fn of listeners) fn(alert);
}
