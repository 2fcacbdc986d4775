//! The reader/dispatcher: handshake, then read frames, route replies to waiting Asks at
//! once, and run handlers one at a time in arrival order (reading on while a handler
//! runs, so a handler may Ask its own peer).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::OptionFuture;
use neffos_protocol::handshake::{self, ClientHello};
use neffos_protocol::{DecodeError, DecodeOptions, Message, NativeMode, WaitKind, decode};
use tokio::time::Instant;

use super::link::{Event, Link};
use super::pressure::{self, Hold};
use super::{ConnInner, Count, Role, close_code, system};
use crate::config::Config;
use crate::handler::BoxFuture;
use crate::recovery::PeerEnd;
use crate::transport::{Cause, Socket, TransportError, WsIn, WsOut};

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

/// Server side: wait for `M` (queueing early frames), run the server's accept hook, answer
/// `A<id>` or `H<reason>`, then serve the connection until it closes and send the close
/// frame. `accept` is `None` when the connection is refused already (its close reason set).
///
/// A plain function returning an `async move` block that only borrows `link`: an `async fn`
/// (or a callee taking `link` by value) would keep another copy of the socket in the
/// connection's task for its whole life.
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve<S: Socket>(
    inner: Arc<ConnInner>,
    mut link: Link<S>,
    accept: Option<BoxFuture<Result<(), String>>>,
) -> impl Future<Output = ()> + Send {
    async move {
        let mut early = VecDeque::new();
        if let Some(accept) = accept
            && handshake(&inner, &mut link, accept, &mut early).await
        {
            inner.server.ready(&inner);
            {
                let run = run_loop(&inner, &mut link, early);
                tokio::pin!(run);
                publishing(&inner, run).await;
            }
            finish(&inner, link).await;
        } else {
            inner.cancel.cancel();
            Box::pin(link.close(&inner)).await;
        }
    }
}

/// Client side: serves the connection (acknowledged already) until it closes, starting
/// with the messages the server sent before its acknowledgement.
#[cfg(feature = "client")]
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<S: Socket>(
    inner: Arc<ConnInner>,
    mut link: Link<S>,
    early: VecDeque<Incoming>,
) -> impl Future<Output = ()> + Send {
    async move {
        {
            let run = run_loop(&inner, &mut link, early);
            tokio::pin!(run);
            publishing(&inner, run).await;
        }
        finish(&inner, link).await;
    }
}

/// Polls the connection's loop as a publisher: broadcasts coalesced per poll, their
/// laggards pushing back on this connection ([`pressure::poll_publisher`]).
/// (Pinned by the caller: an `async fn` taking the loop by value would hold it twice.)
fn publishing<'a, F: Future<Output = ()>>(
    inner: &'a ConnInner,
    mut run: std::pin::Pin<&'a mut F>,
) -> impl Future<Output = ()> + 'a {
    std::future::poll_fn(move |cx| pressure::poll_publisher(inner, || run.as_mut().poll(cx)))
}

/// Sends the close frame while the indexes are cleaned up; `finished` does not wait for a
/// peer that takes its time to read the close frame. Boxed: its state (and the socket,
/// moved here) would otherwise take room in every connection's task.
fn finish<'a, S: Socket>(
    inner: &'a Arc<ConnInner>,
    link: Link<S>,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let cleanup = async {
            system::leave_all(inner).await;
            inner.server.closed(inner).await;
            inner.finished.cancel();
        };
        tokio::join!(cleanup, link.close(inner));
    })
}

/// The server's side of the handshake; false if the connection is refused (its close
/// reason set).
async fn handshake<S: Socket>(
    inner: &Arc<ConnInner>,
    link: &mut Link<S>,
    accept: BoxFuture<Result<(), String>>,
    early: &mut VecDeque<Incoming>,
) -> bool {
    if inner.native == NativeMode::Only {
        inner.acknowledged.store(true, Ordering::Release);
        if let Err(reason) = writing_while(inner, link, accept).await {
            inner.close(close_code::POLICY, reason);
            return false;
        }
        system::connect_native(inner);
    } else {
        match read_ack_request(inner, link, early).await {
            Ok(()) => {}
            Err(reason) => {
                inner.close(close_code::POLICY, reason);
                return false;
            }
        }
        if let Err(reason) = writing_while(inner, link, accept).await {
            let _ = inner.enqueue(WsOut::Frame(neffos_protocol::Frame::text(
                handshake::encode_reject(&reason),
            )));
            inner.close(close_code::POLICY, reason);
            return false;
        }
        let accept_frame = match handshake::encode_accept(&inner.id) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(id = %inner.id, error = %e, "ID generator produced an invalid ID");
                let _ = inner.enqueue(WsOut::Frame(neffos_protocol::Frame::text(
                    handshake::encode_reject("internal error"),
                )));
                inner.close(close_code::POLICY, "invalid connection ID");
                return false;
            }
        };
        // `A<id>` is the very first frame; nothing can be queued before it because writes
        // are refused until `acknowledged` is set.
        if inner
            .enqueue(WsOut::Frame(neffos_protocol::Frame::text(accept_frame)))
            .is_err()
        {
            return false;
        }
        inner.acknowledged.store(true, Ordering::Release);
    }
    true
}

/// Awaits `fut` (the accept hook) while the socket writes what is queued: a native-only
/// connection is acknowledged before its hook runs, and the hook may write. Fails with
/// the reason when the connection closes meanwhile.
async fn writing_while<S: Socket>(
    inner: &Arc<ConnInner>,
    link: &mut Link<S>,
    fut: BoxFuture<Result<(), String>>,
) -> Result<(), String> {
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            biased;
            () = std::future::poll_fn(|cx| inner.cancel.poll_owner(cx)) => return Err("closed during handshake".into()),
            result = &mut fut => return result,
            event = link.next(inner, false) => match event {
                Event::WriteFailed(_) | Event::Drained => return Err("closed during handshake".into()),
                Event::Read(_) => {}
            },
        }
    }
}

async fn read_ack_request<S: Socket>(
    inner: &Arc<ConnInner>,
    link: &mut Link<S>,
    early: &mut VecDeque<Incoming>,
) -> Result<(), String> {
    let deadline = Instant::now() + inner.config.handshake_timeout;
    let mut early_bytes = 0usize;
    loop {
        let item = tokio::select! {
            event = tokio::time::timeout_at(deadline, link.next(inner, true)) => match event {
                Ok(Event::Read(item)) => item,
                Ok(Event::WriteFailed(_) | Event::Drained) => return Err("closed during handshake".into()),
                Err(_) => return Err("handshake timeout: no acknowledgement request".into()),
            },
            () = std::future::poll_fn(|cx| inner.cancel.poll_owner(cx)) => return Err("closed during handshake".into()),
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

/// Messages a server may send before its acknowledgement that the client keeps for after it.
#[cfg(feature = "client")]
const MAX_EARLY_FROM_SERVER: usize = 16;

/// Client side: send `M` and wait for `A<id>` or `H<reason>`. Returns the ID, and the
/// messages the server sent before `A` (Go neffos can write the namespace connection it
/// starts from its `OnConnect` before `A`: its acknowledged flag is set before `A` is
/// written), to be handled first; a few at most.
#[cfg(feature = "client")]
pub(crate) async fn client_handshake<S: Socket>(
    link: &mut Link<S>,
    timeout: std::time::Duration,
) -> Result<(String, VecDeque<Incoming>), crate::error::DialError> {
    use crate::error::{DialError, DialErrorKind, RemoteError};
    use neffos_protocol::handshake::ServerAck;

    let deadline = Instant::now() + timeout;
    let context = "neffos handshake";
    tokio::time::timeout_at(
        deadline,
        link.send(WsOut::Frame(neffos_protocol::Frame::text(
            handshake::ack_request(),
        ))),
    )
    .await
    .map_err(|_| {
        DialError::new(
            DialErrorKind::Timeout,
            format!("{context}: write timed out"),
        )
    })?
    .map_err(|e| DialError::new(DialErrorKind::Transport, context).with_source(e))?;
    let mut early = VecDeque::new();
    loop {
        let item = tokio::time::timeout_at(deadline, link.read())
            .await
            .map_err(|_| {
                DialError::new(
                    DialErrorKind::Timeout,
                    format!("{context}: no acknowledgement within {timeout:?}"),
                )
            })?;
        let (bytes, binary) = match item {
            Some(Ok(WsIn::Text(b))) => (b, false),
            Some(Ok(WsIn::Binary(b))) => (b, true),
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
        if handshake::is_early_server_message(&bytes) && early.len() < MAX_EARLY_FROM_SERVER {
            early.push_back(Incoming { bytes, binary });
            continue;
        }
        return match handshake::decode_server_ack(bytes) {
            Ok(ServerAck::Accepted(id)) => Ok((id.to_string(), early)),
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

/// Serves the connection until it closes, handling queued frames first.
async fn run_loop<S: Socket>(
    inner: &Arc<ConnInner>,
    link: &mut Link<S>,
    early: VecDeque<Incoming>,
) {
    // The decoding options are built per frame from the config (a few copies) rather than
    // kept: everything run_loop keeps is paid by every idle connection.
    // Messages read while a handler runs; empty (and unallocated) in the common case where
    // each message is handled before the next arrives.
    let mut pending = Pending::default();
    for frame in early {
        let size = frame.bytes.len();
        match accept_frame(inner, frame) {
            Accepted::Dispatch(msg) => pending.push(msg, size),
            Accepted::Consumed => {}
            Accepted::Close => break,
        }
    }
    let mut last_seen = Instant::now();
    let mut clock = Clock::new(&inner.config, last_seen);
    // Inline in the task's state, not boxed.
    let sleep = tokio::time::sleep_until(clock.next(&inner.config, last_seen).unwrap_or(last_seen));
    tokio::pin!(sleep);
    // Boxed: most servers set no rate, and its state would cost every connection 32 bytes.
    let mut rate = inner
        .config
        .max_messages_per_second
        .map(|r| Box::new(RateLimit::new(r)));
    let mut pushback = Pushback::default();
    let mut current: Option<BoxFuture<()>> = None;
    loop {
        let hold = pushback.holds(inner);
        let pushed_back = !matches!(hold, Hold::No);
        // A pushed-back publisher's messages already read wait too.
        if current.is_none()
            && !pushed_back
            && let Some(msg) = pending.pop()
        {
            current = Some(dispatch(inner, msg));
        }
        // Within both inbound limits and not pushed back, or reading pauses and TCP pushes
        // back on the client. (Writing goes on either way.)
        let can_read = pending.messages.len() < inner.config.inbound_queue
            && pending.bytes < inner.config.inbound_budget
            && !pushed_back;
        tokio::select! {
            biased;
            () = std::future::poll_fn(|cx| inner.cancel.poll_owner(cx)) => break,
            Some(()) = OptionFuture::from(current.as_mut()) => current = None,
            event = link.next(inner, can_read) => {
                let item = match event {
                    Event::Read(item) => item,
                    Event::WriteFailed(e) => {
                        tracing::debug!(id = %inner.id, error = %e, "write failed; dropping the connection");
                        break;
                    }
                    Event::Drained => break,
                };
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
                match accept_frame(inner, incoming) {
                    Accepted::Dispatch(msg) if current.is_none() && pending.messages.is_empty() && !pushed_back => {
                        current = Some(dispatch(inner, msg));
                    }
                    Accepted::Dispatch(msg) => pending.push(msg, size),
                    Accepted::Consumed => {}
                    Accepted::Close => break,
                }
            }
            // Boxed, and only while held: a timer inline in the task's state would cost
            // every connection its size.
            Some(()) = OptionFuture::from(hold_over(inner, hold)) => {}
            () = sleep.as_mut(), if Clock::armed(&inner.config) => match clock.fired(&inner.config, sleep.as_mut(), last_seen) {
                Tick::Ping => link.ping(),
                Tick::Idle => {
                    inner.close(close_code::GOING_AWAY, "idle timeout");
                    break;
                }
                Tick::Nothing => {}
            },
        }
    }
    // The connection is gone: a handler still running is dropped, its Asks fail with
    // ConnectionClosed.
    drop(current);
    inner.cancel.cancel();
    inner.asks.clear();
    *inner.last_namespaces.lock() = Some(Box::new(inner.namespaces.lock().clone()));
}

/// When the connection's one timer fires: the next ping or the idle timeout, whichever is
/// due first. (Re-armed lazily when it fires: re-arming on every frame would cost a
/// timer-wheel update per message.) The intervals are read from the config, not kept.
struct Clock {
    /// When the next ping is due (if pings are on).
    ping_at: Option<Instant>,
}

/// What the timer's firing meant.
enum Tick {
    Ping,
    Idle,
    Nothing,
}

impl Clock {
    fn new(config: &Config, now: Instant) -> Self {
        Clock {
            ping_at: config.ping_interval.map(|every| now + every),
        }
    }

    /// Whether there is anything to wait for (the timer is never polled otherwise).
    fn armed(config: &Config) -> bool {
        config.ping_interval.is_some() || config.idle_timeout.is_some()
    }

    /// The next deadline.
    fn next(&self, config: &Config, last_seen: Instant) -> Option<Instant> {
        self.ping_at
            .into_iter()
            .chain(config.idle_timeout.map(|idle| last_seen + idle))
            .min()
    }

    fn fired(
        &mut self,
        config: &Config,
        sleep: std::pin::Pin<&mut tokio::time::Sleep>,
        last_seen: Instant,
    ) -> Tick {
        let now = Instant::now();
        let tick = if config
            .idle_timeout
            .is_some_and(|idle| last_seen + idle <= now)
        {
            Tick::Idle
        } else if let (Some(at), Some(every)) = (self.ping_at.as_mut(), config.ping_interval)
            && *at <= now
        {
            // Missed pings are not made up for: the next one is an interval from now.
            *at = now + every;
            Tick::Ping
        } else {
            Tick::Nothing
        };
        if let Some(next) = self.next(config, last_seen) {
            sleep.reset(next);
        }
        tick
    }
}

/// Runs the handlers of `msg`.
fn dispatch(inner: &Arc<ConnInner>, msg: Message) -> BoxFuture<()> {
    Box::pin(system::dispatch(inner.clone(), msg))
}

/// A publisher's pause while recipients it left behind catch up, at most the stall timeout
/// (by then stuck clients are closed, and what remains is not the server's doing).
#[derive(Default)]
struct Pushback {
    since: Option<Instant>,
}

impl Pushback {
    /// Whether reading stays paused now, and why.
    fn holds(&mut self, inner: &ConnInner) -> Hold {
        let hold = pressure::holds(inner);
        if !matches!(hold, Hold::Laggards) {
            self.since = None;
            return hold;
        }
        let since = *self.since.get_or_insert_with(|| {
            inner.server.count(Count::PublisherPushback);
            Instant::now()
        });
        if since.elapsed() < inner.config.write_stall_timeout {
            return hold;
        }
        pressure::forget_laggards(inner);
        self.since = None;
        Hold::No
    }
}

/// What a held publisher waits for before it looks again: a little while for laggards,
/// the writers' round (at most [`pressure::PACE_MAX`]) when paced.
fn hold_over(
    inner: &ConnInner,
    hold: Hold,
) -> Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>> {
    match hold {
        Hold::No => None,
        Hold::Laggards => Some(Box::pin(tokio::time::sleep(PUSHBACK_RECHECK))),
        Hold::Round(due) => {
            let rounds = inner.server.rounds()?;
            Some(Box::pin(async move {
                let over = tokio::time::timeout(pressure::PACE_MAX, rounds.reached(due));
                if over.await.is_err() {
                    pressure::forget_round(inner);
                }
            }))
        }
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
fn accept_frame(inner: &Arc<ConnInner>, frame: Incoming) -> Accepted {
    match decode(frame.bytes, frame.binary, &decode_options(inner)) {
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
#[cfg(feature = "client")]
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;
    use crate::transport::{Duplex, TransportError};

    /// A socket of a known, large size.
    #[allow(dead_code)] // its size is the point
    struct Padded([u8; 1000]);

    impl futures_util::Sink<WsOut> for Padded {
        type Error = TransportError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, _: WsOut) -> Result<(), Self::Error> {
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The connection's task holds its socket once, and little besides (520 B today: every
    /// idle connection pays for it).
    #[test]
    fn the_connection_task_holds_its_socket_once() {
        let server = crate::Server::builder(crate::Namespaces::new()).build();
        let socket = || Duplex {
            stream: futures_util::stream::pending::<Result<WsIn, TransportError>>(),
            sink: Padded([0; 1000]),
        };
        let link = std::mem::size_of_val(&Link::new(socket()));
        let task = server.serve_socket(
            crate::conn::RequestInfo::default(),
            None,
            socket(),
            http::Extensions::new(),
        );
        let task = std::mem::size_of_val(&task);
        assert!(
            task < 2 * link && task - link <= 600,
            "the connection's future is {task} B with a {link} B socket"
        );
    }
}
