// The metrics the page shows: how each is written (its kind) and how urgently the service
// pushes it (its tier, as in docs/api.md#metrics), which decides when it counts as stale.

const critical = {
  patients_total: "count",
  patients_active: "count",
  patients_waiting: "count",
  patients_new_today: "count",
  patients_emergency: "count",
  beds_total: "count",
  beds_occupied: "count",
  beds_free: "count",
  beds_cleaning: "count",
  beds_out_of_service: "count",
  bed_occupancy_rate: "rate",
  rooms_total: "count",
  rooms_occupied: "count",
  room_occupancy_rate: "rate",
  staff_on_duty: "count",
  alerts_active_critical: "count",
  alerts_active_high: "count",
  alerts_active_medium: "count",
  alerts_active_low: "count",
  feed_lag_seconds: "seconds",
  database_up: "flag",
  cache_up: "flag",
  main_app_up: "flag",
};

const standard = {
  appointments_today: "count",
  appointments_scheduled_today: "count",
  appointments_checked_in_today: "count",
  appointments_completed_today: "count",
  appointments_cancelled_today: "count",
  appointments_no_show_today: "count",
  revenue_today: "money",
  revenue_week: "money",
  revenue_month: "money",
  admissions_today: "count",
  discharges_today: "count",
  average_length_of_stay_hours: "hours",
};

// The stored hourly series (`request_historical`) the trend charts draw, in their order.
export const SERIES = [
  { name: "occupancy", title: "Bed occupancy", kind: "rate", peak: true },
  { name: "admissions", title: "Admissions", kind: "count" },
  { name: "emergency_arrivals", title: "Emergency arrivals", kind: "count" },
  { name: "revenue", title: "Revenue", kind: "money" },
];

const historical = {};
for (const { name } of [...SERIES, { name: "discharges" }]) {
  historical[`${name}_growth_day`] = "growth";
  historical[`${name}_growth_week`] = "growth";
  historical[`${name}_trend`] = "trend";
}

const CATALOGUE = new Map();
for (const [tier, metrics] of Object.entries({ critical, standard, historical })) {
  for (const [metric, kind] of Object.entries(metrics)) CATALOGUE.set(metric, { tier, kind });
}

/** Every metric the page subscribes to, for every scope it may see. */
export const SHOWN = [...CATALOGUE.keys()];

export const tierOf = (metric) => CATALOGUE.get(metric)?.tier ?? "critical";
export const kindOf = (metric) => CATALOGUE.get(metric)?.kind ?? "count";

export const ALERT_SEVERITIES = ["critical", "high", "medium", "low"];
