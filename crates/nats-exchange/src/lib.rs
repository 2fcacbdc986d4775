//! `neffos-nats`: scale a [neffos-rs](neffos) server out over [NATS](https://nats.io).
//!
//! Give every server instance a [`NatsExchange`] on the same NATS server or cluster (and
//! the same [prefix](NatsExchangeBuilder::prefix)): broadcasts, sends to a connection ID
//! and [`Server::ask`](neffos::Server::ask) then reach clients on every instance.
//!
//! ```no_run
//! use neffos::{Events, Namespaces, Server};
//! use neffos_nats::{ConnectOptions, NatsExchange};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let exchange = NatsExchange::builder("nats://127.0.0.1:4222")
//!     .prefix("chat")
//!     .options(ConnectOptions::with_token("s3cr3t"))
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
//! exchange maps topics to NATS subjects and moves envelopes.
//!
//! ## Subjects
//!
//! | topic | subject | subscribed while |
//! |---|---|---|
//! | namespace `ns` | `<prefix>.ns.<value(ns)>` | a local connection is in `ns` |
//! | connection ID `id` | `<prefix>.conn.<value(id)>` | a local connection has ID `id` |
//! | inbox of instance `u` | `<prefix>.inbox.<u>` | the instance runs (Ask replies) |
//! | flush barrier | `<prefix>.flush.<exchange id>` | never (see below) |
//!
//! `value(v)` is always exactly one token, never empty and never a wildcard: the bytes
//! `A-Z a-z 0-9 - _` of `v` stay as they are and every other byte is written `%XX`
//! (uppercase hex), so `chat` is `chat`, `a.*` is `a%2E%2A`, `a b` is `a%20b` and `é` is
//! `%C3%A9`; the default namespace `""` is `%` (which no other value gives). A value whose
//! subject would exceed 1,024 bytes is written `~` + its SHA-256 in hex instead, so that a
//! long connection ID can never push a protocol line past the server's
//! `max_control_line` (which would make `nats-server` close the instance's connection).
//! Hence no namespace, room or ID can name another subject or match as a wildcard, the
//! default namespace scales out, and namespace `x` and connection `x` are different
//! subjects. The prefix (default `neffos`) is made of dot-separated tokens of
//! `A-Z a-z 0-9 - _`, so applications with different prefixes never share a subject.
//! Rooms are not subjects: a room broadcast travels on its namespace's subject and the
//! receiving instance delivers it to its local room members. [`NatsExchange::subject`]
//! gives the subject of a topic.
//!
//! Subscriptions are plain subjects, never wildcards. An instance subscribes to a
//! namespace when its first local client joins it and unsubscribes when the last leaves,
//! so an instance without local interest receives nothing for that namespace.
//!
//! Payloads are the server's envelopes (MessagePack), as bytes, without NATS headers.
//! Anything else published on these subjects is handed over as bytes too; the server
//! fails to decode it, counts it (`StatsSnapshot::malformed_envelopes`) and drops it.
//!
//! ## Go neffos compatibility
//!
//! [`NatsExchangeBuilder::go_compat`] (off by default) makes the instance also publish and
//! subscribe on the subjects of Go neffos v0.0.25's `stackexchange/nats`, so Go and Rust
//! instances can share one NATS during a rolling migration (see the README's "Migrating
//! from Go neffos"). Rust instances keep using the subjects above between themselves.
//!
//! ## One connection
//!
//! One NATS connection per instance, whatever the number of WebSocket clients, rooms,
//! subscriptions or Asks: it publishes and it carries every subscription (NATS multiplexes
//! them). One task owns the `async-nats` client and takes the server's requests from one
//! in-order queue: `publish`, `subscribe` and `unsubscribe` only enqueue and never wait
//! for NATS. Publications therefore leave in order, hence are received in order per
//! (origin instance, namespace). The same task drains every subscription continuously
//! into the server's inbound queue, which never blocks (a full server queue drops and
//! counts); a slow server therefore never makes NATS mark the instance a slow consumer.
//! The connection is made with `no_echo`: an instance does not receive what it publishes.
//!
//! [`Exchange::flush`](neffos::Exchange::flush) resolves once the broker processed
//! everything queued before it. `async-nats`'s own `Client::flush` only writes the
//! socket, so the exchange sends a request to the flush subject, which nobody subscribes:
//! `nats-server` answers "no responders" after it processed the connection's earlier
//! `PUB`, `SUB` and `UNSUB`s. That request uses `async-nats`'s reply subscription
//! (`_INBOX.<random>.*`, on the same connection).
//!
//! ## Failures
//!
//! Delivery between instances is at most once and ordered per (origin instance,
//! namespace); local clients never depend on NATS.
//!
//! - A failed publish is counted in [`ExchangeStats::publish_errors`](neffos::ExchangeStats)
//!   and logged (`tracing`, once per outage, not per message); it never blocks the caller.
//!   Failures are: disconnected from NATS (dropped at once), `async-nats`'s command queue
//!   full for longer than [`publish_timeout`](NatsExchangeBuilder::publish_timeout) (a
//!   frozen broker; later publishes do not wait until one fits again), this exchange's
//!   queue full ([`queue_capacity`](NatsExchangeBuilder::queue_capacity)), a payload over
//!   the server's `max_payload`, and publish permission violations reported by the server.
//! - A lost connection is re-established by `async-nats` itself, with its backoff
//!   (immediately, then 2 ms doubling up to 4 s, across the URL list; configurable with
//!   `ConnectOptions::reconnect_delay_callback`). After each reconnection `async-nats`
//!   sends every subscription again, so the first message published after the
//!   reconnection arrives; each one counts one in `ExchangeStats::reconnects`. Messages
//!   published while an instance was disconnected are lost.
//! - During an outage subscription changes are queued and applied after the
//!   reconnection, and `flush` waits for the reconnection, at most
//!   [`flush_timeout`](NatsExchangeBuilder::flush_timeout).
//! - Messages `async-nats` had to drop because a subscription's queue was full (64 Ki
//!   messages by default) are logged as slow-consumer events.
//!
//! # Feature flags
//!
//! | Name | Description | Default |
//! |---|---|---|
//! | `tls` | TLS (`tls://` URLs, `require_tls`, client certificates) with rustls and ring | no |
//! | `nkeys` | NKey and JWT/credentials-file authentication | no |
//!
//! User/password and token authentication need no feature. Without `tls`, a `tls://` URL
//! is refused with [`Error::TlsNotEnabled`] unless the application installed a
//! process-wide rustls `CryptoProvider`.
//!
//! # Requirements
//!
//! `nats-server` 2.2 or newer (headers and "no responders", used by `flush`). With
//! permissions, the user needs to publish and subscribe `<prefix>.>` and to subscribe
//! `_INBOX.>` (or the `custom_inbox_prefix` set in the options).
//!
//! # Testing
//!
//! The tests start a real `nats-server` with `neffos::testkit::broker::NatsServer`
//! (`apt-get install nats-server`), run the exchange conformance suite on three
//! instances, and check the broker's side through its monitoring endpoint (`/connz`),
//! `kill -9` and restart, and every kind of namespace and ID name.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod actor;
mod error;
mod exchange;
mod gocompat;
#[cfg(feature = "history")]
mod history;
mod interest;
mod options;
mod reconnect;
mod subject;

pub use error::{Error, Result};
pub use exchange::{NatsExchange, NatsExchangeBuilder};
#[cfg(feature = "history")]
pub use history::NatsHistory;
pub use options::{ConnectOptions, NatsEvent};
pub use subject::DEFAULT_PREFIX;
