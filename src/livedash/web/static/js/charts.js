// Hourly trend charts of the stored series (`request_historical`), with the growth against
// yesterday and last week and the trend label, which the service pushes as metrics.
//
// Drawn with uPlot (npm `uplot`, copied into /static/vendor/ by the Makefile): small (50 KB
// minified), fast, canvas-based and without dependencies; it places time ticks in any IANA
// zone (uPlot.tzDate), so the axes follow the hospital's clock, and redraws a week of hours
// for every chart of a 4K wall without effort.
import { el } from "./dom.js";
import * as fmt from "./format.js";
import { STALE_AFTER } from "./freshness.js";
import { SERIES } from "./metrics.js";
import { trendLabel } from "./overview.js";
import { RANGES, href } from "./router.js";

const uPlot = globalThis.uPlot;
const REFRESH_MS = 5 * 60_000; // the current hour fills up; STALE_AFTER.chart allows two misses
const REUSE_MS = 60_000; // a view shown again within this (a wall's turn) reuses its readings
const HOUR_MS = 3_600_000;
// Steps between the value axis' ticks for counts and money: whole numbers only.
const WHOLE_STEPS = [1, 2, 5]
  .flatMap((step) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7].map((p) => step * p))
  .sort((a, b) => a - b);
const RANGE_NAMES = { "24h": "24 hours", "7d": "7 days" };

export class Trends {
  #binder;
  #connection;
  #scope;
  #range;
  #wall;
  #charts = [];
  #timer;
  #generation = 0;

  /** The trends of `scope` over `range` ("24h" or "7d"); read with `connection`. */
  constructor({ binder, connection, scope, range, wall }) {
    this.#binder = binder;
    this.#connection = connection;
    this.#scope = scope;
    this.#range = range;
    this.#wall = wall;
    this.#charts = SERIES.map((series) => new TrendChart(series, binder, scope, wall));
    this.element = el(
      "section.figures.trends",
      { "aria-labelledby": "trends-title" },
      el(
        "div.section-head",
        {},
        el("h2#trends-title.section-title", {}, `Trends, last ${RANGE_NAMES[range]}`),
        el(
          "nav.range",
          { "aria-label": "Trend range" },
          Object.keys(RANGES).map((name) =>
            el(
              "a",
              {
                href: href({ range: name }),
                dataset: { route: "" },
                "aria-current": name === range ? "true" : null,
              },
              RANGE_NAMES[name],
            ),
          ),
        ),
      ),
      el(
        "div.charts",
        {},
        this.#charts.map((chart) => chart.element),
      ),
    );
    this.#timer = setInterval(() => this.refresh(), REFRESH_MS);
    binder.every(() => {
      for (const chart of this.#charts) chart.tick();
    });
  }

  /**
   * Read every series again (after a reconnect, and every few minutes); `recent`: a reading of
   * the last minute will do (a view built again, a wall's next turn).
   */
  async refresh({ recent = false } = {}) {
    if (!this.#connection.ready) return;
    const generation = ++this.#generation;
    const hours = RANGES[this.#range];
    const now = this.#binder.freshness.now();
    const to = new Date(Math.floor(now / HOUR_MS) * HOUR_MS + HOUR_MS);
    const from = new Date(to.getTime() - hours * HOUR_MS);
    await Promise.all(
      this.#charts.map(async (chart) => {
        const key = `${chart.series.name}|${this.#scope}|${from.toISOString()}|${hours}`;
        let reading = readings.get(key);
        if (!recent || !reading || now - reading.at >= REUSE_MS) {
          const data = this.#connection.history(chart.series.name, this.#scope, from, to);
          reading = { data, at: now };
          readings.set(key, reading);
          data.catch(() => readings.get(key) === reading && readings.delete(key));
        }
        try {
          const data = await reading.data;
          if (generation === this.#generation) chart.show(data, hours, reading.at);
        } catch (error) {
          if (generation === this.#generation) chart.failed(error);
        }
      }),
    );
  }

  dispose() {
    clearInterval(this.#timer);
    this.#generation += 1;
    for (const chart of this.#charts) chart.dispose();
  }
}

// The latest reading (its promise) of each (series, scope, range), for views shown again soon.
const readings = new Map();

/** Forget every reading (another identity). */
export function forgetReadings() {
  readings.clear();
}

class TrendChart {
  #plot = null;
  #box;
  #observer;
  #fetchedAt = null;
  #binder;
  #wall;

  constructor(series, binder, scope, wall) {
    this.series = series;
    this.#binder = binder;
    this.#wall = wall;
    const { name, title } = series;
    this.#box = el("div.chart-plot", { role: "img", "aria-label": `${title}: loading` });
    this.message = el("p.chart-message", {}, "Loading…");
    this.asOf = el("span.chart-as-of");
    this.badge = el("span.stale-badge", { hidden: true }, "Stale");
    this.element = el(
      "figure.chart",
      { dataset: { series: name, points: "0" } },
      el(
        "figcaption.chart-head",
        {},
        el("h3.chart-title", {}, title),
        el(
          "dl.growth",
          {},
          el(
            "div",
            {},
            el("dt", {}, "vs yesterday"),
            el("dd", {}, binder.value(`${name}_growth_day`, scope)),
          ),
          el(
            "div",
            {},
            el("dt", {}, "vs last week"),
            el("dd", {}, binder.value(`${name}_growth_week`, scope)),
          ),
          el(
            "div",
            {},
            el("dt", {}, "Trend"),
            el("dd", {}, trendLabel(binder, `${name}_trend`, scope)),
          ),
        ),
      ),
      this.#box,
      this.message,
      el("p.chart-foot", {}, this.badge, " By hour, hospital time · ", this.asOf),
    );
    this.#observer = new ResizeObserver(() => this.#resize());
    this.#observer.observe(this.#box);
  }

  show(data, hours, fetchedAt) {
    if (typeof uPlot !== "function") {
      this.failed({ message: "the chart library did not load" });
      return;
    }
    this.#fetchedAt = fetchedAt;
    const xs = data.points.map((point) => Date.parse(point.start) / 1000);
    const number = (v) => (v === null || v === undefined ? null : Number(v));
    const columns = [xs, data.points.map((point) => number(point.value))];
    if (this.series.peak) columns.push(data.points.map((point) => number(point.peak)));
    this.element.dataset.points = String(xs.length);
    const empty = columns[1].every((v) => v === null);
    this.message.hidden = !empty;
    this.message.textContent = empty ? "No data in this range yet." : "";
    this.#box.setAttribute("aria-label", describe(this.series, columns, hours));
    if (this.#plot === null) {
      this.#plot = this.#create(columns);
      this.#resize(); // now that its legend takes its room
    } else {
      this.#plot.setData(columns);
    }
    this.tick();
  }

  failed(error) {
    if (error.code === "offline") return; // the chart stays, and turns stale; read on return
    this.message.hidden = false;
    this.message.textContent = `Cannot read this series: ${error.message ?? error.code ?? error}`;
    this.tick();
  }

  tick() {
    const stale =
      this.#fetchedAt === null
        ? this.#binder.isStale("historical")
        : this.#binder.freshness.now() - this.#fetchedAt > STALE_AFTER.chart ||
          this.#binder.isStale("historical");
    this.element.dataset.stale = String(stale);
    this.badge.hidden = !stale;
    const words = this.#fetchedAt === null ? "" : `as of ${fmt.hourMinute(this.#fetchedAt)}`;
    if (this.asOf.textContent !== words) this.asOf.textContent = words;
  }

  dispose() {
    this.#observer.disconnect();
    this.#plot?.destroy();
  }

  #create(columns) {
    const css = getComputedStyle(document.body);
    const color = (name) => css.getPropertyValue(name).trim();
    const { kind } = this.series;
    const ink = color("--muted");
    const grid = color("--line");
    const zone = fmt.timeZone();
    const valueOf = (_u, v) => (v === null || v === undefined ? "—" : writeValue(kind, v));
    const series = [
      { value: (_u, ts) => (ts ? fmt.dayHour(ts * 1000) : "—") },
      {
        label: kind === "rate" ? "Average" : this.series.title,
        stroke: color("--chart-1"),
        fill: color(kind === "rate" ? "--chart-1-fill" : "--chart-bar"),
        width: 2,
        value: valueOf,
        // Counts as bars, each over its hour; a rate as a line.
        paths: kind === "rate" ? undefined : uPlot.paths.bars({ size: [0.8, 64], align: 1 }),
        points: { show: kind === "rate" ? sparse : false, size: 7, fill: color("--chart-1") },
      },
    ];
    if (this.series.peak) {
      series.push({
        label: "Peak",
        stroke: color("--chart-2"),
        width: 1.5,
        dash: [6, 4],
        value: valueOf,
        points: { show: sparse, size: 5, fill: color("--chart-2") },
      });
    }
    const { width, height } = this.#size();
    // Axis type in proportion to the page's (a wall's is larger), not uPlot's fixed 12px.
    const rem = Number.parseFloat(getComputedStyle(document.documentElement).fontSize) || 15;
    const font = `${Math.round(rem * 0.8)}px system-ui, sans-serif`;
    return new uPlot(
      {
        width,
        height,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), zone),
        legend: { show: !this.#wall },
        cursor: { show: !this.#wall, drag: { x: false, y: false }, points: { show: true } },
        scales: {
          // One hour past the last start, so that the current hour's bar is whole.
          x: { time: true, range: (_u, min, max) => [min, max + HOUR_MS / 1000] },
          // Counts and money from 0, with room above the highest hour (at least a few units).
          y: { range: kind === "rate" ? [0, 1] : (_u, _min, max) => [0, Math.max(max * 1.15, 4)] },
        },
        axes: [
          {
            stroke: ink,
            grid: { stroke: grid, width: 1 },
            ticks: { stroke: grid, size: Math.round(rem * 0.4) },
            font,
            size: Math.round(rem * 2.2),
            space: Math.round(rem * 3.8),
            values: (_u, splits) => splits.map(timeLabel),
          },
          {
            stroke: ink,
            grid: { stroke: grid, width: 1 },
            ticks: { show: false },
            incrs: kind === "rate" ? undefined : WHOLE_STEPS,
            font,
            size: Math.round(rem * 4),
            space: Math.round(rem * 2),
            values: (_u, splits) => splits.map((v) => fmt.axisValue(kind, v)),
          },
        ],
        series,
      },
      columns,
      this.#box,
    );
  }

  // The box's size, less the legend (the cursor's values, under the plot).
  #size() {
    const rect = this.#box.getBoundingClientRect();
    const legend = this.#plot?.root.querySelector(".u-legend")?.offsetHeight ?? 0;
    return {
      width: Math.max(200, Math.floor(rect.width)),
      height: Math.max(100, Math.floor(rect.height - legend)),
    };
  }

  #resize() {
    if (this.#plot === null) return;
    const size = this.#size();
    if (size.width !== this.#plot.width || size.height !== this.#plot.height) {
      this.#plot.setSize(size);
    }
  }
}

// Points only where a line cannot be drawn: a series of one or two hours so far.
const sparse = (u, index) => u.data[index].filter((v) => v !== null).length < 3;

// Hours, and the day at the hospital's midnight or when ticks are a day or more apart.
function timeLabel(ts) {
  if (ts === null) return "";
  const ms = ts * 1000;
  return fmt.isMidnight(ms) ? fmt.dayShort(ms) : fmt.hour(ms);
}

function writeValue(kind, v) {
  if (kind === "rate") return fmt.percent(v);
  if (kind === "money") return fmt.money(v);
  return fmt.count(v);
}

// What a screen reader hears for the chart: total or range, and the latest hour.
function describe(series, columns, hours) {
  const values = columns[1].filter((v) => v !== null);
  const span = hours === 24 ? "last 24 hours" : `last ${hours / 24} days`;
  if (values.length === 0) return `${series.title} by hour, ${span}: no data yet`;
  const latest = writeValue(series.kind, values[values.length - 1]);
  if (series.kind === "rate") {
    const low = writeValue("rate", Math.min(...values));
    const high = writeValue("rate", Math.max(...values));
    return `${series.title} by hour, ${span}: latest ${latest}, between ${low} and ${high}`;
  }
  const total = writeValue(
    series.kind,
    values.reduce((a, b) => a + b, 0),
  );
  return `${series.title} by hour, ${span}: ${total} in all, ${latest} in the latest hour`;
}
