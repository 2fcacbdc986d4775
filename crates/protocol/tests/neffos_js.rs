//! Cross-check against the real neffos.js 0.1.34 from npm.
//!
//! The test installs `neffos.js@0.1.34` into `<workspace>/target/npm/` (once), generates a
//! few hundred messages deterministically, and runs `tests/neffos_js/check.js` under Node,
//! which loads neffos.js's own `serializeMessage`/`deserializeMessage` and
//! (a) deserializes the bytes we encoded, (b) serializes the same logical messages.
//! Every field neffos.js reads must equal ours and every byte it writes must equal our
//! encoding. Node.js and npm are required: without them the test fails, it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use neffos_protocol::{
    DecodeError, DecodeOptions, ESCAPE_TOKEN, Message, NativeMode, WaitToken, decode, escape,
    events, unescape,
};
use serde_json::{Value, json};

const NEFFOS_JS: &str = "neffos.js@0.1.34";
const NEFFOS_JS_VERSION: &str = "0.1.34";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Runs `tool --version`, panicking with an actionable message when the tool is missing.
fn require_tool(tool: &str) -> String {
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "`{tool}` is required by the neffos.js cross-check (tests/neffos_js.rs) but could \
             not be run: {e}. Install Node.js (>= 18) with npm and put them on PATH."
            )
        });
    assert!(
        out.status.success(),
        "`{tool} --version` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `<workspace>/target/npm/node_modules/neffos.js`, installed with npm if missing.
fn neffos_js_package() -> PathBuf {
    let prefix = workspace_root().join("target").join("npm");
    let package = prefix.join("node_modules").join("neffos.js");
    let installed_version = std::fs::read_to_string(package.join("package.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned));
    if installed_version.as_deref() != Some(NEFFOS_JS_VERSION) {
        std::fs::create_dir_all(&prefix).expect("create target/npm");
        let out = Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&prefix)
            .args(["--no-save", "--no-audit", "--no-fund", NEFFOS_JS])
            .output()
            .unwrap_or_else(|e| panic!("cannot run npm to install {NEFFOS_JS}: {e}"));
        assert!(
            out.status.success(),
            "`npm install --prefix {} {NEFFOS_JS}` failed (is the npm registry reachable?):\n{}\n{}",
            prefix.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        package.join("package.json").is_file(),
        "{NEFFOS_JS} is not in {} after npm install",
        package.display()
    );
    package
}

/// SplitMix64: a tiny deterministic generator, so every run checks the same messages.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

const WAITS: &[&str] = &[
    "",
    "",
    "",
    "$1",
    "$1795487474372343598",
    "$183048593284712",
    "$263212.51904544816",
    "1795487474372343237",
    "R795487474372343237",
    "$dn4kkm3aayqq-1",
    "dn4kkjd7rjrx-2-5ea82d08",
    "d!n4kkjd7rjrx-1-5150c502",
    "1!234",
    "#12",
    "neffos(0x3f2c9a10-0000-4000-8000-000000000000(user420xc00018a2d0))",
];

const FIELD_PIECES: &[&str] = &[
    "default",
    "chat",
    "room1",
    "/v1",
    "_OnNamespaceConnect",
    "_OnRoomJoin",
    ";",
    ";",
    "a;b",
    "\n",
    "\r\n",
    "\t",
    " ",
    "é",
    "日本語",
    "😀",
    "@%!",
    "semicolon",
    "x",
    "\"quoted\"",
    "\\",
];

const BODY_PIECES: &[&str] = &[
    "hi",
    ";",
    "hi;there",
    ";;;;;;",
    "\n",
    "\r\n",
    "😀",
    "日本",
    "ü",
    ESCAPE_TOKEN,
    "{\"a\":1,\"b\":[1,2]}",
    "undefined",
    "bad namespace",
    "\t",
    "\u{0}",
    "\u{7f}",
    " ",
    "x",
];

const BYTE_PIECES: &[&[u8]] = &[
    b";",
    b"\x00\x01;x",
    b"\xff\xfe",
    b"\x80",
    b"\n",
    b"plain",
    b"@%!semicolon@%!",
    b"\xf0\x9f\x98\x80",
    b"\xed\xa0\x80",
];

fn field(rng: &mut Rng) -> String {
    loop {
        let mut s = String::new();
        for _ in 0..rng.below(4) {
            s.push_str(rng.pick(FIELD_PIECES));
        }
        // neffos cannot carry a value whose escaped form holds a stray escape token.
        if !s.contains(ESCAPE_TOKEN) && unescape(&escape(&s)) == s {
            return s;
        }
    }
}

fn text_body(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.below(5) {
        s.push_str(rng.pick(BODY_PIECES));
    }
    s
}

fn binary_body(rng: &mut Rng) -> Vec<u8> {
    let mut b = Vec::new();
    for _ in 0..rng.below(5) {
        b.extend_from_slice(rng.pick(BYTE_PIECES));
    }
    for _ in 0..rng.below(4) {
        b.push(rng.next() as u8);
    }
    b
}

/// The messages to compare: the §11 vectors neffos.js can write, then generated ones.
fn messages() -> Vec<Message> {
    let mut out = Vec::new();
    // §11 rows whose message neffos.js can produce. (Row 21, an error with an empty text,
    // is checked separately: neffos.js writes it with isError `0`.)
    for frame in [
        &b"$1795487474372343598;default;;_OnNamespaceConnect;0;0;"[..],
        b"$1795487474372343598;;;;;;",
        b"$1795487474372343598;default;;_OnNamespaceConnect;1;0;bad namespace",
        b";default;;chat;0;0;hi;there",
        b";default;room1;chat;0;0;x",
        b"$1;default;room1;_OnRoomJoin;0;0;",
        b"$2;default;room1;_OnRoomLeave;0;0;",
        b"1795487474372343237;default;;_OnNamespaceDisconnect;0;0;",
        b"$5;/v1;;workday;0;0;06-24-2019",
        b"$5;/v1;;workday;0;0;weekday: Monday",
        b"$5;/v1;;workday;1;0;invalid date format",
        b";a@%!semicolon@%!b;c@%!semicolon@%!d;e@%!semicolon@%!f;0;0;g;h",
        b"1795487474372343237;default;;onAsk;0;0;status?",
        b"R795487474372343237;default;;onAsk;0;0;status?",
        b"1!234;ns;;ev;0;0;b",
        b";default;;chat;0;1;",
        b";default;;chat;1;0;undefined",
    ] {
        let msg = decode(Bytes::from_static(frame), false, &DecodeOptions::default());
        out.push(msg.expect("a §11 vector decodes"));
    }
    out.push(
        decode(
            Bytes::from_static(b";default;;chat;0;0;\x00\x01;x"),
            true,
            &DecodeOptions::default(),
        )
        .expect("§11 row 24 decodes"),
    );

    let mut rng = Rng(0x6e65_6666_6f73_2d72); // "neffos-r"
    for i in 0..260 {
        let binary = i % 8 == 7;
        let body = if binary {
            Bytes::from(binary_body(&mut rng))
        } else {
            Bytes::from(text_body(&mut rng))
        };
        let mut msg = Message::new(field(&mut rng), field(&mut rng), body)
            .with_room(field(&mut rng))
            .with_wait(WaitToken::new(rng.pick(WAITS)))
            .with_binary(binary);
        // neffos.js writes an error only as text, and only with a non-empty text.
        msg.is_error = !binary && !msg.body.is_empty() && rng.one_in(5);
        msg.is_noop = rng.one_in(6);
        out.push(msg);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn case_json(msg: &Message) -> Value {
    json!({
        "wait": msg.wait.as_str(),
        "namespace": &*msg.namespace,
        "room": &*msg.room,
        "event": &*msg.event,
        "body_hex": hex(&msg.body),
        "is_error": msg.is_error,
        "is_noop": msg.is_noop,
        "binary": msg.binary,
        "frame_hex": hex(&msg.to_frame().bytes),
    })
}

fn probe_json(frame: &[u8], binary: bool, allow_native: bool) -> Value {
    json!({ "frame_hex": hex(frame), "binary": binary, "allow_native": allow_native })
}

/// Runs check.js on `input`, returning its JSON result.
fn run_check(package: &Path, input: &Value) -> Value {
    let dir = std::env::temp_dir().join(format!(
        "neffos-rs-neffos-js-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let cases_path = dir.join("cases.json");
    let results_path = dir.join("results.json");
    let cases = serde_json::to_vec(input).expect("cases serialise");
    std::fs::write(&cases_path, cases).expect("write the cases file");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/neffos_js/check.js");
    let out = Command::new("node")
        .arg(&script)
        .arg(package)
        .arg(&cases_path)
        .arg(&results_path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    assert!(
        out.status.success(),
        "node {} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results = std::fs::read(&results_path).expect("check.js writes its results file");
    let results: Value = serde_json::from_slice(&results).expect("check.js writes JSON");
    std::fs::remove_dir_all(&dir).ok();
    results
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from check.js"))
        .collect()
}

/// Asserts neffos.js's reading of one of our frames equals our message.
fn assert_js_read(i: usize, msg: &Message, js: &Value) {
    let ctx = || format!("case {i} ({:?}): neffos.js read {js}", msg.to_frame().bytes);
    assert_eq!(js["isInvalid"], false, "{}", ctx());
    assert_eq!(js["wait"], msg.wait.as_str(), "{}: wait", ctx());
    assert_eq!(js["namespace"], &*msg.namespace, "{}: namespace", ctx());
    assert_eq!(js["room"], &*msg.room, "{}: room", ctx());
    assert_eq!(js["event"], &*msg.event, "{}: event", ctx());
    assert_eq!(js["isError"], msg.is_error, "{}: isError", ctx());
    assert_eq!(js["isNoOp"], msg.is_noop, "{}: isNoOp", ctx());
    assert_eq!(js["isNative"], false, "{}: isNative", ctx());
    assert_eq!(js["setBinary"], msg.binary, "{}: SetBinary", ctx());
    match msg.error() {
        // neffos.js moves a non-empty error text from Body to Err.
        Some(text) => {
            assert_eq!(js["err"], text, "{}: Err", ctx());
            assert_eq!(js["bodyKind"], "none", "{}: Body", ctx());
        }
        None => {
            assert_eq!(js["err"], Value::Null, "{}: Err", ctx());
            let kind = if msg.binary { "arraybuffer" } else { "string" };
            assert_eq!(js["bodyKind"], kind, "{}: Body type", ctx());
            assert_eq!(js["bodyHex"], hex(&msg.body), "{}: Body", ctx());
        }
    }
}

#[test]
fn neffos_js_reads_what_we_write_and_writes_what_we_write() {
    let node = require_tool("node");
    let npm = require_tool("npm");
    let package = neffos_js_package();

    let messages = messages();
    let probes = [
        // 0: §11 row 20, lenient in neffos.js, invalid for us (and Go).
        probe_json(b"a;b;c;d;e;f", false, false),
        // 1: §11 row 21, an error flag with an empty text.
        probe_json(b"$1;ns;;ev;1;0;", false, false),
        // 2: an error text in a binary frame.
        probe_json(b";default;;chat;1;0;oops", true, false),
        // 3: §11 row 19, too few fields for both.
        probe_json(b"default;chat;", false, false),
        // 4: binary frames are split strictly by neffos.js too.
        probe_json(b"a;b;c;d;e;f", true, false),
        // 5: §11 row 22, only `1` is true.
        probe_json(b"$1;ns;;ev;true;0;x", false, false),
        // 6: mixed native mode, a 7-field frame whose event is `_OnNativeMessage`.
        probe_json(b";;;_OnNativeMessage;0;0;payload", false, true),
    ];
    let input = json!({
        "cases": messages.iter().map(case_json).collect::<Vec<_>>(),
        "probes": probes,
    });
    let results = run_check(&package, &input);
    assert_eq!(results["neffos_js_version"], NEFFOS_JS_VERSION);
    let cases = results["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), messages.len());

    let mut binary = 0;
    for (i, (msg, result)) in messages.iter().zip(cases).enumerate() {
        // (a) neffos.js reads our bytes as our message.
        assert_js_read(i, msg, &result["deserialized"]);
        // (b) neffos.js writes our bytes for the same message.
        let ours = msg.to_frame();
        let theirs = &result["serialized"];
        assert_eq!(
            theirs["binary"], msg.binary,
            "case {i}: neffos.js frame type"
        );
        assert_eq!(
            theirs["hex"].as_str().map(unhex).as_deref(),
            Some(&ours.bytes[..]),
            "case {i}: neffos.js wrote {:?}, we wrote {:?}",
            theirs["hex"]
                .as_str()
                .map(|h| String::from_utf8_lossy(&unhex(h)).into_owned()),
            ours.bytes
        );
        binary += usize::from(msg.binary);
    }
    assert!(messages.len() >= 200);
    assert!(binary >= 20);

    // Documented divergences, observed on the real library.
    let probes = results["probes"].as_array().expect("probes");
    // Row 20: neffos.js accepts 5 separators in text frames; we follow Go.
    assert_eq!(probes[0]["isInvalid"], false);
    assert_eq!(probes[0]["wait"], "a");
    assert_eq!(probes[0]["event"], "d");
    assert_eq!(probes[0]["isError"], false);
    assert_eq!(probes[0]["bodyHex"], "");
    assert_eq!(
        decode(
            Bytes::from_static(b"a;b;c;d;e;f"),
            false,
            &DecodeOptions::default()
        ),
        Err(DecodeError::TooFewFields { found: 6 })
    );
    // Row 21: neffos.js sets isError with no Err; we (like Go) report no error.
    assert_eq!(probes[1]["isError"], true);
    assert_eq!(probes[1]["err"], Value::Null);
    let row21 = decode(
        Bytes::from_static(b"$1;ns;;ev;1;0;"),
        false,
        &DecodeOptions::default(),
    )
    .unwrap();
    assert!(row21.is_error && row21.error().is_none());
    // An error text in a binary frame is lost by neffos.js.
    assert_eq!(probes[2]["err"], "[object ArrayBuffer]");
    // Row 19 and the strict binary split: invalid for both.
    assert_eq!(probes[3]["isInvalid"], true);
    assert_eq!(probes[4]["isInvalid"], true);
    // Row 22: `true` is not `1` for neffos.js either.
    assert_eq!(probes[5]["isError"], false);
    assert_eq!(probes[5]["bodyHex"], hex(b"x"));
    // Mixed native mode: neffos.js flags the same 7-field frame native, as we do.
    assert_eq!(probes[6]["isNative"], true);
    let native = decode(
        Bytes::from_static(b";;;_OnNativeMessage;0;0;payload"),
        false,
        &DecodeOptions::default().native(NativeMode::Allowed),
    )
    .unwrap();
    assert!(native.is_native);
    assert_eq!(&*native.event, events::ON_NATIVE_MESSAGE);
    assert_eq!(probes[6]["bodyHex"], hex(&native.body));

    // neffos.js cannot write an error with an empty text: it writes isError `0`.
    assert_eq!(
        unhex(results["empty_error_serialized"]["hex"].as_str().unwrap()),
        b"$1;ns;;ev;0;0;"
    );
    // `reply(text)` is a body with isError `0`, what our `Message::reply` writes.
    let ask = decode(
        Bytes::from_static(b"$5;/v1;;workday;0;0;06-24-2019"),
        false,
        &DecodeOptions::default(),
    )
    .unwrap();
    assert_eq!(
        unhex(results["reply_serialized"]["hex"].as_str().unwrap()),
        &ask.reply("weekday: Monday").to_frame().bytes[..]
    );

    println!(
        "neffos.js {} (node {node}, npm {npm}): compared {} messages ({} text, {binary} binary) \
         both ways, plus {} probes",
        results["neffos_js_version"],
        messages.len(),
        messages.len() - binary,
        probes.len()
    );
}
