// Binary bodies both ways: emitBinary with bytes including 0x00, ';' and invalid UTF-8;
// the server answers with emit_binary.
// Usage: node binary.js <ws-url> <username> <hex-payload>
import neffos from "neffos.js";
import { out, done, until, logEvents, closeConn } from "./lib.js";

const [url, username, payloadHex] = process.argv.slice(2);
const conn = await neffos.dial(url, { default: logEvents("c") }, { headers: { "X-Username": username } });
const ns = await conn.connect("default");
const payload = new Uint8Array(Buffer.from(payloadHex, "hex"));
out("emitted", { ok: ns.emitBinary("bin", payload) });

const back = await until((o) => o.ev === "event" && o.event === "bin-back");
out("received", { hex: back.hex, binary: back.binary });
out("closed", await closeConn(conn));
done();
