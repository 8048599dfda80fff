// The view lives in the address, so that it can be bookmarked and the back button works:
//   ?page=reports    another page: `reports` (with `&report=17`: that report, as the
//                    e-mails link), `preferences`; none: the dashboard
//   ?department=ED   one department (none: the whole hospital, or all of one's departments)
//   ?alert=412       the dashboard with that alert picked out (the notifications link here)
//   ?range=7d        the trend charts' range (24h, the default, or 7d)
//   ?wall=1          wall-screen mode;  ?rotate=30  a wall rotating through views every 30 s
// The fragment is kept for a token (`#token=...`), which auth.js takes and removes.

export const RANGES = { "24h": 24, "7d": 24 * 7 };
export const PAGES = ["dashboard", "reports", "preferences"];

const positive = (text) => {
  const n = Number.parseInt(text ?? "", 10);
  return Number.isSafeInteger(n) && n > 0 && String(n) === text ? n : null;
};

/** The view the address asks for. */
export function read() {
  const query = new URLSearchParams(location.search);
  const rotate = Number.parseInt(query.get("rotate") ?? "", 10);
  const range = query.get("range");
  const page = query.get("page") || "dashboard";
  return {
    page: PAGES.includes(page) ? page : null, // null: a page that does not exist
    report: positive(query.get("report")),
    alert: positive(query.get("alert")),
    department: query.get("department") || null,
    range: range in RANGES ? range : "24h",
    wall: query.get("wall") === "1" || query.get("wall") === "true",
    rotate: Number.isFinite(rotate) && rotate >= 5 ? rotate : null,
  };
}

/** The address of the current view with `changes` (null removes a parameter). */
export function href(changes) {
  const query = new URLSearchParams(location.search);
  for (const [name, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "" || value === false)
      query.delete(name);
    else query.set(name, value === true ? "1" : String(value));
  }
  if (query.get("range") === "24h") query.delete("range");
  if (query.get("page") === "dashboard") query.delete("page");
  const search = query.toString();
  return `${location.pathname}${search ? `?${search}` : ""}`;
}

const listeners = new Set();

/** Go to the view with `changes`: a new history entry, or in place with `replace`. */
export function go(changes, { replace = false } = {}) {
  const target = href(changes);
  if (target === `${location.pathname}${location.search}`) return;
  history[replace ? "replaceState" : "pushState"](null, "", target);
  for (const listener of listeners) listener(read());
}

/** Show the page at `url` (an address of this page, as `href()` makes): a new history entry. */
export function navigate(url) {
  const target = new URL(url, location.href);
  history.pushState(null, "", target.pathname + target.search);
  for (const listener of listeners) listener(read());
}

/** Call `listener(route)` whenever the view changes (links, back and forward). */
export function onChange(listener) {
  listeners.add(listener);
}

window.addEventListener("popstate", () => {
  for (const listener of listeners) listener(read());
});

/** Follow same-page links (`a[data-route]`) without a reload; other clicks are the browser's. */
export function followLinks(root) {
  root.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-route]");
    if (!link || event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(link.href);
  });
}
