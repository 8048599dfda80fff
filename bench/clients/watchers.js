// Socket.io clients watching one value, as livedash.testing.watchers.Watchers does, but with
// the stock npm socket.io-client in one Node process: a much cheaper client for bench/run.py
// (livedash.testing.node_watchers.NodeWatchers runs it).
//
//   node bench/clients/watchers.js CONFIG.json
//
// CONFIG: {"url", "tokens": [...], "metric", "department", "concurrency" (50),
// "metrics" (optional: what each client subscribes to, of `department`; default [metric]),
// "batched" (optional: true sends `updates: "batched"` in the handshake's auth, and the updates
// come as `dashboard_updates`), "local_addresses" (optional: [...], one per token)}. With
// `local_addresses`, client i binds its TCP connection to local_addresses[i] (socket.io-client's
// `localAddress`, which engine.io-client hands to the `ws` WebSocket): behind nginx's `hash
// $remote_addr`, clients from different loopback addresses (127.0.0.2, ...) spread over the
// instances.
// Each client connects over websocket with its token in the handshake's auth, waits for
// `authenticated` (`auth_error` fails), and subscribes with `subscribe_metrics`, whose ack must
// be {ok: true}. Every `dashboard_update` of the watched metric and department is recorded as
// (client, value, arrival in CLOCK_MONOTONIC seconds, the payload's `timestamp`); batched, each
// such update inside a `dashboard_updates`, all of one batch with the batch's arrival. Every
// client counts the update frames it gets (`dashboard_update` and `dashboard_updates` events)
// and the values in them, of any metric: `frames` and `values`, all clients together.
//
// One JSON object per line, both ways. Out: {"ready": n, "connect_seconds": s} once every
// client is subscribed (or {"error": text}, and exit 1). In:
//   "start"   CPU time, loop lag and the counts are measured from here (else from "ready");
//             no answer;
//   "latest"  answer {"latest": [highest value per client], "cpu_seconds": s, "frames",
//             "values"};
//   "stop"    answer {"receipts": [[client, value, received, published], ...]} lines of at
//             most CHUNK receipts, then {"stopped": true, "latest", "cpu_seconds",
//             "cpu_user_seconds", "cpu_system_seconds", "lag", "connected", "frames",
//             "values"}; then disconnect everything and exit 0.
// stdin closing counts as "stop".
"use strict";

const fs = require("node:fs");
const readline = require("node:readline");
const { performance } = require("node:perf_hooks");
const { io } = require("socket.io-client");

const STEP_MS = 10_000;
const CHUNK = 5000;
const LAG_TICK_MS = 10;

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { url, tokens, metric, department } = config;
const concurrency = config.concurrency || 50;
const subscribed = config.metrics || [metric];
const batched = config.batched === true;
const localAddresses = config.local_addresses || null;

const sockets = [];
const latest = new Array(tokens.length).fill(0);
// Receipts in columns: a million small arrays would cost far more memory.
const receiptClient = [];
const receiptValue = [];
const receiptReceived = [];
const receiptPublished = [];
// Every client gets its own copy of each `timestamp` string; keep one.
const published = new Map();

let frames = 0;
let values = 0;

let cpuStart = process.cpuUsage();
const lag = [];
let lagTimer = null;

// CLOCK_MONOTONIC, as Python's time.monotonic() in the writer: one clock for every process.
// timeOrigin + performance.now() froze the wall clock's offset at start, and the wall clock
// is slewed (0.5 % on this machine at times): arrivals then came out up to 35 ms early.
function now() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function send(message) {
  return new Promise((resolve) => process.stdout.write(`${JSON.stringify(message)}\n`, resolve));
}

function record(index, data, received) {
  if (!data || data.metric !== metric || data.department !== department) return;
  const value = Math.trunc(Number(data.value));
  let stamp = String(data.timestamp);
  const known = published.get(stamp);
  if (known === undefined) published.set(stamp, stamp);
  else stamp = known;
  receiptClient.push(index);
  receiptValue.push(value);
  receiptReceived.push(received);
  receiptPublished.push(stamp);
  if (value > latest[index]) latest[index] = value;
}

function connectOne(index) {
  return new Promise((resolve, reject) => {
    const auth = batched ? { token: tokens[index], updates: "batched" } : { token: tokens[index] };
    const options = {
      transports: ["websocket"],
      auth,
      reconnection: false,
      forceNew: true,
      timeout: STEP_MS,
    };
    if (localAddresses) options.localAddress = localAddresses[index];
    const socket = io(url, options);
    sockets.push(socket);
    const timer = setTimeout(
      () => reject(new Error(`client ${index}: no authenticated in ${STEP_MS} ms`)),
      STEP_MS,
    );
    socket.on("dashboard_update", (data) => {
      const received = now();
      frames += 1;
      values += 1;
      record(index, data, received);
    });
    socket.on("dashboard_updates", (data) => {
      const received = now();
      const updates = (data && data.updates) || [];
      frames += 1;
      values += updates.length;
      for (const update of updates) record(index, update, received);
    });
    socket.once("connect_error", (error) => {
      clearTimeout(timer);
      reject(new Error(`client ${index} could not connect: ${error.message}`));
    });
    socket.once("auth_error", (data) => {
      clearTimeout(timer);
      reject(new Error(`client ${index} was refused: ${JSON.stringify(data)}`));
    });
    socket.once("authenticated", () => {
      clearTimeout(timer);
      socket
        .timeout(STEP_MS)
        .emitWithAck("subscribe_metrics", { metrics: subscribed, departments: [department] })
        .then((ack) => {
          if (ack && ack.ok === true) resolve();
          else reject(new Error(`client ${index} could not subscribe: ${JSON.stringify(ack)}`));
        }, reject);
    });
  });
}

async function connectAll() {
  let next = 0;
  async function lane() {
    while (next < tokens.length) {
      const index = next;
      next += 1;
      await connectOne(index);
    }
  }
  const lanes = [];
  for (let n = 0; n < Math.min(concurrency, tokens.length); n += 1) lanes.push(lane());
  await Promise.all(lanes);
}

function startLag() {
  let before = performance.now();
  const tick = () => {
    const at = performance.now();
    lag.push(Math.max(at - before - LAG_TICK_MS, 0) / 1000);
    before = at;
    lagTimer = setTimeout(tick, LAG_TICK_MS);
  };
  lagTimer = setTimeout(tick, LAG_TICK_MS);
}

function cpuSince() {
  const used = process.cpuUsage(cpuStart);
  return { user: used.user / 1e6, system: used.system / 1e6 };
}

function connectedCount() {
  return sockets.reduce((count, socket) => count + (socket.connected ? 1 : 0), 0);
}

async function stop() {
  clearTimeout(lagTimer);
  const cpu = cpuSince();
  for (let start = 0; start < receiptClient.length; start += CHUNK) {
    const end = Math.min(start + CHUNK, receiptClient.length);
    const chunk = [];
    for (let i = start; i < end; i += 1) {
      chunk.push([receiptClient[i], receiptValue[i], receiptReceived[i], receiptPublished[i]]);
    }
    await send({ receipts: chunk });
  }
  await send({
    stopped: true,
    latest,
    cpu_seconds: cpu.user + cpu.system,
    cpu_user_seconds: cpu.user,
    cpu_system_seconds: cpu.system,
    lag,
    connected: connectedCount(),
    frames,
    values,
  });
  for (const socket of sockets) socket.disconnect();
  process.exit(0);
}

async function fail(error) {
  for (const socket of sockets) socket.disconnect();
  await send({ error: error instanceof Error ? error.message : String(error) });
  process.exit(1);
}

async function main() {
  if (localAddresses && localAddresses.length !== tokens.length) {
    throw new Error(`${localAddresses.length} local_addresses for ${tokens.length} tokens`);
  }
  const started = performance.now();
  await connectAll();
  cpuStart = process.cpuUsage();
  frames = 0;
  values = 0;
  startLag();
  await send({ ready: connectedCount(), connect_seconds: (performance.now() - started) / 1000 });
  let stopping = false;
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    const order = line.trim().replace(/^"|"$/g, "");
    if (order === "start") {
      cpuStart = process.cpuUsage();
      lag.length = 0;
      frames = 0;
      values = 0;
    } else if (order === "latest") {
      const cpu = cpuSince();
      send({ latest, cpu_seconds: cpu.user + cpu.system, frames, values });
    } else if (order === "stop" && !stopping) {
      stopping = true;
      stop().catch(fail);
    }
  });
  lines.on("close", () => {
    if (!stopping) {
      stopping = true;
      stop().catch(fail);
    }
  });
}

main().catch(fail);
