// livedash's service worker: Web Push only. It shows the alerts the service pushes (HIGH and
// CRITICAL, to the browsers a user turned push on for; notify.js registers it) and opens the
// dashboard at the alert when one is clicked. It caches nothing and controls no page: it is
// served from /static/ and its scope is /static/, which push does not need more than.
//
// The payload (livedash.notifications.push.PushPayload): title, body, tag (one per alert, so a
// change replaces the earlier notification), link, severity, status.

self.addEventListener("install", () => self.skipWaiting());

self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let payload = {};
  try {
    payload = event.data ? event.data.json() : {};
  } catch {
    payload = { body: event.data ? event.data.text() : "" };
  }
  const title = payload.title || "livedash alert";
  event.waitUntil(
    self.registration.showNotification(title, {
      body: payload.body || "",
      tag: payload.tag || undefined,
      data: { link: payload.link || "/" },
      requireInteraction: payload.severity === "critical" && payload.status !== "resolved",
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const link = new URL(event.notification.data?.link || "/", self.location.origin);
  // Only a web address opens: anything else goes to the dashboard.
  const target = link.protocol === "https:" || link.protocol === "http:" ? link.href : "/";
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      const open = windows.find((client) => client.url === target);
      return open ? open.focus() : self.clients.openWindow(target);
    }),
  );
});
