//! Property tests: encode→decode is the identity for every message neffos can carry,
//! envelopes round-trip, and no input makes a decoder panic.

use bytes::{Bytes, BytesMut};
use neffos_protocol::{
    ByteString, DecodeOptions, ESCAPE_TOKEN, Envelope, EnvelopeKind, EnvelopeTarget, Message,
    NativeMode, WaitToken, decode, escape, events, unescape,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Wait tokens as peers write them: never a `;`, otherwise opaque.
fn wait_token() -> impl Strategy<Value = WaitToken> {
    prop_oneof![
        Just(String::new()),
        "[$#]?[0-9]{1,20}",
        "\\$[0-9]{1,9}\\.[0-9]{1,17}",
        "\\$?[0-9a-z]{1,13}-[0-9a-z]{1,4}(-[0-9a-f]{8})?",
        "[0-9a-z]![0-9a-z-]{1,20}",
        "[$.!#0-9A-Za-z-]{1,40}",
        "[^;]{1,16}",
    ]
    .prop_map(WaitToken::from)
}

/// A namespace, room or event: any text, including `;`, newlines, unicode, and pieces of the
/// escape token (so values next to the unsupported ones are covered), except the few values
/// neffos cannot round-trip (see `escape_token_in_a_field_does_not_round_trip`).
fn field() -> impl Strategy<Value = ByteString> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9_/.-]{0,6}",
        2 => Just(";".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\r\n".to_owned()),
        1 => "[\u{80}-\u{10ffff}]{1,3}",
        1 => Just("@%!".to_owned()),
        1 => Just("semicolon".to_owned()),
        1 => Just("@%!semicolon".to_owned()),
        1 => ".{0,8}",
    ];
    // At most 6 × 8 `;` escaped to 15 bytes each: always under the default 1 KiB field limit.
    prop::collection::vec(piece, 0..6).prop_map(|pieces| {
        let s = pieces.concat();
        // Rather than filtering (too many rejects), drop the `@` of a value that cannot
        // round-trip: every escape token starts with one.
        ByteString::from(if round_trips(&s) {
            s
        } else {
            s.replace('@', "")
        })
    })
}

/// Whether a header value survives escape→unescape. False exactly when the escaped form
/// holds an escape token that was not written for a `;` (e.g. the literal token).
fn round_trips(s: &str) -> bool {
    !s.contains(ESCAPE_TOKEN) && unescape(&escape(s)) == s
}

/// Any bytes, biased towards the interesting ones.
fn body() -> impl Strategy<Value = Bytes> {
    let piece = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..24),
        1 => Just(b";".to_vec()),
        1 => Just(b";;;;;;".to_vec()),
        1 => Just(ESCAPE_TOKEN.as_bytes().to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(vec![0xff, 0xfe]),
        1 => Just("é€😀".as_bytes().to_vec()),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| Bytes::from(pieces.concat()))
}

prop_compose! {
    fn message()(
        wait in wait_token(),
        namespace in field(),
        room in field(),
        event in field(),
        body in body(),
        is_error in any::<bool>(),
        is_noop in any::<bool>(),
        binary in any::<bool>(),
    ) -> Message {
        let mut msg = Message::new(namespace, event, body)
            .with_room(room)
            .with_wait(wait)
            .with_binary(binary);
        msg.is_error = is_error;
        msg.is_noop = is_noop;
        msg
    }
}

fn encode(msg: &Message) -> Bytes {
    let frame = msg.to_frame();
    assert_eq!(frame.binary, msg.binary);
    assert_eq!(frame.bytes.len(), msg.encoded_len());
    // `encode` appends to what is already in the buffer.
    let mut out = BytesMut::from(&b"xyz"[..]);
    msg.encode(&mut out);
    assert_eq!(&out[3..], &frame.bytes[..]);
    frame.bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn encode_decode_is_identity(msg in message()) {
        let frame = encode(&msg);
        let decoded = decode(frame.clone(), msg.binary, &DecodeOptions::default()).unwrap();
        prop_assert_eq!(&decoded, &msg);
        // Re-encoding the decoded message gives the same bytes.
        prop_assert_eq!(decoded.to_frame().bytes, frame);
    }

    /// In mixed mode an ordinary message decodes the same as with native messages off, and
    /// one whose event is `_OnNativeMessage` comes back flagged native.
    #[test]
    fn encode_decode_is_identity_in_native_allowed_mode(msg in message(), native_event in any::<bool>()) {
        let opts = DecodeOptions::default().native(NativeMode::Allowed);
        let mut msg = msg;
        if native_event {
            msg.event = ByteString::from_static(events::ON_NATIVE_MESSAGE);
            msg.is_native = true;
            // Framed only with a wait; without one it is written raw (next test).
            if msg.wait.is_empty() {
                msg.wait = WaitToken::from("$1");
            }
        }
        let decoded = decode(encode(&msg), msg.binary, &opts).unwrap();
        prop_assert_eq!(decoded, msg);
    }

    /// A native message is written as its raw body, which native-only mode reads back as is.
    #[test]
    fn native_only_mode_round_trips_raw_bodies(
        body in body().prop_filter("an empty frame is not a message", |b| !b.is_empty()),
        binary in any::<bool>(),
    ) {
        let msg = Message::native(body.clone(), binary);
        let frame = encode(&msg);
        prop_assert_eq!(&frame, &body);
        let opts = DecodeOptions::default().native(NativeMode::Only);
        prop_assert_eq!(&decode(frame.clone(), binary, &opts).unwrap(), &msg);
        // In mixed mode too, as long as the body does not itself look like a neffos frame.
        if memchr_count(&body) < 6 {
            let opts = DecodeOptions::default().native(NativeMode::Allowed);
            prop_assert_eq!(decode(frame, binary, &opts).unwrap(), msg);
        }
    }

    /// In native-only mode every framed message comes back whole, as the body.
    #[test]
    fn native_only_mode_keeps_framed_messages_whole(msg in message()) {
        let frame = encode(&msg);
        let opts = DecodeOptions::default().native(NativeMode::Only);
        let decoded = decode(frame.clone(), msg.binary, &opts).unwrap();
        prop_assert_eq!(decoded, Message::native(frame, msg.binary));
    }

    #[test]
    fn envelope_round_trips(envelope in envelope()) {
        let bytes = envelope.encode().unwrap();
        prop_assert_eq!(Envelope::decode(&bytes).unwrap(), envelope);
    }
}

/// Building blocks of frame-like inputs.
const FRAME_PIECES: &[&[u8]] = &[
    b";",
    b"1",
    b"0",
    b"$",
    ESCAPE_TOKEN.as_bytes(),
    b"@%!",
    b"\xff",
    b"_OnNativeMessage",
    b"neffos(0x",
    b"a!",
];

fn memchr_count(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b';').count()
}

fn opt_string() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any::<String>())
}

prop_compose! {
    fn envelope()(
        origin in any::<u128>(),
        seq in any::<u64>(),
        kind in prop_oneof![
            Just(EnvelopeKind::Broadcast),
            Just(EnvelopeKind::Targeted),
            Just(EnvelopeKind::Ask),
            Just(EnvelopeKind::Reply),
        ],
        namespace in any::<String>(),
        room in opt_string(),
        conn in opt_string(),
        except in opt_string(),
        event in any::<String>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
        is_error in any::<bool>(),
        binary in any::<bool>(),
        token in prop::option::of(any::<u64>()),
    ) -> Envelope {
        let mut target = EnvelopeTarget::namespace(namespace);
        if let Some(room) = room { target = target.with_room(room); }
        if let Some(conn) = conn { target = target.with_conn(conn); }
        if let Some(except) = except { target = target.with_except(except); }
        let mut msg = Message::new("", event, body).with_binary(binary);
        msg.is_error = is_error;
        let envelope = Envelope::new(Uuid::from_u128(origin), seq, kind, target, &msg);
        match token {
            Some(token) => envelope.with_token(token),
            None => envelope,
        }
    }
}

proptest! {
    // Both decoders are fast: many cases are cheap.
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), binary in any::<bool>()) {
        let frame = Bytes::from(bytes);
        for opts in [
            DecodeOptions::default(),
            DecodeOptions::default().native(NativeMode::Allowed),
            DecodeOptions::default().native(NativeMode::Only),
            DecodeOptions::default().max_field_len(4).max_frame_size(64),
        ] {
            if let Ok(msg) = decode(frame.clone(), binary, &opts) {
                // Whatever decodes re-encodes to a frame of the announced length.
                prop_assert_eq!(msg.to_frame().bytes.len(), msg.encoded_len());
                let _ = msg.error();
            }
        }
        let _ = neffos_protocol::handshake::classify_client_frame(&frame);
        let _ = neffos_protocol::handshake::decode_server_ack(frame);
    }

    /// Frames made of neffos-looking pieces reach deeper than uniform bytes.
    #[test]
    fn decode_never_panics_on_frame_like_input(
        pieces in prop::collection::vec(
            prop::sample::select(FRAME_PIECES),
            0..40,
        ),
        binary in any::<bool>(),
    ) {
        let frame = Bytes::from(pieces.concat());
        for mode in [NativeMode::Off, NativeMode::Allowed, NativeMode::Only] {
            let opts = DecodeOptions::default().native(mode);
            if let Ok(msg) = decode(frame.clone(), binary, &opts) {
                prop_assert_eq!(msg.to_frame().bytes.len(), msg.encoded_len());
            }
        }
    }

    #[test]
    fn envelope_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::decode(&bytes);
    }
}

proptest! {
    // Generating whole envelopes costs more than decoding them: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Envelopes with one byte changed: mostly valid structure, broken in one place.
    #[test]
    fn envelope_decode_never_panics_on_mutated_envelopes(
        envelope in envelope(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = envelope.encode().unwrap();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = Envelope::decode(&bytes);
        let _ = Envelope::decode(&bytes[..cut.index(bytes.len())]);
    }
}

#[test]
fn escape_token_in_a_field_does_not_round_trip() {
    // neffos (Go and JS) cannot carry the literal escape token in a namespace, room or
    // event: it is read back as `;`. We follow the wire, so neither can we.
    let msg = Message::new("a@%!semicolon@%!b", "ev", "body").with_room(ESCAPE_TOKEN);
    let frame = msg.to_frame().bytes;
    assert_eq!(
        &frame[..],
        b";a@%!semicolon@%!b;@%!semicolon@%!;ev;0;0;body"
    );
    let decoded = decode(frame, false, &DecodeOptions::default()).unwrap();
    assert_eq!(&*decoded.namespace, "a;b");
    assert_eq!(&*decoded.room, ";");
    assert_ne!(decoded, msg);

    // Nor a value whose escaped form contains the token across an escaped `;`:
    // `@%!semicolon` + `;` escapes to `@%!semicolon@%!semicolon@%!`, whose first 15 bytes
    // are read back as one `;`.
    let tricky = "@%!semicolon;";
    assert!(!tricky.contains(ESCAPE_TOKEN));
    let msg = Message::new(tricky, "ev", "");
    let decoded = decode(msg.to_frame().bytes, false, &DecodeOptions::default()).unwrap();
    assert_eq!(&*decoded.namespace, ";semicolon@%!");
    assert!(!round_trips(tricky));

    // The body is never escaped, so the token travels in it unchanged.
    let msg = Message::new("ns", "ev", ESCAPE_TOKEN);
    let decoded = decode(msg.to_frame().bytes, false, &DecodeOptions::default()).unwrap();
    assert_eq!(decoded, msg);
}

#[test]
fn decoded_fields_share_the_input_buffer() {
    let frame = Bytes::from(b"$42;default;room1;chat;0;0;some body;with;separators".to_vec());
    let range = frame.as_ptr_range();
    let inside = |p: *const u8| range.contains(&p);
    let msg = decode(frame, false, &DecodeOptions::default()).unwrap();
    let body = msg.body.as_ptr_range();
    assert!(
        inside(body.start) && body.end == range.end,
        "body is a slice"
    );
    assert_eq!(&msg.body[..], b"some body;with;separators");
    assert!(inside(msg.wait.as_str().as_ptr()));
    assert!(inside(msg.namespace.as_ptr()));
    assert!(inside(msg.room.as_ptr()));
    assert!(inside(msg.event.as_ptr()));

    // Binary bodies too, and native messages are the frame itself.
    let frame = Bytes::from(b";default;;chat;0;0;\x00\xff;x".to_vec());
    let msg = decode(frame.clone(), true, &DecodeOptions::default()).unwrap();
    assert!(frame.as_ptr_range().contains(&msg.body.as_ptr()));
    let native = decode(
        frame.clone(),
        true,
        &DecodeOptions::default().native(NativeMode::Only),
    )
    .unwrap();
    assert_eq!(native.body.as_ptr(), frame.as_ptr());
    assert_eq!(native.body.len(), frame.len());

    // Only an escaped field is copied (it has to be rewritten); the others still share.
    let frame = Bytes::from(b";a@%!semicolon@%!b;room;chat;0;0;body".to_vec());
    let range = frame.as_ptr_range();
    let msg = decode(frame, false, &DecodeOptions::default()).unwrap();
    assert!(!range.contains(&msg.namespace.as_ptr()));
    assert!(range.contains(&msg.room.as_ptr()));
    assert!(range.contains(&msg.body.as_ptr()));
}
