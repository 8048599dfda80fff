// Honest about the connection: the state in the top bar (live, degraded with what and why,
// stale with the data's age, reconnecting with the attempt), a banner saying what it means for
// the figures whenever they may be behind, the hospital's clock and the newest change seen. It
// also says when the hospital's main application stops answering its health check
// (`main_app_up`): livedash's figures are still what the database holds, but the activity the
// main application would record is not coming in.
import { byId } from "./dom.js";
import * as fmt from "./format.js";

const NAMES = { cache: "cache", database: "database", feed: "change feed" };
const MAIN_APP_DOWN =
  "The hospital's main application is not answering its health check: the figures are what " +
  "the database holds, but activity it would record may be missing until it is back.";

export class Status {
  #state = { kind: "idle" };
  #mainAppDown = false;
  #freshness;
  #store;
  #ui = {
    pill: byId("connection"),
    banner: byId("connection-banner"),
    bannerText: byId("connection-detail"),
    lastUpdate: byId("last-update"),
    clock: byId("clock"),
  };

  constructor(freshness, store) {
    this.#freshness = freshness;
    this.#store = store;
    store.subscribe((entry) => {
      if (entry.metric !== "main_app_up") return;
      const down = entry.value === 0;
      if (down !== this.#mainAppDown) {
        this.#mainAppDown = down;
        this.tick();
      }
    });
  }

  /** Forget what was known of the service (signing out, or another identity). */
  forget() {
    this.#mainAppDown = false;
  }

  get kind() {
    return this.#state.kind;
  }

  /** Show a state: {kind, text?, attempt?, reason?, degraded?, reasons?, since?}. */
  show(state) {
    this.#state = state;
    const { pill } = this.#ui;
    pill.dataset.state = state.kind;
    pill.textContent = state.text ?? this.#words(state);
    this.tick();
  }

  #words(state) {
    switch (state.kind) {
      case "connecting":
        return "Connecting…";
      case "authenticating":
        return "Authenticating…";
      case "live":
        return "Live";
      case "degraded":
        return `Live, degraded: ${state.degraded.map((d) => NAMES[d] ?? d).join(", ")} unavailable`;
      case "stale":
        return `Stale: figures as of ${fmt.clock(state.since)} (database unreachable)`;
      case "reconnecting": {
        const detail = state.attempt ? `attempt ${state.attempt}` : state.reason;
        return detail ? `Reconnecting… (${detail})` : "Reconnecting…";
      }
      case "offline":
        return "Disconnected";
      default:
        return "Not connected";
    }
  }

  /** Redraw what ages: the banner, the clock and the newest change. */
  tick() {
    const { banner, bannerText, lastUpdate, clock } = this.#ui;
    const now = this.#freshness.now();
    // The hospital's clock, once the service has said which zone that is.
    const time = fmt.configured() ? fmt.hourMinute(now) : "—";
    if (clock.textContent !== time) clock.textContent = time;
    clock.dateTime = new Date(now).toISOString();
    if (this.#store.newest) {
      const text = fmt.clock(this.#store.newest);
      if (lastUpdate.textContent !== text) {
        lastUpdate.textContent = text;
        lastUpdate.dateTime = new Date(this.#store.newest).toISOString();
      }
    } else if (lastUpdate.textContent !== "—") {
      lastUpdate.textContent = "—";
      lastUpdate.removeAttribute("datetime");
    }
    const said = this.#bannerWords();
    const words =
      this.#mainAppDown && !["stale", "offline"].includes(this.#state.kind)
        ? [said, MAIN_APP_DOWN].filter(Boolean).join(" ")
        : said;
    banner.hidden = words === null;
    banner.dataset.state = this.#state.kind;
    if (words !== null && bannerText.textContent !== words) bannerText.textContent = words;
  }

  // What the state means for the figures, when they may be behind or something is down.
  #bannerWords() {
    const state = this.#state;
    const asOf = this.#freshness.asOf();
    const age =
      asOf === null
        ? ""
        : `Figures as of ${fmt.clock(asOf)} (${fmt.duration(this.#freshness.age())} old).`;
    const why = Object.entries(state.reasons ?? {})
      .map(([what, reason]) => `${NAMES[what] ?? what}: ${reason}`)
      .join("; ");
    const because = why ? ` (${why})` : "";
    switch (state.kind) {
      case "degraded": {
        const down = state.degraded.map((d) => NAMES[d] ?? d);
        const verb = down.length > 1 ? "are" : "is";
        return `Figures are current, but the ${down.join(" and ")} ${verb} unavailable${because}.`;
      }
      case "stale":
        return (
          `The service cannot reach the database${because}. ${age}` +
          " They catch up by themselves when it is back."
        );
      case "reconnecting":
        if (asOf === null) return null;
        return `Connection lost. ${age} Reconnecting by itself: the changes missed will follow.`;
      case "offline":
        return asOf === null ? null : `Connection lost. ${age}`;
      case "authenticating":
      case "connecting":
        return asOf === null ? null : `Reconnecting. ${age}`;
      default:
        return null;
    }
  }
}
