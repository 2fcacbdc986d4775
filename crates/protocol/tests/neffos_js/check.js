// Cross-check driver for crates/protocol/tests/neffos_js.rs: runs the REAL neffos.js 0.1.34
// serializer and deserializer (from the npm package, not a re-implementation) over the cases
// the Rust test wrote, and writes what neffos.js made of them.
//
// usage: node check.js <path to node_modules/neffos.js> <cases.json> <results.json>
//
// neffos.js does not export `serializeMessage`/`deserializeMessage` (they are module-private
// functions of dist/neffos.js, an ES module). To reach them without changing a byte of the
// library, the dist file is copied verbatim next to itself with one extra line that exports
// the two functions under new names, and that copy is imported. Its own `import('ws')`
// resolves exactly as the original's would.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

const EXPECTED_VERSION = '0.1.34';

async function loadNeffos(pkgDir) {
  const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  if (pkg.name !== 'neffos.js' || pkg.version !== EXPECTED_VERSION) {
    throw new Error(`expected neffos.js@${EXPECTED_VERSION}, found ${pkg.name}@${pkg.version}`);
  }
  const mainFile = path.join(pkgDir, pkg.main);
  const source = fs.readFileSync(mainFile, 'utf8');
  for (const fn of ['serializeMessage', 'deserializeMessage']) {
    if (!source.includes(`function ${fn}(`)) {
      throw new Error(`${mainFile} has no function ${fn}`);
    }
  }
  const shim = path.join(path.dirname(mainFile), '.neffos-rs-check.mjs');
  fs.writeFileSync(
    shim,
    source +
      '\n// Added by neffos-rs tests/neffos_js/check.js:\n' +
      'export { serializeMessage as __serializeMessage, deserializeMessage as __deserializeMessage };\n',
  );
  const mod = await import(pathToFileURL(shim).href);
  return {
    version: pkg.version,
    main: pkg.main,
    Message: mod.Message,
    reply: mod.reply,
    serializeMessage: mod.__serializeMessage,
    deserializeMessage: mod.__deserializeMessage,
  };
}

const hex = (u8) => Buffer.from(u8).toString('hex');
const fromHex = (h) => new Uint8Array(Buffer.from(h, 'hex'));

/// What neffos.js receives from a WebSocket: a string for text frames, an ArrayBuffer for
/// binary ones (neffos.js sets `binaryType = "arraybuffer"`).
function wireData(frameHex, binary) {
  const bytes = fromHex(frameHex);
  if (binary) {
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  }
  return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
}

function describeBody(body) {
  if (body === undefined || body === null) return { kind: 'none', hex: null };
  if (typeof body === 'string') return { kind: 'string', hex: hex(Buffer.from(body, 'utf8')) };
  if (body instanceof ArrayBuffer) return { kind: 'arraybuffer', hex: hex(new Uint8Array(body)) };
  return { kind: typeof body, hex: null };
}

function describe(msg) {
  const body = describeBody(msg.Body);
  return {
    isInvalid: msg.isInvalid === true,
    wait: msg.wait === undefined ? null : msg.wait,
    namespace: msg.Namespace === undefined ? null : msg.Namespace,
    room: msg.Room === undefined ? null : msg.Room,
    event: msg.Event === undefined ? null : msg.Event,
    isError: msg.isError === true,
    isNoOp: msg.isNoOp === true,
    isNative: msg.IsNative === true,
    setBinary: msg.SetBinary === true,
    bodyKind: body.kind,
    bodyHex: body.hex,
    err: msg.Err === undefined ? null : String(msg.Err.message),
  };
}

/// Builds the neffos.js Message a neffos.js application would write for this case: the
/// error text travels as `Err` (an `Error`), which serializeMessage puts in the body slot
/// with isError `1`; a binary body is a Uint8Array with `SetBinary`.
function toJsMessage(neffos, c) {
  const msg = new neffos.Message();
  msg.wait = c.wait;
  msg.Namespace = c.namespace;
  msg.Room = c.room;
  msg.Event = c.event;
  msg.isNoOp = c.is_noop;
  if (c.binary) {
    msg.SetBinary = true;
    msg.Body = fromHex(c.body_hex);
  } else if (c.is_error) {
    msg.Err = new Error(Buffer.from(c.body_hex, 'hex').toString('utf8'));
  } else {
    msg.Body = Buffer.from(c.body_hex, 'hex').toString('utf8');
  }
  return msg;
}

function serializedHex(data) {
  if (typeof data === 'string') return { binary: false, hex: hex(Buffer.from(data, 'utf8')) };
  if (data instanceof Uint8Array) return { binary: true, hex: hex(data) };
  throw new Error(`serializeMessage returned ${typeof data}`);
}

async function main() {
  const [pkgDir, casesPath, outPath] = process.argv.slice(2);
  if (!pkgDir || !casesPath || !outPath) {
    throw new Error('usage: node check.js <neffos.js package dir> <cases.json> <results.json>');
  }
  const neffos = await loadNeffos(pkgDir);
  const input = JSON.parse(fs.readFileSync(casesPath, 'utf8'));

  const cases = input.cases.map((c) => ({
    // (a) neffos.js reads the bytes we encoded.
    deserialized: describe(neffos.deserializeMessage(wireData(c.frame_hex, c.binary), false)),
    // (b) neffos.js writes the same logical message.
    serialized: serializedHex(neffos.serializeMessage(toJsMessage(neffos, c))),
  }));

  // Raw frames whose neffos.js reading the Rust side asserts (documented divergences).
  const probes = input.probes.map((p) =>
    describe(neffos.deserializeMessage(wireData(p.frame_hex, p.binary), p.allow_native)),
  );

  // What neffos.js writes for an error with an empty text (cannot produce `;1;0;`).
  const emptyError = new neffos.Message();
  emptyError.wait = '$1';
  emptyError.Namespace = 'ns';
  emptyError.Event = 'ev';
  emptyError.Err = new Error('');
  // And for a `reply(...)` "error": isError 0, the text as body.
  const replied = new neffos.Message();
  replied.wait = '$5';
  replied.Namespace = '/v1';
  replied.Event = 'workday';
  replied.Err = neffos.reply('weekday: Monday');

  fs.writeFileSync(
    outPath,
    JSON.stringify({
      neffos_js_version: neffos.version,
      neffos_js_main: neffos.main,
      node_version: process.version,
      cases,
      probes,
      empty_error_serialized: serializedHex(neffos.serializeMessage(emptyError)),
      reply_serialized: serializedHex(neffos.serializeMessage(replied)),
    }),
  );
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
