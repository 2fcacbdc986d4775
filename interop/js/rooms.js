// Rooms: two connections; "a" joins a room, emits in it, later leaves; "b" never joins.
// Then "a" joins a room whose name contains ';' and leaves it with leaveAll().
// Usage: node rooms.js <ws-url>
import neffos from "neffos.js";
import { out, done, until, errText, logEvents, expectCommand, closeConn } from "./lib.js";

const [url] = process.argv.slice(2);
const dial = (label) =>
  neffos.dial(url, { default: logEvents(label) }, { headers: { "X-Username": `room-${label}` } });
const [a, b] = await Promise.all([dial("a"), dial("b")]);
const [nsA] = await Promise.all([a.connect("default"), b.connect("default")]);

const room = await nsA.joinRoom("lobby");
out("joined", { conn: "a", room: room.name, rooms: [...nsA.rooms.keys()] });
out("room_emit", { ok: room.emit("room-chat", "hi lobby") });
out("ready");

await expectCommand("leave");
const err = await room.leave();
out("left", { conn: "a", error: err ? errText(err) : null, rooms: [...nsA.rooms.keys()] });

// Escaped names (';' travels as "@%!semicolon@%!") and leaveAll(), which neffos.js sends
// as "_OnRoomLeft" requests instead of "_OnRoomLeave".
await expectCommand("escape");
const semi = await nsA.joinRoom("semi;colon");
out("joined", { conn: "a", room: semi.name, rooms: [...nsA.rooms.keys()] });
await until((o) => o.ev === "event" && o.conn === "a" && o.event === "semi;event");
nsA.leaveAll();
await until((o) => o.ev === "event" && o.conn === "a" && o.event === "_OnRoomLeft" && o.room === "semi;colon");
out("left_all", { conn: "a", rooms: [...nsA.rooms.keys()] });

await expectCommand("done");
const [ca, cb] = await Promise.all([closeConn(a), closeConn(b)]);
out("closed", { a: ca, b: cb });
done();
