// The neffos.js reconnection probe: the exact fetch it issues (HEAD, mode no-cors).
// Usage: node probe.js <ws-url>
import { out, done, errText } from "./lib.js";

const [url] = process.argv.slice(2);
const http = url.replace(/(ws)(s)?\:\/\//, "http$2://");
try {
  const res = await fetch(http, { method: "HEAD", mode: "no-cors" });
  out("probe", { url: http, status: res.status, ok: true });
} catch (e) {
  out("probe", { url: http, error: errText(e), ok: false });
}
done();
