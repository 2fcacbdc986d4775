// Shared helpers of the interop scripts (driven by crates/core/tests/interop_js.rs).
//
// Protocol with the Rust test:
// - every observation is one JSON object per line on stdout, with an "ev" field;
// - the test sends plain-text commands, one per line, on stdin;
// - "fail" lines and a non-zero exit code report a failure on the JS side;
// - a watchdog ends the script if it makes no progress, so it never hangs.

import { writeSync } from "node:fs";
import { createInterface } from "node:readline";

/** Writes one observation line (synchronously, so nothing is lost on exit). */
export function out(ev, fields = {}) {
  const line = JSON.stringify({ ev, ...fields }) + "\n";
  deliver({ ev, ...fields });
  writeSync(1, line);
}

/** Reports a failure and exits with code 1. */
export function fail(why) {
  writeSync(1, JSON.stringify({ ev: "fail", error: String(why) }) + "\n");
  process.exit(1);
}

/** Reports success and exits with code 0. */
export function done() {
  writeSync(1, JSON.stringify({ ev: "done" }) + "\n");
  process.exit(0);
}

const watchdogMs = Number(process.env.INTEROP_WATCHDOG_MS || 30000);
setTimeout(() => fail(`watchdog: script still running after ${watchdogMs} ms`), watchdogMs).unref();
process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${e?.stack ?? e}`));
process.on("uncaughtException", (e) => fail(`uncaught exception: ${e?.stack ?? e}`));

/** The text of an error (neffos.js rejects with `Error`s, events or strings). */
export function errText(e) {
  if (e instanceof Error) return e.message;
  if (e && typeof e === "object" && "message" in e) return String(e.message);
  return String(e);
}

export function hex(buf) {
  return Buffer.from(buf).toString("hex");
}

// ---- observations awaited by the script itself ----

const seen = [];
const watchers = [];

function deliver(obj) {
  seen.push(obj);
  for (let i = watchers.length - 1; i >= 0; i--) {
    if (watchers[i].pred(obj)) {
      watchers[i].resolve(obj);
      watchers.splice(i, 1);
    }
  }
}

/** Resolves with the first observation (past or future) matching `pred`. */
export function until(pred) {
  const found = seen.find(pred);
  if (found) return Promise.resolve(found);
  return new Promise((resolve) => watchers.push({ pred, resolve }));
}

// ---- commands from the test (stdin) ----

const lines = [];
const readers = [];
let stdinClosed = false;
const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const reader = readers.shift();
  if (reader) reader(line.trim());
  else lines.push(line.trim());
});
rl.on("close", () => {
  stdinClosed = true;
  for (const reader of readers.splice(0)) reader(null);
});

/** The next command line, or null once stdin is closed. */
export function command() {
  if (lines.length > 0) return Promise.resolve(lines.shift());
  if (stdinClosed) return Promise.resolve(null);
  return new Promise((resolve) => readers.push(resolve));
}

/** Waits for the command `name`; anything else is a failure. */
export async function expectCommand(name) {
  const got = await command();
  if (got !== name) fail(`expected command ${JSON.stringify(name)}, got ${JSON.stringify(got)}`);
}

// ---- neffos.js helpers ----

/** A plain description of a neffos.js message. */
export function describe(msg) {
  const binary = msg.Body instanceof ArrayBuffer;
  return {
    ns: msg.Namespace ?? null,
    room: msg.Room || "",
    event: msg.Event,
    body: binary ? null : (msg.Body ?? ""),
    hex: binary ? hex(msg.Body) : null,
    binary,
    error: msg.isError ? errText(msg.Err) : null,
    local: !!msg.IsLocal,
    forced: !!msg.IsForced,
  };
}

/**
 * Events of one namespace that report every message as an "event" observation
 * (labelled with `conn`), plus `extra` handlers. Handlers are synchronous on purpose:
 * neffos.js treats a returned Promise as an error and sends it back to the server.
 */
export function logEvents(conn, extra = {}) {
  const log = (ns, msg) => {
    out("event", { conn, ...describe(msg) });
  };
  const events = { _OnAnyEvent: log };
  for (const [name, handler] of Object.entries(extra)) {
    events[name] = (ns, msg) => {
      log(ns, msg);
      return handler(ns, msg);
    };
  }
  return events;
}

/** Closes a neffos.js connection and resolves with its WebSocket close event. */
export function closeConn(conn) {
  const ws = conn.conn;
  const closed = wsClosed(conn);
  conn.close();
  return closed.then((e) => ({ code: e.code, isClosed: conn.isClosed(), readyState: ws.readyState }));
}

/** Resolves with the close event of the connection's WebSocket. */
export function wsClosed(conn) {
  const ws = conn.conn;
  if (ws.readyState === ws.CLOSED) return Promise.resolve({ code: null });
  return new Promise((resolve) => ws.addEventListener("close", (e) => resolve(e), { once: true }));
}
