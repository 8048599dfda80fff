// Bare Node socket.io, the first baseline of bench/run.py: the same broadcast as livedash
// with nothing behind it.
//
//   node bench/baselines/node_server.js --port 8123 --rate 40 --count 480
//
// A client connects (websocket), is answered `authenticated` at once (its token is not
// checked) and joins the one room with `subscribe_metrics`, acknowledged {ok: true}, as
// livedash's clients do. GET /start begins `--count` emits to the room at `--rate` per second
// on a fixed schedule; GET /health answers {"status": "ok", "sent": n}. Each payload has
// livedash's `dashboard_update` shape; `timestamp` is the emit time (ISO, microseconds) and
// `sent_at` the same in epoch ms.
"use strict";

const http = require("node:http");
const { performance } = require("node:perf_hooks");
const { Server } = require("socket.io");

const ROOM = "dashboard";

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : Number(process.argv[at + 1]);
}

const port = option("port", 8123);
const rate = option("rate", 40);
const count = option("count", 400);
let sent = 0;
let started = false;

// Microseconds since the epoch would exceed Date's millisecond ISO form; add them by hand.
function isoMicros(epochMs) {
  const whole = Math.floor(epochMs);
  const micros = String(Math.floor((epochMs - whole) * 1000)).padStart(3, "0");
  return new Date(whole).toISOString().replace("Z", `${micros}+00:00`);
}

function emitOnSchedule(io) {
  const origin = performance.now();
  const tick = () => {
    sent += 1;
    // Milliseconds of CLOCK_MONOTONIC, the clients' clock (bench/clients/watchers.js).
    const now = Number(process.hrtime.bigint()) / 1e6;
    io.to(ROOM).emit("dashboard_update", {
      metric: "patients_total",
      department: "ED",
      value: sent,
      version: sent,
      timestamp: isoMicros(now),
      sent_at: now,
    });
    if (sent < count) {
      const due = origin + ((sent + 1) * 1000) / rate;
      setTimeout(tick, Math.max(0, due - performance.now()));
    }
  };
  setTimeout(tick, 1000 / rate);
}

const httpServer = http.createServer();
const io = new Server(httpServer, { transports: ["websocket", "polling"] });

httpServer.on("request", (request, response) => {
  if (request.url.startsWith("/socket.io")) return; // engine.io answers these
  if (request.url === "/start" && !started) {
    started = true;
    emitOnSchedule(io);
  }
  response.writeHead(200, { "Content-Type": "application/json" });
  response.end(JSON.stringify({ status: "ok", role: "node", sent }));
});

io.on("connection", (socket) => {
  socket.emit("authenticated", { user: "bench" });
  socket.on("subscribe_metrics", (data, ack) => {
    socket.join(ROOM);
    if (typeof ack === "function") ack({ ok: true });
  });
});

process.on("SIGTERM", () => {
  io.close();
  process.exit(0);
});

httpServer.listen(port, "127.0.0.1");
