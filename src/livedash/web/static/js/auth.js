// Signing in: with a password (a session: a short access token, renewed ahead of its expiry
// with the refresh token, which rotates), with a wall screen's `dashboard` API key (given in
// the address's fragment, `#key=ldk_...`, or pasted: the key itself renews the access token, so
// the screen never needs a person), or with an access token pasted or given in the fragment
// (`#token=...`). Fragments are never sent to the server and are removed from the address.
//
// Tokens live in sessionStorage (this tab, until it closes); a wall screen keeps them in
// localStorage, so that a restarted browser carries on with nobody there to sign in.
import { byId } from "./dom.js";

const TOKEN_KEY = "livedash.token";
const REFRESH_KEY = "livedash.refresh"; // a signed-in session's refresh token
const API_KEY = "livedash.key"; // a wall screen's dashboard key
const KEY_MARK = "ldk_";
const REFRESH_AHEAD_S = 60; // refresh the access token this long before it expires
const RETRY_REFRESH_S = 15; // after a network failure
const REFUSED_AGAIN_MS = 30_000;
export const SESSION_ENDED = "Session ended — sign in again";
export const KEY_REFUSED = "This screen's key was refused — ask IT for a new one";

export class Auth {
  accessToken = null; // kept in memory only
  #signedIn = false; // a session renewed here: a password's (refresh token) or a key's
  #keyed = false; // ... renewed with a wall screen's key
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
      if (token.startsWith(KEY_MARK)) this.useKey(token);
      else if (token) this.useToken(token);
    });
    ui.passwordLogin.addEventListener("submit", (event) => {
      event.preventDefault();
      const username = ui.username.value.trim();
      if (username && ui.password.value) this.signIn(username, ui.password.value);
    });
    ui.signOut.addEventListener("click", () => this.signOut());
    // A link with a new #token= opened on this page changes only the hash: no reload.
    window.addEventListener("hashchange", () => {
      const { token, key } = credentialsFromHash();
      if (key) this.useKey(key);
      else if (token) this.useToken(token);
    });
    const { token, key } = credentialsFromHash();
    if (key) this.useKey(key);
    else if (token) this.useToken(token);
    else if (this.#storage.getItem(API_KEY)) this.#resume({ keyed: true });
    else if (this.#storage.getItem(TOKEN_KEY)) this.useToken(this.#storage.getItem(TOKEN_KEY));
    else if (this.#storage.getItem(REFRESH_KEY)) this.#resume({ keyed: false });
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
    this.#leaveSession();
    this.#ui.token.value = token;
    this.accessToken = token;
    this.on.notice("");
    this.on.connect();
  }

  /** A wall screen's key replaces any signed-in session; it signs in, and renews, by itself. */
  useKey(key) {
    this.#leaveSession();
    this.#ui.token.value = "";
    this.#storage.setItem(API_KEY, key);
    this.on.notice("");
    this.#resume({ keyed: true });
  }

  // End a password session on the server too, and forget any credential of another kind.
  #leaveSession() {
    const refreshToken = this.#storage.getItem(REFRESH_KEY);
    if (refreshToken) post("/api/auth/logout", { refresh_token: refreshToken }).catch(() => {});
    clearTimeout(this.#refreshTimer);
    this.#signedIn = false;
    this.#keyed = false;
    this.#storage.removeItem(REFRESH_KEY);
    this.#storage.removeItem(API_KEY);
    this.#storage.removeItem(TOKEN_KEY);
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
    if (answer.ok) this.#leaveSession();
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
    this.#keyed = false;
    this.#storage.removeItem(TOKEN_KEY);
    this.#storage.removeItem(REFRESH_KEY);
    this.#storage.removeItem(API_KEY);
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
    if (this.#keyed) return this.#signInWithKey();
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

  // A key's access token, renewed a minute before it expires. True with a new access token;
  // false when the server is out of reach or busy (tried again later) or the key is refused.
  async #signInWithKey() {
    const key = this.#storage.getItem(API_KEY);
    if (!key) return false;
    let answer;
    try {
      answer = await post("/api/auth/key", { api_key: key });
    } catch {
      this.#schedule(RETRY_REFRESH_S);
      return false;
    }
    if (answer.status === 401 || answer.status === 403 || answer.status === 422) {
      this.#end();
      this.on.notice(KEY_REFUSED);
      this.on.status({ kind: "auth-error", text: KEY_REFUSED });
      return false;
    }
    if (!answer.ok) {
      // 429 and 503 among them: a wall of screens restarting together waits its turn.
      const retryAfter = Number(answer.retryAfter);
      this.#schedule(retryAfter > 0 ? retryAfter : RETRY_REFRESH_S);
      return false;
    }
    this.accessToken = answer.data.access_token;
    this.#schedule(Math.max(answer.data.expires_in - REFRESH_AHEAD_S, 5));
    return true;
  }

  async #resume({ keyed }) {
    this.on.status({
      kind: "connecting",
      text: keyed ? "Signing in with this screen's key…" : "Resuming the session…",
    });
    this.#keyed = keyed;
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
  return {
    ok: response.ok,
    status: response.status,
    data,
    retryAfter: response.headers.get("Retry-After"),
  };
}

function credentialsFromHash() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  const key = fragment.get("key");
  if (token || key) {
    // Keep credentials out of the address bar, history and screenshots.
    history.replaceState(history.state, "", location.pathname + location.search);
  }
  return { token, key };
}
