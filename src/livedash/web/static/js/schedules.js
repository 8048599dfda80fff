// Report schedules, for admins and super_admins (the reports page): each with its state, its
// next and last runs and its last error; made with a preset or a cron expression on the
// hospital's clock, paused, resumed and deleted (docs/reports.md "Schedules").
import { withQuery } from "./api.js";
import { el } from "./dom.js";
import * as fmt from "./format.js";
import { scopeOptions } from "./departments.js";
import { busy, field, formError, problemsByField, select } from "./forms.js";
import { href } from "./router.js";

export const FORMATS = [
  ["pdf", "PDF"],
  ["csv", "CSV"],
  ["json", "JSON"],
];
const PAGE_LIMIT = 50;
const FIELDS = ["name", "report_type", "department", "format", "cron", "misfire", "recipients"];
const PRESETS = [
  ["@hourly", "Every hour (the hour before)"],
  ["0 6 * * *", "Every day at 06:00 (the day before)"],
  ["0 6 * * 1", "Every Monday at 06:00 (the week before)"],
  ["0 6 1 * *", "On the 1st at 06:00 (the month before)"],
  ["", "Other: a cron expression…"],
];
const WHEN = new Map([
  ...PRESETS.filter(([cron]) => cron),
  ["@daily", "Every day at midnight"],
  ["@weekly", "Every Monday at midnight"],
  ["@monthly", "On the 1st at midnight"],
]);
const MISFIRES = [
  ["run_once", "Run the latest missed run once"],
  ["skip", "Skip them, wait for the next run"],
];

export function mountSchedules({ container, api, directory, types }) {
  const rows = el("tbody");
  const status = el("p.page-status", { role: "status" });
  const empty = el("p.list-empty", { hidden: true }, "No schedules yet.");
  const more = el("button.secondary", { type: "button", hidden: true }, "Show more");
  const table = el(
    "table.schedule-table",
    {},
    el("caption.visually-hidden", {}, "Report schedules"),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ["Name", "Report", "When", "State", "Next run", "Last run", "Actions"].map((title) =>
          el("th", { scope: "col" }, title),
        ),
      ),
    ),
    rows,
  );
  let next = null;
  let disposed = false;
  const shown = new Map(); // id -> row

  const name = (schedule) =>
    `${types.get(schedule.report_type) ?? schedule.report_type}, ${directory.name(schedule.department)}, ${schedule.format.toUpperCase()}`;

  function put(schedule, { first = false } = {}) {
    const row = scheduleRow(schedule);
    const old = shown.get(schedule.id);
    if (old) old.replaceWith(row);
    else if (first) rows.prepend(row);
    else rows.append(row);
    shown.set(schedule.id, row);
    empty.hidden = true;
  }

  function scheduleRow(schedule) {
    const problem = el("span.inline-error", { role: "alert" });
    const act = (label, work) => {
      const button = el(
        "button.secondary",
        { type: "button", "aria-label": `${label} ${schedule.name}` },
        label,
      );
      button.addEventListener("click", () =>
        busy(button, async () => {
          problem.textContent = "";
          try {
            await work(button);
          } catch (error) {
            problem.textContent = ` ${error.text}`;
          }
        }),
      );
      return button;
    };
    const toggle = schedule.paused
      ? act("Resume", async () =>
          put(await api.post(`/api/reports/schedules/${schedule.id}/resume`)),
        )
      : act("Pause", async () =>
          put(await api.post(`/api/reports/schedules/${schedule.id}/pause`)),
        );
    const remove = act("Delete", async (button) => {
      if (button.dataset.confirm !== "true") {
        button.dataset.confirm = "true";
        button.textContent = "Delete: sure?";
        button.setAttribute("aria-label", `Delete ${schedule.name}: press again to confirm`);
        return;
      }
      await api.delete(`/api/reports/schedules/${schedule.id}`);
      shown.get(schedule.id)?.remove();
      shown.delete(schedule.id);
      empty.hidden = shown.size > 0;
      status.textContent = `Schedule “${schedule.name}” deleted.`;
    });
    let state = schedule.paused ? "Paused" : "Active";
    if (schedule.failures > 0)
      state += `, ${schedule.failures} failed attempt${schedule.failures > 1 ? "s" : ""}`;
    const when = (iso) => (iso ? fmt.when(Date.parse(iso)) : "—");
    const last = schedule.last_run_at
      ? [
          when(schedule.last_run_at),
          schedule.last_report_id
            ? el(
                "a",
                {
                  href: href({ page: "reports", report: schedule.last_report_id }),
                  dataset: { route: "" },
                },
                ` report ${schedule.last_report_id}`,
              )
            : null,
        ]
      : ["not yet"];
    const cell = (label, ...content) => el("td", { dataset: { label } }, ...content);
    return el(
      "tr",
      { dataset: { schedule: String(schedule.id), paused: String(schedule.paused) } },
      el("th", { scope: "row" }, schedule.name),
      cell(
        "Report",
        name(schedule),
        schedule.recipients.length
          ? el("span.recipients", {}, ` · to ${schedule.recipients.join(", ")}`)
          : null,
      ),
      cell("When", WHEN.get(schedule.cron) ?? el("code", {}, schedule.cron)),
      cell(
        "State",
        el("span.schedule-state", { dataset: { paused: String(schedule.paused) } }, state),
        schedule.last_error
          ? el("span.schedule-error", {}, ` Last error: ${schedule.last_error}`)
          : null,
        schedule.retry_at ? el("span", {}, ` Retried at ${when(schedule.retry_at)}.`) : null,
      ),
      cell("Next run", schedule.paused ? "—" : when(schedule.next_run_at)),
      cell("Last run", ...last),
      cell("Actions", el("div.row-actions", {}, toggle, remove, problem)),
    );
  }

  async function read(cursor) {
    let page;
    try {
      page = await api.get(withQuery("/api/reports/schedules", { limit: PAGE_LIMIT, cursor }));
    } catch (error) {
      if (!disposed) status.textContent = `The schedules could not be read: ${error.text}`;
      return;
    }
    if (disposed) return;
    for (const schedule of page.items) put(schedule);
    next = page.next;
    more.hidden = next === null;
    empty.hidden = shown.size > 0;
  }
  more.addEventListener("click", () => busy(more, () => read(next)));

  container.replaceChildren(
    el("h2#schedules-title.section-title", {}, "Schedules"),
    status,
    el("div.table-wrap", {}, table),
    empty,
    more,
    scheduleForm({
      api,
      directory,
      types,
      made: (schedule) => {
        put(schedule, { first: false });
        status.textContent = `Schedule “${schedule.name}” made: next run ${fmt.when(Date.parse(schedule.next_run_at))}.`;
      },
    }),
  );
  read(null);
  return {
    dispose() {
      disposed = true;
    },
  };
}

function scheduleForm({ api, directory, types, made }) {
  const name = field("Name", el("input", { type: "text", maxLength: 128, required: true }));
  const type = field("Report", select([...types]));
  const scope = field("Scope", select(scopeOptions(directory)));
  const format = field("Format", select(FORMATS));
  const preset = field("When", select(PRESETS, { value: "0 6 * * *" }), {
    hint: `On the hospital's clock (${fmt.timeZone()}); each run covers the period before it.`,
  });
  const cron = field(
    "Cron expression",
    el("input", { type: "text", maxLength: 128, spellcheck: "false" }),
    {
      hint: "Five fields: minute hour day month weekday, e.g. 30 7 * * 1-5.",
    },
  );
  cron.wrap.hidden = true;
  const misfire = field("Runs missed while the service was down", select(MISFIRES));
  const recipients = field(
    "Send to (optional)",
    el("input", { type: "text", spellcheck: "false" }),
    {
      hint: "User names, separated by commas; each needs an e-mail address in their preferences.",
    },
  );
  preset.control.addEventListener("change", () => {
    cron.wrap.hidden = preset.control.value !== "";
  });
  const problem = formError();
  const submit = el("button.primary", { type: "submit" }, "Make schedule");
  const form = el(
    "form.schedule-form",
    { noValidate: true, "aria-labelledby": "new-schedule-title" },
    el("h3#new-schedule-title.subsection-title", {}, "New schedule"),
    el("div.form-row", {}, name.wrap, type.wrap, scope.wrap, format.wrap),
    el("div.form-row", {}, preset.wrap, cron.wrap, misfire.wrap),
    recipients.wrap,
    problem.node,
    el("div.form-buttons", {}, submit),
  );
  const fields = { name, report_type: type, department: scope, format, cron, misfire, recipients };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    for (const one of Object.values(fields)) one.error("");
    problem.set("");
    const expression = preset.control.value || cron.control.value.trim();
    const body = {
      name: name.control.value.trim(),
      report_type: type.control.value,
      department: scope.control.value || null,
      format: format.control.value,
      cron: expression,
      misfire: misfire.control.value,
      recipients: recipients.control.value
        .split(",")
        .map((one) => one.trim())
        .filter(Boolean),
    };
    const missing = [];
    if (!body.name) missing.push([name, "Give the schedule a name."]);
    if (!body.cron) missing.push([cron, "Give a cron expression, or choose a preset."]);
    if (missing.length) {
      for (const [one, message] of missing) one.error(message);
      missing[0][0].control.focus();
      return;
    }
    busy(submit, async () => {
      let schedule;
      try {
        schedule = await api.post("/api/reports/schedules", body);
      } catch (error) {
        if (error.status === 422) {
          // The service says which in words: "recipient 'x' ...", "'0 6 * * * *' has 6 fields".
          const { byField, general } = problemsByField(error, FIELDS, {
            recipient: "recipients",
            "e-mail": "recipients",
            "report type": "report_type",
            preset: "cron",
            field: "cron",
            fields: "cron",
            "never runs": "cron",
            "valid schedule": "cron",
          });
          // A preset refused is the preset's field (the expression's is hidden then).
          const at = (name) => (name === "cron" && cron.wrap.hidden ? preset : fields[name]);
          for (const [name, message] of byField) at(name).error(message);
          problem.set(general.join(" "));
          const first = FIELDS.find((one) => byField.has(one));
          if (first) at(first).control.focus();
        } else {
          problem.set(`Not made: ${error.text}`);
        }
        return;
      }
      made(schedule);
      name.control.value = "";
    });
  });
  return form;
}
