// Numbers, money and times written the hospital's way. The service says how in the
// `authenticated` payload (LIVEDASH_LOCALE, LIVEDASH_TIMEZONE, LIVEDASH_CURRENCY); a locale it
// leaves unset is the browser's own. Times are shown on the hospital's clock, whatever the
// screen's own zone, since "today" on every figure is the hospital's today.
import { kindOf } from "./metrics.js";

let hospital = null; // until the service says: the browser's ways, and UTC
let formats = build({ locale: undefined, timeZone: "UTC", currency: "EUR" });

function build({ locale, timeZone, currency }) {
  const number = (options) => new Intl.NumberFormat(locale, options);
  const date = (options) => new Intl.DateTimeFormat(locale, { timeZone, ...options });
  return {
    count: number({ maximumFractionDigits: 0 }),
    decimal: number({ maximumFractionDigits: 1 }),
    measure: number({ maximumFractionDigits: 3 }),
    percent: number({ style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 }),
    percentShort: number({ style: "percent", maximumFractionDigits: 0 }),
    growth: number({ style: "percent", maximumFractionDigits: 0, signDisplay: "exceptZero" }),
    money: number({ style: "currency", currency }),
    moneyShort: number({ style: "currency", currency, notation: "compact" }),
    compact: number({ notation: "compact" }),
    clock: date({ hour: "2-digit", minute: "2-digit", second: "2-digit" }),
    hourMinute: date({ hour: "2-digit", minute: "2-digit" }),
    wallClock: new Intl.DateTimeFormat("en-US", {
      timeZone,
      hour: "numeric",
      minute: "numeric",
      hourCycle: "h23",
    }),
    hour: date({ hour: "numeric" }),
    day: date({ weekday: "short", day: "numeric", month: "short" }),
    dayShort: date({ weekday: "short", day: "numeric" }),
    dayHour: date({ weekday: "short", hour: "2-digit", minute: "2-digit" }),
    dateTime: date({ dateStyle: "medium", timeStyle: "medium" }),
    dateShort: date({ dateStyle: "medium" }),
    dayDate: date({ dateStyle: "medium", timeStyle: "short" }),
    relative: new Intl.RelativeTimeFormat(locale, { numeric: "auto", style: "short" }),
  };
}

/** Write figures from now on for the hospital the service described. */
export function configure({ locale, timezone, currency }) {
  let resolved;
  try {
    resolved = Intl.getCanonicalLocales(locale || [])[0];
  } catch {
    resolved = undefined; // a locale the browser does not know: its own
  }
  hospital = { locale: resolved, timeZone: timezone || "UTC", currency: currency || "EUR" };
  try {
    formats = build(hospital);
  } catch {
    hospital = { ...hospital, timeZone: "UTC" }; // a zone this browser does not know
    formats = build(hospital);
  }
}

export const timeZone = () => hospital?.timeZone ?? "UTC";

/** Whether the service has said how its hospital writes figures (on signing in). */
export const configured = () => hospital !== null;

/** A metric's value as its tile shows it; "—" when there is none. */
export function value(metric, raw) {
  if (raw === null || raw === undefined) return "—";
  switch (kindOf(metric)) {
    case "rate":
      return formats.percent.format(raw);
    case "money":
      return formats.money.format(raw); // a decimal string: written exactly
    case "growth":
      return formats.growth.format(raw);
    case "hours":
      return `${formats.decimal.format(raw)} h`;
    case "seconds":
      return `${formats.decimal.format(raw)} s`;
    case "trend":
      return TRENDS[raw]?.label ?? String(raw);
    case "flag":
      return raw ? "up" : "down";
    default:
      return formats.count.format(raw);
  }
}

export const TRENDS = {
  increasing: { label: "Rising", arrow: "↑" },
  decreasing: { label: "Falling", arrow: "↓" },
  stable: { label: "Steady", arrow: "→" },
};

export const count = (n) => formats.count.format(n);
export const decimal = (n) => formats.decimal.format(n);
export const percent = (n) => formats.percent.format(n);
export const percentShort = (n) => formats.percentShort.format(n);
export const money = (n) => formats.money.format(n);
export const moneyShort = (n) => formats.moneyShort.format(n);
export const compact = (n) => formats.compact.format(n);
export const clock = (ms) => formats.clock.format(ms);
export const hourMinute = (ms) => formats.hourMinute.format(ms);
export const hour = (ms) => formats.hour.format(ms);

/** Whether `ms` is midnight on the hospital's clock. */
export function isMidnight(ms) {
  const parts = formats.wallClock.formatToParts(ms);
  const part = (type) => Number(parts.find((p) => p.type === type)?.value);
  return part("hour") === 0 && part("minute") === 0;
}
export const day = (ms) => formats.day.format(ms);
export const dayShort = (ms) => formats.dayShort.format(ms);
export const dayHour = (ms) => formats.dayHour.format(ms);
export const dateTime = (ms) => formats.dateTime.format(ms);
export const dateShort = (ms) => formats.dateShort.format(ms);
/** A number as a rule's value or threshold is written: up to three decimals. */
export const measure = (n) => formats.measure.format(n);

/** "14:05" today (the hospital's), "Tue 3, 14:05" on another day. */
export function when(ms) {
  if (formats.dateShort.format(ms) === formats.dateShort.format(Date.now())) {
    return formats.hourMinute.format(ms);
  }
  return formats.dayDate.format(ms);
}

/** "12 sec. ago", "3 min. ago": how long ago `ms` of age is. */
export function ago(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 5) return "just now";
  if (seconds < 60) return formats.relative.format(-seconds, "second");
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return formats.relative.format(-minutes, "minute");
  const hours = Math.round(minutes / 60);
  if (hours < 48) return formats.relative.format(-hours, "hour");
  return formats.relative.format(-Math.round(hours / 24), "day");
}

/** "45 s", "3 min": a duration, short. */
export function duration(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return `${hours} h ${minutes % 60} min`;
}

/** A chart axis label for the stored series' values. */
export function axisValue(kind, n) {
  if (kind === "rate") return formats.percentShort.format(n);
  if (kind === "money") return formats.moneyShort.format(n);
  return formats.compact.format(n);
}
