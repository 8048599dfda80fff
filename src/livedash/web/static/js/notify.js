// Browser notifications, on this device, once the user asks for them (a button: never a
// prompt on load).
//
// - While the page is open: each in-app notification the service sends this user (the
//   `notification` event, already filtered by their preferences: severity and departments)
//   is shown with the Notification API.
// - When it is closed: Web Push, through the service worker /static/sw.js. The server needs
//   a VAPID key for that (`GET /api/notifications/push/key` answers `null` without one, and
//   the page says so), and the user the `push` channel in their preferences.
//
// A notification and a push of the same alert share a tag (`alert-<id>`), so the second
// replaces the first rather than adding to it.
import { el } from "./dom.js";
import { busy } from "./forms.js";

const ENABLED_KEY = "livedash.notifications"; // "on": this device shows them
const PUSH_KEY = "livedash.push"; // this browser's subscription id, per user
const WORKER = "/static/sw.js";
const WORKER_SCOPE = "/static/";
const EVENTS = { raised: "New alert", escalated: "Escalated to you", resolved: "Resolved" };

export class BrowserNotifications {
  #api;
  #user = null;
  #listeners = new Set();

  constructor(api) {
    this.#api = api;
  }

  /** Whose notifications these are (the signed-in user), or null. */
  set user(name) {
    this.#user = name;
  }

  get supported() {
    return "Notification" in window;
  }

  /** "granted", "denied", "default" (not asked yet), or "unsupported". */
  get permission() {
    return this.supported ? Notification.permission : "unsupported";
  }

  get enabled() {
    return this.permission === "granted" && localStorage.getItem(ENABLED_KEY) === "on";
  }

  /** Ask the browser (from a click), and show notifications from now on if allowed. */
  async enable() {
    if (!this.supported) return false;
    const answer = await Notification.requestPermission();
    if (answer === "granted") localStorage.setItem(ENABLED_KEY, "on");
    this.#changed();
    return answer === "granted";
  }

  disable() {
    localStorage.removeItem(ENABLED_KEY);
    this.#changed();
  }

  /**
   * Show `notification` (the socket's `notification` payload), if this device shows them;
   * a click on it brings this page forward and calls `open()`.
   */
  show(notification, { link, open }) {
    if (!this.enabled) return;
    const title = `[${notification.severity.toUpperCase()}] ${notification.title}`;
    const options = {
      body: EVENTS[notification.event] ?? notification.event,
      tag: notification.alert_id
        ? `alert-${notification.alert_id}`
        : `notification-${notification.id}`,
      data: { link },
      requireInteraction: notification.severity === "critical",
    };
    try {
      const shown = new Notification(title, options);
      shown.onclick = () => {
        window.focus();
        open();
        shown.close();
      };
    } catch {
      // Where pages may not construct them (Android): through the service worker.
      navigator.serviceWorker
        ?.getRegistration(WORKER_SCOPE)
        .then((registration) => registration?.showNotification(title, options))
        .catch(() => {});
    }
  }

  /** Whether Web Push can be had: {available, subscribed, reason}. */
  async pushState() {
    if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
      return { available: false, subscribed: false, reason: "This browser has no Web Push." };
    }
    const { public_key: key } = await this.#api.get("/api/notifications/push/key");
    if (!key) {
      return {
        available: false,
        subscribed: false,
        reason:
          "Web Push is not set up on this server (it has no VAPID key): notifications " +
          "come only while this page is open.",
      };
    }
    const registration = await navigator.serviceWorker.getRegistration(WORKER_SCOPE);
    const subscription = await registration?.pushManager.getSubscription();
    return { available: true, subscribed: Boolean(subscription && this.#pushId()), key };
  }

  /** Register this browser for Web Push (from a click). */
  async subscribePush() {
    const { available, key, reason } = await this.pushState();
    if (!available) throw new Error(reason);
    if (this.permission !== "granted" && !(await this.enable())) {
      throw new Error("The browser did not allow notifications.");
    }
    // Its scope is /static/: it controls no page, so `serviceWorker.ready` never comes here.
    const registration = await activated(
      await navigator.serviceWorker.register(WORKER, { scope: WORKER_SCOPE }),
    );
    let subscription;
    try {
      subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: fromBase64Url(key),
      });
    } catch (error) {
      throw new Error(`The browser's push service refused: ${error.message}`);
    }
    const { id } = await this.#api.post(
      "/api/notifications/push/subscriptions",
      subscription.toJSON(),
    );
    localStorage.setItem(this.#pushKey(), String(id));
    this.#changed();
  }

  async unsubscribePush() {
    const id = this.#pushId();
    if (id) await this.#api.delete(`/api/notifications/push/subscriptions/${id}`);
    localStorage.removeItem(this.#pushKey());
    const registration = await navigator.serviceWorker?.getRegistration(WORKER_SCOPE);
    await (await registration?.pushManager.getSubscription())?.unsubscribe();
    this.#changed();
  }

  /** Call `fn()` when what this device does changes; returns the unsubscribe. */
  onChange(fn) {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  #pushKey() {
    return `${PUSH_KEY}.${this.#user ?? ""}`;
  }

  #pushId() {
    return localStorage.getItem(this.#pushKey());
  }

  #changed() {
    for (const fn of this.#listeners) fn();
  }
}

// `registration` once its worker is active (push needs an active worker).
async function activated(registration) {
  const worker = registration.installing ?? registration.waiting;
  if (registration.active || !worker) return registration;
  await new Promise((resolve) => {
    worker.addEventListener("statechange", () => {
      if (worker.state === "activated") resolve();
    });
  });
  return registration;
}

// The VAPID key as bytes, which every browser takes (some take the base64url text too).
function fromBase64Url(text) {
  const base64 = text.replaceAll("-", "+").replaceAll("_", "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

/**
 * What this device does with notifications, and the buttons to change it: on the preferences
 * page and in the bell. Returns {element, dispose}.
 */
export function deviceControls(notifier) {
  const status = el("p.device-status", { role: "status" });
  const buttons = el("div.device-buttons");
  const push = el("p.device-push");
  const pushButtons = el("div.device-buttons");
  const problem = el("p.form-error", { role: "alert", hidden: true });
  const element = el(
    "div.device",
    {},
    status,
    buttons,
    el("p.hint", {}, "Also when this page is closed (Web Push):"),
    push,
    pushButtons,
    problem,
  );
  const failed = (error) => {
    problem.textContent = error.text ?? error.message;
    problem.hidden = false;
  };
  const button = (label, work) => {
    const node = el("button.secondary", { type: "button" }, label);
    node.addEventListener("click", () => {
      problem.hidden = true;
      pressed = node.parentElement;
      busy(node, work).catch(failed);
    });
    return node;
  };

  let drawn = 0;
  let pressed = null; // the buttons' row whose button was pressed
  async function draw() {
    const drawing = (drawn += 1);
    // A button pressed is replaced by the next one: the focus goes along to it.
    const focused = pressed;
    pressed = null;
    const permission = notifier.permission;
    if (permission === "unsupported") {
      status.textContent = "This browser cannot show notifications.";
      buttons.replaceChildren();
    } else if (permission === "denied") {
      status.textContent =
        "Notifications are blocked for this site in the browser's settings: allow them there.";
      buttons.replaceChildren();
    } else if (notifier.enabled) {
      status.textContent = "Browser notifications are on while this page is open.";
      buttons.replaceChildren(button("Turn off", async () => notifier.disable()));
    } else {
      status.textContent = "Browser notifications are off on this device.";
      buttons.replaceChildren(
        button("Turn on browser notifications", async () => {
          if (!(await notifier.enable()) && notifier.permission !== "denied") {
            failed(new Error("The browser did not allow notifications."));
          }
        }),
      );
    }
    let state;
    try {
      state = await notifier.pushState();
    } catch (error) {
      state = {
        available: false,
        reason: `Web Push cannot be checked: ${error.text ?? error.message}`,
      };
    }
    if (drawing !== drawn) return;
    element.dataset.push = state.available ? (state.subscribed ? "on" : "off") : "unavailable";
    if (!state.available) {
      push.textContent = state.reason;
      pushButtons.replaceChildren();
    } else if (state.subscribed) {
      push.textContent =
        "Web Push is on for this browser (with “Push” among your channels in Preferences).";
      pushButtons.replaceChildren(button("Turn off Web Push", () => notifier.unsubscribePush()));
    } else {
      push.textContent = "Web Push is off for this browser.";
      pushButtons.replaceChildren(button("Turn on Web Push", () => notifier.subscribePush()));
    }
    if (focused) (focused.querySelector("button") ?? element.querySelector("button"))?.focus();
  }
  const stop = notifier.onChange(draw);
  draw();
  return { element, dispose: stop };
}
