// One scope's figures (the whole hospital, or a department): the critical tiles and the
// standard panels. Every number is a binding of the store and changes in place; every tile
// says how fresh it is (freshness.js has the rule).
import { el } from "./dom.js";
import * as fmt from "./format.js";
import { ALERT_SEVERITIES } from "./metrics.js";

const APPOINTMENTS = [
  ["appointments_scheduled_today", "Scheduled"],
  ["appointments_checked_in_today", "Checked in"],
  ["appointments_completed_today", "Completed"],
  ["appointments_cancelled_today", "Cancelled"],
  ["appointments_no_show_today", "No-show"],
];

/** How full a rate is: the meters' and bars' level (also said in words, never by colour only). */
export function level(rate) {
  if (rate >= 0.95) return "critical";
  if (rate >= 0.85) return "high";
  return "normal";
}

/** The tiles and panels of `scope` (null: the hospital), bound through `binder`. */
export function scopeFigures(binder, scope) {
  return [
    el(
      "section.figures.now",
      { "aria-labelledby": "now-title" },
      el("h2#now-title.section-title", {}, "Now"),
      el(
        "div.tiles",
        {},
        patientsTile(binder, scope),
        emergencyTile(binder, scope),
        occupancyTile(binder, scope),
        staffTile(binder, scope),
        alertsTile(binder, scope),
      ),
    ),
    el(
      "section.figures.today",
      { "aria-labelledby": "today-title" },
      el("h2#today-title.section-title", {}, "Today"),
      el(
        "div.panels",
        {},
        appointmentsPanel(binder, scope),
        revenuePanel(binder, scope),
        flowPanel(binder, scope),
      ),
    ),
  ];
}

// A tile: a title, its main value, details, and its freshness line (for `metric`).
function tile(binder, scope, { title, metric, main, details = [], extra = [], className = "" }) {
  const node = el(`article.tile${className ? `.${className}` : ""}`, {});
  node.append(
    el("h3.tile-title", {}, title),
    el("p.tile-main", {}, main ?? binder.value(metric, scope, { className: "tile-value" })),
    ...extra,
  );
  if (details.length) node.append(detailList(details));
  node.append(binder.freshnessLine(node, metric, scope));
  return node;
}

// [label, value element] pairs, as a description list.
function detailList(details) {
  return el(
    "dl.details",
    {},
    details.map(([label, value]) => el("div.detail", {}, el("dt", {}, label), el("dd", {}, value))),
  );
}

function patientsTile(binder, scope) {
  return tile(binder, scope, {
    title: "Patients under care",
    metric: "patients_active",
    details: [
      ["Waiting", binder.value("patients_waiting", scope)],
      ["New today", binder.value("patients_new_today", scope)],
      ["On record", binder.value("patients_total", scope)],
    ],
  });
}

function emergencyTile(binder, scope) {
  return tile(binder, scope, {
    title: "Emergency patients",
    metric: "patients_emergency",
    details: [
      ["Arrivals trend", trendLabel(binder, "emergency_arrivals_trend", scope)],
      ["vs yesterday", binder.value("emergency_arrivals_growth_day", scope)],
    ],
  });
}

function occupancyTile(binder, scope) {
  const fill = el("div.meter-fill");
  const meter = el("div.meter", { role: "presentation" }, fill);
  binder.watch(["bed_occupancy_rate"], scope, () => {
    const rate = binder.store.value("bed_occupancy_rate", scope);
    const known = typeof rate === "number";
    fill.style.width = `${known ? Math.min(Math.max(rate, 0), 1) * 100 : 0}%`;
    meter.dataset.level = known ? level(rate) : "normal";
  });
  return tile(binder, scope, {
    title: "Bed occupancy",
    metric: "bed_occupancy_rate",
    className: "occupancy",
    extra: [
      meter,
      el(
        "p.tile-sub",
        {},
        binder.value("beds_occupied", scope),
        " of ",
        binder.computed(["beds_total", "beds_out_of_service"], scope, ([total, out]) =>
          fmt.count(total - out),
        ),
        " beds in service occupied",
      ),
    ],
    details: [
      ["Free", binder.value("beds_free", scope)],
      ["Cleaning", binder.value("beds_cleaning", scope)],
      ["Out of service", binder.value("beds_out_of_service", scope)],
      ["Rooms in use", binder.value("room_occupancy_rate", scope)],
    ],
  });
}

function staffTile(binder, scope) {
  return tile(binder, scope, {
    title: "Staff on duty",
    metric: "staff_on_duty",
    details: [
      [
        "Patients each",
        binder.computed(["patients_active", "staff_on_duty"], scope, ([patients, staff]) =>
          staff > 0 ? fmt.decimal(patients / staff) : "—",
        ),
      ],
    ],
  });
}

function alertsTile(binder, scope) {
  const metrics = ALERT_SEVERITIES.map((severity) => `alerts_active_${severity}`);
  const total = binder.computed(
    metrics,
    scope,
    (counts) => fmt.count(counts.reduce((a, b) => a + b, 0)),
    {
      className: "tile-value",
    },
  );
  const chips = el(
    "ul.severity-counts",
    { "aria-label": "Active alerts by severity" },
    ALERT_SEVERITIES.map((severity) => {
      const chip = el(
        "li.severity",
        { dataset: { severity } },
        binder.value(`alerts_active_${severity}`, scope, { className: "severity-count" }),
        el("span.severity-name", {}, severity),
      );
      binder.watch([`alerts_active_${severity}`], scope, () => {
        chip.dataset.active = String(
          (binder.store.value(`alerts_active_${severity}`, scope) ?? 0) > 0,
        );
      });
      return chip;
    }),
  );
  const node = tile(binder, scope, {
    title: "Active alerts",
    metric: "alerts_active_critical",
    main: total,
    extra: [chips],
    className: "alerts-tile",
  });
  binder.watch(metrics, scope, () => {
    const worst = ALERT_SEVERITIES.find(
      (severity) => (binder.store.value(`alerts_active_${severity}`, scope) ?? 0) > 0,
    );
    node.dataset.worst = worst ?? "none";
  });
  return node;
}

function appointmentsPanel(binder, scope) {
  const bar = el("div.stacked-bar", { role: "presentation" });
  const segments = APPOINTMENTS.map(([metric]) => {
    const segment = el("span.segment", { dataset: { status: metric } });
    bar.append(segment);
    return segment;
  });
  binder.watch(
    APPOINTMENTS.map(([metric]) => metric),
    scope,
    () => {
      const counts = APPOINTMENTS.map(([metric]) => binder.store.value(metric, scope) ?? 0);
      const total = counts.reduce((a, b) => a + b, 0);
      segments.forEach((segment, i) => {
        segment.style.width = total > 0 ? `${(counts[i] / total) * 100}%` : "0";
      });
    },
  );
  const legend = el(
    "ul.legend",
    {},
    APPOINTMENTS.map(([metric, label]) =>
      el(
        "li",
        { dataset: { status: metric } },
        el("span.swatch", { "aria-hidden": "true" }),
        el("span.legend-label", {}, label),
        binder.value(metric, scope, { className: "legend-value" }),
      ),
    ),
  );
  return tile(binder, scope, {
    title: "Appointments today",
    metric: "appointments_today",
    className: "panel",
    extra: [bar, legend],
  });
}

function revenuePanel(binder, scope) {
  return tile(binder, scope, {
    title: "Revenue",
    metric: "revenue_today",
    className: "panel",
    main: el(
      "span.money-main",
      {},
      binder.value("revenue_today", scope, { className: "tile-value money" }),
      el("span.unit", {}, " today"),
    ),
    details: [
      ["This week", binder.value("revenue_week", scope, { className: "value money" })],
      ["This month", binder.value("revenue_month", scope, { className: "value money" })],
      ["vs yesterday", binder.value("revenue_growth_day", scope)],
      ["vs last week", binder.value("revenue_growth_week", scope)],
    ],
  });
}

function flowPanel(binder, scope) {
  return tile(binder, scope, {
    title: "Admissions today",
    metric: "admissions_today",
    className: "panel",
    details: [
      ["Discharges today", binder.value("discharges_today", scope)],
      ["Admissions vs yesterday", binder.value("admissions_growth_day", scope)],
      ["Discharges trend", trendLabel(binder, "discharges_trend", scope)],
      ["Average stay (30 days)", binder.value("average_length_of_stay_hours", scope)],
    ],
  });
}

/** A trend label ("↑ Rising") for a `*_trend` metric, with its direction as data. */
export function trendLabel(binder, metric, scope) {
  const node = binder.value(metric, scope, {
    className: "trend",
    format: (_m, raw) => {
      const trend = fmt.TRENDS[raw];
      return trend ? `${trend.arrow} ${trend.label}` : "—";
    },
  });
  binder.watch([metric], scope, () => {
    node.dataset.trend = binder.store.value(metric, scope) ?? "";
  });
  return node;
}
