//! `neffos`: a real-time WebSocket framework that speaks the
//! [neffos](https://github.com/kataras/neffos) wire protocol, so neffos.js and Go neffos
//! clients work against it unchanged, and scales out through pluggable exchanges.
//!
//! # Concepts
//!
//! - A [`Server`] serves [`Namespaces`]; each namespace has [`Events`] with handlers.
//!   A client connects to namespaces, joins rooms inside them, emits events, and Asks
//!   (request/reply) in both directions.
//! - Handlers receive an [`NsConn`] (the connection within one namespace) and the
//!   [`Message`]; they return `()`, a [`Reply`], or a `Result` whose error becomes the
//!   neffos error reply.
//! - [`Server::broadcast`] sends to a [`Target`]: a namespace, a room, or one connection
//!   ID, optionally except one connection. It is encoded once and reaches local recipients
//!   directly, and other instances through the [`Exchange`] (one publication).
//! - [`MemoryExchange`] joins several servers in one process; `neffos-redis` and
//!   `neffos-nats` join processes.
//!
//! # Example
//!
//! ```no_run
//! use neffos::{Events, Namespaces, Reply, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::builder(
//!     Namespaces::new().namespace(
//!         "default",
//!         Events::new()
//!             .on("chat", |ns, msg| async move { ns.broadcast_others(msg) })
//!             .on("ping", |_ns, _msg| async { Reply::new("pong") }),
//!     ),
//! )
//! .build();
//! let app = axum::Router::new().route("/echo", server.route());
//! // neffos::serve: header-read and upgrade timeouts, TCP_NODELAY, the peer's address.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! neffos::serve(listener, app).await
//! # }
//! ```
//!
//! # Feature flags
//!
//! | Name | Description | Default |
//! |---|---|---|
//! | `axum` | [`Server::route`], the [`axum::Upgrade`] extractor and [`serve`] | yes |
//! | `client` | the Rust client, [`Client`] | no |
//! | `testkit` | the exchange conformance suite and test helpers | no |

#[cfg(any(feature = "json", feature = "msgpack"))]
mod body;
mod cluster;
mod config;
mod conn;
pub mod error;
mod exchange;
pub mod extract;
mod handler;
pub mod metrics;
pub mod recovery;
pub mod redact;
mod server;
mod transport;

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "client")]
mod client;
#[cfg(feature = "axum")]
mod serve;
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "json")]
pub use body::Json;
#[cfg(any(feature = "json", feature = "msgpack"))]
pub use body::MessageExt;
#[cfg(feature = "msgpack")]
pub use body::MsgPack;
#[cfg(feature = "client")]
pub use client::{Client, ClientBuilder, Reconnect};
pub use cluster::{
    Applied, Cluster, ClusterConfig, ClusterError, ClusterErrorKind, ClusterStats, InstanceInfo,
    Member, Partial, PresenceEvent, PresenceKind,
};
pub use config::{Config, SlowConsumerPolicy};
pub use conn::{Conn, NsConn, Room};
pub use error::{
    AskError, BodyError, BroadcastError, DialError, ExchangeError, NamespaceError, RoomError,
    WaitError, WriteError,
};
pub use exchange::{
    Exchange, ExchangeCounters, ExchangeFuture, ExchangeStats, Inbound, MemoryExchange, Topic,
};
pub use extract::State;
pub use handler::{Events, IntoOutcome, Namespaces, Outcome, Reply};
pub use neffos_protocol as protocol;
pub use neffos_protocol::{Message, WaitToken, events};
#[cfg(feature = "axum")]
pub use serve::{Serve, serve};
pub use server::{Server, ServerBuilder, StatsSnapshot, Target};
