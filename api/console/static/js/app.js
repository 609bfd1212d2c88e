// The console's entry point: sign-in, hash routing, the live stream.
//   #/alerts[?filters]   the queue            #/alerts/<id>               one alert
//   #/overview           riskiest entities    #/entities/<kind>/<value>   one entity

import { ApiError, api, session } from "./api.js";
import { $, clear, fill, h, note } from "./dom.js";
import { startLive, stopLive } from "./live.js";
import { alertView } from "./views/alert.js";
import { entityView } from "./views/entity.js";
import { overviewView } from "./views/overview.js";
import { queueView } from "./views/queue.js";

const view = $("#view");
const login = $("#login");
let cleanup = null;
let signingIn = false;

/** "#/alerts/al_1?x=y" -> {name: "alert", params: ["al_1"], query}. */
export function parseRoute(hash) {
  const raw = hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  let parts;
  try {
    parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  } catch (_) {
    return { name: "missing", params: [], query };
  }
  if (!parts.length || (parts[0] === "alerts" && parts.length === 1)) return { name: "queue", params: [], query };
  if (parts[0] === "alerts" && parts.length === 2) return { name: "alert", params: [parts[1]], query };
  if (parts[0] === "entities" && parts.length === 3) return { name: "entity", params: parts.slice(1), query };
  if (parts[0] === "overview" && parts.length === 1) return { name: "overview", params: [], query };
  return { name: "missing", params: [], query };
}

const VIEWS = {
  queue: queueView,
  alert: alertView,
  entity: entityView,
  overview: overviewView,
  missing: (root) => fill(root, h("h1", {}, "Not found"), note("No such page."), h("a", { href: "#/alerts" }, "Alert queue")),
};

function route() {
  if (!session.credential) return login.hidden ? showLogin() : undefined;
  if (cleanup) cleanup();
  cleanup = null;
  const r = parseRoute(location.hash);
  document.querySelectorAll("[data-nav]").forEach((a) => {
    a.classList.toggle("active", a.dataset.nav === (r.name === "overview" ? "overview" : "alerts"));
  });
  view.hidden = false;
  login.hidden = true;
  cleanup = VIEWS[r.name](view, r) || null;
  window.scrollTo(0, 0);
}

function setSignedIn(on) {
  for (const id of ["nav", "whoami", "logout"]) $(`#${id}`).hidden = !on;
  $("#whoami").textContent = on ? session.describe() : "";
  if (on) startLive($("#live"));
  else { stopLive(); $("#live").hidden = true; }
}

function showLogin(message = "") {
  if (cleanup) cleanup();
  cleanup = null;
  setSignedIn(false);
  clear(view);
  view.hidden = true;
  login.hidden = false;
  const error = $("#login-error");
  error.textContent = message;
  error.hidden = !message;
  $("#login-key").focus();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const field = $("#login-key");
  const key = field.value.trim().replace(/^Bearer\s+/i, "");
  if (!key) return;
  const button = ev.target.querySelector("button");
  button.disabled = true;
  session.set(key);
  signingIn = true;
  try {
    await api.counts(); // proves the credential and its alerts:read scope
    field.value = "";
    setSignedIn(true);
    if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/alerts";
    else route();
  } catch (err) {
    session.clear();
    if (err instanceof ApiError && err.status !== 401) {
      showLogin(err.status === 403 ? `This credential cannot read alerts: ${err.message}` : `Sign-in failed: ${err.message}`);
    }
    // a 401 has already come back here through session.onUnauthorized
  } finally {
    signingIn = false;
    button.disabled = false;
  }
});

$("#logout").addEventListener("click", () => {
  session.clear();
  location.hash = "#/alerts";
  showLogin("Signed out.");
});

session.onUnauthorized((reason) => showLogin(signingIn
  ? `The API rejected this credential${reason ? `: ${reason}` : "."}`
  : `Signed out: the API no longer accepts your credential${reason ? ` (${reason})` : ""}. Sign in again.`));
window.addEventListener("hashchange", route);

if (session.credential) {
  setSignedIn(true);
  route();
} else {
  showLogin();
}
