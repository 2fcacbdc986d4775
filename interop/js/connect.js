// Dial, namespace connect/disconnect from the client side, an undeclared namespace, close.
// Usage: node connect.js <ws-url> [username]   (username is sent as the X-Username header)
import neffos from "neffos.js";
import { out, done, errText, logEvents, closeConn } from "./lib.js";

const [url, username] = process.argv.slice(2);
const options = username ? { headers: { "X-Username": username } } : undefined;

const conn = await neffos.dial(
  url,
  { default: logEvents("c"), undeclared: logEvents("c") },
  options,
);
out("dialed", { id: conn.ID ?? null, acknowledged: conn.isAcknowledged() });

const ns = await conn.connect("default");
out("connected", { ns: ns.namespace, registered: conn.namespace("default") === ns });

const err = await ns.disconnect();
out("disconnected", {
  error: err ? errText(err) : null,
  registered: conn.namespace("default") !== undefined,
});

try {
  await conn.connect("undeclared");
  out("connected", { ns: "undeclared" });
} catch (e) {
  out("connect_failed", { ns: "undeclared", error: errText(e) });
}

out("closed", await closeConn(conn));
done();
