// The departments this user may see, by name: the filter in the top bar, and the comparison
// of every department (occupancy as bars, the main counts) that the overview shows. Codes
// come from the socket's `authenticated` (what this identity may see); names from
// `GET /api/departments`, which lists the same departments (its scope is the token's).
import { el } from "./dom.js";
import * as fmt from "./format.js";
import { level } from "./overview.js";
import { href } from "./router.js";

const PAGE_LIMIT = 500;

export class Directory {
  codes = []; // the departments this identity may see, in the service's order
  seesHospital = false;
  #names = new Map();

  /** Take the scope of an `authenticated` payload; true if it changed. */
  setScope(departments) {
    const codes = departments.filter((code) => code !== null);
    const seesHospital = departments.includes(null);
    const changed =
      seesHospital !== this.seesHospital ||
      codes.length !== this.codes.length ||
      codes.some((code, i) => code !== this.codes[i]);
    this.codes = codes;
    this.seesHospital = seesHospital;
    return changed;
  }

  /** Read the names (every page of `GET /api/departments`); codes stand in until then. */
  async loadNames(get) {
    const names = new Map();
    let cursor = null;
    do {
      const query = new URLSearchParams({ limit: String(PAGE_LIMIT) });
      if (cursor) query.set("cursor", cursor);
      const page = await get(`/api/departments?${query}`);
      for (const { code, name } of page.items) names.set(code, name);
      cursor = page.next;
    } while (cursor);
    this.#names = names;
  }

  name(code) {
    return code === null ? "Whole hospital" : (this.#names.get(code) ?? code);
  }

  has(code) {
    return this.codes.includes(code);
  }

  /** Every department, by name. */
  byName() {
    return [...this.codes].sort((a, b) => this.name(a).localeCompare(this.name(b)));
  }

  forget() {
    this.codes = [];
    this.seesHospital = false;
    this.#names = new Map();
  }
}

/** The scopes this identity may choose (for a report): [value, name], "" the hospital. */
export function scopeOptions(directory) {
  const options = directory.byName().map((code) => [code, directory.name(code)]);
  return directory.seesHospital ? [["", "Whole hospital"], ...options] : options;
}

/** Fill the filter `<select>`: the overview, then each department by name. */
export function fillFilter(select, directory, selected) {
  const overview = directory.seesHospital ? "Whole hospital" : "All my departments";
  const options = [el("option", { value: "" }, overview)];
  for (const code of directory.byName()) {
    options.push(el("option", { value: code }, directory.name(code)));
  }
  select.replaceChildren(...options);
  select.value = selected ?? "";
  // One department and no hospital: there is nothing to choose.
  select.closest(".filter").hidden = directory.codes.length + (directory.seesHospital ? 1 : 0) < 2;
}

const COLUMNS = [
  { title: "Patients", metric: "patients_active" },
  { title: "Waiting", metric: "patients_waiting" },
  { title: "Emergency", metric: "patients_emergency" },
  { title: "Free beds", metric: "beds_free" },
  { title: "Staff", metric: "staff_on_duty" },
];

/**
 * Every department side by side: a table on a wide screen, a card per department on a
 * narrow one (dashboard.css), each with its occupancy as a bar and a link to its own view.
 */
export function comparison(binder, directory) {
  const head = el(
    "tr",
    {},
    el("th.department", { scope: "col" }, "Department"),
    el("th.occupancy-col", { scope: "col" }, "Bed occupancy"),
    COLUMNS.map((column) => el("th.number", { scope: "col" }, column.title)),
    el("th.number", { scope: "col" }, "Alerts"),
  );
  const rows = directory.byName().map((code) => row(binder, directory, code));
  return el(
    "section.figures.comparison",
    { "aria-labelledby": "departments-title", id: "departments" },
    el("h2#departments-title.section-title", {}, "Departments"),
    el(
      "div.table-wrap",
      {},
      el(
        "table#department-table",
        {},
        el("thead", {}, head),
        el("tbody#department-rows", {}, rows),
      ),
    ),
  );
}

function row(binder, directory, code) {
  const fill = el("span.bar-fill");
  const bar = el("span.bar", { role: "presentation" }, fill);
  binder.watch(["bed_occupancy_rate"], code, () => {
    const rate = binder.store.value("bed_occupancy_rate", code);
    const known = typeof rate === "number";
    fill.style.width = `${known ? Math.min(Math.max(rate, 0), 1) * 100 : 0}%`;
    bar.dataset.level = known ? level(rate) : "normal";
  });
  const alerts = binder.computed(
    ["alerts_active_critical", "alerts_active_high", "alerts_active_medium", "alerts_active_low"],
    code,
    (counts) => fmt.count(counts.reduce((a, b) => a + b, 0)),
  );
  const tr = el(
    "tr",
    { dataset: { department: code } },
    el(
      "th.department",
      { scope: "row" },
      el("a", { href: href({ department: code }), dataset: { route: "" } }, directory.name(code)),
    ),
    el(
      "td.occupancy-col",
      { dataset: { label: "Bed occupancy" } },
      el(
        "span.occupancy-cell",
        {},
        bar,
        binder.value("bed_occupancy_rate", code),
        el(
          "span.beds",
          {},
          binder.value("beds_occupied", code),
          "/",
          binder.value("beds_total", code),
        ),
      ),
    ),
    COLUMNS.map((column) =>
      el("td.number", { dataset: { label: column.title } }, binder.value(column.metric, code)),
    ),
    el("td.number", { dataset: { label: "Alerts" } }, alerts),
  );
  binder.every(() => {
    tr.dataset.stale = String(binder.isStale("critical"));
  });
  return tr;
}
