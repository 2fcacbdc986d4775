//! `neffos`: a real-time WebSocket framework that speaks the neffos wire protocol.
//!
//! Status: in progress. This crate will own the `Server`, connections, namespaces, rooms,
//! events, Ask/reply, broadcast fan-out, the `Exchange` trait with the in-process
//! `MemoryExchange`, the Rust client (feature `client`), the axum route (feature `axum`)
//! and the exchange conformance suite (feature `testkit`).

pub use neffos_protocol as protocol;
