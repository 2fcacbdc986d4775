// Connection-state recovery with the unmodified neffos.js: dial with {reconnect} and the
// session header, connect the namespace and join room "R", count every message event;
// after the test cut the connection (or killed the instance), neffos.js reconnects by
// itself and the server gives the room and the missed messages back. Reports each 100th
// message, the recovery event, and every body (when told to, or when the message "end"
// arrives).
// Usage: node recovery.js <ws-url> <session-key> [<username> <namespace> <event>]
// With a username (the chat example's `X-Username`), bodies are the chat's JSON and their
// `text` is what counts; texts starting with "probe" are reported as `probe` only.
import neffos from "neffos.js";
import { out, done, expectCommand } from "./lib.js";

const [url, key, user, namespace = "chat", event = "msg"] = process.argv.slice(2);
const bodies = [];
const headers = { "X-Neffos-Session": key };
if (user) headers["X-Username"] = user;

function text(body) {
  if (!user) return body;
  try {
    const v = JSON.parse(body);
    return typeof v?.text === "string" ? v.text : body;
  } catch {
    return body;
  }
}

const conn = await neffos.dial(
  url,
  {
    [namespace]: {
      [event]: (ns, msg) => {
        const body = text(msg.Body);
        if (body === "end") return out("end", { bodies });
        if (body.startsWith("probe")) return out("probe", { body });
        bodies.push(body);
        if (bodies.length % 100 === 0) out("count", { n: bodies.length });
      },
      _OnRecovery: (ns, msg) => {
        out("recovery", { body: msg.Body, id: ns.conn.ID, reconnected: ns.conn.wasReconnected() });
      },
    },
  },
  // allowSynchronousEvents: false (an option of `ws`, neffos.js's WebSocket under Node):
  // one message per tick, as in browsers. By default `ws` hands every frame of one read to
  // neffos.js at once, before its connect() has recorded the namespace, and neffos.js
  // drops an event arriving right after its connect reply (`_OnRecovery` not-recovered).
  { reconnect: 50, headers, allowSynchronousEvents: false },
);
const ns = await conn.connect(namespace);
await ns.joinRoom("R");
out("ready", { id: conn.ID });

await expectCommand("report");
out("received", { bodies });
done();
