// The reports page (`?page=reports`; `&report=17` opens one, as the e-mails link): generate a
// report on demand and follow it until it is done (the `Location` of `POST /api/reports`,
// polled), the list with its filters, download and verify; and for admins the schedules
// (schedules.js). docs/reports.md says what each report holds.
import { withQuery } from "./api.js";
import { scopeOptions } from "./departments.js";
import { el } from "./dom.js";
import * as fmt from "./format.js";
import { busy, choice, field, formError, group, problemsByField, select, uid } from "./forms.js";
import { href } from "./router.js";
import { FORMATS, mountSchedules } from "./schedules.js";

const PAGE_LIMIT = 25;
const MANAGING = new Set(["admin", "super_admin"]);
const FALLBACK_TYPES = [
  ["occupancy", "Occupancy and length of stay"],
  ["admissions", "Admissions and discharges"],
  ["emergency", "Emergency department"],
  ["appointments", "Appointments"],
  ["revenue", "Revenue"],
  ["alerts", "Alerts"],
];
const PERIODS = [
  ["today", "Today so far"],
  ["yesterday", "Yesterday"],
  ["this-week", "This week so far"],
  ["last-week", "Last week"],
  ["this-month", "This month so far"],
  ["last-month", "Last month"],
  ["last-7-days", "Last 7 days"],
  ["last-30-days", "Last 30 days"],
  ["dates", "Dates…"],
];
const STATUSES = { queued: "Queued", running: "Generating", done: "Ready", failed: "Failed" };
const POLL_FIRST_MS = 400;
const POLL_MAX_MS = 3000;

export function mountReports({ container, api, directory, role, report }) {
  const page = new ReportsPage({ container, api, directory, role, report });
  return { dispose: () => page.dispose() };
}

class ReportsPage {
  #api;
  #directory;
  #types = new Map(FALLBACK_TYPES);
  #rows = new Map(); // id -> row of the list
  #next = null;
  #reading = 0;
  #filters = null;
  #disposed = false;
  #stop = [];
  #ui;

  constructor({ container, api, directory, role, report }) {
    this.#api = api;
    this.#directory = directory;
    const ui = {
      opened: el("section.figures.report-opened", {
        hidden: true,
        "aria-labelledby": "opened-title",
      }),
      generate: el("section.figures.generate", { "aria-labelledby": "generate-title" }),
      filters: el("form.report-filters", { "aria-label": "Filter the reports" }),
      body: el("tbody"),
      empty: el("p.list-empty", { hidden: true }, "No reports yet."),
      listStatus: el("p.page-status", { role: "status" }),
      more: el("button.secondary", { type: "button", hidden: true }, "Show older reports"),
      schedules: el("section.figures.schedules", { "aria-labelledby": "schedules-title" }),
    };
    this.#ui = ui;
    const table = el(
      "table.report-table",
      {},
      el("caption.visually-hidden", {}, "Reports, newest first"),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["Report", "Scope", "Period", "Format", "Status", "Requested", "Size", "Actions"].map(
            (title) => el("th", { scope: "col" }, title),
          ),
        ),
      ),
      ui.body,
    );
    const list = el(
      "section.figures.report-list",
      { "aria-labelledby": "reports-title" },
      el("h2#reports-title.section-title", {}, "Reports"),
      ui.filters,
      ui.listStatus,
      el("div.table-wrap", {}, table),
      ui.empty,
      ui.more,
    );
    container.replaceChildren(ui.opened, ui.generate, list);
    ui.more.addEventListener("click", () => busy(ui.more, () => this.#read(this.#next)));
    if (MANAGING.has(role)) container.append(ui.schedules);
    if (report !== null) this.#open(report);
    // The forms offer the types the service names; the page knows them too, if it cannot.
    this.#readTypes().then(() => {
      if (this.#disposed) return;
      this.#buildGenerate();
      this.#buildFilters();
      this.#read(null);
      if (MANAGING.has(role)) {
        const types = this.#types;
        this.#stop.push(mountSchedules({ container: ui.schedules, api, directory, types }).dispose);
      }
    });
  }

  dispose() {
    this.#disposed = true;
    for (const stop of this.#stop) stop();
  }

  async #readTypes() {
    try {
      const types = await this.#api.get("/api/reports/types");
      this.#types.clear();
      for (const { name, title } of types) this.#types.set(name, title);
    } catch {
      // the list the page knows will do
    }
  }

  #title(info) {
    return this.#types.get(info.report_type) ?? info.report_type;
  }

  // -- generating -----------------------------------------------------------------------

  #buildGenerate() {
    const type = field("Report", select([...this.#types]));
    const scope = field("Scope", select(scopeOptions(this.#directory)));
    const period = field("Period", select(PERIODS, { value: "yesterday" }));
    const from = field("First day", el("input", { type: "date" }));
    const to = field("Last day", el("input", { type: "date" }), { hint: "Included." });
    const dates = el("div.date-range", { hidden: true }, from.wrap, to.wrap);
    const formatName = uid("format");
    const formats = FORMATS.map(([value, label], i) =>
      choice("radio", formatName, value, label, { checked: i === 0 }),
    );
    const format = group("Format", formats, { className: "inline" });
    const problem = formError();
    const submit = el("button.primary", { type: "submit" }, "Generate");
    const progress = el("div.report-progress", { role: "status" });
    const form = el(
      "form.generate-form",
      { noValidate: true, "aria-labelledby": "generate-title" },
      el("div.form-row", {}, type.wrap, scope.wrap, period.wrap),
      dates,
      format.wrap,
      problem.node,
      el("div.form-buttons", {}, submit),
    );
    period.control.addEventListener("change", () => {
      dates.hidden = period.control.value !== "dates";
    });
    this.#ui.generate.replaceChildren(
      el("h2#generate-title.section-title", {}, "Generate a report"),
      form,
      progress,
    );
    const fields = { type, department: scope, period, from, to, format };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      for (const one of Object.values(fields)) one.error("");
      problem.set("");
      const body = {
        type: type.control.value,
        department: scope.control.value || null,
        format: formats.map((f) => f.querySelector("input")).find((input) => input.checked).value,
      };
      if (period.control.value === "dates") {
        const missing = [
          [from, "Give the first day."],
          [to, "Give the last day."],
        ].filter(([one]) => !one.control.value);
        for (const [one, message] of missing) one.error(message);
        if (missing.length) {
          missing[0][0].control.focus();
          return;
        }
        body.from = from.control.value;
        body.to = dayAfter(to.control.value);
      } else {
        body.period = period.control.value;
      }
      busy(submit, () => this.#generate(body, { fields, problem, progress }));
    });
  }

  async #generate(body, { fields, problem, progress }) {
    let answer;
    try {
      answer = await this.#api.send("POST", "/api/reports", body);
    } catch (error) {
      if (error.status === 422) {
        const { byField, general } = problemsByField(error, Object.keys(fields));
        // With dates chosen, what is wrong with the period is said at its first day.
        const dates = fields.period.control.value === "dates";
        const at = (name) => (name === "period" && dates ? fields.from : fields[name]);
        for (const [name, message] of byField) at(name).error(message);
        problem.set(general.join(" "));
        const first = ["type", "department", "period", "from", "to"].find((n) => byField.has(n));
        if (first) at(first).control.focus();
      } else {
        problem.set(`Not generated: ${error.text}`);
      }
      return;
    }
    const location = answer.headers.get("Location") ?? `/api/reports/${answer.data.id}`;
    this.#upsert(answer.data, { first: true });
    this.#showProgress(progress, answer.data);
    const info = await this.#follow(location, (latest) => {
      this.#upsert(latest);
      this.#showProgress(progress, latest);
    });
    if (info?.status === "done") progress.querySelector(".download")?.focus();
  }

  // Poll `location` until the report is done or failed; each reading to `seen`.
  async #follow(location, seen) {
    let wait = POLL_FIRST_MS;
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, wait));
      if (this.#disposed) return null;
      let info;
      try {
        info = await this.#api.get(location);
      } catch (error) {
        if (error.status === 404) return null;
        wait = POLL_MAX_MS; // out of reach for a moment: keep asking
        continue;
      }
      if (this.#disposed) return null;
      seen(info);
      if (info.status === "done" || info.status === "failed") return info;
      wait = Math.min(wait * 1.5, POLL_MAX_MS);
    }
  }

  #showProgress(node, info) {
    const what = `${this.#title(info)}, ${this.#directory.name(info.department)}, ${info.period_label}`;
    node.dataset.status = info.status;
    if (info.status === "done") {
      node.replaceChildren(
        el("p", {}, `Ready: ${what} (${info.format.toUpperCase()}, ${bytes(info.size)}).`),
        this.#downloadButton(info, { className: "download primary" }),
      );
    } else if (info.status === "failed") {
      node.replaceChildren(
        el("p.form-error", {}, `The report failed: ${info.error ?? "no reason given"}`),
      );
    } else {
      node.replaceChildren(
        el("p", {}, `${STATUSES[info.status] ?? info.status}: ${what}…`),
        el("progress", { "aria-label": `Report ${info.id} in progress` }),
      );
    }
  }

  #downloadButton(info, { className = "secondary" } = {}) {
    const button = el(
      `button.${className.split(" ").join(".")}`,
      { type: "button", "aria-label": `Download report ${info.id} (${info.format.toUpperCase()})` },
      "Download",
    );
    const fallback = `report-${info.id}.${info.format}`;
    button.addEventListener("click", () =>
      busy(button, async () => {
        try {
          await this.#api.download(`/api/reports/${info.id}/download`, fallback);
        } catch (error) {
          button.after(el("span.inline-error", { role: "alert" }, ` ${error.text}`));
        }
      }),
    );
    return button;
  }

  #verifyButton(info, out) {
    const button = el(
      "button.secondary",
      { type: "button", "aria-label": `Verify report ${info.id}` },
      "Verify",
    );
    button.addEventListener("click", () =>
      busy(button, async () => {
        out.textContent = "Generating it again…";
        try {
          const result = await this.#api.post(`/api/reports/${info.id}/verify`);
          out.dataset.same = String(result.same);
          out.textContent = result.same
            ? "Verified: the same figures."
            : `Not the same: ${result.reason}`;
        } catch (error) {
          out.textContent = `Not verified: ${error.text}`;
        }
      }),
    );
    return button;
  }

  // -- the list -------------------------------------------------------------------------

  #buildFilters() {
    const type = field("Report", select([["", "Any"], ...this.#types]));
    const scope = field(
      "Scope",
      select([["", "Any"], ...scopeOptions(this.#directory).map(([v, n]) => [v || "hospital", n])]),
    );
    const status = field("Status", select([["", "Any"], ...Object.entries(STATUSES)]));
    this.#filters = { type, scope, status };
    this.#ui.filters.replaceChildren(el("div.form-row", {}, type.wrap, scope.wrap, status.wrap));
    for (const one of [type, scope, status]) {
      one.control.addEventListener("change", () => this.#read(null));
    }
    this.#ui.filters.addEventListener("submit", (event) => event.preventDefault());
  }

  async #read(cursor) {
    const reading = (this.#reading += 1);
    const { type, scope, status } = this.#filters;
    const path = withQuery("/api/reports", {
      limit: PAGE_LIMIT,
      cursor,
      type: type.control.value,
      department: scope.control.value,
      status: status.control.value,
    });
    let page;
    try {
      page = await this.#api.get(path);
    } catch (error) {
      if (reading === this.#reading && !this.#disposed) {
        this.#ui.listStatus.textContent = `The reports could not be read: ${error.text}`;
      }
      return;
    }
    if (reading !== this.#reading || this.#disposed) return;
    if (cursor === null) {
      this.#rows.clear();
      this.#ui.body.replaceChildren();
    }
    this.#ui.listStatus.textContent = "";
    for (const info of page.items) this.#upsert(info);
    this.#next = page.next;
    this.#ui.more.hidden = page.next === null;
    const filtered = [type, scope, status].some((one) => one.control.value);
    this.#ui.empty.textContent = filtered ? "No reports match these filters." : "No reports yet.";
    this.#ui.empty.hidden = this.#rows.size > 0;
  }

  // A report's row, made or changed (`first`: a new one, at the top).
  #upsert(info, { first = false } = {}) {
    const old = this.#rows.get(info.id);
    const row = this.#row(info);
    if (old) old.replaceWith(row);
    else if (first) this.#ui.body.prepend(row);
    else this.#ui.body.append(row);
    this.#rows.set(info.id, row);
    this.#ui.empty.hidden = true;
  }

  #row(info) {
    const out = el("span.verify-result", { role: "status" });
    const actions = [];
    if (info.status === "done")
      actions.push(this.#downloadButton(info), this.#verifyButton(info, out));
    const status =
      info.status === "failed" && info.error
        ? `Failed: ${info.error}`
        : (STATUSES[info.status] ?? info.status);
    const cell = (label, ...content) => el("td", { dataset: { label } }, ...content);
    return el(
      "tr",
      { dataset: { report: String(info.id), status: info.status } },
      el(
        "th",
        { scope: "row" },
        el(
          "a",
          { href: href({ page: "reports", report: info.id }), dataset: { route: "" } },
          this.#title(info),
        ),
        el("span.report-id", {}, ` #${info.id}`),
      ),
      cell("Scope", this.#directory.name(info.department)),
      cell("Period", info.period_label),
      cell("Format", info.format.toUpperCase()),
      cell("Status", el("span.report-status", { dataset: { status: info.status } }, status)),
      cell(
        "Requested",
        `${info.requested_by}${info.schedule_id ? " (schedule)" : ""}, ${fmt.when(Date.parse(info.created_at))}`,
      ),
      cell("Size", info.size === null ? "—" : bytes(info.size)),
      cell("Actions", el("div.row-actions", {}, actions, out)),
    );
  }

  // -- one report (?report=ID) ----------------------------------------------------------

  async #open(id) {
    const section = this.#ui.opened;
    section.hidden = false;
    section.replaceChildren(
      el("h2#opened-title.section-title", { tabIndex: -1 }, `Report ${id}`),
      el("p.page-status", { role: "status" }, "Loading…"),
    );
    let info;
    try {
      info = await this.#api.get(`/api/reports/${id}`);
    } catch (error) {
      if (this.#disposed) return;
      const text =
        error.status === 404
          ? `There is no report ${id} among those you may see.`
          : `Report ${id} could not be read: ${error.text}`;
      section.replaceChildren(
        el("h2#opened-title.section-title", { tabIndex: -1 }, `Report ${id}`),
        el("p.form-error", { role: "alert" }, text),
      );
      return;
    }
    if (this.#disposed) return;
    this.#showOpened(info);
    section.querySelector("#opened-title").focus({ preventScroll: true });
    if (info.status === "queued" || info.status === "running") {
      await this.#follow(`/api/reports/${id}`, (latest) => {
        this.#showOpened(latest);
        this.#upsert(latest);
      });
    }
  }

  #showOpened(info) {
    const out = el("p.verify-result", { role: "status" });
    const when = (iso) => (iso ? fmt.dateTime(Date.parse(iso)) : "—");
    const facts = [
      ["Scope", this.#directory.name(info.department)],
      [
        "Period",
        `${info.period_label} (${when(info.period_start)} to ${when(info.period_end)}, ${info.time_zone})`,
      ],
      ["Format", info.format.toUpperCase()],
      [
        "Status",
        info.status === "failed"
          ? `Failed: ${info.error ?? "no reason given"}`
          : (STATUSES[info.status] ?? info.status),
      ],
      [
        "Requested by",
        info.schedule_id
          ? `${info.requested_by} (schedule ${info.schedule_id})`
          : info.requested_by,
      ],
      ["Created", when(info.created_at)],
      ["Finished", when(info.finished_at)],
      ["Size", info.size === null ? "—" : bytes(info.size)],
      ["Feed position", info.feed_position === null ? "—" : fmt.count(info.feed_position)],
      ["Generator", info.generator_version],
      ["SHA-256", info.sha256 ?? "—"],
    ];
    const actions =
      info.status === "done"
        ? [this.#downloadButton(info, { className: "primary" }), this.#verifyButton(info, out)]
        : [];
    this.#ui.opened.replaceChildren(
      el(
        "h2#opened-title.section-title",
        { tabIndex: -1 },
        `${this.#title(info)} · report ${info.id}`,
      ),
      el(
        "dl.report-facts",
        {},
        facts.map(([label, value]) => el("div", {}, el("dt", {}, label), el("dd", {}, value))),
      ),
      el("div.row-actions", {}, actions),
      out,
      el(
        "p",
        {},
        el("a", { href: href({ page: "reports", report: null }), dataset: { route: "" } }, "Close"),
      ),
    );
  }
}

/** "2026-11-30" -> "2026-12-01": `to` is the day after the last. */
function dayAfter(day) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + 1)).toISOString().slice(0, 10);
}

function bytes(size) {
  if (size === null || size === undefined) return "—";
  if (size < 1024) return `${fmt.count(size)} B`;
  if (size < 1024 * 1024) return `${fmt.decimal(size / 1024)} KB`;
  return `${fmt.decimal(size / 1024 / 1024)} MB`;
}
