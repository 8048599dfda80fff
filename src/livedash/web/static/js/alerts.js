// The alerts panel of a view (the overview, or one department): the open alerts of its scope,
// most severe first, changing live. `GET /api/alerts` gives those open now (in pages); the
// socket's `alert` event every change after that (docs/api.md), kept per alert by its time
// (`at`), so that a list read while an alert changed never brings back an older state.
// After a reconnect the list is read again: alert events are not replayed. Admins and
// super_admins act on an alert from its card (alertcard.js); viewers, and wall screens, get
// no buttons at all.
//
//   mountAlerts({ container, scope, role, connection, auth, directory, pick?, readOnly? })
//     -> { dispose() }
//   scope: null (every alert the identity may see) or a department code; pick: an alert id
//   to pick out (the address's `?alert=`, where notifications link).
import { Api, withQuery } from "./api.js";
import { AlertCard, SEVERITY_NAMES, SEVERITY_RANK } from "./alertcard.js";
import { el } from "./dom.js";
import { kindOf } from "./metrics.js";

const PAGE_LIMIT = 50;
const MANAGING = new Set(["admin", "super_admin"]);
const RULES_KEPT_MS = 5 * 60_000;
const SILENCES_READ_MS = 60_000; // silences made elsewhere are not pushed: read again
// How an anomaly rule's series is written (revenue is in cents).
const SERIES_KINDS = { occupancy: "rate", revenue: "cents" };

let rules = null; // {at, kinds: Map(rule name -> kind)}: the rules in force, for managers

/** Forget what was read for the identity signed in (another one signs in). */
export function forgetAlerts() {
  rules = null;
}

export function mountAlerts(options) {
  const panel = new AlertsPanel(options);
  return { dispose: () => panel.dispose() };
}

class AlertsPanel {
  #scope;
  #role;
  #readOnly;
  #api;
  #directory;
  #pick;
  #latest = new Map(); // id -> the newest message seen (resolved ones too: they stay gone)
  #takenAt = new Map(); // id -> when (this screen's clock) its newest message was taken
  #cards = new Map(); // id -> AlertCard, the open alerts shown
  #silences = [];
  #next = null; // the cursor of the next page
  #reading = 0; // which reading of the list is the current one
  #loaded = false;
  #disposed = false;
  #stop = [];
  #ui;

  constructor({ container, scope, role, connection, auth, directory, pick, readOnly }) {
    this.#scope = scope;
    this.#role = role;
    this.#readOnly = Boolean(readOnly);
    this.#api = new Api(auth);
    this.#directory = directory;
    this.#pick = pick ?? null;
    const more = el("button.secondary.more", { type: "button", hidden: true }, "Show older");
    const retry = el("button.secondary", { type: "button" }, "Try again");
    this.#ui = {
      container,
      title: el("h2#alerts-title.section-title", { tabIndex: -1 }, "Alerts"),
      summary: el("p.alerts-summary", {}, `${this.#where()}: loading…`),
      list: el("ol.alert-list", { "aria-labelledby": "alerts-title" }),
      empty: el("p.alerts-empty", { hidden: true }, "No open alerts."),
      note: el("p.alerts-note", { hidden: true }),
      problem: el("div.alerts-problem", { role: "alert", hidden: true }),
      retry,
      more,
      announcer: el("p.visually-hidden", { "aria-live": "polite" }),
    };
    const ui = this.#ui;
    container.replaceChildren(
      el("div.section-head", {}, ui.title, ui.summary),
      ui.problem,
      ui.note,
      ui.list,
      ui.empty,
      more,
      ui.announcer,
    );
    more.addEventListener("click", () => this.#readMore());
    retry.addEventListener("click", () => this.#read());
    this.#stop.push(
      connection.listen("alert", (alert) => this.#take(alert, { live: true })),
      connection.listen("authenticated", (info) => {
        if (info.role !== this.#role) {
          this.#role = info.role;
          this.#rebuild();
        }
        this.#read();
      }),
    );
    const ticker = setInterval(() => this.#tick(), 1000);
    const silences = setInterval(() => this.#readSilences(), SILENCES_READ_MS);
    this.#stop.push(
      () => clearInterval(ticker),
      () => clearInterval(silences),
    );
    this.#read();
  }

  dispose() {
    this.#disposed = true;
    for (const stop of this.#stop) stop();
  }

  get #manage() {
    return MANAGING.has(this.#role) && !this.#readOnly;
  }

  #where() {
    const directory = this.#directory;
    if (this.#scope !== null) return `The alerts of ${directory.name(this.#scope)}`;
    return directory.seesHospital ? "The alerts of the hospital" : "The alerts of your departments";
  }

  // The first page of the open alerts, again; what it no longer lists has been resolved.
  async #read() {
    const reading = (this.#reading += 1);
    const started = Date.now();
    let page;
    try {
      [page] = await Promise.all([this.#page(null), this.#readRules(), this.#readSilences()]);
    } catch (error) {
      if (reading === this.#reading && !this.#disposed) this.#failed(error);
      return;
    }
    if (reading !== this.#reading || this.#disposed) return;
    this.#ui.problem.hidden = true;
    const listed = new Set(page.items.map((alert) => alert.id));
    const oldest = Math.min(...listed);
    for (const [id, card] of this.#cards) {
      // Within the page's span but not in it: resolved meanwhile (unless it changed since).
      const within = page.next === null || id >= oldest;
      if (within && !listed.has(id) && this.#takenAt.get(id) < started) this.#remove(id);
    }
    for (const alert of page.items) this.#take(alert);
    this.#next = page.next;
    this.#loaded = true;
    this.#show();
    if (this.#pick !== null) this.#picked();
  }

  async #readMore() {
    const button = this.#ui.more;
    button.disabled = true;
    try {
      const page = await this.#page(this.#next);
      if (this.#disposed) return;
      for (const alert of page.items) this.#take(alert);
      this.#next = page.next;
      this.#show();
    } catch (error) {
      if (!this.#disposed) this.#failed(error);
    } finally {
      button.disabled = false;
    }
  }

  #page(cursor) {
    const query = { limit: PAGE_LIMIT, cursor };
    if (this.#scope !== null) query.department = this.#scope;
    return this.#api.get(withQuery("/api/alerts", query));
  }

  // How each rule's values are written: the rules say which metric (admins may read them).
  async #readRules() {
    if (!MANAGING.has(this.#role)) return;
    if (rules !== null && Date.now() - rules.at < RULES_KEPT_MS) return;
    let answer;
    try {
      answer = await this.#api.get("/api/alerts/rules");
    } catch {
      return; // plain numbers will do
    }
    const kinds = new Map();
    for (const rule of answer.document?.rules ?? []) kinds.set(rule.name, kindOf(rule.metric));
    for (const rule of answer.document?.anomaly_rules ?? []) {
      kinds.set(rule.name, SERIES_KINDS[rule.series] ?? "count");
    }
    rules = { at: Date.now(), kinds };
    for (const card of this.#cards.values()) card.measure();
  }

  async #readSilences() {
    if (this.#readOnly) return; // a wall shows the alerts; what is muted is for those who act
    let page;
    try {
      page = await this.#api.get(withQuery("/api/alerts/silences", { limit: 100 }));
    } catch {
      return; // not shown is better than a panel that fails for it
    }
    if (this.#disposed) return;
    this.#silences = page.items;
    for (const card of this.#cards.values()) card.showSilences(this.#silences);
  }

  #failed(error) {
    const { problem, retry } = this.#ui;
    problem.replaceChildren(
      el("p", {}, `The alerts could not be read: ${error.text ?? error.message}`),
      retry,
    );
    problem.hidden = false;
    if (!this.#loaded) this.#ui.summary.textContent = `${this.#where()}: not known`;
  }

  // Keep `alert` if it is the newest message of its alert; show it if it is open here.
  #take(alert, { live = false } = {}) {
    if (this.#disposed) return;
    if (this.#scope !== null && alert.department !== this.#scope) return;
    const held = this.#latest.get(alert.id);
    if (held && Date.parse(held.at) > Date.parse(alert.at)) return;
    this.#latest.set(alert.id, alert);
    this.#takenAt.set(alert.id, Date.now());
    const card = this.#cards.get(alert.id);
    if (alert.status === "resolved") {
      if (card) {
        this.#remove(alert.id);
        if (live) this.#announce(`Resolved: ${alert.title}.`);
      }
    } else if (card) {
      card.update(alert);
    } else {
      this.#add(alert);
      if (live) {
        const severity = SEVERITY_NAMES[alert.severity] ?? alert.severity;
        this.#announce(
          `New ${severity.toLowerCase()} alert in ${this.#directory.name(alert.department)}: ${alert.title}.`,
        );
      }
    }
    if (live) this.#show();
  }

  #add(alert) {
    const card = new AlertCard(alert, {
      api: this.#api,
      manage: this.#manage,
      name: (code) => this.#directory.name(code),
      // The alert names its metric when a threshold rule raised it; anomaly rules' series are
      // known from the rules, which managers may read.
      kind: (alert) =>
        alert.metric ? kindOf(alert.metric) : (rules?.kinds.get(alert.rule) ?? null),
      changed: (changed) => this.#take(changed, { live: true }),
      silenced: () => this.#readSilences(),
      gone: () => this.#ui.title.focus(),
    });
    card.showSilences(this.#silences);
    this.#cards.set(alert.id, card);
  }

  #remove(id) {
    const card = this.#cards.get(id);
    if (!card) return;
    const hadFocus = card.element.contains(document.activeElement);
    card.element.remove();
    this.#cards.delete(id);
    if (hadFocus) this.#ui.title.focus();
  }

  // Another role: the cards again, with or without their buttons.
  #rebuild() {
    const alerts = [...this.#cards.values()].map((card) => card.alert);
    for (const card of this.#cards.values()) card.element.remove();
    this.#cards.clear();
    for (const alert of alerts) this.#add(alert);
    this.#show();
  }

  // The cards in order (most severe, then newest), moved only where out of place so that
  // the focus and an open form stay put; and the summary.
  #show() {
    const { list, summary, empty, more } = this.#ui;
    const ordered = [...this.#cards.values()].sort(
      (a, b) =>
        (SEVERITY_RANK[a.alert.severity] ?? 9) - (SEVERITY_RANK[b.alert.severity] ?? 9) ||
        b.alert.id - a.alert.id,
    );
    const focused = document.activeElement;
    ordered.forEach((card, index) => {
      if (list.children[index] !== card.element) {
        list.insertBefore(card.element, list.children[index] ?? null);
      }
    });
    if (focused && focused !== document.activeElement && focused.isConnected) {
      focused.focus({ preventScroll: true });
    }
    const open = ordered.length;
    const waiting = ordered.filter((card) => card.alert.status === "active").length;
    let text = `${this.#where()}: `;
    if (open === 0) text += "none open";
    else {
      text += `${open} open`;
      if (waiting > 0) text += `, ${waiting} not acknowledged`;
    }
    if (this.#next !== null) text += " (older ones below)";
    summary.textContent = text;
    empty.hidden = open > 0 || !this.#loaded;
    list.hidden = open === 0;
    more.hidden = this.#next === null;
    this.#ui.container.dataset.open = String(open);
  }

  #picked() {
    const card = this.#cards.get(this.#pick);
    if (card) card.pick();
    else {
      const { note } = this.#ui;
      note.textContent = `Alert ${this.#pick} is not open here: it has been resolved, or belongs to another view.`;
      note.hidden = false;
    }
    this.#pick = null;
  }

  #tick() {
    const now = Date.now();
    const open = this.#silences.filter((silence) => Date.parse(silence.ends_at) > now);
    const ended = open.length !== this.#silences.length;
    this.#silences = open;
    for (const card of this.#cards.values()) {
      card.tick();
      if (ended) card.showSilences(open);
    }
  }

  #announce(text) {
    this.#ui.announcer.textContent = text;
  }
}
