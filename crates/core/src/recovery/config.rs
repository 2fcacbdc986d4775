//! [`Recovery`]: which namespaces record their broadcasts, how long sessions are kept,
//! where history lives, and how a reconnecting client names its session.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::memory::MemoryHistory;
use super::store::HistoryStore;

type SessionKeyFn = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

/// Connection-state recovery, opt-in per namespace ([`ServerBuilder::recovery`](crate::ServerBuilder::recovery)).
///
/// ```
/// use std::time::Duration;
/// use neffos::recovery::Recovery;
/// let recovery = Recovery::new()
///     .namespace("chat")
///     .window(Duration::from_secs(120));
/// # let _ = recovery;
/// ```
#[derive(Clone)]
#[must_use]
pub struct Recovery {
    pub(crate) namespaces: HashSet<String>,
    pub(crate) window: Duration,
    pub(crate) checkpoint: Duration,
    pub(crate) max_replay: usize,
    pub(crate) store: Arc<dyn HistoryStore>,
    /// The store is this instance's memory (no [`Recovery::store`] given).
    pub(crate) instance_memory: bool,
    pub(crate) session_key: Option<SessionKeyFn>,
}

impl fmt::Debug for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovery")
            .field("namespaces", &self.namespaces)
            .field("window", &self.window)
            .field("checkpoint", &self.checkpoint)
            .field("max_replay", &self.max_replay)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Default for Recovery {
    fn default() -> Self {
        Self::new()
    }
}

impl Recovery {
    /// No namespace recorded yet; a 2-minute window; checkpoints every second; the
    /// in-memory store with [`HistoryLimits::default`](super::HistoryLimits).
    pub fn new() -> Self {
        Recovery {
            namespaces: HashSet::new(),
            window: Duration::from_secs(120),
            checkpoint: Duration::from_secs(1),
            max_replay: 10_000,
            store: Arc::new(MemoryHistory::default()),
            instance_memory: true,
            session_key: None,
        }
    }

    /// Records the broadcasts of `namespace` (namespace-wide and room broadcasts; targeted
    /// sends to one connection ID are not recorded). Namespaces not named pay nothing.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespaces.insert(namespace.to_owned());
        self
    }

    /// How long the session of a connection that dropped unexpectedly is kept (default 2 min).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How often the sessions of live connections are written to the store (default 1 s):
    /// what a client whose instance dies (kill -9) gets back is its last checkpoint. The Rust
    /// client presents its exact positions; for other clients a broadcast handed to them
    /// after the last checkpoint may be replayed again.
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint = interval.max(Duration::from_millis(10));
        self
    }

    /// The most broadcasts replayed to one namespace of one client (default 10,000);
    /// a client that missed more is told "not recovered" (nothing replayed).
    pub fn max_replay(mut self, n: usize) -> Self {
        self.max_replay = n.max(1);
        self
    }

    /// Where history and sessions live (default: [`MemoryHistory`], this instance only).
    pub fn store(mut self, store: impl HistoryStore) -> Self {
        self.store = Arc::new(store);
        self.instance_memory = false;
        self
    }

    /// Takes the session key from the upgrade request (default: the
    /// [`SESSION_HEADER`](neffos_protocol::recovery::SESSION_HEADER) header, which neffos.js
    /// apps can also send as the query parameter `X-Websocket-Header-X-Neffos-Session`).
    /// The key must be a secret of the client: whoever presents it gets the session.
    pub fn session_key<F>(mut self, f: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.session_key = Some(Arc::new(f));
        self
    }

    pub(crate) fn covers(&self, namespace: &str) -> bool {
        self.namespaces.contains(namespace)
    }
}
