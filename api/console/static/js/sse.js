// Server-sent events over fetch(): EventSource cannot send an Authorization header, so this reads
// the response body with a ReadableStream reader and parses the event-stream format itself
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).

import { authHeaders, unauthorized } from "./api.js";

/** Feed decoded text in, get {id, event, data} events out (`id` is the last id seen, per the spec). */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.lastId = "";
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.hasData = false;
  }

  push(text) {
    this.buffer += text;
    // A lone "\r" at the end may be the first half of "\r\n": wait for the next chunk.
    const re = /\r\n|\r(?!$)|\n/g;
    let start = 0, m;
    while ((m = re.exec(this.buffer)) !== null) {
      this.line(this.buffer.slice(start, m.index));
      start = m.index + m[0].length;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return; // comment / keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") { this.data.push(value); this.hasData = true; }
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }

  dispatch() {
    if (this.hasData) {
      this.onEvent({ id: this.lastId, event: this.event || "message", data: this.data.join("\n") });
    }
    this.reset();
  }
}

/**
 * Keep reading `path` until stop(): reconnects after errors and stream ends with a growing backoff
 * (1 s … 30 s), resuming with `Last-Event-ID`. `onState` gets "connecting", "live", "retrying",
 * "unavailable" (404: the server has no stream) or "stopped".
 */
export function openStream(path, { onEvent, onState = () => {} }) {
  const controller = new AbortController();
  let lastId = "", delay = 1000, stopped = false, timer = null;

  async function connect() {
    if (stopped) return;
    onState("connecting");
    const headers = authHeaders({ Accept: "text/event-stream", "Cache-Control": "no-cache" });
    if (lastId) headers["Last-Event-ID"] = lastId;
    try {
      const res = await fetch(path, { headers, signal: controller.signal, cache: "no-store" });
      if (res.status === 401) return unauthorized();
      if (res.status === 404 || res.status === 405 || res.status === 403) {
        onState("unavailable", res.status);
        return;
      }
      const type = res.headers.get("Content-Type") || "";
      if (!res.ok || !res.body || !type.startsWith("text/event-stream")) throw new Error(`HTTP ${res.status}`);
      onState("live");
      delay = 1000;
      const parser = new SseParser((ev) => {
        try { onEvent(ev); } catch (err) { console.warn("stream handler failed", err); }
      });
      parser.lastId = lastId;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
        lastId = parser.lastId;
      }
      if (parser.retry) delay = parser.retry;
    } catch (err) {
      if (stopped) return;
    }
    if (stopped) return;
    onState("retrying", delay);
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, 30000);
  }

  connect();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      controller.abort();
      onState("stopped");
    },
  };
}
