// The administrators' page: boots the modules and shows the view the address names.
//
//   auth.js         sign-in, tokens, their renewal      connection.js  the socket and recovery
//   store.js        values by (metric, department)      freshness.js   when a figure is stale
//   status.js       the connection's state, for people  format.js      the hospital's formats
//   router.js       the view in the address             bind.js        live elements
//   overview.js     a scope's tiles and panels          departments.js names, filter, comparison
//   charts.js       hourly trends (uPlot)               wall.js        wall-screen mode
//   api.js          REST, problem details               forms.js       labelled fields, errors
//   alerts.js       a view's alerts panel               alertcard.js   one alert, its actions
//   bell.js         the notification bell (#toolbar)    notify.js      browser notifications
//   reports.js      the reports page                    schedules.js   report schedules
//   preferences.js  the notification preferences page  /static/sw.js  Web Push's worker
//   why.js          "why did this change?": a number's last updates, in a dialog
//
// The pages (`#nav`): the dashboard (the overview, or a department: its figures, trends and
// alerts), reports and preferences; `render()` below shows the one the address names.
import { Api } from "./api.js";
import { Auth } from "./auth.js";
import { forgetAlerts, mountAlerts } from "./alerts.js";
import { Bell } from "./bell.js";
import { Binder } from "./bind.js";
import { Trends, forgetReadings } from "./charts.js";
import { Connection } from "./connection.js";
import { Directory, comparison, fillFilter } from "./departments.js";
import { byId, el } from "./dom.js";
import * as fmt from "./format.js";
import { Freshness } from "./freshness.js";
import { BrowserNotifications } from "./notify.js";
import { scopeFigures } from "./overview.js";
import { mountPreferences } from "./preferences.js";
import { mountReports } from "./reports.js";
import * as router from "./router.js";
import { Status } from "./status.js";
import { Store } from "./store.js";
import { Wall } from "./wall.js";
import { Why } from "./why.js";

const store = new Store();
const freshness = new Freshness();
const status = new Status(freshness, store);
const directory = new Directory();
const route = router.read();
const wall = route.wall ? new Wall() : null;
const ui = { view: byId("view"), notice: byId("notice"), filter: byId("department-filter") };

let identity = null; // the last `authenticated` payload
let view = null; // what the current view must dispose of
let bell = null; // the notification bell, while someone is signed in (not on a wall)
let named = false; // the departments' names were read (or could not be): forms may offer them

let noticeFrom = null; // who wrote the notice shown: only they clear it

function notice(text, from = "page") {
  if (!text && from !== noticeFrom) return;
  noticeFrom = text ? from : null;
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

const connection = new Connection({
  store,
  freshness,
  token: () => auth.accessToken,
  onState: (state) => status.show(state),
  onAuthenticated(info) {
    const first = identity === null;
    identity = info;
    auth.accepted(info);
    fmt.configure(info);
    notifier.user = info.sub;
    if (bell === null && wall === null) {
      bell = new Bell({ container: byId("toolbar"), connection, api, directory, notifier });
    }
    if (info.departments.length === 0) {
      notice("This token does not give access to any department.", "identity");
    }
    if (directory.setScope(info.departments) || first) {
      render();
      loadNames();
    }
  },
  onAuthError: (error) => auth.refused(error),
  onSubscribed() {
    notice("", "connection"); // a refusal it reported is over
    view?.trends?.refresh({ recent: true }); // a long absence: new readings
  },
  onNotice: (text) => notice(text, "connection"),
});

const auth = new Auth({
  wall: route.wall,
  connect() {
    forget();
    connection.open();
  },
  refreshed() {
    if (connection.opened) connection.reauthenticate();
    else connection.open();
  },
  ended() {
    connection.close();
    forget();
  },
  status: (state) => status.show(state),
  notice: (text) => notice(text, "auth"),
});
const api = new Api(auth);
const notifier = new BrowserNotifications(api);
// A wall is read-only: its numbers open nothing.
const why = wall
  ? null
  : new Why({ view: ui.view, connection, api, store, freshness, directory });

// Another identity, or none: nothing of the previous one stays on the page.
function forget() {
  identity = null;
  named = false;
  bell?.dispose();
  bell = null;
  notifier.user = null;
  forgetAlerts();
  store.clear();
  status.forget();
  forgetReadings();
  freshness.forget();
  directory.forget();
  render();
}

async function loadNames() {
  named = false;
  try {
    await directory.loadNames((path) => auth.get(path));
  } catch {
    // Codes stand in for names; the next sign-in tries again.
  }
  named = true;
  render();
  bell?.renamed();
}

/** The view the address names, for the identity signed in. */
function render() {
  view?.dispose();
  view = null;
  why?.close({ focus: false }); // its number is gone, or its identity
  notice("", "page");
  const route = router.read();
  showNav(route.page ?? "dashboard");
  if (identity === null) {
    ui.view.replaceChildren();
    byId("filter").hidden = true;
    return;
  }
  if (route.page === "reports" || route.page === "preferences") {
    renderPage(route);
    return;
  }
  if (route.page === null) notice("There is no such page: showing the dashboard.");
  const asked = route.department;
  let scope = asked;
  if (scope !== null && !directory.has(scope)) {
    notice(`You cannot see the department “${scope}”: showing the overview.`);
    scope = null;
  }
  if (scope === null && !directory.seesHospital && directory.codes.length === 1) {
    scope = directory.codes[0]; // one department: it is the overview
  }
  const binder = new Binder(store, freshness);
  const seesScope = scope !== null || directory.seesHospital;
  const title =
    scope !== null ? directory.name(scope) : seesScope ? "Whole hospital" : "My departments";
  const parts = [el("h2#view-title.view-title", { tabIndex: -1 }, title)];
  if (seesScope) parts.push(...scopeFigures(binder, scope));
  if (scope === null && directory.codes.length > 0) parts.push(comparison(binder, directory));
  let trends = null;
  if (seesScope) {
    trends = new Trends({
      binder,
      connection,
      scope,
      range: router.read().range,
      wall: wall !== null,
    });
    parts.push(trends.element);
  }
  const alertsBox = el("section#alerts-panel.figures.alerts", {
    "aria-labelledby": "alerts-title",
  });
  const alerts = mountAlerts({
    container: alertsBox,
    scope,
    role: identity.role,
    connection,
    auth,
    directory,
    pick: route.alert,
    readOnly: wall !== null,
  });
  parts.push(alertsBox);
  ui.view.replaceChildren(...parts);
  why?.enhance(ui.view);
  trends?.refresh({ recent: true });
  fillFilter(ui.filter, directory, scope);
  document.title = `${title} · livedash`;
  wall?.rotate(router.read().rotate, rotation(), scope, (code) => directory.name(code));
  view = {
    trends,
    binder,
    dispose() {
      binder.dispose();
      trends?.dispose();
      alerts.dispose();
    },
  };
}

// Reports or preferences: a page of its own, without the department filter.
function renderPage(route) {
  const title = route.page === "reports" ? "Reports" : "Notification preferences";
  const container = el("div.page-body");
  ui.view.replaceChildren(el("h2#view-title.view-title", { tabIndex: -1 }, title), container);
  byId("filter").hidden = true;
  document.title = `${title} · livedash`;
  wall?.rotate(null, [], null, () => "");
  if (!named) {
    // Their forms offer departments by name: built once the names are in (render() again).
    container.append(el("p.page-status", { role: "status" }, "Loading…"));
    return;
  }
  const page =
    route.page === "reports"
      ? mountReports({ container, api, directory, role: identity.role, report: route.report })
      : mountPreferences({ container, api, directory, notifier });
  view = { trends: null, binder: null, dispose: page.dispose };
}

// The navigation says which page is shown.
function showNav(page) {
  for (const link of byId("nav").querySelectorAll("a[data-page]")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// A rotating wall's views: the overview (when it shows more than one department), then each.
function rotation() {
  const overview = directory.seesHospital || directory.codes.length > 1 ? [null] : [];
  return [...overview, ...directory.byName()];
}

function start() {
  if (typeof io !== "function") {
    status.show({ kind: "offline", text: "The socket.io client did not load" });
    return;
  }
  if (typeof globalThis.uPlot !== "function") {
    notice("The chart library did not load: trends cannot be drawn.", "boot");
  }
  router.followLinks(document.body);
  router.onChange(() => {
    // A link in the view goes with it: then say where we are now. The filter keeps its focus.
    const lost = ui.view.contains(document.activeElement);
    render();
    if (lost && !wall) byId("view-title")?.focus({ preventScroll: true });
  });
  ui.filter.addEventListener("change", () =>
    router.go({ department: ui.filter.value || null, alert: null }),
  );
  setInterval(() => {
    status.tick();
    view?.binder?.tick();
  }, 1000);
  auth.start();
}

start();
