// Dial a server whose on_connect refuses us: dial must reject with the server's reason.
// Usage: node refused.js <ws-url> <username>
import neffos from "neffos.js";
import { out, done, errText } from "./lib.js";

const [url, username] = process.argv.slice(2);
try {
  const conn = await neffos.dial(url, { default: {} }, { headers: { "X-Username": username } });
  out("dialed", { id: conn.ID ?? null });
} catch (e) {
  out("rejected", { error: errText(e), isError: e instanceof Error });
}
done();
