//! Benchmarks of neffos-rs: the criterion benches live in `benches/`; this library holds
//! their shared fixtures, the load generator ([`loadgen`], binary `neffos-loadgen`), the
//! bench server ([`server`], binary `neffos-bench-server`) and the side-by-side suite
//! behind `cargo xtask bench` ([`suite`]).

pub mod loadgen;
pub mod server;
pub mod suite;

use bytes::Bytes;
use neffos_protocol::Message;

/// A chat-like message with a body of `body_len` bytes, the fixture of the codec benches.
pub fn sample_message(body_len: usize) -> Message {
    Message::new("default", "chat", Bytes::from(vec![b'x'; body_len])).with_room("room1")
}
