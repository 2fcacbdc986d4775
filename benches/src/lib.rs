//! Criterion benchmarks of neffos-rs (`cargo bench -p neffos-benches`): the codec, the
//! in-process fan-out (with and without a stuck client) and join/leave latency under
//! broadcasts, in `benches/`. This library holds their shared fixtures. The load generator,
//! the bench server and the side-by-side suite are the `neffos-bench-tools` package
//! (`crates/bench-tools`).

use bytes::Bytes;
use neffos_protocol::Message;

/// A chat-like message with a body of `body_len` bytes, the fixture of the codec benches.
pub fn sample_message(body_len: usize) -> Message {
    Message::new("default", "chat", Bytes::from(vec![b'x'; body_len])).with_room("room1")
}
