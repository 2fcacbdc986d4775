//! The compatibility test vectors of PROTOCOL.md §11 (rows 1–27 and 30), checked against
//! the decoder field by field and, where neffos Go's serializer produces the same bytes,
//! against the encoder byte for byte. Rows 28–29 are HTTP-level and belong to the server.

use bytes::{Bytes, BytesMut};
use neffos_protocol::handshake::{self, ClientHello, ServerAck};
use neffos_protocol::{
    ByteString, DecodeError, DecodeOptions, Message, NativeMode, WaitKind, WaitToken, decode,
    encode_empty_reply, events, known_errors,
};

/// What encoding the decoded message gives back.
#[derive(Debug, Clone, Copy)]
enum Reencode {
    /// `Message::encode` writes the exact input bytes (what Go's `Serialize` writes too).
    Exact,
    /// The frame is the empty reply `<wait>;;;;;;`: only `encode_empty_reply` writes it.
    /// Re-serialising the parsed message gives `<wait>;;;;0;0;`, in Go as in Rust
    /// (PROTOCOL.md §12.4), because flags are always written as one digit.
    EmptyReply,
    /// The input is accepted but normalised on the way out (e.g. a flag written `true` is read
    /// as false and re-encoded as `0`, as Go does); the value is what we, and Go, write.
    Normalised(&'static [u8]),
}

/// One decodable row of §11.
#[derive(Debug)]
struct Vector {
    row: &'static str,
    frame: &'static [u8],
    binary: bool,
    mode: NativeMode,
    wait: &'static str,
    kind: WaitKind,
    namespace: &'static str,
    room: &'static str,
    event: &'static str,
    body: &'static [u8],
    is_error: bool,
    is_noop: bool,
    is_native: bool,
    error: Option<&'static str>,
    reencode: Reencode,
}

/// The common shape: a text frame, native messages off, flags clear, exact re-encoding.
const BASE: Vector = Vector {
    row: "",
    frame: b"",
    binary: false,
    mode: NativeMode::Off,
    wait: "",
    kind: WaitKind::None,
    namespace: "",
    room: "",
    event: "",
    body: b"",
    is_error: false,
    is_noop: false,
    is_native: false,
    error: None,
    reencode: Reencode::Exact,
};

const GO_CLIENT_WAIT: &str = "$1795487474372343598";
const GO_SERVER_WAIT: &str = "1795487474372343237";

fn vectors() -> Vec<Vector> {
    vec![
        Vector {
            row: "4",
            frame: b"$1795487474372343598;default;;_OnNamespaceConnect;0;0;",
            wait: GO_CLIENT_WAIT,
            kind: WaitKind::ClientAsk,
            namespace: "default",
            event: events::ON_NAMESPACE_CONNECT,
            ..BASE
        },
        Vector {
            row: "5",
            frame: b"$1795487474372343598;;;;;;",
            wait: GO_CLIENT_WAIT,
            kind: WaitKind::ClientAsk,
            reencode: Reencode::EmptyReply,
            ..BASE
        },
        Vector {
            row: "6",
            frame: b"$1795487474372343598;default;;_OnNamespaceConnect;1;0;bad namespace",
            wait: GO_CLIENT_WAIT,
            kind: WaitKind::ClientAsk,
            namespace: "default",
            event: events::ON_NAMESPACE_CONNECT,
            body: b"bad namespace",
            is_error: true,
            error: Some(known_errors::BAD_NAMESPACE),
            ..BASE
        },
        Vector {
            row: "7",
            frame: b";default;;chat;0;0;hi;there",
            namespace: "default",
            event: "chat",
            body: b"hi;there",
            ..BASE
        },
        Vector {
            row: "8",
            frame: b";default;room1;chat;0;0;x",
            namespace: "default",
            room: "room1",
            event: "chat",
            body: b"x",
            ..BASE
        },
        Vector {
            row: "9 (join)",
            frame: b"$1;default;room1;_OnRoomJoin;0;0;",
            wait: "$1",
            kind: WaitKind::ClientAsk,
            namespace: "default",
            room: "room1",
            event: events::ON_ROOM_JOIN,
            ..BASE
        },
        Vector {
            row: "9 (reply)",
            frame: b"$1;;;;;;",
            wait: "$1",
            kind: WaitKind::ClientAsk,
            reencode: Reencode::EmptyReply,
            ..BASE
        },
        Vector {
            row: "10",
            frame: b"$2;default;room1;_OnRoomLeave;0;0;",
            wait: "$2",
            kind: WaitKind::ClientAsk,
            namespace: "default",
            room: "room1",
            event: events::ON_ROOM_LEAVE,
            ..BASE
        },
        Vector {
            row: "11 (forced disconnect)",
            frame: b"1795487474372343237;default;;_OnNamespaceDisconnect;0;0;",
            wait: GO_SERVER_WAIT,
            kind: WaitKind::ServerAsk,
            namespace: "default",
            event: events::ON_NAMESPACE_DISCONNECT,
            ..BASE
        },
        Vector {
            row: "11 (reply)",
            frame: b"1795487474372343237;;;;;;",
            wait: GO_SERVER_WAIT,
            kind: WaitKind::ServerAsk,
            reencode: Reencode::EmptyReply,
            ..BASE
        },
        Vector {
            row: "12 (ask)",
            frame: b"$5;/v1;;workday;0;0;06-24-2019",
            wait: "$5",
            kind: WaitKind::ClientAsk,
            namespace: "/v1",
            event: "workday",
            body: b"06-24-2019",
            ..BASE
        },
        Vector {
            row: "12 (reply)",
            frame: b"$5;/v1;;workday;0;0;weekday: Monday",
            wait: "$5",
            kind: WaitKind::ClientAsk,
            namespace: "/v1",
            event: "workday",
            body: b"weekday: Monday",
            ..BASE
        },
        Vector {
            row: "13",
            frame: b"$5;/v1;;workday;1;0;invalid date format",
            wait: "$5",
            kind: WaitKind::ClientAsk,
            namespace: "/v1",
            event: "workday",
            body: b"invalid date format",
            is_error: true,
            error: Some("invalid date format"),
            ..BASE
        },
        Vector {
            row: "14",
            frame: b";a@%!semicolon@%!b;c@%!semicolon@%!d;e@%!semicolon@%!f;0;0;g;h",
            namespace: "a;b",
            room: "c;d",
            event: "e;f",
            body: b"g;h",
            ..BASE
        },
        Vector {
            row: "15 (ask)",
            frame: b"1795487474372343237;default;;onAsk;0;0;status?",
            wait: GO_SERVER_WAIT,
            kind: WaitKind::ServerAsk,
            namespace: "default",
            event: "onAsk",
            body: b"status?",
            ..BASE
        },
        Vector {
            row: "15 (reply)",
            frame: b"1795487474372343237;default;;onAsk;0;0;all good",
            wait: GO_SERVER_WAIT,
            kind: WaitKind::ServerAsk,
            namespace: "default",
            event: "onAsk",
            body: b"all good",
            ..BASE
        },
        // Go ≤ v0.0.24's broken "via broker" marker (first digit shifted by 33): an ordinary
        // server token that is never recognised as marked.
        Vector {
            row: "16",
            frame: b"R795487474372343237;default;;onAsk;0;0;status?",
            wait: "R795487474372343237",
            kind: WaitKind::ServerAsk,
            namespace: "default",
            event: "onAsk",
            body: b"status?",
            ..BASE
        },
        // v0.0.25's form of row 16 (§12.4): `!` after the first character.
        Vector {
            row: "16 (v0.0.25)",
            frame: b"d!n4kkjd7rjrx-1-5150c502;default;;onAsk;0;0;status?",
            wait: "d!n4kkjd7rjrx-1-5150c502",
            kind: WaitKind::ExchangeMarked,
            namespace: "default",
            event: "onAsk",
            body: b"status?",
            ..BASE
        },
        // Go moves the marker to `FromExplicit` and empties the wait; we keep the raw token
        // and classify it, so the caller decides (and a server refuses it from a client).
        Vector {
            row: "17",
            frame: b"neffos(0x3f2c9a10-0000-4000-8000-000000000000(user420xc00018a2d0));default;room1;notify;0;0;user42 joined room1",
            wait: "neffos(0x3f2c9a10-0000-4000-8000-000000000000(user420xc00018a2d0))",
            kind: WaitKind::Exclusion,
            namespace: "default",
            room: "room1",
            event: "notify",
            body: b"user42 joined room1",
            ..BASE
        },
        // Go strips the `!` and sets `FromStackExchange`; we keep the raw token (so an echo is
        // byte-exact, like a v0.0.25 client) and report the mark through its kind.
        Vector {
            row: "18",
            frame: b"1!234;ns;;ev;0;0;b",
            wait: "1!234",
            kind: WaitKind::ExchangeMarked,
            namespace: "ns",
            event: "ev",
            body: b"b",
            ..BASE
        },
        // Go: no error (empty error text); the flag itself survives and re-encodes as `1`.
        Vector {
            row: "21",
            frame: b"$1;ns;;ev;1;0;",
            wait: "$1",
            kind: WaitKind::ClientAsk,
            namespace: "ns",
            event: "ev",
            is_error: true,
            error: None,
            ..BASE
        },
        // Only the exact byte `1` is true: `true` reads as false and is written back as `0`.
        Vector {
            row: "22",
            frame: b"$1;ns;;ev;true;0;x",
            wait: "$1",
            kind: WaitKind::ClientAsk,
            namespace: "ns",
            event: "ev",
            body: b"x",
            reencode: Reencode::Normalised(b"$1;ns;;ev;0;0;x"),
            ..BASE
        },
        Vector {
            row: "23",
            frame: b";default;;chat;0;1;",
            namespace: "default",
            event: "chat",
            is_noop: true,
            ..BASE
        },
        Vector {
            row: "24",
            frame: b";default;;chat;0;0;\x00\x01;x",
            binary: true,
            namespace: "default",
            event: "chat",
            body: b"\x00\x01\x3bx",
            ..BASE
        },
        Vector {
            row: "25",
            frame: b";default;;chat;1;0;undefined",
            namespace: "default",
            event: "chat",
            body: b"undefined",
            is_error: true,
            error: Some("undefined"),
            ..BASE
        },
        // A native message without a wait is written as its raw body: exact.
        Vector {
            row: "26",
            frame: b"raw;data",
            mode: NativeMode::Only,
            event: events::ON_NATIVE_MESSAGE,
            body: b"raw;data",
            is_native: true,
            ..BASE
        },
        Vector {
            row: "26 (binary)",
            frame: b";default;;chat;0;0;x",
            binary: true,
            mode: NativeMode::Only,
            event: events::ON_NATIVE_MESSAGE,
            body: b";default;;chat;0;0;x",
            is_native: true,
            ..BASE
        },
        Vector {
            row: "27",
            frame: b"hello world",
            mode: NativeMode::Allowed,
            event: events::ON_NATIVE_MESSAGE,
            body: b"hello world",
            is_native: true,
            ..BASE
        },
        // §1.6: in mixed mode a well-formed frame whose event is `_OnNativeMessage` is native
        // too. It has no wait, so it is written back as its raw body (Go does the same).
        Vector {
            row: "§1.6 (7 fields, native event)",
            frame: b";;;_OnNativeMessage;0;0;payload",
            mode: NativeMode::Allowed,
            event: events::ON_NATIVE_MESSAGE,
            body: b"payload",
            is_native: true,
            reencode: Reencode::Normalised(b"payload"),
            ..BASE
        },
        // The same frame is an ordinary event when native messages are off.
        Vector {
            row: "§1.6 (native off)",
            frame: b";;;_OnNativeMessage;0;0;payload",
            event: events::ON_NATIVE_MESSAGE,
            body: b"payload",
            ..BASE
        },
        // In mixed mode a framed message keeps its framing when it has a wait.
        Vector {
            row: "§2.9 (native with wait)",
            frame: b"$9;;;_OnNativeMessage;0;0;payload",
            mode: NativeMode::Allowed,
            wait: "$9",
            kind: WaitKind::ClientAsk,
            event: events::ON_NATIVE_MESSAGE,
            body: b"payload",
            is_native: true,
            ..BASE
        },
    ]
}

fn options(mode: NativeMode) -> DecodeOptions {
    DecodeOptions::default().native(mode)
}

fn check(v: &Vector) {
    let row = v.row;
    let frame = Bytes::from_static(v.frame);
    let msg =
        decode(frame, v.binary, &options(v.mode)).unwrap_or_else(|e| panic!("row {row}: {e}"));

    assert_eq!(msg.wait.as_str(), v.wait, "row {row}: wait");
    assert_eq!(msg.wait.kind(), v.kind, "row {row}: wait kind");
    assert_eq!(&*msg.namespace, v.namespace, "row {row}: namespace");
    assert_eq!(&*msg.room, v.room, "row {row}: room");
    assert_eq!(&*msg.event, v.event, "row {row}: event");
    assert_eq!(&msg.body[..], v.body, "row {row}: body");
    assert_eq!(msg.is_error, v.is_error, "row {row}: is_error");
    assert_eq!(msg.is_noop, v.is_noop, "row {row}: is_noop");
    assert_eq!(msg.is_native, v.is_native, "row {row}: is_native");
    assert_eq!(msg.binary, v.binary, "row {row}: binary");
    assert_eq!(msg.error(), v.error, "row {row}: error()");

    // Encoding: `encode` appends, `to_frame` keeps the frame type, `encoded_len` is exact.
    let encoded = msg.to_frame();
    assert_eq!(encoded.binary, v.binary, "row {row}: frame type");
    assert_eq!(
        encoded.bytes.len(),
        msg.encoded_len(),
        "row {row}: encoded_len"
    );
    let mut appended = BytesMut::from(&b"prefix"[..]);
    msg.encode(&mut appended);
    assert_eq!(
        &appended[6..],
        &encoded.bytes[..],
        "row {row}: encode appends"
    );

    match v.reencode {
        Reencode::Exact => assert_eq!(
            &encoded.bytes[..],
            v.frame,
            "row {row}: re-encoding is byte-exact"
        ),
        Reencode::EmptyReply => {
            let reply = encode_empty_reply(&msg.wait);
            assert!(!reply.binary, "row {row}: empty replies are text");
            assert_eq!(&reply.bytes[..], v.frame, "row {row}: empty reply");
            let mut go_serialize = v.wait.as_bytes().to_vec();
            go_serialize.extend_from_slice(b";;;;0;0;");
            assert_eq!(
                &encoded.bytes[..],
                &go_serialize[..],
                "row {row}: Serialize"
            );
        }
        Reencode::Normalised(expected) => {
            assert_eq!(&encoded.bytes[..], expected, "row {row}: normalised");
        }
    }

    // Whatever the input, what we write decodes to the same message (in the same mode).
    let again = decode(encoded.bytes, v.binary, &options(v.mode))
        .unwrap_or_else(|e| panic!("row {row}: re-decode: {e}"));
    if !matches!(v.reencode, Reencode::Normalised(_)) {
        assert_eq!(again, msg, "row {row}: decode(encode(m)) == m");
    }
}

#[test]
fn rows_1_to_3_handshake() {
    // Row 1: the client's ACK request; only the first byte counts.
    assert_eq!(&handshake::ack_request()[..], b"M");
    assert_eq!(
        handshake::classify_client_frame(b"M"),
        Ok(ClientHello::AckRequest)
    );
    assert_eq!(
        handshake::classify_client_frame(b"Mxyz"),
        Ok(ClientHello::AckRequest)
    );

    // Row 2: accepted, the connection ID follows `A`.
    let id = "6f1e4a2c-8b0d-4f6e-9a51-2d3c4b5a6e7f";
    let accept = handshake::encode_accept(id).unwrap();
    assert_eq!(&accept[..], b"A6f1e4a2c-8b0d-4f6e-9a51-2d3c4b5a6e7f");
    assert_eq!(
        handshake::decode_server_ack(accept),
        Ok(ServerAck::Accepted(ByteString::from(id)))
    );
    // An empty ID is allowed.
    assert_eq!(
        handshake::decode_server_ack(Bytes::from_static(b"A")),
        Ok(ServerAck::Accepted(ByteString::new()))
    );

    // Row 3: refused, the error text follows `H`.
    let reject = handshake::encode_reject("not allowed: missing token");
    assert_eq!(&reject[..], b"Hnot allowed: missing token");
    assert_eq!(
        handshake::decode_server_ack(reject),
        Ok(ServerAck::Rejected(ByteString::from(
            "not allowed: missing token"
        )))
    );
}

#[test]
fn rows_4_to_27_decode_and_reencode() {
    let vectors = vectors();
    for v in &vectors {
        check(v);
    }
    assert_eq!(vectors.len(), 31);
}

#[test]
fn row_12_13_15_replies_built_from_the_request() {
    let opts = DecodeOptions::default();
    let ask = decode(
        Bytes::from_static(b"$5;/v1;;workday;0;0;06-24-2019"),
        false,
        &opts,
    )
    .unwrap();
    assert_eq!(
        &ask.reply("weekday: Monday").to_frame().bytes[..],
        b"$5;/v1;;workday;0;0;weekday: Monday"
    );
    assert_eq!(
        &ask.error_reply("invalid date format").to_frame().bytes[..],
        b"$5;/v1;;workday;1;0;invalid date format"
    );

    let server_ask = decode(
        Bytes::from_static(b"1795487474372343237;default;;onAsk;0;0;status?"),
        false,
        &opts,
    )
    .unwrap();
    assert_eq!(
        &server_ask.reply("all good").to_frame().bytes[..],
        b"1795487474372343237;default;;onAsk;0;0;all good"
    );

    // Rows 4/6: the connect request and its refusal.
    let connect = Message::new("default", events::ON_NAMESPACE_CONNECT, Bytes::new())
        .with_wait(WaitToken::new(GO_CLIENT_WAIT));
    assert_eq!(
        &connect.to_frame().bytes[..],
        b"$1795487474372343598;default;;_OnNamespaceConnect;0;0;"
    );
    assert_eq!(
        &connect
            .error_reply(known_errors::BAD_NAMESPACE)
            .to_frame()
            .bytes[..],
        b"$1795487474372343598;default;;_OnNamespaceConnect;1;0;bad namespace"
    );
    // Row 14 from the unescaped values.
    let escaped = Message::new("a;b", "e;f", "g;h").with_room("c;d");
    assert_eq!(
        &escaped.to_frame().bytes[..],
        b";a@%!semicolon@%!b;c@%!semicolon@%!d;e@%!semicolon@%!f;0;0;g;h"
    );
    // Row 24 from the values.
    let binary = Message::new("default", "chat", &b"\x00\x01;x"[..]).with_binary(true);
    let frame = binary.to_frame();
    assert!(frame.binary);
    assert_eq!(&frame.bytes[..], b";default;;chat;0;0;\x00\x01;x");
}

#[test]
fn row_19_and_20_are_invalid_in_go() {
    let opts = DecodeOptions::default();
    assert_eq!(
        decode(Bytes::from_static(b"default;chat;"), false, &opts),
        Err(DecodeError::TooFewFields { found: 3 })
    );
    // Row 20: valid for neffos.js's lenient text split, invalid for Go (we follow Go).
    assert_eq!(
        decode(Bytes::from_static(b"a;b;c;d;e;f"), false, &opts),
        Err(DecodeError::TooFewFields { found: 6 })
    );
    assert_eq!(
        decode(Bytes::from_static(b"a;b;c;d;e;f"), true, &opts),
        Err(DecodeError::TooFewFields { found: 6 })
    );
    // In mixed native mode both are native messages instead of errors.
    let mixed = options(NativeMode::Allowed);
    for frame in [&b"default;chat;"[..], &b"a;b;c;d;e;f"[..]] {
        let msg = decode(Bytes::from_static(frame), false, &mixed).unwrap();
        assert!(msg.is_native);
        assert_eq!(&*msg.event, events::ON_NATIVE_MESSAGE);
        assert_eq!(&msg.body[..], frame);
    }
}

#[test]
fn row_30_token_formats_are_opaque_and_echoed() {
    let tokens = [
        // §11 row 30.
        ("$1795487474372343598", WaitKind::ClientAsk), // Go client
        ("$183048593284712", WaitKind::ClientAsk),     // neffos.js under Node
        ("$263212.51904544816", WaitKind::ClientAsk),  // neffos.js in a browser
        ("1795487474372343237", WaitKind::ServerAsk),  // Go server
        // §12.1 item 4: v0.0.25 shapes.
        ("$dn4kkm3aayqq-1", WaitKind::ClientAsk),
        ("dn4kkjbk0qz6-1", WaitKind::ServerAsk),
        ("dn4kkjd7rjrx-2-5ea82d08", WaitKind::ServerAsk),
        ("1!abc-1", WaitKind::ExchangeMarked),
        ("#12", WaitKind::Confirmation),
    ];
    for (token, kind) in tokens {
        let frame = Bytes::from(format!("{token};default;;chat;0;0;x"));
        let msg = decode(frame.clone(), false, &DecodeOptions::default()).unwrap();
        assert_eq!(msg.wait.as_str(), token);
        assert_eq!(msg.wait.kind(), kind, "{token}");
        assert_eq!(
            msg.wait.is_client_wait(),
            matches!(kind, WaitKind::ClientAsk | WaitKind::Confirmation)
        );
        // Replies echo the token verbatim.
        assert_eq!(msg.to_frame().bytes, frame);
        assert_eq!(
            msg.reply("y").to_frame().bytes,
            Bytes::from(format!("{token};default;;chat;0;0;y"))
        );
        assert_eq!(
            encode_empty_reply(&msg.wait).bytes,
            Bytes::from(format!("{token};;;;;;"))
        );
    }
}
