//! Limits and timings of a server or client.

use std::time::Duration;

/// What to do with a stuck client: one whose outbound queue is far over
/// [`Config::outbound_budget`], or over it with no write progress for
/// [`Config::write_stall_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Close that connection with a reason (1008 "slow consumer: …") and count it. The default:
    /// the client reconnects and resynchronises, and nobody else waits for it.
    #[default]
    Close,
    /// Drop the message for that connection only, and count it.
    DropMessage,
}

/// What a broadcast does when recipients that read are behind (their outbound queue over
/// [`Config::outbound_budget`]): the server, not they, cannot keep up with what is offered.
/// Chosen per namespace with [`ServerBuilder::overload`](crate::ServerBuilder::overload).
///
/// Either way nobody is closed for it (only stuck clients are, see
/// [`SlowConsumerPolicy`]), memory stays bounded, and every recipient gets each sender's
/// messages in the order they were sent.
///
/// ```
/// use neffos::{Events, Namespaces, OverloadPolicy, Server};
/// let server = Server::builder(Namespaces::new().namespace("ticker", Events::new()))
///     // Prices: a late quote is worthless, skip it rather than slow down the feed.
///     .overload("ticker", OverloadPolicy::Shed)
///     .build();
/// assert_eq!(server.overload_policy("ticker"), OverloadPolicy::Shed);
/// assert_eq!(server.overload_policy("chat"), OverloadPolicy::PushBack);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OverloadPolicy {
    /// Deliver everything: the connection whose handler published stops being read until
    /// the recipients caught up, and TCP carries the pause to the publishing client
    /// (counted in [`StatsSnapshot::publisher_pushbacks`](crate::StatsSnapshot::publisher_pushbacks)).
    /// Broadcasts from [`Server::broadcast`](crate::Server::broadcast) outside a handler and
    /// from other instances are queued up to four times the budget. The default: chat,
    /// commands, anything where every message matters.
    #[default]
    PushBack,
    /// Skip the broadcast for a recipient whose queue is over its budget, and count it
    /// ([`StatsSnapshot::shed_frames`](crate::StatsSnapshot::shed_frames), metric
    /// `neffos_shed_frames_total{namespace}`); publishers are never paused. For feeds where
    /// a newer message replaces an older one (prices, positions, dashboards). Frames already
    /// queued keep their order, so each sender's messages arrive in order, with gaps.
    Shed,
}

/// Limits and timings applied to every connection.
///
/// Every field's default is stated with it. Everything a client can make the server hold
/// is bounded in bytes, so the worst case of one hostile connection with the defaults is:
///
/// | what | bound (default) |
/// |---|---|
/// | request head kept with the connection ([`max_request_head`](Self::max_request_head)) | 16 KiB |
/// | WebSocket read and write buffers ([`read_buffer_size`](Self::read_buffer_size), [`write_buffer_size`](Self::write_buffer_size)) | 4 + 8 KiB |
/// | one message being reassembled ([`max_message_size`](Self::max_message_size)) | 64 KiB |
/// | frames read but not handled yet, and frames sent before `M` ([`inbound_budget`](Self::inbound_budget)) | 64 KiB + one message |
/// | outbound queue: replies to its own requests, frames sent to it alone ([`outbound_budget`](Self::outbound_budget)) | 256 KiB + one reply |
/// | outbound queue: broadcast frames (shared by all recipients, counted at full length) | 4 × 256 KiB |
/// | connection state (indexes, tasks, timers) | ≈ 9 KiB |
///
/// That is ≈ 0.5 MiB of memory of its own per connection (≈ 5 GiB for 10,000 hostile
/// connections) plus, when broadcasts back up, pointers to frames that exist once for all
/// recipients. A reply is as large as your handler makes it; replies wait for room in the
/// queue, so at most one is held beyond the budget. A connection over a budget is closed
/// with a close code and reason (see each field) and counted in
/// [`StatsSnapshot::budget_closes`](crate::StatsSnapshot::budget_closes).
///
/// ```
/// use std::time::Duration;
/// let config = neffos::Config::default()
///     .max_message_size(64 * 1024)
///     .ping_interval(Some(Duration::from_secs(20)));
/// assert_eq!(config.max_message_size, 64 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest accepted incoming message, in bytes, after its frames are reassembled
    /// (larger closes with 1009 "message too big"). Default 64 KiB.
    pub max_message_size: usize,
    /// Largest accepted single incoming WebSocket frame, in bytes (larger closes with 1009).
    /// Default 64 KiB; at most [`max_message_size`](Self::max_message_size) is useful.
    pub max_frame_size: usize,
    /// Largest wait/namespace/room/event field, in bytes. Default 1 KiB.
    pub max_field_len: usize,
    /// Bytes of frames that may wait in one connection's outbound queue (each frame
    /// counts its length plus 64 bytes), broadcast frames included although they are
    /// shared. Default 256 KiB.
    ///
    /// Replies to the connection's own requests wait while the queue is over it (reading
    /// from that client pauses: TCP pushes back). A broadcast may take the queue up to four
    /// times this budget, then applies [`slow_consumer`](Self::slow_consumer); so does a
    /// queue over the budget whose writer made no progress for
    /// [`write_stall_timeout`](Self::write_stall_timeout). Closes with 1008 "slow consumer: …".
    ///
    /// Readers that fall behind while they read (a burst, a server momentarily behind for
    /// everyone) are not closed: when a handler's broadcast leaves a quarter of its recipients
    /// over this budget, or one over twice it, the connection of that handler stops being
    /// read until they caught up (at most the stall timeout), and TCP pushes back on the
    /// publisher. Counted in [`StatsSnapshot::publisher_pushbacks`](crate::StatsSnapshot::publisher_pushbacks).
    /// Well before that, under either [`OverloadPolicy`]: a handler's broadcast that finds most
    /// of its recipients with frames still waiting for their writers makes that connection read
    /// on only once the writers had their turn (at most 10 ms), so that what the client sent
    /// meanwhile reaches each recipient as one burst; counted in
    /// [`StatsSnapshot::publisher_paces`](crate::StatsSnapshot::publisher_paces).
    pub outbound_budget: usize,
    /// Frames that may wait in one connection's outbound queue, on top of
    /// [`outbound_budget`](Self::outbound_budget). Default 16,384.
    pub outbound_queue: usize,
    /// A connection whose queue is over [`outbound_budget`](Self::outbound_budget) and whose
    /// writer made no progress for this long is a stuck client: the
    /// [`slow_consumer`](Self::slow_consumer) policy applies. Default 10 s.
    pub write_stall_timeout: Duration,
    /// Policy for a stuck client (see [`outbound_budget`](Self::outbound_budget)). Default
    /// [`SlowConsumerPolicy::Close`].
    pub slow_consumer: SlowConsumerPolicy,
    /// Frames read ahead while a handler runs, before reading pauses (backpressure).
    /// Default 64.
    pub inbound_queue: usize,
    /// Bytes of frames read ahead while a handler runs before reading pauses (backpressure),
    /// and of frames a client may send before its `M` acknowledgement request (past it:
    /// close 1008 "too many bytes before the acknowledgement"). Default 64 KiB.
    pub inbound_budget: usize,
    /// Envelopes from other instances (through the exchanges) waiting to be handled: local
    /// deliveries, Asks, replies. Past it, an exchange's reader does not wait: the envelope
    /// is dropped and counted ([`Inbound::dropped`](crate::Inbound::dropped)). Default 16,384.
    pub exchange_inbound_queue: usize,
    /// Bytes of the upgrade request kept with the connection: URI plus headers, the ones
    /// made from `X-Websocket-Header-*` query parameters included (each header counts its
    /// name, value and 32 bytes). Larger: 431 before the upgrade. Default 16 KiB.
    pub max_request_head: usize,
    /// Namespaces one connection may have connected at once. Default 64.
    pub max_namespaces: usize,
    /// Rooms one connection may have joined, per namespace. Default 1,024.
    pub max_rooms: usize,
    /// Asks this side may have pending on one connection. Default 128.
    pub max_pending_asks: usize,
    /// Frames a client may send before its `M` acknowledgement request. Default 32.
    pub max_early_frames: usize,
    /// Time a new connection has to send its acknowledgement request. Default 10 s.
    pub handshake_timeout: Duration,
    /// Ping interval (`None`: no pings). Default 25 s.
    pub ping_interval: Option<Duration>,
    /// Close a connection after this long without any incoming frame (pongs count).
    /// Default 60 s.
    pub idle_timeout: Option<Duration>,
    /// Default deadline of Asks that do not set one. Default 10 s.
    pub ask_timeout: Duration,
    /// How long a close frame may take to write before the socket is dropped. Default 1 s.
    pub close_timeout: Duration,
    /// Size of the WebSocket read buffer (tungstenite's default is 128 KiB; ours is small,
    /// since memory per idle connection matters). Default 4 KiB.
    pub read_buffer_size: usize,
    /// Bytes buffered by the WebSocket writer before it writes to the socket. Default 8 KiB.
    pub write_buffer_size: usize,
    /// Open WebSocket connections accepted at once, handshakes included (`None`: no limit).
    /// Past it, upgrades are answered 503. Default `None`.
    pub max_connections: Option<usize>,
    /// Open connections per remote IP address (`None`: no limit). Past it, 429. Needs the
    /// peer's address: [`serve`](crate::serve) supplies it; with `axum::serve`, use
    /// `into_make_service_with_connect_info::<SocketAddr>()` (without it the limit cannot
    /// apply, and the server warns once). Default `None`.
    pub max_connections_per_ip: Option<usize>,
    /// Frames one connection may send per second, with a burst of the same size
    /// (`None`: no limit). Past it, the connection is closed with 1008. Default `None`.
    pub max_messages_per_second: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: 64 * 1024,
            max_frame_size: 64 * 1024,
            max_field_len: 1024,
            outbound_budget: 256 * 1024,
            outbound_queue: 16 * 1024,
            write_stall_timeout: Duration::from_secs(10),
            slow_consumer: SlowConsumerPolicy::Close,
            inbound_queue: 64,
            inbound_budget: 64 * 1024,
            exchange_inbound_queue: 16 * 1024,
            max_request_head: 16 * 1024,
            max_namespaces: 64,
            max_rooms: 1024,
            max_pending_asks: 128,
            max_early_frames: 32,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(25)),
            idle_timeout: Some(Duration::from_secs(60)),
            ask_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(1),
            read_buffer_size: 4 * 1024,
            write_buffer_size: 8 * 1024,
            max_connections: None,
            max_connections_per_ip: None,
            max_messages_per_second: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        impl Config {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`Config::max_message_size`].
    max_message_size: usize,
    /// Sets [`Config::max_frame_size`].
    max_frame_size: usize,
    /// Sets [`Config::outbound_budget`].
    outbound_budget: usize,
    /// Sets [`Config::write_stall_timeout`].
    write_stall_timeout: Duration,
    /// Sets [`Config::inbound_budget`].
    inbound_budget: usize,
    /// Sets [`Config::max_request_head`].
    max_request_head: usize,
    /// Sets [`Config::max_field_len`].
    max_field_len: usize,
    /// Sets [`Config::outbound_queue`].
    outbound_queue: usize,
    /// Sets [`Config::slow_consumer`].
    slow_consumer: SlowConsumerPolicy,
    /// Sets [`Config::inbound_queue`].
    inbound_queue: usize,
    /// Sets [`Config::exchange_inbound_queue`].
    exchange_inbound_queue: usize,
    /// Sets [`Config::max_namespaces`].
    max_namespaces: usize,
    /// Sets [`Config::max_rooms`].
    max_rooms: usize,
    /// Sets [`Config::max_pending_asks`].
    max_pending_asks: usize,
    /// Sets [`Config::max_early_frames`].
    max_early_frames: usize,
    /// Sets [`Config::handshake_timeout`].
    handshake_timeout: Duration,
    /// Sets [`Config::ping_interval`].
    ping_interval: Option<Duration>,
    /// Sets [`Config::idle_timeout`].
    idle_timeout: Option<Duration>,
    /// Sets [`Config::ask_timeout`].
    ask_timeout: Duration,
    /// Sets [`Config::close_timeout`].
    close_timeout: Duration,
    /// Sets [`Config::read_buffer_size`].
    read_buffer_size: usize,
    /// Sets [`Config::write_buffer_size`].
    write_buffer_size: usize,
    /// Sets [`Config::max_connections`].
    max_connections: Option<usize>,
    /// Sets [`Config::max_connections_per_ip`].
    max_connections_per_ip: Option<usize>,
    /// Sets [`Config::max_messages_per_second`].
    max_messages_per_second: Option<u32>,
}
