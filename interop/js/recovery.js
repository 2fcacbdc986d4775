// Connection-state recovery with the unmodified neffos.js: dial with {reconnect} and the
// session header, connect "chat" and join room "R", count every "msg"; after the test cut
// the connection, neffos.js reconnects by itself and the server gives the room and the
// missed messages back. Reports each 100th message, the recovery event, and every body
// (when told to, or when the message "end" arrives).
// Usage: node recovery.js <ws-url> <session-key>
import neffos from "neffos.js";
import { out, done, expectCommand } from "./lib.js";

const [url, key] = process.argv.slice(2);
const bodies = [];
const conn = await neffos.dial(
  url,
  {
    chat: {
      msg: (ns, msg) => {
        if (msg.Body === "end") return out("end", { bodies });
        bodies.push(msg.Body);
        if (bodies.length % 100 === 0) out("count", { n: bodies.length });
      },
      _OnRecovery: (ns, msg) => {
        out("recovery", { body: msg.Body, id: ns.conn.ID, reconnected: ns.conn.wasReconnected() });
      },
    },
  },
  { reconnect: 50, headers: { "X-Neffos-Session": key } },
);
const ns = await conn.connect("chat");
await ns.joinRoom("R");
out("ready", { id: conn.ID });

await expectCommand("report");
out("received", { bodies });
done();
