//! One connection, from either side: its state, its handles ([`Conn`], [`NsConn`],
//! [`Room`]) and its engine (one task: reader, dispatcher and writer).

mod ask;
pub(crate) mod engine;
mod hub;
mod latch;
pub(crate) mod link;
mod ns_table;
pub(crate) mod pressure;
mod queue;
mod rounds;
mod system;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use bytestring::ByteString;
use http::{HeaderMap, Uri};
use neffos_protocol::{Frame, Message, NativeMode, events};
use parking_lot::Mutex;

pub(crate) use ask::{PendingAsks, ask_context};
pub(crate) use hub::{Count, Hub};
pub(crate) use latch::{Latch, OwnedLatch};
pub(crate) use queue::{Fill, Limits, OutQueue, PushError};
pub(crate) use rounds::Rounds;
pub(crate) use system::{force_connect, force_join};

use crate::config::{Config, SlowConsumerPolicy};
use crate::error::{
    AskError, BroadcastError, BroadcastErrorKind, NamespaceError, RoomError, WriteError,
    WriteErrorKind,
};
use crate::handler::Namespaces;
use crate::server::{Server, Target};
use crate::transport::WsOut;

/// Which side of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Server,
    Client,
}

/// Close codes we send.
pub(crate) mod close_code {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// RFC 6455: data inconsistent with the message type (a text frame that is not UTF-8).
    pub(crate) const INVALID_DATA: u16 = 1007;
    pub(crate) const POLICY: u16 = 1008;
    pub(crate) const TOO_BIG: u16 = 1009;
}

/// The HTTP request that opened a server-side connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    pub(crate) headers: HeaderMap,
    pub(crate) uri: Uri,
    pub(crate) remote_addr: Option<SocketAddr>,
}

pub(crate) use ns_table::NsTable;

pub(crate) struct ConnInner {
    /// Unique per process; IDs need not be unique (several tabs of one user may share one).
    pub(crate) key: u64,
    pub(crate) id: ByteString,
    pub(crate) role: Role,
    /// Frames waiting for the writer.
    pub(crate) queue: OutQueue,
    pub(crate) cancel: OwnedLatch,
    /// Set once, at close (boxed: 16 bytes inline, not 40, for the connection's life).
    close_reason: Mutex<Option<Box<(u16, String)>>>,
    pub(crate) acknowledged: AtomicBool,
    /// The socket's read side woke the task since the link last read ([`link`]).
    pub(crate) read_woken: AtomicBool,
    pub(crate) namespaces: Mutex<NsTable>,
    pub(crate) asks: PendingAsks,
    extensions: Mutex<http::Extensions>,
    pub(crate) request: RequestInfo,
    pub(crate) handlers: Arc<Namespaces>,
    pub(crate) config: Arc<Config>,
    pub(crate) native: NativeMode,
    pub(crate) server: Hub,
    pub(crate) dropped_frames: AtomicU64,
    /// Recipients one of its handlers' broadcasts left behind, or the writers' round it is
    /// paced on: its reading pauses until they caught up ([`pressure`]).
    pub(crate) held: Mutex<pressure::Held>,
    /// Woken whenever a namespace is connected or disconnected.
    /// (made by the first waiter, the client's `connect`: servers never wait on it).
    namespaces_changed: std::sync::OnceLock<Box<tokio::sync::Notify>>,
    /// Namespaces and rooms at the moment the connection closed (for reconnection).
    pub(crate) last_namespaces: Mutex<Option<Box<NsTable>>>,
    /// Cancelled once the connection is closed and fully cleaned up.
    pub(crate) finished: Latch,
    /// Connection-state recovery: the session it presented, or the client's tracker.
    pub(crate) recovery: std::sync::OnceLock<crate::recovery::Attached>,
}

impl fmt::Debug for ConnInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

pub(crate) struct NewConn {
    pub(crate) key: u64,
    pub(crate) id: ByteString,
    pub(crate) role: Role,
    pub(crate) request: RequestInfo,
    pub(crate) handlers: Arc<Namespaces>,
    pub(crate) config: Arc<Config>,
    pub(crate) server: Hub,
}

impl ConnInner {
    pub(crate) fn new(new: NewConn) -> Arc<Self> {
        let native = new.handlers.native_mode();
        Arc::new(ConnInner {
            key: new.key,
            id: new.id,
            role: new.role,
            queue: OutQueue::new(Limits {
                frames: new.config.outbound_queue,
                budget: new.config.outbound_budget,
                stall: new.config.write_stall_timeout,
            }),
            cancel: OwnedLatch::new(),
            close_reason: Mutex::new(None),
            acknowledged: AtomicBool::new(false),
            read_woken: AtomicBool::new(false),
            namespaces: Mutex::new(NsTable::default()),
            asks: PendingAsks::new(),
            extensions: Mutex::new(http::Extensions::new()),
            request: new.request,
            handlers: new.handlers,
            config: new.config,
            native,
            server: new.server,
            dropped_frames: AtomicU64::new(0),
            held: Mutex::new(pressure::Held::default()),
            namespaces_changed: std::sync::OnceLock::new(),
            last_namespaces: Mutex::new(None),
            finished: Latch::new(),
            recovery: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Closes with `code` and `reason` (the first reason wins).
    pub(crate) fn close(&self, code: u16, reason: impl Into<String>) {
        {
            let mut slot = self.close_reason.lock();
            if slot.is_none() {
                *slot = Some(Box::new((code, reason.into())));
            }
        }
        self.cancel.cancel();
    }

    /// Woken whenever a namespace is connected or disconnected.
    #[cfg(feature = "client")]
    pub(crate) fn namespaces_changed(&self) -> &tokio::sync::Notify {
        self.namespaces_changed.get_or_init(Box::default)
    }

    /// Wakes whoever waits in [`Self::namespaces_changed`].
    pub(crate) fn notify_namespaces_changed(&self) {
        if let Some(changed) = self.namespaces_changed.get() {
            changed.notify_waiters();
        }
    }

    pub(crate) fn close_reason(&self) -> Option<(u16, String)> {
        self.close_reason.lock().as_deref().cloned()
    }

    /// Queues an encoded frame without waiting; a stuck client gets the slow-consumer policy.
    /// Tells whether the queue is over its budget now (the recipient is behind).
    pub(crate) fn enqueue(&self, out: WsOut) -> Result<Fill, WriteErrorKind> {
        if self.is_closed() {
            return Err(WriteErrorKind::Closed);
        }
        match self.queue.try_push(out) {
            Ok(fill) => Ok(fill),
            Err(refused) => self.refused(refused).map(|()| Fill::Over),
        }
    }

    /// [`Self::enqueue`] for a burst of frames: one lock round and one wake-up. Tells how
    /// far over its budget the queue got; a frame refused refuses the rest of the burst.
    pub(crate) fn enqueue_all(&self, frames: &[WsOut]) -> Result<Fill, WriteErrorKind> {
        if self.is_closed() {
            return Err(WriteErrorKind::Closed);
        }
        match self.queue.try_push_all(frames.iter().cloned()) {
            Ok(fill) => Ok(fill),
            Err((refused, n)) => {
                if let (SlowConsumerPolicy::DropMessage, PushError::Full | PushError::Stalled) =
                    (self.config.slow_consumer, refused)
                    && n > 1
                {
                    self.dropped_frames
                        .fetch_add(n as u64 - 1, Ordering::Relaxed);
                }
                self.refused(refused).map(|()| Fill::Over)
            }
        }
    }

    /// Queues broadcast frames of a namespace with [`OverloadPolicy::Shed`]: over the
    /// budget a frame is skipped for this connection (counted by the caller, `Ok((_, shed))`)
    /// instead of pushing back on the publisher; a stuck client gets the slow-consumer
    /// policy as with [`Self::enqueue`].
    ///
    /// [`OverloadPolicy::Shed`]: crate::OverloadPolicy::Shed
    pub(crate) fn enqueue_or_shed_all(
        &self,
        frames: &[WsOut],
    ) -> Result<(Fill, usize), WriteErrorKind> {
        if self.is_closed() {
            return Err(WriteErrorKind::Closed);
        }
        match self.queue.try_push_or_shed_all(frames.iter().cloned()) {
            Ok(queued) => Ok(queued),
            Err(refused) => self.refused(refused).map(|()| (Fill::Over, 0)),
        }
    }

    /// A frame the queue refused: closed, or a stuck client under the slow-consumer policy
    /// (`Ok`: the frame was dropped and counted; `Err`: the connection is closed).
    fn refused(&self, why: PushError) -> Result<(), WriteErrorKind> {
        match (why, self.config.slow_consumer) {
            (PushError::Closed, _) => Err(WriteErrorKind::Closed),
            (_, SlowConsumerPolicy::DropMessage) => {
                self.dropped_frames.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            (stuck, _) => {
                self.close_stuck(stuck);
                Err(WriteErrorKind::Closed)
            }
        }
    }

    /// Closes a client that does not read what it is sent (1008 "slow consumer: …").
    fn close_stuck(&self, why: PushError) {
        let reason = match why {
            PushError::Stalled => "slow consumer: no write progress",
            _ => "slow consumer: outbound budget exceeded",
        };
        tracing::warn!(id = %self.id, reason, "closing a stuck client");
        if !self.is_closed() {
            self.server.count(Count::SlowConsumerClose);
        }
        self.close(close_code::POLICY, reason);
    }

    /// Whether `namespace` is connected and, if `room` is not empty, `room` joined.
    pub(crate) fn can_receive(&self, namespace: &str, room: &str) -> bool {
        let table = self.namespaces.lock();
        match table.get(namespace) {
            Some(rooms) => room.is_empty() || rooms.contains(room),
            None => false,
        }
    }

    /// The write filter of PROTOCOL.md §5.3, then encode and queue.
    pub(crate) fn write(&self, msg: &Message) -> Result<(), WriteErrorKind> {
        let frame = self.filter_and_encode(msg)?;
        self.enqueue(WsOut::Frame(frame)).map(drop)
    }

    /// Like [`Self::write`], but waits while the queue is over its byte budget instead of
    /// applying the slow-consumer policy: for answers to the peer's own requests, where
    /// waiting only slows down that peer (its reader pauses, TCP pushes back).
    pub(crate) async fn write_async(&self, msg: &Message) -> Result<(), WriteErrorKind> {
        let frame = self.filter_and_encode(msg)?;
        self.send_frame(frame).await
    }

    /// Queues `frame` once the queue is within its byte budget; fails once the connection
    /// closes. A queue that stays over the budget without write progress closes the
    /// connection as a stuck client.
    pub(crate) async fn send_frame(&self, frame: Frame) -> Result<(), WriteErrorKind> {
        let sent = tokio::select! {
            sent = self.queue.push(WsOut::Frame(frame)) => sent,
            () = self.cancel.cancelled() => Err(PushError::Closed),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(WriteErrorKind::Closed),
            Err(stuck) => {
                self.close_stuck(stuck);
                Err(WriteErrorKind::Closed)
            }
        }
    }

    /// The public error for a write of `msg` that failed with `kind`.
    pub(crate) fn write_error(&self, kind: WriteErrorKind, msg: &Message) -> WriteError {
        WriteError::new(kind, format!("emit {}", describe(msg, &self.id)))
    }

    fn filter_and_encode(&self, msg: &Message) -> Result<Frame, WriteErrorKind> {
        if self.is_closed() {
            return Err(WriteErrorKind::Closed);
        }
        if !self.acknowledged.load(Ordering::Acquire) {
            return Err(WriteErrorKind::NotReady);
        }
        let event = &*msg.event;
        let bypass_ns =
            event == events::ON_NAMESPACE_CONNECT || event == events::ON_NAMESPACE_DISCONNECT;
        let bypass_room = event == events::ON_ROOM_JOIN
            || event == events::ON_ROOM_LEFT
            || event == events::ON_ROOM_LEAVE;
        if !bypass_ns && !msg.is_native {
            let table = self.namespaces.lock();
            let Some(rooms) = table.get(&msg.namespace) else {
                return Err(WriteErrorKind::NamespaceNotConnected);
            };
            if !msg.room.is_empty() && !bypass_room && !rooms.contains(&*msg.room) {
                return Err(WriteErrorKind::RoomNotJoined);
            }
        }
        if !msg.binary && std::str::from_utf8(&msg.body).is_err() {
            return Err(WriteErrorKind::InvalidText);
        }
        Ok(msg.to_frame())
    }

    pub(crate) fn set_extension<T: Clone + Send + Sync + 'static>(&self, value: T) {
        self.extensions.lock().insert(value);
    }

    pub(crate) fn extend(&self, extensions: http::Extensions) {
        self.extensions.lock().extend(extensions);
    }

    pub(crate) fn get_extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.extensions.lock().get::<T>().cloned()
    }
}

/// A connection, on the server (one per client) or the client side. Cheap to clone.
#[derive(Clone)]
pub struct Conn(pub(crate) Arc<ConnInner>);

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Conn {
    /// The connection ID (chosen by the server's ID generator; not necessarily unique).
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// True on the client side.
    pub fn is_client(&self) -> bool {
        self.0.role == Role::Client
    }

    /// Headers of the upgrade request (server side), with `X-Websocket-Header-*` query
    /// parameters already turned into headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.request.headers
    }

    /// URI of the upgrade request (server side).
    pub fn uri(&self) -> &Uri {
        &self.0.request.uri
    }

    /// Query string of the upgrade request, if any.
    pub fn query(&self) -> Option<&str> {
        self.0.request.uri.query()
    }

    /// Remote address of the peer, when the transport knows it.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.0.request.remote_addr
    }

    /// The reconnection counter sent by neffos.js (`X-Websocket-Reconnect`), 0 if none.
    pub fn reconnect_tries(&self) -> u32 {
        self.headers()
            .get("x-websocket-reconnect")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Stores a typed value in this connection's state (one value per type).
    pub fn set<T: Clone + Send + Sync + 'static>(&self, value: T) {
        self.0.set_extension(value);
    }

    /// A typed value stored with [`Conn::set`].
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.0.get_extension()
    }

    /// The connected namespace `ns`, if connected.
    pub fn namespace(&self, ns: &str) -> Option<NsConn> {
        let table = self.0.namespaces.lock();
        table.get_key_value(ns).map(|(k, _)| NsConn {
            conn: self.clone(),
            ns: k.clone(),
        })
    }

    /// Names of the connected namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        self.0
            .namespaces
            .lock()
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    /// Asks the peer to connect namespace `ns` (a client connects; a server forces).
    pub async fn connect(&self, ns: &str) -> Result<NsConn, NamespaceError> {
        system::ask_connect(&self.0, ByteString::from(ns)).await?;
        Ok(NsConn {
            conn: self.clone(),
            ns: ByteString::from(ns),
        })
    }

    /// Sends any neffos message through the write filter (namespace connected, room joined).
    pub fn write(&self, msg: &Message) -> Result<(), WriteError> {
        self.0
            .write(msg)
            .map_err(|kind| self.0.write_error(kind, msg))
    }

    /// Asks the peer and waits for its reply (until [`Config::ask_timeout`]).
    pub async fn ask(&self, msg: Message) -> Result<Message, AskError> {
        self.0.ask(msg, self.0.config.ask_timeout).await
    }

    /// Closes the connection normally (1000).
    pub fn close(&self) {
        self.0.close(close_code::NORMAL, "");
    }

    /// Closes with a close code and reason.
    pub fn close_with(&self, code: u16, reason: impl Into<String>) {
        self.0.close(code, reason);
    }

    /// True once the connection is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Waits until the connection is closed.
    pub async fn closed(&self) {
        self.0.cancel.cancelled().await;
    }

    /// The server this connection belongs to (server side).
    pub fn server(&self) -> Option<Server> {
        self.0.server.shared().cloned().map(Server)
    }
}

/// A connection within one connected namespace: what event handlers receive. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NsConn {
    conn: Conn,
    ns: ByteString,
}

impl NsConn {
    pub(crate) fn new(conn: Conn, ns: ByteString) -> Self {
        NsConn { conn, ns }
    }

    /// The connection.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The namespace name.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Sends `event` with a text `body` to the peer (fire-and-forget).
    pub fn emit(&self, event: &str, body: impl Into<Bytes>) -> Result<(), WriteError> {
        self.conn.write(&Message::new(self.ns.clone(), event, body))
    }

    /// Sends `event` with a binary `body` (binary WebSocket frame).
    pub fn emit_binary(&self, event: &str, body: impl Into<Bytes>) -> Result<(), WriteError> {
        self.conn
            .write(&Message::new(self.ns.clone(), event, body).with_binary(true))
    }

    /// Sends `event` with `value` as a JSON body (text frame), as neffos.js's
    /// `JSON.stringify` and Go's `neffos.Marshal` do.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn emit_json<T: serde::Serialize + ?Sized>(
        &self,
        event: &str,
        value: &T,
    ) -> Result<(), WriteError> {
        self.emit_as::<crate::body::Json<()>, T>(event, value)
    }

    /// Sends `event` with `value` as a MessagePack body (binary frame).
    #[cfg(feature = "msgpack")]
    #[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
    pub fn emit_msgpack<T: serde::Serialize + ?Sized>(
        &self,
        event: &str,
        value: &T,
    ) -> Result<(), WriteError> {
        self.emit_as::<crate::body::MsgPack<()>, T>(event, value)
    }

    #[cfg(any(feature = "json", feature = "msgpack"))]
    fn emit_as<F: crate::body::Format, T: serde::Serialize + ?Sized>(
        &self,
        event: &str,
        value: &T,
    ) -> Result<(), WriteError> {
        let msg = crate::body::message::<F, T>(&self.ns, event, value).map_err(|e| {
            let context = format!(
                "emit {}",
                describe(&Message::new(self.ns.clone(), event, ""), self.conn.id())
            );
            e.into_kind(WriteErrorKind::Encode, context)
        })?;
        self.conn.write(&msg)
    }

    /// Asks the peer with `event` and `question` as a JSON body, and decodes its JSON reply
    /// into `R` (an undecodable reply is an [`AskError`] of kind
    /// [`Decode`](crate::error::AskErrorKind::Decode)).
    ///
    /// ```no_run
    /// # async fn run(ns: neffos::NsConn) -> Result<(), neffos::AskError> {
    /// #[derive(serde::Serialize)]
    /// struct Quote<'a> { symbol: &'a str }
    /// #[derive(serde::Deserialize)]
    /// struct Price { cents: u64 }
    /// let price: Price = ns.ask_json("quote", &Quote { symbol: "ABC" }).await?;
    /// # let _ = price.cents; Ok(()) }
    /// ```
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub async fn ask_json<Q, R>(&self, event: &str, question: &Q) -> Result<R, AskError>
    where
        Q: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        type F = crate::body::Json<()>;
        let context = || ask_context(&Message::new(self.ns.clone(), event, ""), self.conn.id());
        let msg = crate::body::message::<F, Q>(&self.ns, event, question)
            .map_err(|e| e.into_kind(crate::error::AskErrorKind::NotSent, context()))?;
        let reply = self.conn.ask(msg).await?;
        crate::body::decode::<F, R>(&reply)
            .map_err(|e| e.into_kind(crate::error::AskErrorKind::Decode, context()))
    }

    /// The application state of type `S` given to
    /// [`ServerBuilder::with_state`](crate::ServerBuilder::with_state) (or
    /// [`Namespaces::with_state`](crate::Namespaces::with_state)), if any.
    pub fn state<S: Clone + Send + Sync + 'static>(&self) -> Option<S> {
        self.conn.0.handlers.state::<S>()
    }

    /// Asks the peer and waits for its reply (an error reply is an [`AskError`] of kind
    /// [`Remote`](crate::error::AskErrorKind::Remote)).
    pub async fn ask(&self, event: &str, body: impl Into<Bytes>) -> Result<Message, AskError> {
        self.conn
            .ask(Message::new(self.ns.clone(), event, body))
            .await
    }

    /// Joins `room` (asks the peer).
    pub async fn join_room(&self, room: &str) -> Result<Room, RoomError> {
        system::ask_join(&self.conn.0, self.ns.clone(), ByteString::from(room)).await?;
        Ok(Room {
            ns: self.clone(),
            name: ByteString::from(room),
        })
    }

    /// Leaves `room` (asks the peer); an error of kind
    /// [`NotJoined`](crate::error::RoomErrorKind::NotJoined) if not joined.
    pub async fn leave_room(&self, room: &str) -> Result<(), RoomError> {
        system::ask_leave(&self.conn.0, self.ns.clone(), ByteString::from(room)).await
    }

    /// The joined room `name`, if joined.
    pub fn room(&self, name: &str) -> Option<Room> {
        let table = self.conn.0.namespaces.lock();
        table
            .get(&self.ns)
            .and_then(|rooms| rooms.get(name))
            .map(|r| Room {
                ns: self.clone(),
                name: r.clone(),
            })
    }

    /// Names of the joined rooms.
    pub fn rooms(&self) -> Vec<String> {
        let table = self.conn.0.namespaces.lock();
        table
            .get(&self.ns)
            .map(|rooms| rooms.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default()
    }

    /// Disconnects this namespace (asks the peer).
    pub async fn disconnect(&self) -> Result<(), NamespaceError> {
        system::ask_disconnect(&self.conn.0, self.ns.clone()).await
    }

    /// Broadcasts `msg` to every connection of this namespace (its namespace is set to this
    /// one), this connection included, on every instance; when `msg.room` is set, to the
    /// members of that room only (as Go neffos's `Server.Broadcast` does). Server side only.
    pub fn broadcast(&self, msg: Message) -> Result<(), BroadcastError> {
        self.server(&msg)?.broadcast(self.target_of(&msg), msg)
    }

    /// Broadcasts `msg` to every other connection of this namespace, on every instance;
    /// when `msg.room` is set, to the other members of that room only (the port of Go
    /// neffos's `Server.Broadcast(c, msg)` keeps its meaning). To reach the whole namespace
    /// from a room message, clear `msg.room` first.
    pub fn broadcast_others(&self, msg: Message) -> Result<(), BroadcastError> {
        self.server(&msg)?
            .broadcast(self.target_of(&msg).except(&self.conn), msg)
    }

    /// This namespace, narrowed to `msg.room` when it names one.
    fn target_of(&self, msg: &Message) -> Target {
        if msg.room.is_empty() {
            Target::namespace(&self.ns)
        } else {
            Target::room(&self.ns, &msg.room)
        }
    }

    fn server(&self, msg: &Message) -> Result<Server, BroadcastError> {
        self.conn.server().ok_or_else(|| {
            BroadcastError::new(
                BroadcastErrorKind::NotServer,
                format!(
                    "broadcast {:?} on namespace {:?} from connection {:?}",
                    &*msg.event,
                    &*self.ns,
                    self.conn.id()
                ),
            )
        })
    }
}

/// A joined room of an [`NsConn`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Room {
    ns: NsConn,
    name: ByteString,
}

impl Room {
    /// The room name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace connection.
    pub fn ns_conn(&self) -> &NsConn {
        &self.ns
    }

    /// Sends `event` in this room to the peer.
    pub fn emit(&self, event: &str, body: impl Into<Bytes>) -> Result<(), WriteError> {
        let msg = Message::new(self.ns.ns.clone(), event, body).with_room(self.name.clone());
        self.ns.conn.write(&msg)
    }

    /// Leaves the room.
    pub async fn leave(&self) -> Result<(), RoomError> {
        self.ns.leave_room(&self.name).await
    }

    /// Broadcasts `msg` to every other member of this room, on every instance.
    pub fn broadcast_others(&self, msg: Message) -> Result<(), BroadcastError> {
        self.ns.server(&msg)?.broadcast(
            Target::room(&self.ns.ns, &self.name).except(&self.ns.conn),
            msg,
        )
    }
}

/// `"event" on namespace "ns" [in room "r"] of connection "id"`: the object of an error.
pub(crate) fn describe(msg: &Message, id: &str) -> String {
    if msg.room.is_empty() {
        format!(
            "{:?} on namespace {:?} of connection {id:?}",
            &*msg.event, &*msg.namespace
        )
    } else {
        format!(
            "{:?} on namespace {:?} in room {:?} of connection {id:?}",
            &*msg.event, &*msg.namespace, &*msg.room
        )
    }
}
