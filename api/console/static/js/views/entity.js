// One entity (#/entities/<kind>/<value>): current risk per tenant, the risk chart, recent alerts.

import { api } from "../api.js";
import { riskChart } from "../chart.js";
import { fill, h, note } from "../dom.js";
import { onAlert } from "../live.js";
import { alertRow, alertTable } from "./alerts-table.js";
import { fetchEntity, holdsTable, riskNowTable } from "./risk.js";

export function entityView(root, { params }) {
  const [kind, value] = params;
  const abort = new AbortController();
  let destroyChart = () => {};
  const riskBox = h("section", { class: "box" }, h("h2", {}, "Current risk"), note("Loading…"));
  const chartBox = h("section", { class: "box" }, h("h2", {}, "Risk over time"), note("Loading…"));
  // Shown only when the gateway decision denies the entity (a revoked or replayed token, a spent budget).
  const holdsBox = h("section", { class: "box holds-box", hidden: true });
  const alertsBox = h("section", { class: "box" }, h("h2", {}, "Recent alerts"), note("Loading…"));
  const rows = new Map();
  let tbody = null;

  fill(root, 
    h("p", { class: "crumbs" }, h("a", { href: "#/alerts" }, "← Alert queue")),
    h("h1", {}, h("span", { class: "kind" }, kind), " ", value),
    riskBox, holdsBox, chartBox, alertsBox);

  function showAlerts(alerts) {
    const t = alertTable(alerts);
    tbody = t.tbody;
    alerts.forEach((a, i) => rows.set(a.id, t.tbody.children[i]));
    fill(alertsBox, h("h2", {}, "Recent alerts"),
      alerts.length ? h("div", { class: "table-wrap" }, t.table) : note("No alerts for this entity."));
  }

  async function load() {
    try {
      const { data, missing } = await fetchEntity(kind, value, abort.signal);
      if (missing) {
        fill(riskBox, h("h2", {}, "Current risk"), note(missing));
        fill(chartBox, h("h2", {}, "Risk over time"), note("No risk history."));
        // Without the entity record, the queue's entity filter still finds its alerts.
        const page = await api.alerts({ entity: `${kind}:${value}`, suppressed: "include", limit: 50 }, abort.signal);
        showAlerts(page.items);
        return;
      }
      fill(riskBox, h("h2", {}, "Current risk"), riskNowTable(data.risk));
      if (data.holds && data.holds.length) {
        fill(holdsBox, h("h2", {}, "Denied at the gateway"), holdsTable(data.holds));
        holdsBox.hidden = false;
      }
      const box = h("div", { class: "chart-box" });
      fill(chartBox, h("h2", {}, "Risk over time"), box);
      destroyChart = riskChart(box, data.history);
      showAlerts(data.alerts || []);
    } catch (err) {
      if (err.name === "AbortError") return;
      const msg = note(`Could not load: ${err.message}`, "error");
      fill(riskBox, h("h2", {}, "Current risk"), msg);
      fill(chartBox, h("h2", {}, "Risk over time"), msg.cloneNode(true));
      fill(alertsBox, h("h2", {}, "Recent alerts"), msg.cloneNode(true));
    }
  }

  const unsubscribe = onAlert((a) => {
    if (!tbody || a.entity.kind !== kind || a.entity.value !== value) return;
    const tr = alertRow(a);
    tr.classList.add("flash");
    const old = rows.get(a.id);
    if (old) old.replaceWith(tr); else tbody.insertBefore(tr, tbody.firstChild);
    rows.set(a.id, tr);
  });
  load();
  return () => { unsubscribe(); abort.abort(); destroyChart(); };
}
