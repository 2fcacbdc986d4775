// Reconnection: dial with {reconnect: 200}, connect a namespace and join a room; the server
// closes the connection; neffos.js probes (HEAD), re-dials with X-Websocket-Reconnect and
// restores the namespace and the room by itself.
// Usage: node reconnect.js <ws-url> <username>
import neffos from "neffos.js";
import { out, done, until, logEvents, expectCommand, closeConn } from "./lib.js";

const [url, username] = process.argv.slice(2);
let current = null; // neffos.js only exposes the new Conn through handler arguments.
const track = (ns, msg) => {
  current = ns.conn;
  out("conn", {
    event: msg.Event,
    room: msg.Room || "",
    id: ns.conn.ID ?? null,
    reconnected: ns.conn.wasReconnected(),
    tries: ns.conn.reconnectTries,
  });
};
const conn = await neffos.dial(
  url,
  { default: logEvents("c", { _OnNamespaceConnected: track, _OnRoomJoined: track }) },
  { reconnect: 200, headers: { "X-Username": username } },
);
const ns = await conn.connect("default");
await ns.joinRoom("r1");
out("ready");

// After the server closed the first connection: wait for the restored room.
await until((o) => o.ev === "conn" && o.reconnected && o.event === "_OnRoomJoined" && o.room === "r1");
await until((o) => o.ev === "event" && o.event === "room-news");
out("restored", {
  oldClosed: conn.isClosed(),
  rooms: [...(current.namespace("default")?.rooms.keys() ?? [])],
});

await expectCommand("done");
out("closed", await closeConn(current));
done();
