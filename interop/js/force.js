// Server-forced namespace connect, room join and namespace disconnect.
// The JS client declares namespace "forced" but never connects it itself.
// Usage: node force.js <ws-url> <username>
import neffos from "neffos.js";
import { out, done, until, logEvents, expectCommand, closeConn } from "./lib.js";

const [url, username] = process.argv.slice(2);
const conn = await neffos.dial(
  url,
  { default: logEvents("c"), forced: logEvents("c") },
  { headers: { "X-Username": username } },
);
// waitServerConnect only resolves if registered before the server's request arrives,
// so register it before telling the test we are ready.
const waiting = conn.waitServerConnect("forced");
out("ready");

const nsConn = await waiting;
out("server_connected", { ns: nsConn?.namespace ?? null });

await until((o) => o.ev === "event" && o.ns === "forced" && o.event === "_OnRoomJoined");
out("rooms", { ns: "forced", rooms: [...nsConn.rooms.keys()] });

await until((o) => o.ev === "event" && o.ns === "forced" && o.event === "_OnNamespaceDisconnect");
out("state", {
  connected: conn.namespace("forced") !== undefined,
  rooms: [...nsConn.rooms.keys()],
  closed: conn.isClosed(),
});

await expectCommand("done");
out("closed", await closeConn(conn));
done();
