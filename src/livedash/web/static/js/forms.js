// Forms the page's way: every control has a label, its hint and its error are tied to it
// (aria-describedby), an error is said in words next to the field it is about, and a button
// is disabled while its request is on its way.
import { sentence } from "./api.js";
import { el } from "./dom.js";

let made = 0;

/** An id no other element of the page has: `prefix-N`. */
export const uid = (prefix) => `${prefix}-${(made += 1)}`;

/**
 * A labelled control, with an optional hint and a place for its error:
 * `{wrap, control, error(message)}`; `error("")` clears it.
 */
export function field(label, control, { hint = null, className = "" } = {}) {
  control.id ||= uid("field");
  const hintNode = hint ? el("p.hint", { id: `${control.id}-hint` }, hint) : null;
  const errorNode = el("p.field-error", { id: `${control.id}-error`, hidden: true });
  const wrap = el(
    `div.form-field${className ? `.${className}` : ""}`,
    {},
    el("label", { for: control.id }, label),
    hintNode,
    control,
    errorNode,
  );
  describe(control, hintNode, errorNode, false);
  return {
    wrap,
    control,
    error(message) {
      show(errorNode, message);
      describe(control, hintNode, errorNode, Boolean(message));
    },
  };
}

/** A group of checkboxes or radios under a legend, with a hint and a place for its error. */
export function group(legend, controls, { hint = null, className = "" } = {}) {
  const id = uid("group");
  const hintNode = hint ? el("p.hint", { id: `${id}-hint` }, hint) : null;
  const errorNode = el("p.field-error", { id: `${id}-error`, hidden: true });
  const wrap = el(
    `fieldset.field-group${className ? `.${className}` : ""}`,
    {},
    el("legend", {}, legend),
    hintNode,
    el("div.choices", {}, controls),
    errorNode,
  );
  describe(wrap, hintNode, errorNode, false);
  return {
    wrap,
    error(message) {
      show(errorNode, message);
      describe(wrap, hintNode, errorNode, Boolean(message));
    },
  };
}

/** A checkbox or radio with its label after it. */
export function choice(type, name, value, label, { checked = false } = {}) {
  const input = el("input", { type, name, value, id: uid(name), checked });
  return el("label.choice", { for: input.id }, input, el("span", {}, label));
}

/** `<select>` of [value, label] pairs. */
export function select(options, { value = null, name = null } = {}) {
  const node = el(
    "select",
    { name },
    options.map(([optionValue, label]) => el("option", { value: optionValue }, label)),
  );
  if (value !== null) node.value = value;
  return node;
}

/** A message for the whole form (`role="alert"`: read out when it appears). */
export function formError() {
  const node = el("p.form-error", { role: "alert", hidden: true });
  return { node, set: (message) => show(node, message) };
}

/**
 * Run `work()` with `button` disabled (and busy), so a request is sent once; resolves with
 * its result.
 */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/**
 * The problems of a refused request by field: `{byField: Map(name -> message), general:
 * [message]}`. The service names each field it refuses (`body.email: ...`; problems.py), or
 * says it in words: `aliases` maps such a word to its field ({recipient: "recipients"}).
 */
export function problemsByField(error, names, aliases = {}) {
  const byField = new Map();
  const general = [];
  for (const part of String(error.detail ?? error.message).split("; ")) {
    const found = /^(?:body\.)?([A-Za-z_]+)(?:\.[^:\s]*)?: (.*)$/s.exec(part);
    const name = found?.[1];
    const message = sentence((found?.[2] ?? part).replace(/^Value error, /, ""));
    if (name && names.includes(name) && !byField.has(name)) byField.set(name, message);
    else {
      // A rule across fields ("quiet_from and quiet_until go together") names its fields.
      const words = [...names.map((name) => [name, name]), ...Object.entries(aliases)];
      const named = words.find(([word]) => new RegExp(`\\b${word}\\b`).test(part))?.[1];
      if (named && !byField.has(named)) byField.set(named, message);
      else general.push(message);
    }
  }
  return { byField, general };
}

function show(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

function describe(control, hintNode, errorNode, invalid) {
  const ids = [hintNode?.id, invalid ? errorNode.id : null].filter(Boolean);
  if (ids.length) control.setAttribute("aria-describedby", ids.join(" "));
  else control.removeAttribute("aria-describedby");
  if (control.tagName !== "FIELDSET") {
    if (invalid) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  }
}
