// The API client: every request carries `Authorization: Bearer <credential>` from sessionStorage.
// A 401 anywhere signs the analyst out (the app shows the login form with a message).

const KEY = "gatewatch.credential";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};

export const session = {
  get credential() {
    return sessionStorage.getItem(KEY);
  },
  set(credential) {
    sessionStorage.setItem(KEY, credential);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
  onUnauthorized(handler) {
    onUnauthorized = handler;
  },
  /** What to show in the top bar: the JWT's `sub` (unverified, display only) or "API key". */
  describe() {
    const cred = this.credential || "";
    const parts = cred.split(".");
    if (parts.length === 3) {
      try {
        const raw = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
        const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(raw, (c) => c.charCodeAt(0))));
        if (claims && typeof claims.sub === "string") return `JWT: ${claims.sub}`;
      } catch (_) { /* not a JWT we can read: fall through */ }
      return "bearer JWT";
    }
    return "API key";
  },
};

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${session.credential || ""}`, ...extra };
}

/** Build "/v1/...?a=1" from a path and a params object (empty values left out). */
export function url(path, params = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") qs.set(k, String(v));
  }
  const s = qs.toString();
  return s ? `${path}?${s}` : path;
}

/** The API refused the credential: forget it and let the app show the login form. */
export function unauthorized(reason = "") {
  session.clear();
  onUnauthorized(reason);
}

async function errorOf(res) {
  let code = "http_" + res.status, message = `${res.status} ${res.statusText || "error"}`;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = String(body.error.code || code);
      message = String(body.error.message || message);
    }
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(res.status, code, message);
}

export async function request(method, path, { params, body, signal } = {}) {
  const init = { method, headers: authHeaders({ Accept: "application/json" }), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url(path, params), init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The API cannot be reached.");
  }
  if (res.status === 401) {
    const err = await errorOf(res);
    unauthorized(err.message);
    throw err;
  }
  if (!res.ok) throw await errorOf(res);
  return res.status === 204 ? null : res.json();
}

export const api = {
  get: (path, params, signal) => request("GET", path, { params, signal }),
  patch: (path, body) => request("PATCH", path, { body }),

  alerts: (params, signal) => api.get("/v1/alerts", params, signal),
  counts: (signal) => api.get("/v1/alerts/counts", {}, signal),
  alert: (id, signal) => api.get(`/v1/alerts/${encodeURIComponent(id)}`, {}, signal),
  triage: (id, body) => api.patch(`/v1/alerts/${encodeURIComponent(id)}`, body),
  entity: (kind, value, signal) =>
    api.get(`/v1/entities/${encodeURIComponent(kind)}/${encodeURIComponent(value)}`, {}, signal),
  entities: (params, signal) => api.get("/v1/entities", params, signal),
};
