//! Choosing the exchange that joins several instances (`--exchange`).
//!
//! `memory` (the default) needs no broker: every [`Server`](neffos::Server) of this process
//! shares one in-process bus, so it scales across instances of one process only. The
//! `redis` and `nats` backends (cargo features of the same names) join instances running in
//! different processes or machines through a broker.

#[allow(unused_imports)]
use anyhow::Context;
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
    /// Redis pub/sub (`--redis-url`), across processes and machines.
    #[cfg(feature = "redis")]
    Redis,
    /// Redis Cluster with sharded pub/sub (`--redis-url`: comma-separated seed nodes).
    #[cfg(feature = "redis")]
    RedisCluster,
    /// NATS (`--nats-url`), across processes and machines.
    #[cfg(feature = "nats")]
    Nats,
}

impl ExchangeKind {
    /// True for backends that join processes (not only instances of one process).
    pub fn is_broker(self) -> bool {
        !matches!(self, ExchangeKind::Memory)
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeKind::Memory => f.write_str("memory"),
            #[cfg(feature = "redis")]
            ExchangeKind::Redis => f.write_str("redis"),
            #[cfg(feature = "redis")]
            ExchangeKind::RedisCluster => f.write_str("redis-cluster"),
            #[cfg(feature = "nats")]
            ExchangeKind::Nats => f.write_str("nats"),
        }
    }
}

/// Broker addresses (`--redis-url`, `--nats-url`).
#[derive(Debug, Clone, Default)]
pub struct BrokerUrls {
    /// Redis URL (`redis://` or `rediss://`).
    pub redis: String,
    /// NATS URL list.
    pub nats: String,
    /// Go neffos compatibility prefix (`--go-compat`): Redis and NATS exchanges also speak
    /// Go neffos v0.0.25's scheme under it, for a rolling migration from Go instances.
    pub go_compat: Option<String>,
}

/// Creates one exchange per instance, all connected to the same bus or broker.
#[derive(Debug)]
pub struct Exchanges {
    kind: ExchangeKind,
    memory: MemoryExchange,
    /// The history every in-process instance shares (connection-state recovery).
    history: neffos::recovery::MemoryHistory,
    #[allow(dead_code)] // read only by the broker backends' features
    urls: BrokerUrls,
}

impl Exchanges {
    /// Prepares the backend `kind`; broker backends connect to `urls`.
    pub fn new(kind: ExchangeKind, urls: BrokerUrls) -> Self {
        Exchanges {
            kind,
            memory: MemoryExchange::new(),
            history: neffos::recovery::MemoryHistory::default(),
            urls,
        }
    }

    /// Where connection-state recovery keeps history and sessions for one more instance:
    /// shared by every instance of the backend (`None`: no store for it: a Redis Cluster,
    /// or NATS without JetStream).
    pub async fn history_for_instance(
        &self,
    ) -> anyhow::Result<Option<Arc<dyn neffos::recovery::HistoryStore>>> {
        match self.kind {
            ExchangeKind::Memory => Ok(Some(Arc::new(self.history.clone()))),
            #[cfg(feature = "redis")]
            ExchangeKind::Redis => {
                let history = neffos_redis::RedisHistory::connect(
                    &self.urls.redis,
                    neffos::recovery::HistoryLimits::default(),
                )
                .await
                .with_context(|| format!("cannot use Redis at {}", self.urls.redis))?;
                Ok(Some(Arc::new(history)))
            }
            // No shared store on a Redis Cluster yet: recovery stays off there.
            #[cfg(feature = "redis")]
            ExchangeKind::RedisCluster => Ok(None),
            #[cfg(feature = "nats")]
            ExchangeKind::Nats => {
                use neffos::recovery::HistoryStore;
                let history = neffos_nats::NatsHistory::connect(
                    &self.urls.nats,
                    neffos::recovery::HistoryLimits::default(),
                )
                .await
                .with_context(|| format!("cannot use NATS at {}", self.urls.nats))?;
                // The store is JetStream: without it (`nats-server` run without `-js`),
                // recovery stays off rather than failing every broadcast's recording.
                match history.head(crate::chat::NAMESPACE).await {
                    Ok(_) => Ok(Some(Arc::new(history))),
                    Err(e) => {
                        tracing::warn!(error = %e, "no JetStream on this NATS (run nats-server -js): connection-state recovery off");
                        Ok(None)
                    }
                }
            }
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
            #[cfg(feature = "redis")]
            ExchangeKind::Redis => {
                let mut builder = neffos_redis::RedisExchange::builder(self.urls.redis.clone());
                if let Some(prefix) = &self.urls.go_compat {
                    builder = builder.go_compat(prefix.clone());
                }
                let exchange = builder
                    .connect()
                    .await
                    .with_context(|| format!("cannot use Redis at {}", self.urls.redis))?;
                Ok(Arc::new(exchange))
            }
            #[cfg(feature = "redis")]
            ExchangeKind::RedisCluster => {
                let seeds = self.urls.redis.split(',').map(str::trim);
                let exchange = neffos_redis::RedisClusterExchange::builder(seeds)
                    .connect()
                    .await
                    .context("cannot use the Redis Cluster")?;
                Ok(Arc::new(exchange))
            }
            #[cfg(feature = "nats")]
            ExchangeKind::Nats => {
                let mut builder = neffos_nats::NatsExchange::builder(self.urls.nats.clone());
                if let Some(prefix) = &self.urls.go_compat {
                    builder = builder.go_compat(prefix.clone());
                }
                let exchange = builder
                    .connect()
                    .await
                    .with_context(|| format!("cannot use NATS at {}", self.urls.nats))?;
                Ok(Arc::new(exchange))
            }
        }
    }
}

/// The command-line options choosing the exchange, shared by the binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct ExchangeArgs {
    /// The exchange joining the instances.
    #[arg(long, env = "EXCHANGE", value_enum, default_value_t = ExchangeKind::Memory)]
    pub exchange: ExchangeKind,
    /// Redis URL for `--exchange redis` (password, user, DB as in `redis://user:pass@host:6379/0`);
    /// comma-separated seed nodes for `--exchange redis-cluster`.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// NATS server URL(s) for `--exchange nats`, comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Also speak Go neffos v0.0.25's Redis/NATS scheme under this channel/subject prefix
    /// (`--exchange redis` or `nats`), so Go neffos instances of the same app on the same
    /// broker and these instances see each other: a rolling migration from Go neffos.
    #[arg(long, env = "GO_COMPAT", value_name = "PREFIX")]
    pub go_compat: Option<String>,
}

impl ExchangeArgs {
    /// The exchanges these options select.
    pub fn exchanges(&self) -> Exchanges {
        Exchanges::new(
            self.exchange,
            BrokerUrls {
                redis: self.redis_url.clone(),
                nats: self.nats_url.clone(),
                go_compat: self.go_compat.clone(),
            },
        )
    }
}
