// "Why did this change?": every number of a view (`data-metric`, `data-department`) is a
// button that opens a dialog with the last updates behind it, as the service recorded them
// (`explain_metric`, docs/api.md; `GET /api/metrics/{metric}/changes` while the socket is
// away): when, before → after and by how much, and why: the rows that changed (table,
// operation, id, department, commit time; never what they hold), a new day, or the hourly
// roll-ups. The service scopes the answer; the page asks only about the numbers it shows,
// which are all in the identity's scope. A wall is read-only: app.js makes no Why there.
import { sentence, withQuery } from "./api.js";
import { el } from "./dom.js";
import * as fmt from "./format.js";
import { ALERT_SEVERITIES, SERIES, kindOf } from "./metrics.js";
import { HOSPITAL, keyOf } from "./store.js";

const REFRESH_AFTER_MS = 1000; // a live update of the number shown: ask again, once it settles
const AGES_EVERY_MS = 5000;
const HINT_ID = "why-hint";

const TABLES = {
  patients: "Patients",
  beds: "Beds",
  rooms: "Rooms",
  admissions: "Admissions",
  appointments: "Appointments",
  bills: "Bills",
  payments: "Payments",
  staff: "Staff",
  staff_shifts: "Staff shifts",
  departments: "Departments",
  alerts: "Alerts",
};
const OPERATIONS = { insert: "added", update: "changed", delete: "removed" };

const NAMES = {
  patients_total: "Patients on record",
  patients_active: "Patients under care",
  patients_waiting: "Patients waiting",
  patients_new_today: "New patients today",
  patients_emergency: "Emergency patients",
  beds_total: "Beds",
  beds_occupied: "Beds occupied",
  beds_free: "Free beds",
  beds_cleaning: "Beds being cleaned",
  beds_out_of_service: "Beds out of service",
  bed_occupancy_rate: "Bed occupancy",
  rooms_total: "Rooms",
  rooms_occupied: "Rooms in use",
  room_occupancy_rate: "Room occupancy",
  staff_on_duty: "Staff on duty",
  appointments_today: "Appointments today",
  appointments_scheduled_today: "Appointments scheduled today",
  appointments_checked_in_today: "Appointments checked in today",
  appointments_completed_today: "Appointments completed today",
  appointments_cancelled_today: "Appointments cancelled today",
  appointments_no_show_today: "No-shows today",
  revenue_today: "Revenue today",
  revenue_week: "Revenue this week",
  revenue_month: "Revenue this month",
  admissions_today: "Admissions today",
  discharges_today: "Discharges today",
  average_length_of_stay_hours: "Average stay (30 days)",
};
for (const severity of ALERT_SEVERITIES) {
  NAMES[`alerts_active_${severity}`] = `Active ${severity} alerts`;
}
for (const { name, title } of [...SERIES, { name: "discharges", title: "Discharges" }]) {
  NAMES[`${name}_growth_day`] = `${title} vs yesterday`;
  NAMES[`${name}_growth_week`] = `${title} vs last week`;
  NAMES[`${name}_trend`] = `${title} trend`;
}

const nameOf = (metric) =>
  NAMES[metric] ?? metric[0].toUpperCase() + metric.slice(1).replaceAll("_", " ");

export class Why {
  #connection;
  #api;
  #store;
  #freshness;
  #directory;
  #ui;
  #opener = null; // the number whose changes are shown
  #asked = null; // {metric, department}
  #asking = 0; // the newest request: older answers are dropped
  #refocus = true;
  #refresh = null;
  #ages = null;

  /** Numbers in `view` open the dialog; `connection` or `api` answer, `directory` names. */
  constructor({ view, connection, api, store, freshness, directory }) {
    this.#connection = connection;
    this.#api = api;
    this.#store = store;
    this.#freshness = freshness;
    this.#directory = directory;
    const ui = {
      title: el("h2#why-title.why-title", { tabIndex: -1 }, "Why did this change?"),
      close: el("button.secondary.why-close", { type: "button" }, "Close"),
      what: el("p#why-what.why-what"),
      status: el("p.why-status", { role: "status" }),
      problem: el("p.form-error", { role: "alert", hidden: true }),
      list: el("ol.why-list"),
    };
    ui.dialog = el(
      "dialog#why.why",
      { "aria-labelledby": "why-title", "aria-describedby": "why-what" },
      el(
        "div.why-body",
        {},
        el("div.why-head", {}, ui.title, ui.close),
        ui.what,
        ui.status,
        ui.problem,
        ui.list,
        el(
          "p.why-foot",
          {},
          "Only where and when rows changed is shown, never what they hold (no names).",
        ),
      ),
    );
    this.#ui = ui;
    document.body.append(
      ui.dialog,
      el(`span#${HINT_ID}.visually-hidden`, {}, "Shows why this number changed"),
    );

    ui.close.addEventListener("click", () => this.close());
    // A click on the backdrop reaches the dialog itself (as one on its scroll bar does).
    ui.dialog.addEventListener("click", (event) => {
      const box = ui.dialog.getBoundingClientRect();
      const inside =
        event.clientX >= box.left &&
        event.clientX <= box.right &&
        event.clientY >= box.top &&
        event.clientY <= box.bottom;
      if (event.target === ui.dialog && !inside) this.close();
    });
    ui.dialog.addEventListener("close", () => this.#closed());
    view.addEventListener("click", (event) => {
      const number = event.target.closest?.("[data-metric].explainable");
      if (number) this.open(number);
    });
    view.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" && event.key !== " ") return;
      const number = event.target.closest?.("[data-metric].explainable");
      if (!number) return;
      event.preventDefault(); // Space would scroll
      this.open(number);
    });
    store.subscribe((entry, live) => this.#moved(entry, live));
  }

  /** Make every number in `container` a button (focusable, said so) that opens its changes. */
  enhance(container) {
    for (const node of container.querySelectorAll("[data-metric]")) {
      node.classList.add("explainable");
      node.setAttribute("role", "button");
      node.setAttribute("aria-haspopup", "dialog");
      node.setAttribute("aria-describedby", HINT_ID);
      node.tabIndex = 0;
    }
  }

  /** Show the changes behind `number` (an element with `data-metric`, `data-department`). */
  open(number) {
    const { metric } = number.dataset;
    const department = number.dataset.department === HOSPITAL ? null : number.dataset.department;
    this.#opener = number;
    this.#asked = { metric, department };
    this.#ui.list.replaceChildren();
    this.#describe();
    this.#status("Loading…");
    this.#problem("");
    this.#refocus = true;
    if (!this.#ui.dialog.open) this.#ui.dialog.showModal();
    this.#ui.title.focus();
    clearInterval(this.#ages);
    this.#ages = setInterval(() => this.#tickAges(), AGES_EVERY_MS);
    this.#load();
  }

  /** Close the dialog; the focus goes back to the number unless `focus` is false. */
  close({ focus = true } = {}) {
    if (!this.#ui.dialog.open) return;
    this.#refocus = focus;
    this.#ui.dialog.close();
  }

  // Escape, Close, the backdrop, or close(): the dialog is closed.
  #closed() {
    clearInterval(this.#ages);
    clearTimeout(this.#refresh);
    this.#asking += 1;
    const opener = this.#opener;
    this.#opener = null;
    this.#asked = null;
    this.#ui.list.replaceChildren();
    if (this.#refocus && opener?.isConnected) opener.focus();
  }

  #describe() {
    const { metric, department } = this.#asked;
    const now = fmt.value(metric, this.#store.value(metric, department));
    const where = this.#directory.name(department);
    this.#ui.what.textContent = `${nameOf(metric)} · ${where} · now ${now}`;
  }

  async #load() {
    const asking = (this.#asking += 1);
    let answer;
    try {
      answer = await this.#ask(this.#asked);
    } catch (error) {
      if (asking === this.#asking) this.#failed(error);
      return;
    }
    if (asking !== this.#asking) return;
    this.#problem("");
    this.#show(answer);
  }

  // Over the socket while it is up; over REST (the same answer) while it is not.
  async #ask({ metric, department }) {
    if (this.#connection.ready) {
      try {
        const question = { metric, department };
        return await this.#connection.request("explain_metric", question, { tries: 3 });
      } catch (error) {
        // A socket lost while the question waited fails it at once, as a timeout: the
        // service never answered, and REST can.
        const lost = error?.code === "timeout" && !this.#connection.ready;
        if (error?.code !== "offline" && !lost) throw error;
      }
    }
    const path = `/api/metrics/${encodeURIComponent(metric)}/changes`;
    return this.#api.get(withQuery(path, { department: department ?? "hospital" }));
  }

  #failed(error) {
    this.#status("");
    let text;
    if (error?.code === "timeout") text = "The server did not answer in time.";
    else text = error?.text ?? sentence(error?.message ?? "no answer");
    this.#problem(`Cannot say why: ${text}`);
  }

  #show(answer) {
    const changes = answer.changes ?? [];
    this.#status(
      changes.length === 0
        ? "No change of this number is on record yet."
        : changes.length === 1
          ? "Its last update:"
          : `Its last ${changes.length} updates, newest first:`,
    );
    this.#ui.list.replaceChildren(...changes.map((change) => this.#change(answer.metric, change)));
  }

  #change(metric, change) {
    const at = instant(change.timestamp);
    const delta = signed(metric, change.delta);
    const values = el(
      "p.why-values",
      {},
      el("span.why-before", {}, fmt.value(metric, change.before)),
      el("span", { "aria-hidden": "true" }, " → "),
      el("span.visually-hidden", {}, " to "),
      el("span.why-after", {}, fmt.value(metric, change.after)),
      delta ? el("span.why-delta", {}, delta) : null,
    );
    return el(
      "li.why-change",
      { dataset: { reason: change.reason, version: String(change.version) } },
      el(
        "p.why-when",
        {},
        el("time", { dateTime: change.timestamp }, this.#when(at)),
        " · ",
        el("span.why-ago", { dataset: { at: String(at) } }, this.#ago(at)),
      ),
      values,
      ...this.#reason(change),
    );
  }

  #reason(change) {
    if (change.reason === "new_day") {
      return [
        el("p.why-reason", {}, "A new day began (midnight): the day's figures started over."),
      ];
    }
    if (change.reason === "roll_ups") {
      return [el("p.why-reason", {}, "Recomputed from the hourly roll-ups.")];
    }
    const rows = change.rows ?? [];
    const parts = [
      el("p.why-reason", {}, rows.length === 1 ? "A row changed:" : "Rows changed:"),
      el("ul.why-rows", {}, rows.map((row) => this.#row(row))),
    ];
    if (change.more_rows) {
      parts.push(el("p.why-more", {}, "…and more rows in the same batch."));
    }
    return parts;
  }

  #row(row) {
    const committed = instant(row.committed_at);
    const where = row.department ? ` · ${this.#directory.name(row.department)}` : "";
    return el(
      "li.why-row",
      { dataset: { table: row.table, op: row.op, id: String(row.id ?? "") } },
      el("span.why-table", {}, TABLES[row.table] ?? row.table.replaceAll("_", " ")),
      `: row ${row.id ?? "(no id)"} ${OPERATIONS[row.op] ?? row.op}${where} · committed `,
      el("time", { dateTime: row.committed_at }, this.#when(committed)),
    );
  }

  // The hospital's clock: the time alone today, the date as well on another day.
  #when(ms) {
    if (Number.isNaN(ms)) return "—";
    const today = fmt.dateShort(ms) === fmt.dateShort(this.#freshness.now());
    return today ? fmt.clock(ms) : fmt.dateTime(ms);
  }

  #ago(ms) {
    return Number.isNaN(ms) ? "" : fmt.ago(this.#freshness.now() - ms);
  }

  #tickAges() {
    for (const node of this.#ui.list.querySelectorAll(".why-ago")) {
      const text = this.#ago(Number(node.dataset.at));
      if (node.textContent !== text) node.textContent = text;
    }
  }

  // The number shown changed while its dialog is open: its newest cause is asked for.
  #moved(entry, live) {
    const asked = this.#asked;
    if (!live || asked === null) return;
    if (keyOf(entry.metric, entry.department) !== keyOf(asked.metric, asked.department)) return;
    this.#describe();
    clearTimeout(this.#refresh);
    this.#refresh = setTimeout(() => {
      if (this.#asked === asked) this.#load();
    }, REFRESH_AFTER_MS);
  }

  #status(text) {
    this.#ui.status.textContent = text;
    this.#ui.status.hidden = !text;
  }

  #problem(text) {
    this.#ui.problem.textContent = text;
    this.#ui.problem.hidden = !text;
  }
}

// The service's times are UTC: one written without an offset is read as UTC, not as the
// screen's own zone.
function instant(text) {
  if (typeof text !== "string") return Number.NaN;
  return Date.parse(/(Z|[+-]\d\d:?\d\d)$/i.test(text) ? text : `${text}Z`);
}

// "+1", "−2", "+2.5 points" (a rate's change), "+€12.50"; null when there is none.
function signed(metric, delta) {
  if (delta === null || delta === undefined) return null;
  const n = Number(delta);
  if (!Number.isFinite(n)) return null;
  if (n === 0) return "no change";
  const sign = n > 0 ? "+" : "−";
  const kind = kindOf(metric);
  if (kind === "rate" || kind === "growth") {
    return `${sign}${fmt.decimal(Math.abs(n) * 100)} points`;
  }
  const size = typeof delta === "string" ? delta.replace(/^[-+]/, "") : Math.abs(n);
  return `${sign}${fmt.value(metric, size)}`;
}
