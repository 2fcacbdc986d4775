//! Choosing the exchange that joins several instances (`--exchange`).
//!
//! `memory` (the default) needs no broker: every [`Server`](neffos::Server) of this process
//! shares one in-process bus, so it scales across instances of one process only. The
//! `redis` and `nats` backends will be added here behind the cargo features of the same
//! names, as more [`ExchangeKind`] variants; the binaries need no other change.

use std::fmt;
use std::sync::Arc;

use neffos::{Exchange, MemoryExchange};

/// The backend selected with `--exchange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[non_exhaustive]
pub enum ExchangeKind {
    /// In-process bus: instances of this process only, no broker.
    #[default]
    Memory,
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeKind::Memory => f.write_str("memory"),
        }
    }
}

/// Creates one exchange per instance, all connected to the same bus or broker.
#[derive(Debug)]
pub struct Exchanges {
    kind: ExchangeKind,
    memory: MemoryExchange,
}

impl Exchanges {
    /// Prepares the backend `kind` (a broker address would be taken here).
    pub fn new(kind: ExchangeKind) -> Self {
        Exchanges {
            kind,
            memory: MemoryExchange::new(),
        }
    }

    /// The backend in use.
    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// The exchange for one more instance. Async and fallible because broker-backed
    /// exchanges connect here.
    pub async fn for_instance(&self) -> anyhow::Result<Arc<dyn Exchange>> {
        match self.kind {
            ExchangeKind::Memory => Ok(Arc::new(self.memory.clone())),
        }
    }
}
