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
//! # A tour
//!
//! **Namespaces and events.** A [`Server`] serves [`Namespaces`]; each has [`Events`]. A
//! plain handler takes the [`NsConn`] and the [`Message`]:
//!
//! ```
//! use neffos::{Events, Namespaces, Reply};
//! let namespaces = Namespaces::new().namespace(
//!     "chat",
//!     Events::new()
//!         .on("ping", |_ns, _msg| async { Reply::new("pong") })
//!         .on("say", |ns, msg| async move { ns.broadcast_others(msg) }),
//! );
//! # let _ = namespaces;
//! ```
//!
//! **Typed bodies and state.** [`Events::handle`] takes handlers whose arguments are
//! extracted from the message: a JSON body ([`Json`], feature `json`, on by default; or
//! `MsgPack`, feature `msgpack`), the application [`State`] given once to
//! [`ServerBuilder::with_state`], the raw [`Message`]. A body that does not decode is
//! answered with a neffos error reply naming the event and the decoder's error.
//!
//! ```
//! use neffos::{Events, Json, NsConn, Reply, State};
//! #[derive(serde::Deserialize)]
//! struct Say { text: String }
//! #[derive(Clone)]
//! struct App { name: String }
//!
//! let events = Events::new().handle(
//!     "say",
//!     |ns: NsConn, State(app): State<App>, Json(say): Json<Say>| async move {
//!         let line = serde_json::json!({ "from": app.name, "text": say.text });
//!         ns.emit_json("said", &line)?;
//!         // Errors of different operations meet in a boxed error; its text is the reply.
//!         Ok::<_, neffos::error::BoxError>(Reply::json(&line)?)
//!     },
//! );
//! # let _ = events;
//! ```
//!
//! **Rooms.** `ns.join_room("lobby").await?` joins (asking the peer), [`Room::emit`] sends
//! to the peer in the room, and [`Target::room`] broadcasts to every member on every
//! instance: `server.broadcast_json(Target::room("chat", "lobby"), "said", &line)?`.
//!
//! **Ask.** Request/reply in both directions: [`NsConn::ask`] / [`NsConn::ask_json`] from
//! either side, and [`Server::ask`] / [`Server::ask_json`] to a connection ID on any
//! instance. A failed Ask is an [`AskError`] whose [`kind`](error::Error::kind) says why
//! (timeout, unknown connection, the peer's error reply, closed, exchange).
//!
//! **Serving.** With the `axum` feature, [`Server::route`] is an axum route and [`serve`]
//! runs it (axum is re-exported as [`reexports::axum`]):
//!
//! ```no_run
//! use neffos::{Events, Namespaces, Server};
//! use neffos::reexports::axum;
//!
//! # async fn run() -> std::io::Result<()> {
//! #[derive(Clone)]
//! struct App { name: String }
//! let server = Server::builder(Namespaces::new().namespace("chat", Events::new()))
//!     .with_state(App { name: "chat-1".into() })
//!     .build();
//! let app = axum::Router::new().route("/echo", server.route());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! neffos::serve(listener, app).await
//! # }
//! ```
//!
//! **Scale-out in three lines.** Give each instance an exchange on the same broker;
//! broadcasts, sends to an ID and Asks then cross instances (with `neffos-redis`):
//!
//! ```ignore
//! # async fn run(namespaces: neffos::Namespaces) -> Result<(), neffos_redis::Error> {
//! let exchange = neffos_redis::RedisExchange::connect("redis://127.0.0.1:6379").await?;
//! let server = neffos::Server::builder(namespaces).exchange(exchange).build();
//! # let _ = server; Ok(()) }
//! ```
//!
//! (`neffos_nats::NatsExchange::connect("nats://127.0.0.1:4222")` likewise;
//! [`MemoryExchange`] joins several servers in one process.)
//!
//! **Errors** are per operation ([`WriteError`], [`AskError`], [`RoomError`],
//! [`BroadcastError`]…), each an [`error::Error`] with a `#[non_exhaustive]` kind, a
//! message naming the operation and its object, and the cause as its `source()`.
//!
//! # Feature flags
//!
//! | Name | Description | Default |
//! |---|---|---|
//! | `axum` | [`Server::route`], the [`axum::Upgrade`] extractor and [`serve`] | yes |
//! | `json` | typed JSON bodies: [`Json`], [`Reply::json`], `emit_json`, `broadcast_json`, `ask_json` | yes |
//! | `msgpack` | typed MessagePack bodies: `MsgPack`, `Reply::msgpack`, `emit_msgpack`… | no |
//! | `client` | the Rust client, [`Client`] | no |
//! | `testkit` | the exchange conformance suite and test helpers | no |

#![cfg_attr(docsrs, feature(doc_cfg))]
// Without a transport (`axum` or `client`) nothing opens a connection, so the engine is
// unused: the exchange crates build the core that way on their own (their users enable a
// transport through `neffos` itself).
#![cfg_attr(
    not(any(feature = "axum", feature = "client")),
    allow(dead_code, unused_imports)
)]

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
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
#[cfg(feature = "client")]
mod client;
#[cfg(feature = "axum")]
mod serve;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

/// The crates neffos's public API is built on, re-exported so that an application uses
/// the same versions without naming them in its manifest.
pub mod reexports {
    /// axum (feature `axum`): `neffos::reexports::axum::Router` and friends.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub use axum;
    pub use bytes;
}

#[cfg(feature = "json")]
pub use body::Json;
#[cfg(any(feature = "json", feature = "msgpack"))]
pub use body::MessageExt;
#[cfg(feature = "msgpack")]
pub use body::MsgPack;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use client::{Client, ClientBuilder, Reconnect};
pub use cluster::{
    Applied, Cluster, ClusterConfig, ClusterError, ClusterErrorKind, ClusterStats, InstanceInfo,
    Member, Partial, PresenceEvent, PresenceKind,
};
pub use config::{Config, OverloadPolicy, SlowConsumerPolicy};
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
