//! Limits and timings of a server or client.

use std::time::Duration;

/// What to do with a connection whose outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Close that connection with a reason (1008 "slow consumer") and count it. The default:
    /// the client reconnects and resynchronises, and nobody else waits for it.
    #[default]
    Close,
    /// Drop the message for that connection only, and count it.
    DropMessage,
}

/// Limits and timings applied to every connection.
///
/// ```
/// use std::time::Duration;
/// let config = neffos::Config::default()
///     .max_frame_size(64 * 1024)
///     .ping_interval(Some(Duration::from_secs(20)));
/// assert_eq!(config.max_frame_size, 64 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest accepted incoming frame, in bytes (larger closes with 1009).
    pub max_frame_size: usize,
    /// Largest wait/namespace/room/event field, in bytes.
    pub max_field_len: usize,
    /// Encoded frames that may wait in one connection's outbound queue.
    pub outbound_queue: usize,
    /// Policy when that queue is full.
    pub slow_consumer: SlowConsumerPolicy,
    /// Frames read ahead while a handler runs, before reading pauses (backpressure).
    pub inbound_queue: usize,
    /// Namespaces one connection may have connected at once.
    pub max_namespaces: usize,
    /// Rooms one connection may have joined, per namespace.
    pub max_rooms: usize,
    /// Asks this side may have pending on one connection.
    pub max_pending_asks: usize,
    /// Frames a client may send before its `M` acknowledgement request.
    pub max_early_frames: usize,
    /// Time a new connection has to send its acknowledgement request.
    pub handshake_timeout: Duration,
    /// Ping interval (`None`: no pings).
    pub ping_interval: Option<Duration>,
    /// Close a connection after this long without any incoming frame (pongs count).
    pub idle_timeout: Option<Duration>,
    /// Default deadline of Asks that do not set one.
    pub ask_timeout: Duration,
    /// How long a close frame may take to write before the socket is dropped.
    pub close_timeout: Duration,
    /// Size of the WebSocket read buffer (tungstenite's default is 128 KiB; ours is small,
    /// since memory per idle connection matters).
    pub read_buffer_size: usize,
    /// Bytes buffered by the WebSocket writer before it writes to the socket.
    pub write_buffer_size: usize,
    /// Open WebSocket connections accepted at once, handshakes included (`None`: no limit).
    /// Past it, upgrades are answered 503.
    pub max_connections: Option<usize>,
    /// Open connections per remote IP address (`None`: no limit). Past it, 429.
    pub max_connections_per_ip: Option<usize>,
    /// Frames one connection may send per second, with a burst of the same size
    /// (`None`: no limit). Past it, the connection is closed with 1008.
    pub max_messages_per_second: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 1 << 20,
            max_field_len: 1024,
            outbound_queue: 256,
            slow_consumer: SlowConsumerPolicy::Close,
            inbound_queue: 64,
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
    /// Sets [`Config::max_frame_size`].
    max_frame_size: usize,
    /// Sets [`Config::max_field_len`].
    max_field_len: usize,
    /// Sets [`Config::outbound_queue`].
    outbound_queue: usize,
    /// Sets [`Config::slow_consumer`].
    slow_consumer: SlowConsumerPolicy,
    /// Sets [`Config::inbound_queue`].
    inbound_queue: usize,
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
