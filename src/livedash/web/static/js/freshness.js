// When a figure is stale: the rule every tile, chart and the status line follow.
//
// The service pushes every figure as it changes (critical ones at once, standard ones within
// the coalescing window, the historical tier when its once-a-minute recount changes it). So
// while this page is subscribed and the service says its data are current, every figure held
// is current, however long ago it last changed. The figures are known current "as of":
//   - now, while live (degraded included: a cache down does not delay the figures);
//   - the moment the connection broke, while it is reconnecting or signed out;
//   - the service's `stale_since`, while it cannot reach the database.
// A figure is stale once "as of" is further back than its tier allows:
//   critical 10 s (a reconnect usually takes a few seconds; beyond that a bed or an emergency
//   may have changed), standard 60 s (appointments and revenue move by the minute), historical
//   3 min (growth and trends are recounted every minute from hourly roll-ups).
// The trend charts are read, not pushed: they are stale when their last reading is older than
// STALE_AFTER.chart or the figures' "as of" says so.
// Ages are on the service's clock (from `server_time`), so a screen whose clock is wrong still
// says how old its figures are.

export const STALE_AFTER = {
  critical: 10_000,
  standard: 60_000,
  historical: 180_000,
  chart: 12 * 60_000, // two chart refreshes missed (charts.js reads every 5 minutes)
};

export class Freshness {
  #current = false;
  #everCurrent = false;
  #brokenAt = null; // service-clock ms when the page stopped being current
  #serviceStaleSince = null; // service-clock ms: the database's last known state
  #offset = 0; // service clock minus this screen's clock, ms

  /** Learn the service's clock from a `server_time` it sent. */
  syncClock(serverTime) {
    const at = Date.parse(serverTime);
    if (!Number.isNaN(at)) this.#offset = at - Date.now();
  }

  /** Now, on the service's clock. */
  now() {
    return Date.now() + this.#offset;
  }

  /** The subscription is answered: every figure held is current. */
  live() {
    this.#current = true;
    this.#everCurrent = true;
    this.#brokenAt = null;
  }

  /** The connection broke, or the identity was lost: figures are current up to now. */
  broken() {
    if (this.#current) this.#brokenAt = this.now();
    this.#current = false;
  }

  /** What the service says of its database: stale since `since` (ms), or current (null). */
  serviceStale(since) {
    this.#serviceStaleSince = since;
  }

  get current() {
    return this.#current && this.#serviceStaleSince === null;
  }

  /** The moment up to which the figures are known current (null: none held yet). */
  asOf() {
    if (!this.#everCurrent) return null;
    const now = this.now();
    return Math.min(this.#brokenAt ?? now, this.#serviceStaleSince ?? now);
  }

  /** How far behind the figures may be, in ms (0 while live). */
  age() {
    const asOf = this.asOf();
    return asOf === null ? 0 : Math.max(0, this.now() - asOf);
  }

  /** Whether a figure of `tier` is stale now. */
  isStale(tier) {
    return this.asOf() !== null && this.age() > (STALE_AFTER[tier] ?? STALE_AFTER.critical);
  }

  forget() {
    this.#current = this.#everCurrent = false;
    this.#brokenAt = this.#serviceStaleSince = null;
  }
}
