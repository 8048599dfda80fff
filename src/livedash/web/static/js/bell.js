// The notification bell in the top bar (`#toolbar`): the user's unread count, kept live by
// their `notification` events, and a panel with the history (`GET /api/notifications`, in
// pages, newest first), marking one or all read, and this device's browser notifications
// (notify.js). Read again after every reconnect: events are not replayed.
import { withQuery } from "./api.js";
import { SEVERITY_NAMES } from "./alertcard.js";
import { el } from "./dom.js";
import * as fmt from "./format.js";
import { busy, uid } from "./forms.js";
import { deviceControls } from "./notify.js";
import { href, navigate } from "./router.js";

const PAGE_LIMIT = 20;
const EVENTS = { raised: "Raised", escalated: "Escalated to you", resolved: "Resolved" };
const SVG = "http://www.w3.org/2000/svg";

export class Bell {
  #api;
  #directory;
  #notifier;
  #unread = 0;
  #items = new Map(); // id -> {notification, node}
  #next = null;
  #reading = 0;
  #device = null;
  #stop = [];
  #ui;

  /** In `container`: the bell; `notifier`, this device's browser notifications. */
  constructor({ container, connection, api, directory, notifier }) {
    this.#api = api;
    this.#directory = directory;
    this.#notifier = notifier;
    const panelId = uid("bell-panel");
    const ui = {
      container,
      button: el(
        "button#bell-button.bell-button",
        { type: "button", "aria-expanded": "false", "aria-controls": panelId },
        bellIcon(),
        el("span.bell-label", {}, "Notifications"),
        " ",
        el("span.bell-count", { hidden: true }),
      ),
      list: el("ol.bell-list"),
      empty: el("p.bell-empty", { hidden: true }, "No notifications yet."),
      problem: el("p.form-error", { role: "alert", hidden: true }),
      readAll: el("button.secondary", { type: "button" }, "Mark all read"),
      more: el("button.secondary", { type: "button", hidden: true }, "Show older"),
      device: el("section.bell-device", { "aria-labelledby": `${panelId}-device` }),
    };
    ui.panel = el(
      "div.bell-panel",
      { id: panelId, role: "region", "aria-labelledby": `${panelId}-title`, hidden: true },
      el(
        "div.bell-head",
        {},
        el("h2.bell-title", { id: `${panelId}-title` }, "Notifications"),
        ui.readAll,
      ),
      ui.problem,
      ui.list,
      ui.empty,
      ui.more,
      ui.device,
    );
    ui.device.append(el("h3.bell-subtitle", { id: `${panelId}-device` }, "On this device"));
    this.#ui = ui;
    container.replaceChildren(el("div.bell", {}, ui.button, ui.panel));
    this.#count(0);

    ui.button.addEventListener("click", () => this.toggle());
    // Where the click was when it happened: a button it pressed may be gone by now.
    const outside = (event) => {
      if (!ui.panel.hidden && !event.composedPath().includes(container)) this.toggle(false);
    };
    // Escape closes it wherever the focus is (a button it redrew may have taken it along).
    const escape = (event) => {
      if (event.key === "Escape" && !ui.panel.hidden) this.toggle(false, { focus: true });
    };
    document.addEventListener("click", outside);
    document.addEventListener("keydown", escape);
    ui.readAll.addEventListener("click", () => busy(ui.readAll, () => this.#readAll()));
    ui.more.addEventListener("click", () => busy(ui.more, () => this.#read(this.#next)));
    this.#stop.push(
      () => document.removeEventListener("click", outside),
      () => document.removeEventListener("keydown", escape),
      connection.listen("notification", (notification) => this.#arrived(notification)),
      connection.listen("authenticated", () => this.#read(null)),
    );
    this.#read(null);
  }

  get unread() {
    return this.#unread;
  }

  /** Open or close the panel (`open` undefined: the other way). */
  toggle(open = this.#ui.panel.hidden, { focus = false } = {}) {
    const { panel, button, device } = this.#ui;
    panel.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open && this.#device === null) {
      this.#device = deviceControls(this.#notifier);
      device.append(this.#device.element);
    }
    if (!open && focus) button.focus();
  }

  dispose() {
    for (const stop of this.#stop) stop();
    this.#device?.dispose();
    this.#ui.container.replaceChildren();
  }

  // A page of the history (`cursor` null: the first, read again, with the unread count).
  async #read(cursor) {
    const reading = (this.#reading += 1);
    let page;
    try {
      page = await this.#api.get(withQuery("/api/notifications", { limit: PAGE_LIMIT, cursor }));
    } catch (error) {
      this.#failed(error);
      return;
    }
    if (reading !== this.#reading) return;
    this.#ui.problem.hidden = true;
    if (cursor === null) {
      this.#items.clear();
      this.#ui.list.replaceChildren();
    }
    for (const notification of page.items) this.#add(notification, { first: false });
    this.#next = page.next;
    this.#count(page.unread);
  }

  #arrived(notification) {
    if (this.#items.has(notification.id)) return;
    this.#add(notification, { first: true });
    if (!notification.read) this.#count(this.#unread + 1);
    const link = this.#link(notification);
    this.#notifier.show(notification, { link, open: () => navigate(link) });
  }

  #link(notification) {
    const department = notification.department;
    const seen = department !== null && this.#directory.has(department);
    return href({
      page: null,
      report: null,
      department: seen ? department : null,
      alert: notification.alert_id,
    });
  }

  #add(notification, { first }) {
    const read = el(
      "button.link-button.mark-read",
      { type: "button", "aria-label": `Mark read: ${notification.title}` },
      "Mark read",
    );
    const severity = notification.severity;
    const link = el(
      "a.bell-link",
      { href: this.#link(notification), dataset: { route: "" } },
      notification.title,
    );
    const node = el(
      "li.bell-item",
      { dataset: { id: String(notification.id), read: String(notification.read) } },
      el("span.severity-badge", { dataset: { severity } }, SEVERITY_NAMES[severity] ?? severity),
      el(
        "div.bell-text",
        {},
        link,
        el(
          "p.bell-meta",
          {},
          el("span.bell-what", {}, this.#what(notification)),
          el("span.visually-hidden", {}, notification.read ? " · read" : " · unread"),
        ),
      ),
      read,
    );
    read.hidden = notification.read;
    read.addEventListener("click", () => busy(read, () => this.#readOne(notification.id)));
    link.addEventListener("click", () => {
      if (!this.#items.get(notification.id).notification.read) this.#readOne(notification.id);
      this.toggle(false);
    });
    this.#items.set(notification.id, { notification, node });
    if (first) this.#ui.list.prepend(node);
    else this.#ui.list.append(node);
    this.#show();
  }

  #what(notification) {
    return [
      EVENTS[notification.event] ?? notification.event,
      this.#directory.name(notification.department),
      fmt.when(Date.parse(notification.created_at)),
    ].join(" · ");
  }

  /** The departments' names are known now (codes stood in until then). */
  renamed() {
    for (const { notification, node } of this.#items.values()) {
      node.querySelector(".bell-what").textContent = this.#what(notification);
    }
  }

  async #readOne(id) {
    let answer;
    try {
      answer = await this.#api.post(`/api/notifications/${id}/read`);
    } catch (error) {
      this.#failed(error);
      return;
    }
    const item = this.#items.get(id);
    if (item && !item.notification.read) {
      this.#markRead(item);
      if (answer.marked > 0) this.#count(this.#unread - 1);
    }
  }

  async #readAll() {
    try {
      await this.#api.post("/api/notifications/read");
    } catch (error) {
      this.#failed(error);
      return;
    }
    for (const item of this.#items.values()) this.#markRead(item);
    this.#count(0);
  }

  #markRead(item) {
    item.notification = { ...item.notification, read: true };
    item.node.dataset.read = "true";
    item.node.querySelector(".mark-read").hidden = true;
    item.node.querySelector(".visually-hidden").textContent = " · read";
  }

  #count(unread) {
    this.#unread = Math.max(0, unread);
    const { button } = this.#ui;
    const count = button.querySelector(".bell-count");
    count.hidden = this.#unread === 0;
    count.textContent = this.#unread > 99 ? "99+" : fmt.count(this.#unread);
    // Its name says what the badge shows: "Notifications, 3 unread".
    const words = this.#unread === 0 ? "no unread" : `${fmt.count(this.#unread)} unread`;
    button.setAttribute("aria-label", `Notifications, ${words}`);
    button.dataset.unread = String(this.#unread);
    this.#show();
  }

  #show() {
    const { empty, more, readAll } = this.#ui;
    empty.hidden = this.#items.size > 0;
    more.hidden = this.#next === null;
    readAll.hidden = this.#unread === 0;
  }

  #failed(error) {
    const { problem } = this.#ui;
    problem.textContent = `Notifications could not be read: ${error.text ?? error.message}`;
    problem.hidden = false;
  }
}

function bellIcon() {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.classList.add("bell-icon");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute(
    "d",
    "M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 " +
      "1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1Z",
  );
  svg.append(path);
  return svg;
}
