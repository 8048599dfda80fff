// Small DOM helpers. Data reaches the page only as text (textContent), never as markup.

/**
 * `el("p#id.tile-value", {dataset: {metric: "m"}}, "text", child)`: an element with its id
 * after a hash, classes after dots, attributes (`dataset`, and properties such as `hidden` by
 * name), and children (strings become text).
 */
export function el(spec, attributes = {}, ...children) {
  const [head, ...classes] = spec.split(".");
  const [tag, id] = head.split("#");
  const node = document.createElement(tag || "div");
  if (id) node.id = id;
  if (classes.length) node.className = classes.join(" ");
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

export const byId = (id) => document.getElementById(id);

/** Restart a short highlight on `node`, also when changes come in quick succession. */
export function flash(node) {
  node.classList.remove("changed");
  void node.offsetWidth;
  node.classList.add("changed");
}
