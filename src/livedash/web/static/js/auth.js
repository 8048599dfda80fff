// Signing in: with a password (a session: a short access token, renewed ahead of its expiry
// with the refresh token, which rotates), or with an access token pasted or given in the
// address's fragment (`#token=...`, never sent to the server and removed from the address).
//
// Tokens live in sessionStorage (this tab, until it closes); a wall screen keeps them in
// localStorage, so that a restarted browser carries on with nobody there to sign in.
import { byId } from "./dom.js";

const TOKEN_KEY = "livedash.token";
const REFRESH_KEY = "livedash.refresh"; // a signed-in session's refresh token
const REFRESH_AHEAD_S = 60; // refresh the access token this long before it expires
const RETRY_REFRESH_S = 15; // after a network failure
const REFUSED_AGAIN_MS = 30_000;
export const SESSION_ENDED = "Session ended — sign in again";

export class Auth {
  accessToken = null; // kept in memory only
  #signedIn = false; // a password session, with a refresh token
  #refreshTimer = null;
  #renewedForRefusal = 0; // when a refused token last led to a refresh
  #storage;
  #ui;

  /**
   * `wall`: keep credentials across browser restarts. Callbacks: connect() (open the socket
   * with `accessToken`), refreshed() (a new access token for the open socket), ended() (no
   * credential left: forget the figures), status(state) and notice(text).
   */
  constructor({ wall, ...callbacks }) {
    this.#storage = wall ? localStorage : sessionStorage;
    this.on = callbacks;
    this.#ui = {
      login: byId("login"),
      passwordLogin: byId("password-login"),
      username: byId("username"),
      password: byId("password"),
      tokenDetails: byId("token-details"),
      tokenLogin: byId("token-login"),
      token: byId("token"),
      signOut: byId("sign-out"),
      user: byId("user"),
    };
  }

  /** Wire the sign-in forms, and carry on with a credential held, if any. */
  start() {
    const ui = this.#ui;
    ui.tokenLogin.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = ui.token.value.trim();
      if (token) this.useToken(token);
    });
    ui.passwordLogin.addEventListener("submit", (event) => {
      event.preventDefault();
      const username = ui.username.value.trim();
      if (username && ui.password.value) this.signIn(username, ui.password.value);
    });
    ui.signOut.addEventListener("click", () => this.signOut());
    // A link with a new #token= opened on this page changes only the hash: no reload.
    window.addEventListener("hashchange", () => {
      const token = tokenFromHash();
      if (token) this.useToken(token);
    });
    const token = tokenFromHash() || this.#storage.getItem(TOKEN_KEY);
    if (token) this.useToken(token);
    else if (this.#storage.getItem(REFRESH_KEY)) this.#resume();
    else this.showLogin(true);
  }

  /** The socket accepted the token: keep a pasted one for reloads, show who is in. */
  accepted(info) {
    if (!this.#signedIn) this.#storage.setItem(TOKEN_KEY, this.accessToken);
    this.showLogin(false);
    this.#ui.user.textContent = `${info.sub} · ${info.role.replaceAll("_", " ")}`;
    this.#ui.user.hidden = false;
  }

  /**
   * The socket refused the token. A session's access token may have expired while the server
   * was away: a refresh gets a new one, with nobody asked (once: a fresh token refused again
   * ends the session). A pasted token will not get better by reconnecting with it.
   */
  async refused(error) {
    if (this.#signedIn && Date.now() - this.#renewedForRefusal > REFUSED_AGAIN_MS) {
      this.#renewedForRefusal = Date.now();
      if (await this.#refresh()) {
        this.on.refreshed();
      } else if (this.#signedIn) {
        // Out of reach: the refresh is tried again later. (A session that ended says so.)
        this.on.status({ kind: "reconnecting", reason: "renewing the session" });
      }
      return;
    }
    const signedIn = this.#signedIn;
    this.#end();
    if (!signedIn) this.#ui.tokenDetails.open = true; // show the token that was refused
    this.on.status({ kind: "auth-error", text: `Authentication failed: ${error.message}` });
  }

  /** A pasted or linked access token replaces any signed-in session. */
  useToken(token) {
    const refreshToken = this.#storage.getItem(REFRESH_KEY);
    if (refreshToken) post("/api/auth/logout", { refresh_token: refreshToken }).catch(() => {});
    clearTimeout(this.#refreshTimer);
    this.#signedIn = false;
    this.#storage.removeItem(REFRESH_KEY);
    this.#ui.token.value = token;
    this.accessToken = token;
    this.on.notice("");
    this.on.connect();
  }

  async signIn(username, password) {
    this.on.status({ kind: "connecting", text: "Signing in…" });
    let answer;
    try {
      answer = await post("/api/auth/login", { username, password });
    } catch {
      this.on.status({ kind: "offline", text: "Cannot reach the server" });
      return;
    }
    this.#ui.password.value = "";
    if (!answer.ok) {
      // Problem details (RFC 9457): `detail` says what was wrong.
      const message = answer.data?.detail ?? "sign-in failed";
      this.on.status({ kind: "auth-error", text: `Sign-in failed: ${message}` });
      return;
    }
    this.#startSession(answer.data);
    this.on.notice("");
    this.on.connect();
  }

  signOut() {
    const refreshToken = this.#storage.getItem(REFRESH_KEY);
    if (refreshToken) {
      // Ends the session on the server too; signing out here does not wait for it.
      post("/api/auth/logout", { refresh_token: refreshToken }).catch(() => {});
    }
    this.#end();
    this.#ui.token.value = "";
    this.#ui.password.value = "";
    this.on.notice("");
    this.on.status({ kind: "idle", text: "Signed out" });
  }

  showLogin(show) {
    this.#ui.login.hidden = !show;
    this.#ui.signOut.hidden = show;
    if (show) this.#ui.user.hidden = true;
  }

  /** REST with the access token; the parsed body, or an error with `status`. */
  async get(path) {
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${this.accessToken}` },
      credentials: "omit",
      cache: "no-store",
    });
    if (!response.ok) {
      throw Object.assign(new Error(`${path}: ${response.status}`), { status: response.status });
    }
    return response.json();
  }

  // Forget every credential; show the sign-in.
  #end() {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    this.accessToken = null;
    this.#signedIn = false;
    this.#storage.removeItem(TOKEN_KEY);
    this.#storage.removeItem(REFRESH_KEY);
    this.on.ended();
    this.showLogin(true);
  }

  #startSession(tokens) {
    this.#signedIn = true;
    this.accessToken = tokens.access_token;
    this.#storage.removeItem(TOKEN_KEY);
    this.#storage.setItem(REFRESH_KEY, tokens.refresh_token);
    this.#schedule(Math.max(tokens.expires_in - REFRESH_AHEAD_S, 5));
  }

  #schedule(seconds) {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = setTimeout(async () => {
      if (await this.#refresh()) this.on.refreshed();
    }, seconds * 1000);
  }

  // Trade the refresh token for new tokens. True with a new access token; false when the
  // server is out of reach (tried again later) or the session has ended (signed out here).
  async #refresh() {
    const refreshToken = this.#storage.getItem(REFRESH_KEY);
    if (!refreshToken) return false;
    let answer;
    try {
      answer = await post("/api/auth/refresh", { refresh_token: refreshToken });
    } catch {
      this.#schedule(RETRY_REFRESH_S);
      return false;
    }
    if (answer.status === 401 || answer.status === 422) {
      // Idle timeout, reuse, sign-out elsewhere: the session cannot continue.
      this.#end();
      this.on.notice(SESSION_ENDED);
      this.on.status({ kind: "auth-error", text: SESSION_ENDED });
      return false;
    }
    if (!answer.ok) {
      this.#schedule(RETRY_REFRESH_S);
      return false;
    }
    this.#startSession(answer.data);
    return true;
  }

  async #resume() {
    this.on.status({ kind: "connecting", text: "Resuming the session…" });
    this.#signedIn = true;
    if (await this.#refresh()) this.on.connect();
    // Out of reach: the refresh is tried again, and its success (`refreshed`) connects.
    else if (this.#signedIn) this.on.status({ kind: "reconnecting", reason: "server unreachable" });
  }
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { ok: response.ok, status: response.status, data };
}

function tokenFromHash() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) {
    // Keep the token out of the address bar, history and screenshots.
    history.replaceState(history.state, "", location.pathname + location.search);
  }
  return token;
}
