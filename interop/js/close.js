// Closing: "client" mode closes from JS on command; "server" mode waits for the server to
// close the connection.
// Usage: node close.js <ws-url> <username> client|server
import neffos from "neffos.js";
import { out, done, fail, logEvents, expectCommand, closeConn, wsClosed } from "./lib.js";

const [url, username, mode] = process.argv.slice(2);
const conn = await neffos.dial(url, { default: logEvents("c") }, { headers: { "X-Username": username } });
const closed = wsClosed(conn);
await conn.connect("default");
out("ready");

if (mode === "client") {
  await expectCommand("close");
  out("closed", await closeConn(conn));
} else if (mode === "server") {
  const e = await closed;
  out("closed", { code: e.code, isClosed: conn.isClosed(), connected: conn.namespace("default") !== undefined });
} else {
  fail(`unknown mode ${mode}`);
}
done();
