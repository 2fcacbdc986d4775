// Typed bodies: neffos.js sends JSON.stringify bodies to typed Rust handlers (Json<T> with
// the server's State) and reads their JSON replies; a body that does not decode is answered
// with an error naming the event; the server's typed broadcast and its typed Ask reach JS.
// Usage: node typed.js <ws-url> <username>
import neffos from "neffos.js";
import { out, done, errText, expectCommand, closeConn } from "./lib.js";

const [url, username] = process.argv.slice(2);
const conn = await neffos.dial(
  url,
  {
    default: {
      notice: (ns, msg) => {
        out("notice", { notice: JSON.parse(msg.Body) });
      },
      // The server's Ask_json: a JSON question, a JSON answer.
      quote: (ns, msg) => {
        const q = JSON.parse(msg.Body);
        return neffos.reply(JSON.stringify({ sum: q.a * q.b, by: "js", call: 0 }));
      },
    },
  },
  { headers: { "X-Username": username } },
);
const ns = await conn.connect("default");

async function ask(label, event, body) {
  try {
    const reply = await ns.ask(event, body);
    out("reply", { label, reply: JSON.parse(reply.Body) });
  } catch (e) {
    out("error", { label, error: errText(e) });
  }
}

await ask("good", "add", JSON.stringify({ a: 2, b: 40, note: "ignored field" }));
await ask("missing", "add", JSON.stringify({ a: 1 }));
await ask("garbage", "add", "not json at all");
await ask("again", "add", JSON.stringify({ a: -5, b: 5 }));
out("ready");

await expectCommand("done");
out("closed", await closeConn(conn));
done();
