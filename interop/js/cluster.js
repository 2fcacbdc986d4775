// A chat user of the scale-out cluster test (examples/tests/cluster.rs): connects to one
// instance, reports every event, answers the server's `question` Ask, and leaves on the
// `quit` command. Usage: node cluster.js <ws-url> <username>
import neffos from "neffos.js";
import { out, done, logEvents, command, closeConn } from "./lib.js";

const [url, username] = process.argv.slice(2);
const conn = await neffos.dial(
  url,
  {
    default: logEvents("c", {
      question: (ns, msg) => neffos.reply(`js ${username}: ${msg.Body}`),
    }),
  },
  { headers: { "X-Username": username } },
);
await conn.connect("default");
out("ready", { id: conn.ID });
for (;;) {
  const cmd = await command();
  if (cmd === null || cmd === "quit") break;
}
out("closed", await closeConn(conn));
done();
