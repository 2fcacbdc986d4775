// Emits both ways: JS emit -> server handler (which emits back); server emits -> JS;
// and the error echo of an async JS handler, which the server must not answer.
// Usage: node emit.js <ws-url> <username>
import neffos from "neffos.js";
import { out, done, until, logEvents, closeConn } from "./lib.js";

const [url, username] = process.argv.slice(2);
const conn = await neffos.dial(
  url,
  // An async handler returns a Promise, which neffos.js sends back as an error ("undefined").
  {
    default: logEvents("c", {
      "async-news": async () => {},
      "ping-me": (ns, msg) => {
        ns.emit("pong-me", msg.Body);
      },
    }),
  },
  { headers: { "X-Username": username } },
);
const ns = await conn.connect("default");
out("emitted", { ok: ns.emit("chat", "hello; from js ✓ ünïcödé") });
out("ready");

const got = (event) => until((o) => o.ev === "event" && o.event === event);
await Promise.all([got("chat-back"), got("news"), got("direct"), got("marker")]);
out("closed", await closeConn(conn));
done();
