//! Benchmarks of neffos-rs live in `benches/`; this library holds shared fixtures.

use bytes::Bytes;
use neffos_protocol::Message;

/// A chat-like message with a body of `body_len` bytes, the fixture of the codec benches.
pub fn sample_message(body_len: usize) -> Message {
    Message::new("default", "chat", Bytes::from(vec![b'x'; body_len])).with_room("room1")
}
