// One alert of the panel (alerts.js): its severity in words and colour, what it is about, its
// state, age, value against its threshold or usual band, who acknowledged it and why, whether
// its notifications are silenced, and for admins the acknowledge, resolve and silence forms.
// The card changes in place as the alert does, so a form being filled in stays open.
import { el } from "./dom.js";
import * as fmt from "./format.js";
import { busy, field, formError, select, uid } from "./forms.js";

export const SEVERITY_NAMES = { critical: "Critical", high: "High", medium: "Medium", low: "Low" };
export const SEVERITY_RANK = { critical: 0, high: 1, medium: 2, low: 3 };
const STATES = {
  firing: "Firing",
  recovering: "Recovering: clear, not yet for long enough",
  stale: "Data stale: not judged until it is fresh",
  pending: "Pending",
  normal: "Back to normal",
};
const STATUSES = { active: "Not acknowledged", acknowledged: "Acknowledged", resolved: "Resolved" };
const HOUR = 3600;
const ACKNOWLEDGED_FOR = [
  ["", "Until it is resolved"],
  [String(HOUR), "1 hour"],
  [String(4 * HOUR), "4 hours"],
  [String(12 * HOUR), "12 hours"],
  [String(24 * HOUR), "24 hours"],
];
const SILENCED_FOR = [
  [String(HOUR / 2), "30 minutes"],
  [String(HOUR), "1 hour"],
  [String(2 * HOUR), "2 hours"],
  [String(4 * HOUR), "4 hours"],
  [String(8 * HOUR), "8 hours"],
  [String(24 * HOUR), "24 hours"],
  [String(72 * HOUR), "3 days"],
  [String(168 * HOUR), "7 days"],
];

/** A value of a rule's metric, written as its kind says (null: a plain number). */
export function writeValue(value, kind) {
  if (value === null || value === undefined) return "—";
  if (kind === "rate") return fmt.percent(value);
  if (kind === "money") return fmt.money(value);
  if (kind === "cents") return fmt.money(value / 100);
  return fmt.measure(value);
}

/** "Value 2 · fires above 1 · clears at 0.5", or against the usual band for anomalies. */
export function measurement(alert, kind) {
  const write = (value) => writeValue(value, kind);
  if (alert.value === null || alert.value === undefined) return null;
  if (alert.expected !== null && alert.expected !== undefined) {
    const band =
      alert.band_low !== null && alert.band_high !== null
        ? ` (usual range ${write(alert.band_low)} to ${write(alert.band_high)})`
        : "";
    return `Value ${write(alert.value)} · ${write(alert.expected)} expected${band}`;
  }
  if (alert.threshold === null || alert.threshold === undefined) {
    return `Value ${write(alert.value)}`;
  }
  const above =
    alert.clear_at !== null && alert.clear_at !== alert.threshold
      ? alert.clear_at < alert.threshold
      : alert.value >= alert.threshold;
  let text = `Value ${write(alert.value)} · fires ${above ? "above" : "below"} ${write(alert.threshold)}`;
  if (alert.clear_at !== null && alert.clear_at !== alert.threshold) {
    text += ` · clears at ${write(alert.clear_at)}`;
  }
  return text;
}

// " · " on the screen, a comma for a screen reader.
function separator() {
  return el(
    "span.sep",
    {},
    el("span", { "aria-hidden": "true" }, " · "),
    el("span.visually-hidden", {}, ", "),
  );
}

/** Whether a silence (its matchers) holds back `alert`'s notifications. */
export function silences(silence, alert) {
  return (
    (silence.rule === null || silence.rule === alert.rule) &&
    (silence.department === null || silence.department === (alert.department ?? "hospital")) &&
    (silence.severity === null || silence.severity === alert.severity)
  );
}

export class AlertCard {
  #alert;
  #ui;
  #options;
  #opener = null; // the button whose form is open

  /**
   * `options`: api (api.js), manage (admins: the actions), name(code) (a department's name),
   * kind(alert) (how its values are written), changed(alert) (an action's answer),
   * silenced() (a silence was made or ended), gone() (it left the panel with the focus).
   */
  constructor(alert, options) {
    this.#alert = alert;
    this.#options = options;
    const titleId = uid("alert-title");
    const ui = {
      badge: el("span.severity-badge", { id: `${titleId}-severity` }),
      title: el("h3.alert-title", { id: titleId, tabIndex: -1 }),
      where: el("span.alert-where"),
      state: el("span.alert-state"),
      status: el("span.alert-status"),
      age: el("time.alert-age"),
      measure: el("p.alert-measure"),
      acknowledged: el("p.alert-acknowledged"),
      escalation: el("p.alert-escalation"),
      silence: el("p.alert-silenced"),
      actions: el("div.alert-actions", { role: "group", "aria-label": "Actions" }),
      slot: el("div.alert-form-slot", { id: uid("alert-form") }),
    };
    this.#ui = ui;
    this.element = el(
      "li.alert-card",
      { "aria-labelledby": `${titleId}-severity ${titleId}` },
      el("div.alert-head", {}, ui.badge, ui.title),
      el(
        "p.alert-facts",
        {},
        ui.where,
        separator(),
        ui.state,
        separator(),
        ui.status,
        separator(),
        "raised ",
        ui.age,
      ),
      ui.measure,
      ui.acknowledged,
      ui.escalation,
      ui.silence,
    );
    if (options.manage) {
      ui.acknowledge = this.#actionButton("Acknowledge", () => this.#acknowledgeForm());
      ui.resolve = this.#actionButton("Resolve", () => this.#resolveForm());
      ui.silenceButton = this.#actionButton("Silence", () => this.#silenceForm());
      ui.actions.append(ui.acknowledge, ui.resolve, ui.silenceButton);
      this.element.append(ui.actions, ui.slot);
    }
    this.update(alert);
  }

  get alert() {
    return this.#alert;
  }

  /** Show `alert`, the newest message of this alert. */
  update(alert) {
    this.#alert = alert;
    const ui = this.#ui;
    const severity = alert.severity;
    this.element.dataset.alertId = String(alert.id);
    this.element.dataset.severity = severity;
    this.element.dataset.status = alert.status;
    this.element.dataset.department = alert.department ?? "";
    ui.badge.dataset.severity = severity;
    ui.badge.textContent = SEVERITY_NAMES[severity] ?? severity;
    ui.title.textContent = alert.title || alert.rule || `Alert ${alert.id}`;
    ui.where.textContent = this.#options.name(alert.department);
    ui.state.textContent = alert.state ? (STATES[alert.state] ?? alert.state) : "Raised by hand";
    ui.state.dataset.state = alert.state ?? "";
    ui.status.textContent = STATUSES[alert.status] ?? alert.status;
    ui.status.dataset.status = alert.status;
    ui.age.dateTime = alert.raised_at;
    ui.age.title = fmt.dateTime(Date.parse(alert.raised_at));
    this.measure();
    this.#showAcknowledgement();
    const level = alert.escalation_level ?? 0;
    ui.escalation.hidden = level === 0;
    ui.escalation.textContent =
      level >= 2
        ? "Escalated to the super admins: nobody acknowledged it in time."
        : "Escalated to the department's admins: nobody acknowledged it in time.";
    if (ui.acknowledge) ui.acknowledge.hidden = alert.status !== "active";
    this.tick();
  }

  /** Write the value against the threshold again (once the rule's kind is known). */
  measure() {
    const text = measurement(this.#alert, this.#options.kind(this.#alert));
    this.#ui.measure.hidden = text === null;
    this.#ui.measure.textContent = text ?? "";
  }

  /** Say which of `list` (silences not over) hold back this alert's notifications. */
  showSilences(list) {
    const ui = this.#ui;
    const matching = list.filter((silence) => silences(silence, this.#alert));
    ui.silence.hidden = matching.length === 0;
    if (matching.length === 0) return;
    const last = matching.reduce((a, b) => (Date.parse(a.ends_at) > Date.parse(b.ends_at) ? a : b));
    const by = last.created_by ? ` by ${last.created_by}` : "";
    const comment = last.comment ? `: “${last.comment}”` : "";
    ui.silence.replaceChildren(
      `Notifications silenced until ${fmt.when(Date.parse(last.ends_at))}${by}${comment}`,
    );
    if (this.#options.manage) {
      const end = el("button.link-button", { type: "button" }, "End silence");
      end.addEventListener("click", () =>
        busy(end, async () => {
          try {
            await this.#options.api.post(`/api/alerts/silences/${last.id}/end`);
            this.#options.silenced();
          } catch (error) {
            this.#ui.silence.append(el("span.inline-error", {}, ` ${error.text}`));
          }
        }),
      );
      ui.silence.append(" ", end);
    }
  }

  tick() {
    const raised = Date.parse(this.#alert.raised_at);
    const text = fmt.ago(Date.now() - raised);
    if (this.#ui.age.textContent !== text) this.#ui.age.textContent = text;
  }

  /** Pick this card out (the address named it) and move the focus to it. */
  pick() {
    this.element.classList.add("picked");
    this.#ui.title.focus({ preventScroll: true });
    this.element.scrollIntoView({ block: "center" });
  }

  #showAcknowledgement() {
    const alert = this.#alert;
    const node = this.#ui.acknowledged;
    node.hidden = !alert.acknowledged_by;
    if (!alert.acknowledged_by) return;
    const parts = [`Acknowledged by ${alert.acknowledged_by}`];
    if (alert.acknowledged_at) parts[0] += ` at ${fmt.when(Date.parse(alert.acknowledged_at))}`;
    if (alert.acknowledged_until) {
      parts.push(`until ${fmt.when(Date.parse(alert.acknowledged_until))}`);
    }
    node.replaceChildren(parts.join(", "));
    if (alert.acknowledgement_note) {
      node.append(": ", el("q.alert-note", {}, alert.acknowledgement_note));
    }
  }

  #actionButton(label, open) {
    const button = el(
      "button.action",
      { type: "button", "aria-expanded": "false", "aria-controls": this.#ui.slot.id },
      label,
    );
    button.addEventListener("click", () => {
      const again = this.#opener === button;
      this.#close();
      if (!again) {
        this.#opener = button;
        button.setAttribute("aria-expanded", "true");
        open();
      }
    });
    return button;
  }

  #close({ focus = null } = {}) {
    this.#ui.slot.replaceChildren();
    this.#opener?.setAttribute("aria-expanded", "false");
    const opener = this.#opener;
    this.#opener = null;
    if (focus === "opener") opener?.focus();
    if (focus === "title") {
      // A resolved alert leaves the panel: the panel says where the focus goes.
      if (this.element.isConnected) this.#ui.title.focus();
      else this.#options.gone();
    }
  }

  // A form in the card: `fields`, a submit button, Cancel; `send()` the request.
  #form(label, intro, fields, submitLabel, send) {
    const submit = el("button.primary", { type: "submit" }, submitLabel);
    const cancel = el("button.secondary", { type: "button" }, "Cancel");
    const problem = formError();
    const form = el(
      "form.alert-form",
      { "aria-label": label, noValidate: true },
      intro ? el("p.form-intro", {}, intro) : null,
      fields.map((one) => one.wrap),
      problem.node,
      el("div.form-buttons", {}, submit, cancel),
    );
    cancel.addEventListener("click", () => this.#close({ focus: "opener" }));
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.#close({ focus: "opener" });
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(submit, async () => {
        problem.set("");
        try {
          await send();
        } catch (error) {
          problem.set(`Not done: ${error.text ?? error.message}`);
          return;
        }
        this.#close({ focus: "title" });
      });
    });
    this.#ui.slot.replaceChildren(form);
    (fields[0]?.control ?? submit).focus();
  }

  #acknowledgeForm() {
    const note = field("Note (optional)", el("textarea", { maxLength: 500, rows: 2 }), {
      hint: "Seen by everyone who sees this alert.",
    });
    const until = field("Acknowledged for", select(ACKNOWLEDGED_FOR));
    this.#form("Acknowledge the alert", null, [note, until], "Acknowledge", async () => {
      const seconds = Number(until.control.value);
      const body = {
        note: note.control.value.trim() || null,
        until: seconds ? new Date(Date.now() + seconds * 1000).toISOString() : null,
      };
      this.#options.changed(
        await this.#options.api.post(`/api/alerts/${this.#alert.id}/acknowledge`, body),
      );
    });
  }

  #resolveForm() {
    this.#form(
      "Resolve the alert",
      "Resolve it now? The rule raises a new alert only once its condition has cleared and " +
        "come back.",
      [],
      "Resolve alert",
      async () => {
        this.#options.changed(
          await this.#options.api.post(`/api/alerts/${this.#alert.id}/resolve`),
        );
      },
    );
  }

  #silenceForm() {
    const alert = this.#alert;
    const where = this.#options.name(alert.department);
    const matchers = { department: alert.department ?? "hospital" };
    let intro;
    if (alert.rule) {
      matchers.rule = alert.rule;
      intro = `Hold back the notifications of rule “${alert.rule}” in ${where}. The alert stays here.`;
    } else {
      matchers.severity = alert.severity;
      intro = `Hold back the notifications of ${alert.severity} alerts in ${where}. The alert stays here.`;
    }
    const duration = field("For", select(SILENCED_FOR, { value: String(HOUR) }));
    const comment = field("Comment (optional)", el("input", { type: "text", maxLength: 500 }));
    this.#form("Silence notifications", intro, [duration, comment], "Silence", async () => {
      const ends = Date.now() + Number(duration.control.value) * 1000;
      await this.#options.api.post("/api/alerts/silences", {
        ...matchers,
        ends_at: new Date(ends).toISOString(),
        comment: comment.control.value.trim() || null,
      });
      this.#options.silenced();
    });
  }
}
