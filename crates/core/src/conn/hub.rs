//! What a connection needs of the server it belongs to, and nothing more: its counters and
//! the index operations. A client's connection has no server, and every call is then a
//! no-op, so the connection's code never asks which side it runs on.

use std::sync::Arc;

use bytestring::ByteString;

use super::ConnInner;
use super::rounds::Rounds;
use crate::server::ServerShared;

/// A server-wide counter a connection bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// Closed or refused for going over a byte budget.
    BudgetClose,
    /// A stuck client closed (counts as a budget close too).
    SlowConsumerClose,
    /// Reading paused while recipients of its broadcasts were behind.
    PublisherPushback,
    /// Reading paced to the writers' round (the server was behind).
    PublisherPaced,
    /// A frame that was not a neffos message.
    InvalidFrame,
    /// A reply nobody waited for.
    LateReply,
}

/// The connection's handle on its server (none on the client side).
#[derive(Clone, Default)]
pub(crate) struct Hub(Option<Arc<ServerShared>>);

impl Hub {
    /// A server's connection.
    pub(crate) fn server(shared: Arc<ServerShared>) -> Self {
        Hub(Some(shared))
    }

    /// A client's connection: no server.
    #[cfg(any(test, feature = "client"))]
    pub(crate) fn client() -> Self {
        Hub(None)
    }

    /// The server itself, for what a handler may do with it (broadcasts, Asks).
    pub(crate) fn shared(&self) -> Option<&Arc<ServerShared>> {
        self.0.as_ref()
    }

    /// The server's count of the writers' takes (none on the client side: nothing paces).
    pub(crate) fn rounds(&self) -> Option<&Rounds> {
        self.0.as_ref().map(|server| &server.rounds)
    }

    /// The connection's writer took frames from its queue.
    pub(crate) fn writer_took(&self) {
        if let Some(server) = &self.0 {
            server.rounds.took();
        }
    }

    /// Bumps `what`.
    pub(crate) fn count(&self, what: Count) {
        let Some(server) = &self.0 else {
            return;
        };
        let stats = &server.stats;
        match what {
            Count::BudgetClose => stats.budget_close(),
            Count::SlowConsumerClose => stats.slow_consumer_close(),
            Count::PublisherPushback => stats.publisher_pushback(),
            Count::PublisherPaced => stats.publisher_paced(),
            Count::InvalidFrame => stats.invalid_frame(),
            Count::LateReply => stats.late_reply(),
        }
    }

    /// A data frame of `len` bytes was read.
    pub(crate) fn frame_read(&self, len: usize) {
        if let Some(server) = &self.0 {
            server.stats.metrics.frames_in.increment(1);
            server.stats.metrics.bytes_in.increment(len as u64);
        }
    }

    /// `frames` frames of `bytes` bytes were written.
    pub(crate) fn frames_written(&self, frames: u64, bytes: u64) {
        if let Some(server) = &self.0 {
            server.stats.metrics.frames_out.increment(frames);
            server.stats.metrics.bytes_out.increment(bytes);
        }
    }

    /// An Ask got its reply after `secs`.
    pub(crate) fn ask_took(&self, secs: f64) {
        if let Some(server) = &self.0 {
            server.stats.metrics.ask_seconds.record(secs);
        }
    }

    /// The connection is past its handshake: into the indexes.
    pub(crate) fn ready(&self, conn: &Arc<ConnInner>) {
        if let Some(server) = &self.0 {
            server.connection_ready(conn);
        }
    }

    /// The connection is gone: out of the indexes, `on_disconnect` run.
    pub(crate) async fn closed(&self, conn: &Arc<ConnInner>) {
        if let Some(server) = &self.0 {
            server.connection_closed(conn).await;
        }
    }

    /// `conn` connected namespace `ns`.
    pub(crate) fn namespace_added(&self, conn: &Arc<ConnInner>, ns: &ByteString) {
        if let Some(server) = &self.0 {
            server.namespace_added(conn, ns);
        }
    }

    /// `conn` disconnected namespace `ns`.
    pub(crate) fn namespace_removed(&self, conn: &Arc<ConnInner>, ns: &ByteString) {
        if let Some(server) = &self.0 {
            server.namespace_removed(conn, ns);
        }
    }

    /// `conn` joined `room` of `ns`.
    pub(crate) fn room_added(&self, conn: &Arc<ConnInner>, ns: &ByteString, room: &ByteString) {
        if let Some(server) = &self.0 {
            server.room_added(conn, ns, room);
        }
    }

    /// `conn` left `room` of `ns`.
    pub(crate) fn room_removed(&self, conn: &Arc<ConnInner>, ns: &ByteString, room: &ByteString) {
        if let Some(server) = &self.0 {
            server.room_removed(conn, ns, room);
        }
    }
}
