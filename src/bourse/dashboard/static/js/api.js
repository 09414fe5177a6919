// The REST API with the signed-in key. Errors keep the API's status, code, reason and message
// so the ticket can show them next to the field they are about.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
    this.reason = body?.reason;
  }
}

export class Api {
  constructor(keys) {
    this.keys = keys;
  }

  headers(extra = {}) {
    return {
      "APCA-API-KEY-ID": this.keys.key,
      "APCA-API-SECRET-KEY": this.keys.secret,
      ...extra,
    };
  }

  async request(method, path, body) {
    const init = { method, headers: this.headers(), cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
    if (!response.ok && response.status !== 207) throw new ApiError(response.status, data);
    return data;
  }

  get(path) { return this.request("GET", path); }
  post(path, body) { return this.request("POST", path, body); }
  patch(path, body) { return this.request("PATCH", path, body); }
  delete(path) { return this.request("DELETE", path); }
}

// Which optional endpoints this gateway serves (history bars, price alerts), read from its
// OpenAPI document once: asking for a missing one would put a 404 in the console.
export async function servedPaths() {
  try {
    const response = await fetch("/openapi.json", { cache: "no-store" });
    if (!response.ok) return new Set();
    const doc = await response.json();
    return new Set(Object.keys(doc.paths || {}));
  } catch {
    return new Set();
  }
}
