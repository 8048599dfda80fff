// The operations page: one socket, one subscription, cells updated in place.
// Data only ever reaches the page through textContent, never as markup.
"use strict";

(() => {
  // One definition drives both the hospital cards and the department table's columns.
  // `detail` is a line under the main value; its objects are further metric cells.
  const COLUMNS = [
    { title: "Active patients", metric: "patients_active" },
    { title: "Waiting", metric: "patients_waiting" },
    { title: "New today", metric: "patients_new_today" },
    { title: "Emergency", metric: "patients_emergency", alert: true },
    {
      title: "Bed occupancy",
      metric: "bed_occupancy_rate",
      bar: true,
      detail: [{ metric: "beds_occupied" }, " / ", { metric: "beds_total" }, " beds"],
    },
    {
      title: "Rooms occupied",
      metric: "rooms_occupied",
      detail: ["of ", { metric: "rooms_total" }, " rooms"],
    },
    { title: "Staff on duty", metric: "staff_on_duty" },
    {
      title: "Appointments today",
      metric: "appointments_today",
      detail: [{ metric: "appointments_completed_today" }, " completed"],
    },
  ];
  const RATES = new Set(["bed_occupancy_rate", "room_occupancy_rate"]);
  const ALERTS = new Set(COLUMNS.filter((column) => column.alert).map((column) => column.metric));
  const SUBSCRIBED = [
    ...new Set(
      COLUMNS.flatMap((column) => [
        column.metric,
        ...(column.detail || []).filter((part) => typeof part !== "string").map((p) => p.metric),
      ]),
    ),
  ];
  const TOKEN_KEY = "livedash.token";
  const REFRESH_KEY = "livedash.refresh"; // a signed-in session's refresh token
  const REFRESH_AHEAD_S = 60; // refresh the access token this long before it expires
  const RETRY_REFRESH_S = 15; // after a network failure
  const SESSION_ENDED = "Session ended — sign in again";
  const HOSPITAL = ""; // data-department of the hospital-wide totals (null on the wire)

  const counts = new Intl.NumberFormat();
  const percents = new Intl.NumberFormat(undefined, {
    style: "percent",
    minimumFractionDigits: 1,
    maximumFractionDigits: 1,
  });
  const clock = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });

  const byId = (id) => document.getElementById(id);
  const ui = {
    login: byId("login"),
    passwordLogin: byId("password-login"),
    username: byId("username"),
    password: byId("password"),
    tokenDetails: byId("token-details"),
    tokenLogin: byId("token-login"),
    token: byId("token"),
    connection: byId("connection"),
    user: byId("user"),
    signOut: byId("sign-out"),
    lastUpdate: byId("last-update"),
    notice: byId("notice"),
    hospital: byId("hospital"),
    cards: byId("cards"),
    departments: byId("departments"),
    head: byId("department-head"),
    rows: byId("department-rows"),
  };

  const state = {
    socket: null,
    accessToken: null, // kept in memory only
    signedIn: false, // true for a username/password session (with a refresh token)
    refreshTimer: null,
    departments: null, // codes (and null for the hospital) the current layout shows
    cells: new Map(), // "metric|department" -> elements showing that value
    bars: new Map(), // "metric|department" -> bar fills sized by a rate
    versions: new Map(), // "metric|department" -> version shown
    position: null, // the last stream position seen: {epoch, offset}
    service: null, // the last connection_status: the service's own state
    subscribing: false, // a subscription's answer is awaited
    newest: 0, // epoch ms of the newest value shown
  };

  const keyOf = (metric, department) => `${metric}|${department ?? HOSPITAL}`;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function remember(map, key, node) {
    if (!map.has(key)) map.set(key, []);
    map.get(key).push(node);
  }

  function metricCell(tag, className, metric, department) {
    const node = element(tag, className, "—");
    node.dataset.metric = metric;
    node.dataset.department = department ?? HOSPITAL;
    remember(state.cells, keyOf(metric, department), node);
    return node;
  }

  function detailLine(column, department) {
    const line = element("span", "detail");
    for (const part of column.detail) {
      line.append(
        typeof part === "string" ? part : metricCell("span", "sub-value", part.metric, department),
      );
    }
    return line;
  }

  // -- layout ---------------------------------------------------------------------------

  function buildLayout(departments) {
    state.departments = departments;
    state.cells.clear();
    state.bars.clear();
    state.versions.clear();
    state.newest = 0;
    ui.lastUpdate.textContent = "—";
    ui.lastUpdate.removeAttribute("datetime");
    ui.cards.replaceChildren();
    ui.head.replaceChildren();
    ui.rows.replaceChildren();

    const seesHospital = departments.includes(null);
    if (seesHospital) {
      for (const column of COLUMNS) ui.cards.append(card(column));
    }
    ui.hospital.hidden = !seesHospital;

    const codes = departments.filter((code) => code !== null);
    if (codes.length > 0) {
      const corner = element("th", "department", "Department");
      corner.scope = "col";
      ui.head.append(corner);
      for (const column of COLUMNS) {
        const th = element("th", "number", column.title);
        th.scope = "col";
        ui.head.append(th);
      }
      for (const code of codes) ui.rows.append(departmentRow(code));
    }
    ui.departments.hidden = codes.length === 0;
  }

  function card(column) {
    const node = element("article", "card");
    node.append(element("h3", "card-title", column.title));
    node.append(metricCell("p", "card-value", column.metric, null));
    if (column.bar) {
      const bar = element("div", "bar");
      const fill = element("div", "bar-fill");
      bar.append(fill);
      remember(state.bars, keyOf(column.metric, null), fill);
      node.append(bar);
    }
    if (column.detail) node.append(detailLine(column, null));
    return node;
  }

  function departmentRow(code) {
    const row = element("tr");
    row.dataset.department = code;
    const name = element("th", "department", code);
    name.scope = "row";
    row.append(name);
    for (const column of COLUMNS) {
      const cell = element("td", "number");
      cell.append(metricCell("span", "value", column.metric, code));
      if (column.detail) cell.append(detailLine(column, code));
      row.append(cell);
    }
    return row;
  }

  function sameDepartments(a, b) {
    return a !== null && a.length === b.length && a.every((code, i) => code === b[i]);
  }

  // -- values ---------------------------------------------------------------------------

  function format(metric, value) {
    return RATES.has(metric) ? percents.format(value) : counts.format(value);
  }

  function rememberPosition(position) {
    // The newest stream position seen, for recovery after a reconnect.
    if (!position) return;
    const held = state.position;
    if (!held || held.epoch !== position.epoch || position.offset > held.offset) {
      state.position = position;
    }
  }

  function apply(update, highlight) {
    const key = keyOf(update.metric, update.department);
    const shown = state.versions.get(key);
    // Updates may overtake a snapshot (or each other across a reconnect): keep the newest.
    // Version 0 was counted from the database (no feed value at hand): it replaces anything.
    if (shown !== undefined && update.version !== 0 && update.version <= shown) return;
    state.versions.set(key, update.version);

    for (const node of state.cells.get(key) || []) {
      node.textContent = format(update.metric, update.value);
      node.classList.toggle("alert", ALERTS.has(update.metric) && update.value > 0);
      if (highlight) flash(node);
    }
    for (const fill of state.bars.get(key) || []) {
      fill.style.width = `${Math.min(Math.max(update.value, 0), 1) * 100}%`;
      fill.classList.toggle("high", update.value >= 0.9);
    }
    showLastUpdate(update.timestamp);
  }

  function flash(node) {
    node.classList.remove("changed");
    void node.offsetWidth; // restart the animation when updates come in quick succession
    node.classList.add("changed");
  }

  function showLastUpdate(timestamp) {
    const at = Date.parse(timestamp);
    if (Number.isNaN(at) || at <= state.newest) return;
    state.newest = at;
    ui.lastUpdate.dateTime = new Date(at).toISOString();
    ui.lastUpdate.textContent = clock.format(at);
  }

  // -- connection -----------------------------------------------------------------------

  function setStatus(kind, text) {
    ui.connection.dataset.state = kind;
    ui.connection.textContent = text;
    // Figures shown may be old unless live (degraded keeps them current).
    document.body.classList.toggle("stale", kind !== "live" && kind !== "degraded");
  }

  function showService(status) {
    // What the service says about itself: degraded (still current), stale (since when).
    if (status.status === "stale") {
      const since = status.stale_since ? new Date(status.stale_since) : null;
      const at = since ? since.toLocaleTimeString() : "an unknown time";
      setStatus("stale", `Stale: figures as of ${at} (database unreachable)`);
    } else if (status.status === "degraded") {
      setStatus("degraded", `Live, degraded: ${status.degraded.join(", ")} unavailable`);
    } else if (status.status === "draining") {
      setStatus("reconnecting", "Server restarting: reconnecting…");
    } else {
      setStatus("live", "Live");
    }
  }

  function showNotice(text) {
    ui.notice.textContent = text;
    ui.notice.hidden = !text;
  }

  function showLogin(show) {
    ui.login.hidden = !show;
    ui.signOut.hidden = show;
    if (show) ui.user.hidden = true;
  }

  function closeSocket() {
    if (state.socket === null) return;
    state.socket.off(); // so that our own disconnect does not overwrite the status shown
    state.socket.disconnect();
    state.socket = null;
  }

  function connect(token) {
    closeSocket();
    showNotice("");
    setStatus("connecting", "Connecting…");
    state.accessToken = token;
    // A function, so that a reconnect after a refresh sends the newest access token.
    const socket = io({
      auth: (send) => send({ token: state.accessToken }),
      transports: ["websocket", "polling"],
      forceNew: true,
    });
    state.socket = socket;

    socket.on("connect", () => setStatus("connecting", "Authenticating…"));
    socket.on("authenticated", (info) => onAuthenticated(socket, info));
    socket.on("auth_error", onAuthError);
    socket.on("metrics_snapshot", (snapshot) => {
      // Versions decide here too: a live update that arrived before this snapshot may be
      // newer than the values read for it.
      for (const value of snapshot.values) apply(value, false);
      rememberPosition(snapshot.position);
    });
    socket.on("connection_status", (status) => {
      state.service = status;
      if (status.authenticated) showService(status); // before: "Authenticating…" says it
    });
    socket.on("dashboard_update", (update) => {
      apply(update, true);
      // During a replay live updates interleave: the position moves only after the answer.
      if (!state.subscribing) rememberPosition(update.position);
    });
    socket.on("error", (error) => {
      showNotice(`The server refused ${error.event || "a request"}: ${error.message}`);
    });
    socket.on("disconnect", () => {
      if (socket.active) setStatus("reconnecting", "Reconnecting…");
      else setStatus("offline", "Disconnected");
    });
    socket.on("connect_error", (error) => {
      if (socket.active) setStatus("reconnecting", "Reconnecting… (server unreachable)");
      else setStatus("offline", `Cannot reach the server (${error.message})`);
    });
    socket.io.on("reconnect_attempt", (attempt) => {
      setStatus("reconnecting", `Reconnecting… (attempt ${attempt})`);
    });
  }

  function onAuthenticated(socket, info) {
    // A pasted token is kept for reloads; a session keeps its refresh token instead.
    if (!state.signedIn) sessionStorage.setItem(TOKEN_KEY, state.accessToken);
    showLogin(false);
    ui.user.textContent = `${info.sub} · ${info.role.replaceAll("_", " ")}`;
    ui.user.hidden = false;
    if (!sameDepartments(state.departments, info.departments)) buildLayout(info.departments);
    if (info.departments.length === 0) {
      showNotice("This token does not give access to any department.");
    }
    showService(state.service || { status: "connected" });
    // Sent on every authentication, so a reconnect (the server forgets subscriptions
    // with the socket) subscribes again; the snapshot that follows fills any gap.
    // A refusal comes back as an `error` event, which shows it.
    // With the last stream position seen, the server replays exactly what was missed.
    const request = { metrics: SUBSCRIBED };
    if (state.position) request.since = state.position;
    state.subscribing = true;
    socket.emit("subscribe_metrics", request, (ack) => {
      state.subscribing = false;
      if (ack && ack.ok && ack.position) state.position = ack.position;
    });
  }

  function onAuthError(error) {
    // A refused or expired token will not get better by reconnecting with it.
    const signedIn = state.signedIn;
    endSession();
    if (!signedIn) ui.tokenDetails.open = true; // show the token that was refused
    setStatus("auth-error", `Authentication failed: ${error.message}`);
  }

  // Forget every credential and the figures shown; show the sign-in.
  function endSession() {
    closeSocket();
    clearTimeout(state.refreshTimer);
    state.refreshTimer = null;
    state.accessToken = null;
    state.signedIn = false;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(REFRESH_KEY);
    buildLayout([]);
    state.departments = null;
    showLogin(true);
  }

  function signOut() {
    const refreshToken = sessionStorage.getItem(REFRESH_KEY);
    if (refreshToken) {
      // Ends the session on the server too; signing out here does not wait for it.
      postJson("/api/auth/logout", { refresh_token: refreshToken }).catch(() => {});
    }
    endSession();
    ui.token.value = "";
    ui.password.value = "";
    showNotice("");
    setStatus("idle", "Signed out");
  }

  // -- sign-in sessions -----------------------------------------------------------------

  async function postJson(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return { ok: response.ok, status: response.status, data };
  }

  async function signIn(username, password) {
    setStatus("connecting", "Signing in…");
    let answer;
    try {
      answer = await postJson("/api/auth/login", { username, password });
    } catch {
      setStatus("offline", "Cannot reach the server");
      return;
    }
    ui.password.value = "";
    if (!answer.ok) {
      // Problem details (RFC 9457): `detail` says what was wrong.
      const message = answer.data && answer.data.detail ? answer.data.detail : "sign-in failed";
      setStatus("auth-error", `Sign-in failed: ${message}`);
      return;
    }
    startSession(answer.data);
    connect(answer.data.access_token);
  }

  function startSession(tokens) {
    state.signedIn = true;
    state.accessToken = tokens.access_token;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.setItem(REFRESH_KEY, tokens.refresh_token);
    scheduleRefresh(Math.max(tokens.expires_in - REFRESH_AHEAD_S, 5));
  }

  function scheduleRefresh(seconds) {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refreshSession, seconds * 1000);
  }

  // Trade the refresh token for new tokens; the open socket re-authenticates with the new
  // access token and keeps its subscriptions. Returns whether the session goes on.
  async function refreshSession() {
    const refreshToken = sessionStorage.getItem(REFRESH_KEY);
    if (!refreshToken) return false;
    let answer;
    try {
      answer = await postJson("/api/auth/refresh", { refresh_token: refreshToken });
    } catch {
      scheduleRefresh(RETRY_REFRESH_S);
      return true;
    }
    if (answer.status === 401 || answer.status === 422) {
      endSession(); // idle timeout, reuse, sign-out elsewhere: the session cannot continue
      showNotice(SESSION_ENDED);
      setStatus("auth-error", SESSION_ENDED);
      return false;
    }
    if (!answer.ok) {
      scheduleRefresh(RETRY_REFRESH_S);
      return true;
    }
    startSession(answer.data);
    if (state.socket !== null && state.socket.connected) {
      state.socket.emit("authenticate", { token: state.accessToken });
    }
    return true;
  }

  async function resumeSession() {
    setStatus("connecting", "Resuming the session…");
    if (await refreshSession()) {
      if (state.accessToken) connect(state.accessToken);
    }
  }

  function tokenFromHash() {
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    if (token) {
      // Keep the token out of the address bar, history and screenshots.
      history.replaceState(null, "", location.pathname + location.search);
    }
    return token;
  }

  function start() {
    ui.tokenLogin.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = ui.token.value.trim();
      if (token) useToken(token);
    });
    ui.passwordLogin.addEventListener("submit", (event) => {
      event.preventDefault();
      const username = ui.username.value.trim();
      if (username && ui.password.value) signIn(username, ui.password.value);
    });
    ui.signOut.addEventListener("click", signOut);

    if (typeof io !== "function") {
      setStatus("offline", "The socket.io client did not load");
      return;
    }
    // A link with a new #token= opened on this page changes only the hash: no reload.
    window.addEventListener("hashchange", () => {
      const token = tokenFromHash();
      if (token) useToken(token);
    });
    const token = tokenFromHash() || sessionStorage.getItem(TOKEN_KEY);
    if (token) useToken(token);
    else if (sessionStorage.getItem(REFRESH_KEY)) resumeSession();
  }

  // A pasted or linked access token replaces any signed-in session.
  function useToken(token) {
    const refreshToken = sessionStorage.getItem(REFRESH_KEY);
    if (refreshToken) postJson("/api/auth/logout", { refresh_token: refreshToken }).catch(() => {});
    clearTimeout(state.refreshTimer);
    state.signedIn = false;
    sessionStorage.removeItem(REFRESH_KEY);
    ui.token.value = token;
    connect(token);
  }

  start();
})();
