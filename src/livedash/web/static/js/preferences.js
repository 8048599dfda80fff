// The preferences page (`?page=preferences`): which notifications this user gets and how
// (`GET`/`PUT /api/notifications/preferences`; docs/alerts.md "Notifications"), and what
// this device does with them (notify.js). A refusal is shown next to the field it is about.
import { el } from "./dom.js";
import * as fmt from "./format.js";
import { busy, choice, field, formError, group, problemsByField, select } from "./forms.js";
import { deviceControls } from "./notify.js";

const FIELDS = [
  "channels",
  "min_severity",
  "departments",
  "quiet_from",
  "quiet_until",
  "max_per_hour",
  "email",
];
const CHANNELS = [
  ["in_app", "In the app (the bell)"],
  ["email", "E-mail (high and critical alerts)"],
  ["push", "Web Push (high and critical alerts, on the browsers where it is on)"],
];
const SEVERITIES = [
  ["low", "Low and above (everything)"],
  ["medium", "Medium and above"],
  ["high", "High and critical"],
  ["critical", "Critical only"],
];

export function mountPreferences({ container, api, directory, notifier }) {
  const status = el("p.page-status", { role: "status" }, "Loading your preferences…");
  const device = deviceControls(notifier);
  const form = el("div.preferences-form");
  container.replaceChildren(
    el(
      "section.figures.preferences",
      { "aria-labelledby": "preferences-title" },
      el("h2#preferences-title.section-title", {}, "Notifications"),
      status,
      form,
    ),
    el(
      "section.figures.device-section",
      { "aria-labelledby": "device-title" },
      el("h2#device-title.section-title", {}, "On this device"),
      device.element,
    ),
  );
  let disposed = false;
  api
    .get("/api/notifications/preferences")
    .then((preferences) => {
      if (disposed) return;
      status.textContent = "";
      form.replaceChildren(preferencesForm(preferences, { api, directory, status }));
    })
    .catch((error) => {
      if (!disposed) status.textContent = `Your preferences could not be read: ${error.text}`;
    });
  return {
    dispose() {
      disposed = true;
      device.dispose();
    },
  };
}

function preferencesForm(preferences, { api, directory, status }) {
  const channelBoxes = CHANNELS.map(([value, label]) =>
    choice("checkbox", "channels", value, label, {
      checked: preferences.channels.includes(value),
    }),
  );
  const channels = group("Channels", channelBoxes, {
    hint: "Critical alerts and escalations come at any hour; e-mail and push wait out quiet hours.",
  });
  const severity = field(
    "Minimum severity",
    select(SEVERITIES, { value: preferences.min_severity, name: "min_severity" }),
    { hint: "An escalation addressed to you comes whatever its severity." },
  );

  const every = choice("radio", "departments-mode", "all", "Every department I may see", {
    checked: preferences.departments === null,
  });
  const some = choice("radio", "departments-mode", "some", "Only these:", {
    checked: preferences.departments !== null,
  });
  const departmentBoxes = directory.byName().map((code) =>
    choice("checkbox", "departments", code, directory.name(code), {
      checked: preferences.departments?.includes(code) ?? false,
    }),
  );
  const list = el("div.department-choices", {}, departmentBoxes);
  const departments = group("Departments", [every, some, list], {
    hint: directory.seesHospital
      ? "Alerts of the hospital as a whole come only with every department."
      : null,
  });
  const showList = () => {
    list.hidden = !some.querySelector("input").checked;
  };
  every.querySelector("input").addEventListener("change", showList);
  some.querySelector("input").addEventListener("change", showList);
  showList();

  const from = field(
    "From",
    el("input", { type: "time", value: clockTime(preferences.quiet_from) }),
  );
  const until = field(
    "Until",
    el("input", { type: "time", value: clockTime(preferences.quiet_until) }),
  );
  const quiet = group("Quiet hours", [from.wrap, until.wrap], {
    hint: `The hospital's time (${fmt.timeZone()}); may cross midnight. Leave both empty for none.`,
    className: "quiet",
  });
  const perHour = field(
    "At most, per hour",
    el("input", {
      type: "number",
      min: "1",
      max: "1000",
      step: "1",
      value: String(preferences.max_per_hour),
    }),
    { hint: "E-mails and pushes together; critical alerts and escalations always come." },
  );
  const email = field(
    "E-mail address",
    el("input", {
      type: "email",
      value: preferences.email ?? "",
      autocomplete: "email",
      maxLength: 254,
      spellcheck: "false",
    }),
    { hint: "Needed for the e-mail channel, and for scheduled reports sent to you." },
  );

  const problem = formError();
  const save = el("button.primary", { type: "submit" }, "Save preferences");
  const form = el(
    "form.preferences-fields",
    { noValidate: true, "aria-labelledby": "preferences-title" },
    channels.wrap,
    severity.wrap,
    departments.wrap,
    quiet.wrap,
    perHour.wrap,
    email.wrap,
    problem.node,
    el("div.form-buttons", {}, save),
  );
  const slots = {
    channels,
    min_severity: severity,
    departments,
    quiet_from: quiet,
    quiet_until: quiet,
    max_per_hour: perHour,
    email,
  };
  const focusOf = {
    channels: () => channelBoxes[0].querySelector("input"),
    min_severity: () => severity.control,
    departments: () => some.querySelector("input"),
    quiet_from: () => from.control,
    quiet_until: () => until.control,
    max_per_hour: () => perHour.control,
    email: () => email.control,
  };

  const clear = () => {
    for (const slot of new Set(Object.values(slots))) slot.error("");
    problem.set("");
  };
  const report = (errors, general = []) => {
    for (const [name, message] of errors) slots[name].error(message);
    problem.set(general.join(" "));
    const first = FIELDS.find((name) => errors.has(name));
    if (first) focusOf[first]().focus();
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clear();
    status.textContent = "";
    const checked = (boxes) =>
      boxes.map((box) => box.querySelector("input")).filter((input) => input.checked);
    const body = {
      channels: checked(channelBoxes).map((input) => input.value),
      min_severity: severity.control.value,
      departments: some.querySelector("input").checked
        ? checked(departmentBoxes).map((input) => input.value)
        : null,
      quiet_from: from.control.value || null,
      quiet_until: until.control.value || null,
      max_per_hour: Number(perHour.control.value),
      email: email.control.value.trim() || null,
    };
    const errors = check(body, email.control);
    if (errors.size) {
      report(errors);
      return;
    }
    busy(save, async () => {
      try {
        await api.put("/api/notifications/preferences", body);
      } catch (error) {
        if (error.status === 422) {
          const { byField, general } = problemsByField(error, FIELDS);
          report(byField, general);
        } else {
          problem.set(`Not saved: ${error.text}`);
        }
        return;
      }
      status.textContent = `Saved at ${fmt.hourMinute(Date.now())}.`;
    });
  });
  return form;
}

// What the page can tell before asking the service (which checks it all again).
function check(body, emailInput) {
  const errors = new Map();
  if (body.channels.includes("email") && !body.email) {
    errors.set("email", "Give an e-mail address for the e-mail channel.");
  } else if (body.email && !emailInput.checkValidity()) {
    errors.set("email", "This is not an e-mail address.");
  }
  if (body.departments !== null && body.departments.length === 0) {
    errors.set("departments", "Choose at least one department, or every department.");
  }
  if ((body.quiet_from === null) !== (body.quiet_until === null)) {
    errors.set("quiet_from", "Give both times, or neither.");
  }
  if (!Number.isInteger(body.max_per_hour) || body.max_per_hour < 1 || body.max_per_hour > 1000) {
    errors.set("max_per_hour", "A whole number from 1 to 1000.");
  }
  return errors;
}

// "22:00:00" -> "22:00", as a time field shows it.
const clockTime = (time) => (time ?? "").slice(0, 5);
