// The one socket: connecting, authenticating, subscribing, and recovery after a reconnect
// (docs/api.md, "Recovery"): the page remembers the last stream position {epoch, offset} it
// has seen and sends it back as `since` when it subscribes again, so the service replays
// exactly what was missed (or sends a snapshot when it cannot: another epoch, or too old).
//
// It reports its state as {kind, ...}: connecting, authenticating, live, degraded (with the
// service's reasons), stale (with the data's age), reconnecting (with the attempt), offline,
// auth-error. status.js writes it for people.
import { SHOWN } from "./metrics.js";

const REQUEST_TIMEOUT_MS = 15_000;
// A connection attempt that neither opens nor fails (a proxy that swallowed the upgrade) is
// given up after this, and the next one made; socket.io-client's own default is 20 s. Well
// above a handshake's time in a reconnect storm (p99 1.5 s with 10,000 screens).
const CONNECT_TIMEOUT_MS = 8_000;
const RETRIED = new Set(["rate_limited", "unavailable"]); // with `retry_after`: ask again then
const SAID_IN_PLACE = new Set(["explain_metric"]); // why.js says its refusals in its dialog
const MAX_TRIES = 6;
const RECONNECT_MAX_MS = 30_000;

const jitter = (ms) => ms + Math.random() * Math.min(ms, 2000);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Connection {
  #socket = null;
  #position = null; // the newest stream position seen: {epoch, offset}
  #subscribing = false; // a subscription's answer is awaited: positions wait for it
  #service = null; // the last connection_status
  #authenticated = false;
  #manualRetry = null;
  #manualAttempts = 0;
  #retryAfter = null; // seconds, from a refusal on connecting
  #listeners = new Map(); // event -> Set of fn: listen()

  /**
   * `token()` gives the access token to send (read again on every reconnect); the callbacks:
   * onState(state), onAuthenticated(info), onAuthError(error), onSubscribed(ack),
   * onNotice(text).
   */
  constructor({ store, freshness, token, ...callbacks }) {
    this.store = store;
    this.freshness = freshness;
    this.token = token;
    this.on = callbacks;
  }

  /** A socket is open or reconnecting (not signed out). */
  get opened() {
    return this.#socket !== null;
  }

  get connected() {
    return this.#socket !== null && this.#socket.connected;
  }

  /** Connected and authenticated: requests may be sent. */
  get ready() {
    return this.connected && this.#authenticated;
  }

  /** Open a socket with the current token (closing any other). */
  open() {
    this.close();
    this.#position = null;
    this.#state({ kind: "connecting" });
    // `auth` as a function, so that a reconnect after a token refresh sends the newest token.
    // `updates: "batched"`: every value that changed in one send comes in one
    // `dashboard_updates` (docs/api.md), not a frame per figure.
    const socket = io({
      auth: (send) => send({ token: this.token(), updates: "batched" }),
      transports: ["websocket", "polling"],
      forceNew: true,
      timeout: CONNECT_TIMEOUT_MS,
    });
    this.#socket = socket;

    socket.on("connect", () => {
      this.#manualAttempts = 0;
      this.#state({ kind: "authenticating" });
    });
    socket.on("authenticated", (info) => this.#onAuthenticated(info));
    socket.onAny((event, payload) => {
      if (event !== "authenticated") this.#tell(event, payload);
    });
    socket.on("auth_error", (error) => {
      this.#authenticated = false;
      this.freshness.broken();
      this.on.onAuthError(error);
    });
    socket.on("connection_status", (status) => {
      this.#service = status;
      this.freshness.syncClock(status.server_time);
      this.#serviceFreshness(status);
      if (this.#authenticated) this.#showService();
    });
    socket.on("metrics_snapshot", (snapshot) => {
      this.freshness.syncClock(snapshot.server_time);
      // Versions decide: a live update that came first may be newer than these values.
      for (const value of snapshot.values) this.store.apply(value);
      this.#remember(snapshot.position);
    });
    socket.on("dashboard_updates", ({ updates }) => {
      for (const update of updates) this.#applyLive(update);
    });
    // What a service from before `dashboard_updates` sends (one still running during a
    // rolling deploy ignores `updates: "batched"`).
    socket.on("dashboard_update", (update) => this.#applyLive(update));
    socket.on("error", (error) => {
      if (error.event === "connect") {
        // Refused on connecting (too many connections, draining): it says when to come back.
        this.#retryAfter = error.retry_after ?? null;
        this.#state({ kind: "reconnecting", reason: error.message });
      } else if (!RETRIED.has(error.code) && !SAID_IN_PLACE.has(error.event)) {
        this.on.onNotice(`The server refused ${error.event || "a request"}: ${error.message}`);
      }
    });
    socket.on("disconnect", () => {
      this.#authenticated = false;
      this.freshness.broken();
      if (socket.active) this.#state({ kind: "reconnecting" });
      else this.#reconnectLater(socket);
    });
    socket.on("connect_error", (error) => {
      this.freshness.broken();
      if (socket.active) this.#state({ kind: "reconnecting", reason: "server unreachable" });
      else this.#reconnectLater(socket, error.message);
    });
    socket.io.on("reconnect_attempt", (attempt) => {
      this.#state({ kind: "reconnecting", attempt });
    });
  }

  /**
   * Call `fn(payload)` for every `event` the service sends (`alert`, `notification`), on this
   * socket and on any opened later, and with `authenticated` on every authentication (a
   * reconnect: what was missed meanwhile is to be read again); returns the unsubscribe.
   */
  listen(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(fn);
    return () => this.#listeners.get(event)?.delete(fn);
  }

  #tell(event, payload) {
    for (const fn of [...(this.#listeners.get(event) ?? [])]) fn(payload);
  }

  /** Close the socket without reporting it (signing out, or opening another). */
  close() {
    clearTimeout(this.#manualRetry);
    if (this.#socket === null) return;
    this.#socket.off();
    this.#socket.io.off();
    this.#socket.disconnect();
    this.#socket = null;
    this.#authenticated = false;
    this.#service = null;
  }

  /** Authenticate the open socket again, with a refreshed token; it keeps its subscriptions. */
  reauthenticate() {
    if (this.connected) this.#socket.emit("authenticate", { token: this.token() });
  }

  /**
   * Send `event` and resolve with its answer; a refusal that says when to ask again
   * (rate_limited, unavailable: `retry_after`) is retried then, `tries` times at most, on the
   * same socket. Rejects with the error payload otherwise.
   */
  async request(event, payload, { tries = MAX_TRIES } = {}) {
    const socket = this.#socket;
    for (let attempt = 1; ; attempt += 1) {
      if (socket !== this.#socket || !this.ready) throw { code: "offline", message: "offline" };
      const answer = await new Promise((resolve) => {
        socket.timeout(REQUEST_TIMEOUT_MS).emit(event, payload, (timeout, reply) => {
          resolve(timeout ? { ok: false, code: "timeout", message: "no answer" } : reply);
        });
      });
      if (answer && answer.ok === false) {
        if (RETRIED.has(answer.code) && attempt < tries) {
          await sleep(jitter(1000 * (answer.retry_after ?? Math.min(attempt, 30))));
          continue;
        }
        throw answer;
      }
      return answer;
    }
  }

  /** One stored series (`request_historical`), by hour from `from` to `to` (Dates). */
  history(metric, department, from, to) {
    return this.request("request_historical", {
      metric,
      department,
      from: from.toISOString(),
      to: to.toISOString(),
      granularity: "hour",
    });
  }

  #onAuthenticated(info) {
    this.#authenticated = true;
    // Those already listening read again what they hold; a view the page builds anew for
    // this identity (in onAuthenticated) reads it once, as it mounts.
    this.#tell("authenticated", info);
    this.on.onAuthenticated(info);
    this.#subscribe(info);
  }

  // Sent on every authentication: a reconnect (the server forgets subscriptions with the
  // socket) subscribes again, with the last position seen, and gets exactly what it missed.
  async #subscribe(info) {
    const offered = new Set(info.metrics);
    const request = { metrics: SHOWN.filter((metric) => offered.has(metric)) };
    if (this.#position) request.since = this.#position;
    this.#subscribing = true;
    const socket = this.#socket;
    let ack;
    try {
      // Until it is answered: many screens of one account reconnecting at once (a restart)
      // share its rate limit, and each gets its turn.
      ack = await this.request("subscribe_metrics", request, { tries: Infinity });
    } catch (error) {
      if (socket === this.#socket) {
        this.#subscribing = false;
        if (error.code !== "offline") this.on.onNotice(`Cannot subscribe: ${error.message}`);
      }
      return;
    }
    if (socket !== this.#socket) return;
    this.#subscribing = false;
    if (ack.position) this.#position = ack.position;
    this.freshness.live();
    this.#serviceFreshness(this.#service);
    this.#showService();
    this.on.onSubscribed(ack);
  }

  #applyLive(update) {
    this.store.apply(update, { live: true });
    // During a replay live updates interleave: the position moves only after the answer.
    if (!this.#subscribing) this.#remember(update.position);
  }

  #remember(position) {
    if (!position) return;
    const held = this.#position;
    if (!held || held.epoch !== position.epoch || position.offset > held.offset) {
      this.#position = position;
    }
  }

  #serviceFreshness(status) {
    if (status?.status === "stale") {
      const age = (status.data_age_seconds ?? 0) * 1000;
      this.freshness.serviceStale(Date.parse(status.server_time) - age);
    } else {
      this.freshness.serviceStale(null);
    }
  }

  // What the service says about itself, once the figures flow.
  #showService() {
    const status = this.#service ?? { status: "connected", degraded: [], reasons: {} };
    if (status.status === "stale") {
      this.#state({ kind: "stale", since: this.freshness.asOf(), reasons: status.reasons });
    } else if (status.status === "degraded") {
      this.#state({ kind: "degraded", degraded: status.degraded, reasons: status.reasons });
    } else if (status.status === "draining") {
      this.#state({ kind: "reconnecting", reason: "server restarting" });
    } else {
      this.#state({ kind: "live" });
    }
  }

  // The server ended the session itself (socket.io does not reconnect then): connect again
  // after a growing, jittered pause, so that many screens do not all come back at once.
  #reconnectLater(socket, reason) {
    if (socket !== this.#socket) return;
    this.#manualAttempts += 1;
    const backoff = Math.min(1000 * 2 ** this.#manualAttempts, RECONNECT_MAX_MS);
    const delay = jitter(this.#retryAfter !== null ? this.#retryAfter * 1000 : backoff);
    this.#retryAfter = null;
    this.#state({ kind: "reconnecting", attempt: this.#manualAttempts, reason });
    clearTimeout(this.#manualRetry);
    this.#manualRetry = setTimeout(() => {
      if (socket === this.#socket && !socket.connected) socket.connect();
    }, delay);
  }

  #state(state) {
    this.on.onState(state);
  }
}
