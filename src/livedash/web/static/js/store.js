// The values shown, by (metric, department), each with its version and when it arrived.
// Updates, snapshots and replays may arrive in any order (docs/api.md, "Recovery"): for each
// key the highest version wins, except version 0, a count read from the database while no
// instance had the feed's value at hand, which replaces whatever is held.

export const HOSPITAL = ""; // the key of the hospital-wide totals (`department: null`)

export const keyOf = (metric, department) => `${metric}|${department ?? HOSPITAL}`;

export class Store {
  #values = new Map(); // key -> {metric, department, value, version, changedAt, receivedAt}
  #listeners = new Set();
  newest = 0; // epoch ms of the newest change held (the service's clock)

  /** The entry held for (metric, department), or undefined. */
  get(metric, department) {
    return this.#values.get(keyOf(metric, department));
  }

  /** The value held for (metric, department), or undefined. */
  value(metric, department) {
    return this.get(metric, department)?.value;
  }

  /** Keep `update` if it is newer than the value held; tell the listeners. */
  apply(update, { live = false } = {}) {
    const key = keyOf(update.metric, update.department);
    const held = this.#values.get(key);
    if (held !== undefined && update.version !== 0 && update.version <= held.version) return false;
    const changedAt = Date.parse(update.timestamp);
    const entry = {
      metric: update.metric,
      department: update.department ?? null,
      value: update.value,
      version: update.version,
      changedAt: Number.isNaN(changedAt) ? null : changedAt,
      receivedAt: Date.now(),
    };
    this.#values.set(key, entry);
    if (entry.changedAt !== null && entry.changedAt > this.newest) this.newest = entry.changedAt;
    for (const listener of this.#listeners) listener(entry, live);
    return true;
  }

  /** Call `listener(entry, live)` for every value kept from now on; returns the unsubscribe. */
  subscribe(listener) {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Forget every value (signing out, or another identity). */
  clear() {
    this.#values.clear();
    this.newest = 0;
  }
}
