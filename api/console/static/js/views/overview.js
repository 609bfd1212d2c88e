// The overview (#/overview): the riskiest entities now, and the alert counts.

import { api } from "../api.js";
import { fill, h, note } from "../dom.js";
import { onAlert } from "../live.js";
import { countsPanel } from "./counts.js";
import { riskiestTable } from "./risk.js";

export function overviewView(root) {
  const abort = new AbortController();
  const riskBox = h("section", { class: "box" }, h("h2", {}, "Riskiest entities now"), note("Loading…"));
  const countsBox = h("section", { class: "box" }, h("h2", {}, "Alert counts"), note("Loading…"));
  let timer = null;
  fill(root, h("h1", {}, "Overview"), h("div", { class: "two-col wide-left" }, riskBox, countsBox));

  async function loadRisk() {
    try {
      const page = await api.entities({ limit: 20 }, abort.signal);
      fill(riskBox, h("h2", {}, "Riskiest entities now"), h("div", { class: "table-wrap" }, riskiestTable(page.items)));
    } catch (err) {
      if (err.name === "AbortError") return;
      fill(riskBox, h("h2", {}, "Riskiest entities now"),
        note(err.status === 404 ? "Entity risk is unavailable on this server." : `Could not load: ${err.message}`, "error"));
    }
  }

  async function loadCounts() {
    try {
      fill(countsBox, h("h2", {}, "Alert counts"), countsPanel(await api.counts(abort.signal)));
    } catch (err) {
      if (err.name !== "AbortError") fill(countsBox, h("h2", {}, "Alert counts"), note(`Could not load: ${err.message}`, "error"));
    }
  }

  const unsubscribe = onAlert(() => { clearTimeout(timer); timer = setTimeout(loadCounts, 300); });
  loadRisk();
  loadCounts();
  return () => { unsubscribe(); abort.abort(); clearTimeout(timer); };
}
