//! Every class of malformed input maps to one exact, typed error (PROTOCOL.md §2.8, §1.2,
//! and the envelope format).

use bytes::Bytes;
use neffos_protocol::handshake::{self, ClientHello};
use neffos_protocol::{
    DecodeError, DecodeOptions, Envelope, EnvelopeError, EnvelopeKind, EnvelopeTarget, Field,
    HandshakeError, Message, NativeMode, decode,
};
use uuid::Uuid;

const HEADER: [Field; 6] = [
    Field::Wait,
    Field::Namespace,
    Field::Room,
    Field::Event,
    Field::IsError,
    Field::IsNoOp,
];

fn all_modes() -> [DecodeOptions; 3] {
    [
        DecodeOptions::default(),
        DecodeOptions::default().native(NativeMode::Allowed),
        DecodeOptions::default().native(NativeMode::Only),
    ]
}

/// A 7-field frame whose header field `index` is `value` (the others are valid).
fn frame_with_field(index: usize, value: &[u8]) -> Bytes {
    let mut fields: [&[u8]; 6] = [b"$1", b"ns", b"room", b"ev", b"0", b"0"];
    fields[index] = value;
    let mut out = Vec::new();
    for field in fields {
        out.extend_from_slice(field);
        out.push(b';');
    }
    out.extend_from_slice(b"body");
    Bytes::from(out)
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

#[test]
fn empty_frame() {
    for opts in all_modes() {
        for binary in [false, true] {
            assert_eq!(
                decode(Bytes::new(), binary, &opts),
                Err(DecodeError::Empty),
                "{opts:?}"
            );
        }
    }
}

#[test]
fn frame_over_max_frame_size() {
    let frame = Bytes::from_static(b";default;;chat;0;0;0123456789");
    let len = frame.len();
    for opts in all_modes() {
        let limited = opts.max_frame_size(len - 1);
        assert_eq!(
            decode(frame.clone(), false, &limited),
            Err(DecodeError::FrameTooLarge { len, max: len - 1 })
        );
        // Exactly at the limit is accepted.
        assert!(decode(frame.clone(), false, &opts.max_frame_size(len)).is_ok());
    }
    // The default limit is 1 MiB.
    let big = Bytes::from(vec![b'x'; neffos_protocol::DEFAULT_MAX_FRAME_SIZE + 1]);
    assert_eq!(
        decode(big, true, &DecodeOptions::default()),
        Err(DecodeError::FrameTooLarge {
            len: neffos_protocol::DEFAULT_MAX_FRAME_SIZE + 1,
            max: neffos_protocol::DEFAULT_MAX_FRAME_SIZE,
        })
    );
}

#[test]
fn fewer_than_seven_fields() {
    let frames: [&[u8]; 6] = [
        b"x",
        b"$1;default",
        b"$1;default;room",
        b"$1;default;room;chat",
        b"$1;default;room;chat;0",
        b"$1;default;room;chat;0;0",
    ];
    for (separators, frame) in frames.into_iter().enumerate() {
        for binary in [false, true] {
            assert_eq!(
                decode(Bytes::from_static(frame), binary, &DecodeOptions::default()),
                Err(DecodeError::TooFewFields {
                    found: separators + 1
                }),
                "{}",
                String::from_utf8_lossy(frame)
            );
        }
    }
    // Only separators, still too few.
    assert_eq!(
        decode(
            Bytes::from_static(b";;;;;"),
            false,
            &DecodeOptions::default()
        ),
        Err(DecodeError::TooFewFields { found: 6 })
    );
    // Six separators and nothing else is a valid (all-empty) message.
    assert!(
        decode(
            Bytes::from_static(b";;;;;;"),
            false,
            &DecodeOptions::default()
        )
        .is_ok()
    );
}

#[test]
fn header_field_over_max_field_len() {
    let max = 8;
    let opts = DecodeOptions::default().max_field_len(max);
    for (index, field) in HEADER.into_iter().enumerate() {
        let long = vec![b'1'; max + 1];
        for binary in [false, true] {
            assert_eq!(
                decode(frame_with_field(index, &long), binary, &opts),
                Err(DecodeError::FieldTooLong {
                    field,
                    len: max + 1,
                    max
                }),
                "{field}"
            );
        }
        // At the limit is fine.
        assert!(decode(frame_with_field(index, &long[..max]), false, &opts).is_ok());
    }
    // The limit applies to the escaped (wire) length, and not to the body.
    let escaped = Bytes::from_static(b";a@%!semicolon@%!b;;ev;0;0;a long body is fine");
    assert!(matches!(
        decode(escaped, false, &DecodeOptions::default().max_field_len(16)),
        Err(DecodeError::FieldTooLong {
            field: Field::Namespace,
            len: 17,
            max: 16
        })
    ));
}

#[test]
fn header_field_not_utf8_in_binary_frame() {
    for (index, field) in HEADER.into_iter().enumerate() {
        for bad in [&b"\xff"[..], b"a\xc3", b"\xed\xa0\x80", b"ok\x80ok"] {
            let frame = frame_with_field(index, bad);
            assert_eq!(
                decode(frame.clone(), true, &DecodeOptions::default()),
                Err(DecodeError::InvalidUtf8 { field }),
                "{field}"
            );
            // Also in mixed mode: a well-split frame with a broken header is an error,
            // not a native message.
            assert_eq!(
                decode(
                    frame,
                    true,
                    &DecodeOptions::default().native(NativeMode::Allowed)
                ),
                Err(DecodeError::InvalidUtf8 { field })
            );
        }
    }
    // The body may be anything.
    let frame = Bytes::from_static(b";default;;chat;0;0;\xff\xfe\x00");
    assert_eq!(
        &decode(frame, true, &DecodeOptions::default()).unwrap().body[..],
        b"\xff\xfe\x00"
    );
}

#[test]
fn errors_have_readable_messages() {
    let e = DecodeError::FieldTooLong {
        field: Field::IsNoOp,
        len: 9,
        max: 8,
    };
    assert_eq!(
        e.to_string(),
        "isNoOp field of 9 bytes exceeds the limit of 8 bytes"
    );
    assert_eq!(
        DecodeError::TooFewFields { found: 6 }.to_string(),
        "frame has 6 fields; a neffos message has 7"
    );
    assert_eq!(
        DecodeError::InvalidUtf8 { field: Field::Wait }.to_string(),
        "wait field is not valid UTF-8"
    );
}

// ---------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------

#[test]
fn handshake_empty_frames() {
    assert_eq!(
        handshake::classify_client_frame(b""),
        Err(HandshakeError::Empty)
    );
    assert_eq!(
        handshake::decode_server_ack(Bytes::new()),
        Err(HandshakeError::Empty)
    );
}

#[test]
fn handshake_client_sending_server_ack() {
    for (frame, byte) in [
        (&b"A"[..], 'A'),
        (b"Aspoofed", 'A'),
        (b"H", 'H'),
        (b"Hnot allowed", 'H'),
    ] {
        assert_eq!(
            handshake::classify_client_frame(frame),
            Err(HandshakeError::ClientSentServerAck(byte))
        );
    }
    // Anything else before the ACK is an early frame to queue, not an error.
    assert_eq!(
        handshake::classify_client_frame(b";default;;chat;0;0;x"),
        Ok(ClientHello::Early)
    );
    assert_eq!(
        handshake::classify_client_frame(b"\xff"),
        Ok(ClientHello::Early)
    );
}

#[test]
fn handshake_server_frame_not_a_or_h() {
    for frame in [
        &b"M"[..],
        b"Mxyz",
        b"K",
        b"a6f1e4a2c",
        b"h",
        b";;;;;;",
        b"\x01",
    ] {
        assert_eq!(
            handshake::decode_server_ack(Bytes::from_static(frame)),
            Err(HandshakeError::UnexpectedServerFrame(frame[0]))
        );
    }
    // Checked before the rest is looked at.
    assert_eq!(
        handshake::decode_server_ack(Bytes::from_static(b"M\xff")),
        Err(HandshakeError::UnexpectedServerFrame(b'M'))
    );
}

#[test]
fn handshake_invalid_ids() {
    for id in ["a;b", ";", "id;"] {
        assert_eq!(
            handshake::validate_id(id),
            Err(HandshakeError::InvalidId(id.to_owned(), "contains ';'"))
        );
        assert_eq!(
            handshake::encode_accept(id),
            Err(HandshakeError::InvalidId(id.to_owned(), "contains ';'"))
        );
    }
    assert!(handshake::validate_id("6f1e4a2c-8b0d-4f6e-9a51-2d3c4b5a6e7f").is_ok());
    assert!(handshake::validate_id("").is_ok());
    assert!(matches!(
        handshake::decode_server_ack(Bytes::from_static(b"A\xff")),
        Err(HandshakeError::InvalidId(_, "not UTF-8"))
    ));
}

// ---------------------------------------------------------------------------------------
// Envelope
// ---------------------------------------------------------------------------------------

fn sample_envelope() -> Envelope {
    let msg = Message::new("chat", "message", &b"\x00\x01;x"[..]).with_binary(true);
    Envelope::new(
        Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        42,
        EnvelopeKind::Ask,
        EnvelopeTarget::namespace("chat")
            .with_room("room")
            .with_conn("conn")
            .with_except("except"),
        &msg,
    )
    .with_token(7)
}

/// The wire tuple, written field by field so single fields can be given a wrong type.
type Wire = (
    u8,
    Uuid,
    u64,
    EnvelopeKind,
    EnvelopeTarget,
    String,
    serde_bytes::ByteBuf,
    bool,
    bool,
    Option<u64>,
);

fn wire() -> Wire {
    let e = sample_envelope();
    (
        1,
        e.origin,
        e.seq,
        e.kind,
        e.target.clone(),
        e.event.clone(),
        serde_bytes::ByteBuf::from(e.body.to_vec()),
        e.is_error,
        e.binary,
        e.token,
    )
}

#[test]
fn envelope_wire_shape_is_the_documented_tuple() {
    // Guards the helper above: the tuple encodes like `Envelope::encode`, which appends the
    // optional recorded position (nil when absent) as an eleventh field; the ten-field shape
    // of earlier versions still decodes to the same envelope.
    let ten = rmp_serde::to_vec(&wire()).unwrap();
    let mut eleven = ten.clone();
    assert_eq!(eleven[0], 0x9a, "a fixarray of ten");
    eleven[0] = 0x9b;
    eleven.push(0xc0);
    assert_eq!(eleven, sample_envelope().encode().unwrap());
    assert_eq!(Envelope::decode(&ten).unwrap(), sample_envelope());
}

#[test]
fn envelope_garbage() {
    for bytes in [
        &b"garbage"[..],
        b"\xc1",
        b"\xff\xff\xff\xff",
        b";default;;chat;0;0;x",
        b"{\"version\":1}",
        b"\x00",
        b"\xc0", // nil
    ] {
        assert!(
            matches!(Envelope::decode(bytes), Err(EnvelopeError::Malformed(_))),
            "{bytes:?}"
        );
    }
}

#[test]
fn envelope_empty() {
    assert!(matches!(
        Envelope::decode(b""),
        Err(EnvelopeError::Malformed(_))
    ));
    // An empty array has no version.
    assert!(matches!(
        Envelope::decode(b"\x90"),
        Err(EnvelopeError::Malformed(_))
    ));
}

#[test]
fn envelope_truncated_at_every_length() {
    let bytes = sample_envelope().encode().unwrap();
    for cut in 0..bytes.len() {
        assert!(
            matches!(
                Envelope::decode(&bytes[..cut]),
                Err(EnvelopeError::Malformed(_))
            ),
            "truncated at {cut} of {}",
            bytes.len()
        );
    }
    assert_eq!(Envelope::decode(&bytes).unwrap(), sample_envelope());
}

#[test]
fn envelope_unknown_version() {
    for version in [0u64, 2, 9, 255, 256, 70_000, u64::MAX] {
        let mut w = Vec::new();
        let tail = rmp_serde::to_vec(&wire()).unwrap();
        // Replace the array's first element (the fixint 1 after the fixarray marker).
        assert_eq!(&tail[..2], &[0x9a, 0x01]);
        w.push(0x9a);
        rmp::encode::write_uint(&mut w, version).unwrap();
        w.extend_from_slice(&tail[2..]);
        assert!(
            matches!(
                Envelope::decode(&w),
                Err(EnvelopeError::UnknownVersion(v)) if v == version
            ),
            "version {version}"
        );
    }
    // A future version may have any shape after the version: still UnknownVersion.
    let future = rmp_serde::to_vec(&(2u8, "something else")).unwrap();
    assert!(matches!(
        Envelope::decode(&future),
        Err(EnvelopeError::UnknownVersion(2))
    ));
}

#[test]
fn envelope_wrong_typed_fields() {
    fn malformed(bytes: Vec<u8>, what: &str) {
        let result = Envelope::decode(&bytes);
        assert!(
            matches!(result, Err(EnvelopeError::Malformed(_))),
            "{what}: {result:?}"
        );
    }
    let w = wire();
    // Version that is not an integer.
    malformed(
        rmp_serde::to_vec(&("1", w.1, w.2, w.3, &w.4, &w.5, &w.6, w.7, w.8, w.9)).unwrap(),
        "version as string",
    );
    malformed(
        rmp_serde::to_vec(&(-1i8, w.1, w.2, w.3, &w.4, &w.5, &w.6, w.7, w.8, w.9)).unwrap(),
        "negative version",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, 5u32, w.2, w.3, &w.4, &w.5, &w.6, w.7, w.8, w.9)).unwrap(),
        "origin as integer",
    );
    malformed(
        rmp_serde::to_vec(&(
            1u8,
            serde_bytes::Bytes::new(b"short"),
            w.2,
            w.3,
            &w.4,
            &w.5,
            &w.6,
            w.7,
            w.8,
            w.9,
        ))
        .unwrap(),
        "origin of 5 bytes",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, "42", w.3, &w.4, &w.5, &w.6, w.7, w.8, w.9)).unwrap(),
        "seq as string",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, -5i64, w.3, &w.4, &w.5, &w.6, w.7, w.8, w.9)).unwrap(),
        "negative seq",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, w.2, "Shout", &w.4, &w.5, &w.6, w.7, w.8, w.9)).unwrap(),
        "unknown kind",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, w.2, 17u8, &w.4, &w.5, &w.6, w.7, w.8, w.9)).unwrap(),
        "kind out of range",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, w.2, w.3, "target", &w.5, &w.6, w.7, w.8, w.9)).unwrap(),
        "target as string",
    );
    malformed(
        rmp_serde::to_vec(&(
            1u8,
            w.1,
            w.2,
            w.3,
            ("ns", 5u8, None::<String>, None::<String>),
            &w.5,
            &w.6,
            w.7,
            w.8,
            w.9,
        ))
        .unwrap(),
        "target room as integer",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, w.2, w.3, &w.4, 12u8, &w.6, w.7, w.8, w.9)).unwrap(),
        "event as integer",
    );
    malformed(
        rmp_serde::to_vec(&(
            1u8,
            w.1,
            w.2,
            w.3,
            &w.4,
            serde_bytes::Bytes::new(b"\xff\xfe"),
            &w.6,
            w.7,
            w.8,
            w.9,
        ))
        .unwrap(),
        "event not UTF-8",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, w.2, w.3, &w.4, &w.5, true, w.7, w.8, w.9)).unwrap(),
        "body as bool",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, w.2, w.3, &w.4, &w.5, &w.6, 1u8, w.8, w.9)).unwrap(),
        "is_error as integer",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, w.2, w.3, &w.4, &w.5, &w.6, w.7, "yes", w.9)).unwrap(),
        "binary as string",
    );
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, w.2, w.3, &w.4, &w.5, &w.6, w.7, w.8, "7")).unwrap(),
        "token as string",
    );
    // Too few elements.
    malformed(
        rmp_serde::to_vec(&(1u8, w.1, w.2, w.3, &w.4, &w.5, &w.6, w.7, w.8)).unwrap(),
        "nine elements",
    );
    malformed(rmp_serde::to_vec(&(1u8,)).unwrap(), "version only");
    // A map instead of an array.
    malformed(
        rmp_serde::to_vec_named(&std::collections::BTreeMap::from([("version", 1u8)])).unwrap(),
        "map",
    );
}

#[test]
fn envelope_errors_have_sources() {
    use std::error::Error as _;
    let err = Envelope::decode(b"garbage").unwrap_err();
    assert!(err.to_string().starts_with("malformed envelope: "));
    assert!(err.source().is_some());
    assert_eq!(
        EnvelopeError::UnknownVersion(3).to_string(),
        "unknown envelope version 3"
    );
}
