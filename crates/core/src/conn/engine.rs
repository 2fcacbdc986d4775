//! The reader/dispatcher: handshake, then read frames, route replies to waiting Asks at
//! once, and run handlers one at a time in arrival order (reading on while a handler
//! runs, so a handler may Ask its own peer).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::OptionFuture;
use futures_util::{Sink, Stream, StreamExt};
use neffos_protocol::handshake::{self, ClientHello, ServerAck};
use neffos_protocol::{DecodeError, DecodeOptions, Message, NativeMode, WaitKind, decode};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{ConnInner, Count, Role, close_code, pressure, system, writer};
use crate::error::{DialError, DialErrorKind, RemoteError};
use crate::handler::BoxFuture;
use crate::recovery::PeerEnd;
use crate::transport::{Cause, TransportError, WsIn, WsOut};

/// How often a pushed-back publisher looks whether the server caught up.
const PUSHBACK_RECHECK: Duration = Duration::from_millis(5);

/// A frame read but not yet handled.
pub(crate) struct Incoming {
    bytes: Bytes,
    binary: bool,
}

fn decode_options(inner: &ConnInner) -> DecodeOptions {
    DecodeOptions::default()
        .max_frame_size(inner.config.max_message_size)
        .max_field_len(inner.config.max_field_len)
        .native(inner.native)
}

/// Spawns the writer task. (No tracing span on it: entering one on every poll cost 3.5 %
/// of the fan-out CPU, and the writer's few log lines carry the connection ID.)
pub(crate) fn spawn_writer<W>(inner: &Arc<ConnInner>, sink: W) -> tokio::task::JoinHandle<()>
where
    W: Sink<WsOut, Error = TransportError> + Send + Unpin + 'static,
{
    tokio::spawn(writer::run(inner.clone(), sink))
}

/// Server side: wait for `M` (queueing early frames), run the server's accept hook, answer
/// `A<id>` or `H<reason>`, then serve the connection until it closes.
pub(crate) async fn serve<R>(
    inner: Arc<ConnInner>,
    mut stream: R,
    accept: BoxFuture<Result<(), String>>,
) where
    R: Stream<Item = Result<WsIn, TransportError>> + Send + Unpin,
{
    let mut early = VecDeque::new();
    if inner.native == NativeMode::Only {
        inner.acknowledged.store(true, Ordering::Release);
        if let Err(reason) = accept.await {
            inner.close(close_code::POLICY, reason);
            return;
        }
        system::connect_native(&inner);
    } else {
        match read_ack_request(&inner, &mut stream, &mut early).await {
            Ok(()) => {}
            Err(reason) => {
                inner.close(close_code::POLICY, reason);
                return;
            }
        }
        if let Err(reason) = accept.await {
            let _ = inner.enqueue(WsOut::Frame(neffos_protocol::Frame::text(
                handshake::encode_reject(&reason),
            )));
            inner.close(close_code::POLICY, reason);
            return;
        }
        let accept_frame = match handshake::encode_accept(&inner.id) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(id = %inner.id, error = %e, "ID generator produced an invalid ID");
                let _ = inner.enqueue(WsOut::Frame(neffos_protocol::Frame::text(
                    handshake::encode_reject("internal error"),
                )));
                inner.close(close_code::POLICY, "invalid connection ID");
                return;
            }
        };
        // `A<id>` is the very first frame; nothing can be queued before it because writes
        // are refused until `acknowledged` is set.
        if inner
            .enqueue(WsOut::Frame(neffos_protocol::Frame::text(accept_frame)))
            .is_err()
        {
            return;
        }
        inner.acknowledged.store(true, Ordering::Release);
    }
    inner.server.ready(&inner);
    run_loop(&inner, stream, early).await;
}

async fn read_ack_request<R>(
    inner: &Arc<ConnInner>,
    stream: &mut R,
    early: &mut VecDeque<Incoming>,
) -> Result<(), String>
where
    R: Stream<Item = Result<WsIn, TransportError>> + Send + Unpin,
{
    let deadline = Instant::now() + inner.config.handshake_timeout;
    let mut early_bytes = 0usize;
    loop {
        let item = tokio::select! {
            item = tokio::time::timeout_at(deadline, stream.next()) => match item {
                Ok(item) => item,
                Err(_) => return Err("handshake timeout: no acknowledgement request".into()),
            },
            () = inner.cancel.cancelled() => return Err("closed during handshake".into()),
        };
        if let Some(Ok(WsIn::Text(b) | WsIn::Binary(b))) = &item {
            inner.server.frame_read(b.len());
        }
        let (bytes, binary) = match item {
            Some(Ok(WsIn::Text(b))) => (b, false),
            Some(Ok(WsIn::Binary(b))) => (b, true),
            Some(Ok(WsIn::Control)) => continue,
            Some(Ok(WsIn::Close(_))) | None => return Err("closed during handshake".into()),
            Some(Err(e)) => {
                // Sets the close code (1009, 1007) before the caller's generic one.
                close_after_read_error(inner, &e);
                return Err(e.message);
            }
        };
        match handshake::classify_client_frame(&bytes) {
            Ok(ClientHello::AckRequest) => return Ok(()),
            Ok(_) => {
                if early.len() >= inner.config.max_early_frames {
                    return Err("too many frames before the acknowledgement".into());
                }
                early_bytes += bytes.len();
                if early_bytes > inner.config.inbound_budget {
                    inner.server.count(Count::BudgetClose);
                    return Err("too many bytes before the acknowledgement".into());
                }
                early.push_back(Incoming { bytes, binary });
            }
            // Zero-length frames are skipped, as neffos does.
            Err(neffos_protocol::HandshakeError::Empty) => {}
            Err(e) => {
                tracing::warn!(id = %inner.id, error = %e, "refused handshake frame");
                return Err(e.to_string());
            }
        }
    }
}

/// Client side: send `M` and wait for `A<id>` or `H<reason>`. Returns the ID.
pub(crate) async fn client_handshake<R>(
    stream: &mut R,
    tx: &mpsc::Sender<WsOut>,
    timeout: std::time::Duration,
) -> Result<String, DialError>
where
    R: Stream<Item = Result<WsIn, TransportError>> + Send + Unpin,
{
    tx.send(WsOut::Frame(neffos_protocol::Frame::text(
        handshake::ack_request(),
    )))
    .await
    .map_err(|_| DialError::new(DialErrorKind::Transport, "neffos handshake: writer gone"))?;
    let deadline = Instant::now() + timeout;
    let context = "neffos handshake";
    loop {
        let item = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| {
                DialError::new(
                    DialErrorKind::Timeout,
                    format!("{context}: no acknowledgement within {timeout:?}"),
                )
            })?;
        let bytes = match item {
            Some(Ok(WsIn::Text(b) | WsIn::Binary(b))) => b,
            Some(Ok(WsIn::Control)) => continue,
            Some(Ok(WsIn::Close(_))) | None => {
                return Err(DialError::new(
                    DialErrorKind::Handshake,
                    format!("{context}: closed by the server"),
                ));
            }
            Some(Err(e)) => {
                return Err(DialError::new(DialErrorKind::Transport, context).with_source(e));
            }
        };
        return match handshake::decode_server_ack(bytes) {
            Ok(ServerAck::Accepted(id)) => Ok(id.to_string()),
            Ok(ServerAck::Rejected(reason)) => Err(DialError::new(DialErrorKind::Refused, context)
                .with_source(RemoteError::new(reason.to_string()))),
            Ok(_) => Err(DialError::new(
                DialErrorKind::Handshake,
                format!("{context}: unknown acknowledgement"),
            )),
            Err(e) => Err(DialError::new(DialErrorKind::Handshake, context).with_source(e)),
        };
    }
}

/// What the reader does with a decoded message.
enum Route {
    Dispatch(Message),
    Consumed,
    Forbidden(&'static str),
}

fn route(inner: &ConnInner, msg: Message) -> Route {
    match (inner.role, msg.wait.kind()) {
        // Position tags and recovery events (clients that asked for recovery).
        (Role::Client, _) if inner.recovery.get().is_some() => {
            let msg = crate::recovery::client_received(inner, msg);
            if msg.wait.is_empty() {
                Route::Dispatch(msg)
            } else {
                route_client_reply(inner, msg)
            }
        }
        (_, WaitKind::None) => Route::Dispatch(msg),
        (Role::Server, WaitKind::Exclusion | WaitKind::ExchangeMarked) => {
            Route::Forbidden("a client may not send server-internal wait tokens")
        }
        (Role::Server, WaitKind::ClientAsk | WaitKind::Confirmation) => Route::Dispatch(msg),
        // Any other token from a client answers one of our Asks on this connection only.
        (Role::Server, _) => {
            if let Some(msg) = inner.asks.resolve(msg) {
                system::late_reply(inner, &msg);
            }
            Route::Consumed
        }
        (Role::Client, _) => route_client_reply(inner, msg),
    }
}

/// A message with a wait token on the client side: a reply to one of our Asks, or a
/// request of the server.
fn route_client_reply(inner: &ConnInner, msg: Message) -> Route {
    match inner.asks.resolve(msg) {
        None => Route::Consumed,
        Some(msg) if msg.wait.is_client_wait() => {
            system::late_reply(inner, &msg);
            Route::Consumed
        }
        // A server's request.
        Some(msg) => Route::Dispatch(msg),
    }
}

/// Reads until the connection closes, handling queued frames first.
pub(crate) async fn run_loop<R>(inner: &Arc<ConnInner>, mut stream: R, early: VecDeque<Incoming>)
where
    R: Stream<Item = Result<WsIn, TransportError>> + Send + Unpin,
{
    let opts = decode_options(inner);
    // Messages read while a handler runs; empty (and unallocated) in the common case where
    // each message is handled before the next arrives.
    let mut pending = Pending::default();
    for frame in early {
        let size = frame.bytes.len();
        match accept_frame(inner, &opts, frame) {
            Accepted::Dispatch(msg) => pending.push(msg, size),
            Accepted::Consumed => {}
            Accepted::Close => break,
        }
    }
    let idle = inner.config.idle_timeout;
    let mut last_seen = Instant::now();
    // One timer for the connection's life, pushed back lazily when it fires: re-arming a
    // timer on every frame would cost a timer-wheel update per message.
    // (Never polled without an idle timeout.)
    let idle_timer =
        tokio::time::sleep_until(last_seen + idle.unwrap_or(Duration::from_secs(3600)));
    tokio::pin!(idle_timer);
    let cancelled = inner.cancel.cancelled();
    tokio::pin!(cancelled);
    let mut rate = inner.config.max_messages_per_second.map(RateLimit::new);
    let mut pushback = Pushback::default();
    let mut current: Option<BoxFuture<()>> = None;
    loop {
        let pushed_back = pushback.holds(inner);
        // A pushed-back publisher's messages already read wait too.
        if current.is_none()
            && !pushed_back
            && let Some(msg) = pending.pop()
        {
            current = Some(dispatch(inner, msg));
        }
        // Within both inbound limits and not pushed back, or reading pauses and TCP pushes
        // back on the client.
        let can_read = pending.messages.len() < inner.config.inbound_queue
            && pending.bytes < inner.config.inbound_budget
            && !pushed_back;
        tokio::select! {
            biased;
            () = &mut cancelled => break,
            Some(()) = OptionFuture::from(current.as_mut()) => current = None,
            item = stream.next(), if can_read => {
                last_seen = Instant::now();
                if let Some(Ok(WsIn::Text(b) | WsIn::Binary(b))) = &item {
                    inner.server.frame_read(b.len());
                    if rate.as_mut().is_some_and(|r| !r.allow(last_seen)) {
                        inner.close(close_code::POLICY, "message rate exceeded");
                        break;
                    }
                }
                let incoming = match item {
                    Some(Ok(WsIn::Text(bytes))) => Incoming { bytes, binary: false },
                    Some(Ok(WsIn::Binary(bytes))) => Incoming { bytes, binary: true },
                    Some(Ok(WsIn::Control)) => continue,
                    Some(Ok(WsIn::Close(code))) => {
                        crate::recovery::peer_ended(inner, PeerEnd::CloseFrame(code));
                        inner.close(close_code::NORMAL, "");
                        break
                    }
                    None => {
                        crate::recovery::peer_ended(inner, PeerEnd::Dropped);
                        inner.close(close_code::NORMAL, "");
                        break
                    }
                    Some(Err(e)) => {
                        if matches!(e.cause, Cause::Other) {
                            crate::recovery::peer_ended(inner, PeerEnd::Dropped);
                        }
                        tracing::debug!(id = %inner.id, error = %e, "read failed");
                        close_after_read_error(inner, &e);
                        break;
                    }
                };
                let size = incoming.bytes.len();
                match accept_frame(inner, &opts, incoming) {
                    Accepted::Dispatch(msg) if current.is_none() && pending.messages.is_empty() && !pushed_back => {
                        current = Some(dispatch(inner, msg));
                    }
                    Accepted::Dispatch(msg) => pending.push(msg, size),
                    Accepted::Consumed => {}
                    Accepted::Close => break,
                }
            }
            () = tokio::time::sleep(PUSHBACK_RECHECK), if pushed_back => {}
            () = &mut idle_timer, if idle.is_some() => {
                let deadline = last_seen + idle.unwrap_or_default();
                if deadline > Instant::now() {
                    idle_timer.as_mut().reset(deadline);
                    continue;
                }
                inner.close(close_code::GOING_AWAY, "idle timeout");
                break;
            }
        }
    }
    // Let a handler that was running finish its cleanup-free part? No: drop it, the
    // connection is gone; its Asks fail with ConnectionClosed.
    drop(current);
    inner.cancel.cancel();
    inner.asks.clear();
    *inner.last_namespaces.lock() = inner.namespaces.lock().clone();
    // Boxed: the cleanup's state would otherwise be part of every connection's task.
    Box::pin(async {
        system::leave_all(inner).await;
        inner.server.closed(inner).await;
    })
    .await;
    inner.finished.cancel();
}

/// Runs the handlers of `msg`, watching whether they broadcast under pressure.
fn dispatch(inner: &Arc<ConnInner>, msg: Message) -> BoxFuture<()> {
    Box::pin(pressure::Watched::new(
        inner.clone(),
        Box::pin(system::dispatch(inner.clone(), msg)),
    ))
}

/// A publisher's pause while recipients it left behind catch up, at most the stall timeout
/// (by then stuck clients are closed, and what remains is not the server's doing).
#[derive(Default)]
struct Pushback {
    since: Option<Instant>,
}

impl Pushback {
    /// Whether reading stays paused now.
    fn holds(&mut self, inner: &ConnInner) -> bool {
        if !pressure::holds(inner) {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert_with(|| {
            inner.server.count(Count::PublisherPushback);
            Instant::now()
        });
        if since.elapsed() < inner.config.write_stall_timeout {
            return true;
        }
        inner.laggards.lock().clear();
        self.since = None;
        false
    }
}

/// The close code and reason for a failed read: RFC 6455's 1009 for a frame or message
/// over the limits, 1007 for a text message that is not UTF-8, else 1008.
fn close_after_read_error(inner: &ConnInner, e: &TransportError) {
    match e.cause {
        Cause::TooBig => inner.close(close_code::TOO_BIG, "message too big"),
        Cause::InvalidUtf8 => {
            inner.close(close_code::INVALID_DATA, "invalid UTF-8 in a text frame")
        }
        Cause::Other => inner.close(close_code::POLICY, "read error"),
    }
}

/// Messages read while a handler runs, and their size on the wire.
#[derive(Default)]
struct Pending {
    messages: VecDeque<(Message, usize)>,
    /// Bytes of the frames behind `messages` (bounded by [`Config::inbound_budget`](crate::Config::inbound_budget)).
    bytes: usize,
}

impl Pending {
    fn push(&mut self, msg: Message, size: usize) {
        self.bytes += size;
        self.messages.push_back((msg, size));
    }

    fn pop(&mut self) -> Option<Message> {
        let (msg, size) = self.messages.pop_front()?;
        self.bytes -= size;
        if self.messages.is_empty() && self.messages.capacity() > 8 {
            self.messages = VecDeque::new();
        }
        Some(msg)
    }
}

/// What became of one frame.
enum Accepted {
    /// A message for the handlers.
    Dispatch(Message),
    /// Handled already (a reply to one of our Asks) or dropped.
    Consumed,
    /// The connection must close.
    Close,
}

/// Decodes one frame and routes it.
fn accept_frame(inner: &Arc<ConnInner>, opts: &DecodeOptions, frame: Incoming) -> Accepted {
    match decode(frame.bytes, frame.binary, opts) {
        Ok(msg) => match route(inner, msg) {
            Route::Dispatch(msg) => Accepted::Dispatch(msg),
            Route::Consumed => Accepted::Consumed,
            Route::Forbidden(reason) => {
                tracing::warn!(id = %inner.id, reason, "closing a connection that sent a forbidden frame");
                inner.close(close_code::POLICY, reason);
                Accepted::Close
            }
        },
        Err(DecodeError::FrameTooLarge { .. }) => {
            inner.close(close_code::TOO_BIG, "message too big");
            Accepted::Close
        }
        // As neffos does, an invalid frame is dropped and the connection stays open.
        Err(e) => {
            tracing::debug!(id = %inner.id, error = %e, "dropped an invalid frame");
            inner.server.count(Count::InvalidFrame);
            Accepted::Consumed
        }
    }
}

/// Pre-connects namespace `""` for native-only connections.
pub(crate) fn connect_native(inner: &Arc<ConnInner>) {
    system::connect_native(inner);
}

/// A token bucket: `rate` frames per second with a burst of `rate`.
struct RateLimit {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        RateLimit {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
