//! Fuzzes the frame decoder in every native mode, the handshake parsers, and checks that
//! every frame that decodes re-encodes to a frame that decodes to the same message.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use neffos_protocol::{DecodeOptions, NativeMode, decode, handshake};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    // Small limits so the length checks are reached too.
    let small = DecodeOptions::default()
        .max_field_len(16)
        .max_frame_size(256);
    for opts in [
        DecodeOptions::default(),
        DecodeOptions::default().native(NativeMode::Allowed),
        DecodeOptions::default().native(NativeMode::Only),
        small,
    ] {
        for binary in [false, true] {
            if let Ok(msg) = decode(frame.clone(), binary, &opts) {
                assert_eq!(msg.binary, binary);
                let encoded = msg.to_frame();
                assert_eq!(encoded.bytes.len(), msg.encoded_len());
                // Native messages without a wait re-encode as their raw body, which only
                // decodes back to the same message in native-only mode; and an empty body
                // is an empty frame.
                if !msg.is_native {
                    let again = decode(encoded.bytes, binary, &DecodeOptions::default())
                        .expect("a re-encoded message decodes");
                    // Flags normalise (`true` -> `0`), unescaped fields may not round-trip
                    // (`@%!semicolon@%!`), so compare only what always survives.
                    assert_eq!(again.wait, msg.wait);
                    assert_eq!(again.body, msg.body);
                    assert_eq!(again.is_error, msg.is_error);
                    assert_eq!(again.is_noop, msg.is_noop);
                }
            }
        }
    }
    let _ = handshake::classify_client_frame(data);
    let _ = handshake::decode_server_ack(frame);
});
