//! `neffos-redis`: scale a [neffos-rs](neffos) server out over Redis pub/sub.
//!
//! Give every server instance a [`RedisExchange`] on the same Redis (and the same
//! [prefix](RedisExchangeBuilder::prefix)): broadcasts, sends to a connection ID and
//! [`Server::ask`](neffos::Server::ask) then reach clients on every instance.
//!
//! ```no_run
//! use neffos::{Events, Namespaces, Server};
//! use neffos_redis::RedisExchange;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let exchange = RedisExchange::builder("redis://127.0.0.1:6379")
//!     .prefix("chat")
//!     .connect()
//!     .await?;
//! let server = Server::builder(Namespaces::new().namespace("default", Events::new()))
//!     .exchange(exchange)
//!     .build();
//! // Serve it as usual, e.g. `axum::Router::new().route("/echo", server.route())`.
//! # let _ = server; Ok(()) }
//! ```
//!
//! # How does it work?
//!
//! The server does everything but moving bytes: it delivers to its local clients first,
//! encodes one envelope per broadcast (origin instance, kind, target, message, Ask token),
//! drops the envelopes it published itself, correlates cross-instance Asks, and tells the
//! exchange only when its interest in a topic goes from 0 to 1 and from 1 to 0. The
//! exchange maps topics to Redis channels and moves envelopes.
//!
//! ## Channels
//!
//! | topic | channel | subscribed while |
//! |---|---|---|
//! | namespace `ns` | `<prefix>:ns:<len>:<ns>` | a local connection is in `ns` |
//! | connection ID `id` | `<prefix>:conn:<len>:<id>` | a local connection has ID `id` |
//! | inbox of instance `u` | `<prefix>:inbox:<u>` | the instance runs (Ask replies) |
//!
//! `<len>` is the byte length of the user's value, so no namespace, room or ID can name
//! another channel, whatever it contains (`:`, `*`, spaces…), and namespace `x` and
//! connection `x` are different channels. The prefix (default `neffos`) may only contain
//! `A-Z a-z 0-9 _ . -`, so two applications with different prefixes never share a channel.
//! Rooms are not channels: a room broadcast travels on its namespace's channel and the
//! receiving instance delivers it to its local room members.
//!
//! Subscriptions are plain `SUBSCRIBE`s, never patterns (`PUBSUB NUMPAT` stays 0, and a
//! `PUBLISH` costs Redis O(subscribers of that channel)). An instance subscribes to a
//! namespace when its first local client joins it and unsubscribes when the last leaves,
//! so an instance without local interest receives nothing for that namespace.
//! [`RedisExchange::channel`] gives the channel of a topic.
//!
//! Payloads are the server's envelopes (MessagePack), as bytes. Anything else published
//! on these channels (by a foreign client, an older version…) is handed over as bytes too;
//! the server fails to decode it, counts it (`StatsSnapshot::malformed_envelopes`) and
//! drops it. Nothing received from Redis can make the exchange panic or block.
//!
//! ## Go neffos compatibility
//!
//! [`RedisExchangeBuilder::go_compat`] (off by default) makes the instance also publish and
//! subscribe in the channels of Go neffos v0.0.25's `stackexchange/redis`, so Go and Rust
//! instances can share one Redis during a rolling migration (see the README's "Migrating
//! from Go neffos"). Rust instances keep using the channels above between themselves.
//!
//! ## Connections
//!
//! Two RESP3 connections per instance, whatever the number of WebSocket clients, rooms,
//! subscriptions or Asks, both named `neffos:<instance ID>` (`CLIENT SETNAME`, visible in
//! `CLIENT LIST`):
//!
//! - **publisher**: one task drains one bounded, in-order queue and sends everything
//!   queued so far as one pipeline of `PUBLISH`es (up to
//!   [`max_batch`](RedisExchangeBuilder::max_batch)), then the next. One connection and one
//!   queue keep publications ordered per origin instance, hence per (instance, namespace).
//!   `publish` only enqueues: it never waits for Redis. When the queue is full the payload
//!   is dropped and counted.
//! - **subscriber**: one task owns the subscription table and applies the server's
//!   changes (coalesced, in `SUBSCRIBE`/`UNSUBSCRIBE` commands of up to 256 channels,
//!   confirmed by Redis). Messages arrive as RESP3 pushes and are handed to the server's
//!   inbound queue from the connection's reader without waiting (a full queue drops and
//!   counts), so the connection is drained continuously and a slow server never makes
//!   Redis buffer output for us.
//!
//! [`Exchange::flush`](neffos::Exchange::flush) resolves once every publish queued before it
//! was sent and every subscription change was confirmed by Redis.
//!
//! ## Failures
//!
//! Delivery between instances is at most once and ordered per (origin instance,
//! namespace); local clients never depend on Redis.
//!
//! - A failed publish (broker down, timeout, full queue) is counted in
//!   [`ExchangeStats::publish_errors`](neffos::ExchangeStats) and logged (`tracing`,
//!   once per failed batch or outage, not per message); it never blocks the caller.
//! - A lost connection (closed socket, command timeout, failed health-check `PING` on the
//!   subscriber) is replaced: reconnection attempts wait an exponential, capped, jittered
//!   delay ([`reconnect_backoff`](RedisExchangeBuilder::reconnect_backoff)), at most
//!   100 ms while the broker refuses quickly (a restart), and the other connection retries
//!   at once when one gets through. Every
//!   re-established connection counts one in `ExchangeStats::reconnects`. The subscriber
//!   subscribes its whole table again, so the first message published after the
//!   reconnection arrives. Messages published while an instance was disconnected are lost.
//! - During an outage, publishes fail at once (counted), subscription changes update the
//!   table (applied on reconnection) and `flush` waits for the reconnection.
//!
//! # Feature flags
//!
//! | Name | Description | Default |
//! |---|---|---|
//! | `tls` | `rediss://` URLs, with rustls (ring) and the system's root certificates | no |
//! | `cluster` | [`RedisClusterExchange`]: Redis Cluster with sharded pub/sub | no |
//!
//! # Requirements
//!
//! Redis 6 or newer (RESP3), or a compatible server (Valkey, KeyDB, Dragonfly). With ACLs,
//! the user needs `PUBLISH`, `SUBSCRIBE`, `UNSUBSCRIBE`, `PING`, `CLIENT SETNAME` (optional:
//! a refusal is logged) and `HELLO`, and access to the prefix's channels
//! (`&<prefix>:*`).
//!
//! # Testing
//!
//! The tests start a real `redis-server` with `neffos::testkit::broker::RedisServer`
//! (`apt-get install redis-server`), run the exchange conformance suite on three instances,
//! and check the broker's side (`PUBSUB NUMSUB`, `CLIENT LIST`), `kill -9` and restart.
//! `cargo xtask integration` runs them with the NATS ones.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod channel;
#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub mod cluster;
mod control;
mod driver;
mod error;
mod exchange;
mod gocompat;
mod history;
mod publisher;
mod subscriber;

#[cfg(test)]
mod tests;

pub use channel::DEFAULT_PREFIX;
pub use error::{Error, Result};
pub use exchange::{RedisExchange, RedisExchangeBuilder};
pub use history::{DEFAULT_HISTORY_PREFIX, RedisHistory};

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub use cluster::{ClusterStats, RedisClusterExchange, RedisClusterExchangeBuilder};
