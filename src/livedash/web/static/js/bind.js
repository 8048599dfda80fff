// A view's live bindings: elements that show a value of the store and change in place when
// it does, and the freshness line of each tile, redrawn every second. A view makes one Binder,
// and disposes of it when it is replaced.
import { el, flash } from "./dom.js";
import * as fmt from "./format.js";
import { tierOf } from "./metrics.js";
import { HOSPITAL, keyOf } from "./store.js";

export class Binder {
  #store;
  #freshness;
  #watchers = new Map(); // key -> Set of fn(entry, live)
  #tickers = new Set();
  #unsubscribe;

  constructor(store, freshness) {
    this.#store = store;
    this.#freshness = freshness;
    this.#unsubscribe = store.subscribe((entry, live) => {
      for (const watcher of this.#watchers.get(keyOf(entry.metric, entry.department)) ?? []) {
        watcher(entry, live);
      }
    });
  }

  get store() {
    return this.#store;
  }

  get freshness() {
    return this.#freshness;
  }

  /** Whether figures of `tier` are stale now (freshness.js). */
  isStale(tier) {
    return this.#freshness.isStale(tier);
  }

  /** Call `fn(live)` now and whenever any of `metrics` changes for `department`. */
  watch(metrics, department, fn) {
    const watcher = (_entry, live) => fn(live);
    for (const metric of metrics) {
      const key = keyOf(metric, department);
      if (!this.#watchers.has(key)) this.#watchers.set(key, new Set());
      this.#watchers.get(key).add(watcher);
    }
    fn(false);
  }

  /** The value of `metric` for `department`, as text in a new element, kept current. */
  value(metric, department, { tag = "span", className = "value", format = fmt.value } = {}) {
    const node = el(`${tag}.${className}`, {
      dataset: { metric, department: department ?? HOSPITAL },
    });
    node.textContent = "—";
    this.watch([metric], department, (live) => {
      const text = format(metric, this.#store.value(metric, department));
      if (text === node.textContent) return;
      node.textContent = text;
      if (live) flash(node);
    });
    return node;
  }

  /** Text computed from several metrics (`compute(values)`; undefined until all are held). */
  computed(metrics, department, compute, { tag = "span", className = "value" } = {}) {
    const node = el(`${tag}.${className}`, { dataset: { department: department ?? HOSPITAL } });
    this.watch(metrics, department, (live) => {
      const values = metrics.map((metric) => this.#store.value(metric, department));
      const text = values.some((v) => v === undefined || v === null) ? "—" : compute(values);
      if (text === node.textContent) return;
      node.textContent = text;
      if (live) flash(node);
    });
    return node;
  }

  /** Call `fn()` every second (and on `tick()`): ages and stale marks. */
  every(fn) {
    this.#tickers.add(fn);
    fn();
  }

  /** A tile's freshness line, for its main `metric`; marks `tile` stale per its tier. */
  freshnessLine(tile, metric, department) {
    const tier = tierOf(metric);
    tile.dataset.tier = tier;
    const badge = el("span.stale-badge", { hidden: true }, "Stale");
    const text = el("span.age-text");
    const line = el("p.tile-age", {}, badge, text);
    this.every(() => {
      const stale = this.#freshness.isStale(tier);
      tile.dataset.stale = String(stale);
      badge.hidden = !stale;
      const entry = this.#store.get(metric, department);
      let words;
      if (stale) words = `as of ${fmt.clock(this.#freshness.asOf())}`;
      else if (entry?.changedAt)
        words = `changed ${fmt.ago(this.#freshness.now() - entry.changedAt)}`;
      else words = "waiting for data";
      if (text.textContent !== words) text.textContent = words;
    });
    return line;
  }

  tick() {
    for (const fn of this.#tickers) fn();
  }

  dispose() {
    this.#unsubscribe();
    this.#watchers.clear();
    this.#tickers.clear();
  }
}
