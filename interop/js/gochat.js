// A chat user of the Go-compatibility tests (examples/tests/gocompat.rs): connects to one
// instance (Go neffos or neffos-rs, directly or through the test's load-balancer proxy),
// reports every event, answers the server's `question` Ask, and acts on commands:
//   chat <text> | roomchat <room> <text> | join <room> | private <to> <text> | quit
// With a reconnect delay (3rd argument, ms), neffos.js reconnects by itself and restores the
// namespace and rooms; commands then go through the new connection. "dropped" reports the
// end of each connection, "connected" each namespace connection (reconnected or not).
// Usage: node gochat.js <ws-url> <username> [reconnect-ms]
import neffos from "neffos.js";
import { out, done, logEvents, command } from "./lib.js";

const [url, username, reconnect] = process.argv.slice(2);
let current = null; // neffos.js only exposes a reconnected NSConn through handler arguments.
const track = (ns, msg) => {
  current = ns;
  out("connected", { id: ns.conn.ID ?? null, reconnected: ns.conn.wasReconnected() });
  ns.conn.conn.addEventListener("close", () => out("dropped"), { once: true });
};
const conn = await neffos.dial(
  url,
  {
    default: logEvents("c", {
      _OnNamespaceConnected: track,
      question: (ns, msg) => neffos.reply(`js ${username}: ${msg.Body}`),
    }),
  },
  { reconnect: Number(reconnect || 0), headers: { "X-Username": username } },
);
current = await conn.connect("default");
out("ready", { id: conn.ID });
for (;;) {
  const cmd = await command();
  if (cmd === null || cmd === "quit") break;
  const [verb, arg, ...rest] = cmd.split(" ");
  const text = rest.join(" ");
  // `ok`: the message left for the server (false while neffos.js is reconnecting).
  let ok = true;
  if (verb === "chat") ok = current.emit("chat", [arg, text].filter(Boolean).join(" "));
  else if (verb === "roomchat") current.room(arg)?.emit("chat", text);
  else if (verb === "join") {
    await current.joinRoom(arg);
    out("joined", { room: arg });
  } else if (verb === "private") current.emit("private", JSON.stringify({ to: arg, text }));
  out("sent", { cmd, ok });
}
current.conn.close();
done();
