//! Shared pieces of the neffos-rs examples.
//!
//! Every example is a binary under `src/bin/` with a header saying how to run it:
//!
//! | binary | what it shows |
//! |---|---|
//! | `chat` | a browser chat (neffos.js): namespace `default`, rooms, usernames as connection IDs |
//! | `scale-out` | the same chat served by several instances joined by an exchange |
//! | `ask` | request/reply in both directions with the Rust client |
//! | `native` | native-only mode: a plain WebSocket echo, no neffos framing |
//! | `cluster-node` | one cluster instance with its cluster API over HTTP (queries, remote operations, presence) |
//!
//! The chat application itself lives in [`chat`] so that `chat`, `scale-out` and the browser
//! test (`tests/browser.rs`) serve the very same router. Nothing outside this package
//! depends on it.

pub mod chat;
pub mod cluster_api;
pub mod exchange;
pub mod log;
pub mod metrics;
pub mod serve;
