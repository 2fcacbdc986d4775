// Ask both ways: JS asks the server (reply and error reply); then the server asks JS, whose
// handlers answer with neffos.reply(...) or an Error.
// Usage: node ask.js <ws-url> <username>
import neffos from "neffos.js";
import { out, done, errText, logEvents, expectCommand, closeConn } from "./lib.js";

const [url, username] = process.argv.slice(2);
const conn = await neffos.dial(
  url,
  {
    default: logEvents("c", {
      question: (ns, msg) => neffos.reply(`answer to ${msg.Body}`),
      "js-fail": (ns, msg) => new Error(`js refused ${msg.Body}`),
    }),
  },
  { headers: { "X-Username": username } },
);
const ns = await conn.connect("default");

for (const [event, body] of [
  ["echo", "ping; pong"],
  ["fail", "x"],
]) {
  try {
    const reply = await ns.ask(event, body);
    out("ask_reply", { event, body: reply.Body, isError: !!reply.isError, wait: reply.wait });
  } catch (e) {
    out("ask_error", { event, error: errText(e) });
  }
}
out("ready");

await expectCommand("done");
out("closed", await closeConn(conn));
done();
