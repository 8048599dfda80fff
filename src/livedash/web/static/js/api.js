// The REST API with the signed-in user's token. Every refusal is problem details (RFC 9457,
// docs/api.md "Errors"): an `ApiError` carries its `status`, `code` and `detail`, which the
// page shows as it is. A refusal that says when to come back (429, 503: `retry_after`) is
// asked again then, a few times, as the socket's requests are.

const RETRIED = new Set([429, 503]);
const MAX_TRIES = 3;

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem?.detail ?? (status ? `the server answered ${status}` : "no answer");
    super(detail);
    this.status = status;
    this.code = problem?.code ?? null;
    this.detail = detail;
    this.retryAfter = problem?.retry_after ?? null;
  }

  /** The problem as a sentence people read. */
  get text() {
    return sentence(this.detail);
  }
}

export class Api {
  #auth;

  /** `auth`: whose `accessToken` is sent (auth.js). */
  constructor(auth) {
    this.#auth = auth;
  }

  get(path) {
    return this.send("GET", path).then((answer) => answer.data);
  }

  post(path, body) {
    return this.send("POST", path, body).then((answer) => answer.data);
  }

  put(path, body) {
    return this.send("PUT", path, body).then((answer) => answer.data);
  }

  delete(path) {
    return this.send("DELETE", path).then((answer) => answer.data);
  }

  /** `{status, data, headers}` of a request; rejects with an ApiError. */
  async send(method, path, body) {
    for (let attempt = 1; ; attempt += 1) {
      const response = await this.#fetch(method, path, body);
      if (response.ok) {
        const data = response.status === 204 ? null : await response.json();
        return { status: response.status, data, headers: response.headers };
      }
      const error = new ApiError(response.status, await problemOf(response));
      if (RETRIED.has(error.status) && error.retryAfter !== null && attempt < MAX_TRIES) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(error.retryAfter, 30) * 1000));
        continue;
      }
      throw error;
    }
  }

  /** A file of the API, downloaded as the browser downloads (its name from the server). */
  async download(path, fallbackName) {
    const response = await this.#fetch("GET", path);
    if (!response.ok) throw new ApiError(response.status, await problemOf(response));
    const blob = await response.blob();
    const disposition = response.headers.get("Content-Disposition") ?? "";
    const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? fallbackName;
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    return name;
  }

  async #fetch(method, path, body) {
    const headers = { Authorization: `Bearer ${this.#auth.accessToken}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    try {
      return await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, { detail: "cannot reach the server" });
    }
  }
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** "the report is queued" -> "The report is queued." */
export function sentence(text) {
  const trimmed = String(text).trim();
  if (!trimmed) return "";
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?…]$/.test(capital) ? capital : `${capital}.`;
}

/** `path` with `query` (entries whose value is null or "" left out; arrays repeated). */
export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== null && one !== undefined && one !== "") params.append(name, String(one));
    }
  }
  const search = params.toString();
  return search ? `${path}?${search}` : path;
}
