//! The connection's socket, owned by the connection's one task: it reads when the engine
//! asks for a frame, and meanwhile writes whatever the outbound queue holds (several frames
//! before one flush) and the pings that are due. At the end it sends the close frame.
//!
//! One task instead of a reader and a writer task sharing the socket: no lock around the
//! socket (`futures`' `BiLock`, 400 B per connection and a lock round per write), no second
//! task (768 B), and reading and writing cannot wait for each other.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker, ready};

use futures_util::SinkExt;

use super::ConnInner;
use crate::transport::{Socket, TransportError, WsIn, WsOut};

/// Frames written before a flush (and before the task gives others a turn) when the queue
/// holds many.
const MAX_BATCH: usize = 64;

/// What the socket has for the engine.
pub(crate) enum Event {
    /// A frame or error read (`None`: the peer closed the TCP connection).
    Read(Option<Result<WsIn, TransportError>>),
    /// A write failed: the connection is gone.
    WriteFailed(TransportError),
    /// The outbound queue was closed and everything in it is written.
    Drained,
}

pub(crate) struct Link<S> {
    socket: S,
    /// Frames taken from the queue at once and not yet accepted by the sink: written
    /// before anything else, so the peer gets every frame up to the close frame without a
    /// gap. (Taking them all under one lock: a recipient of a burst
    /// pays one lock round for the burst, not one per frame.)
    batch: VecDeque<WsOut>,
    /// Frames of `batch` handed to the sink and their cost, not yet reported to the queue.
    unreported: (usize, usize),
    /// A ping is due; sent before the next queued frame.
    ping_due: bool,
    /// Something was handed to the sink since the last flush.
    unflushed: bool,
    /// Data frames and their bytes handed to the sink since the last flush.
    written: (u64, u64),
    /// A write failed; nothing more is written, not even the close frame.
    failed: bool,
    /// The socket's read side may have a frame: it returned one last time (or was never
    /// asked), or it woke the task since (`ConnInner::read_woken`). Otherwise a poll of the
    /// task (a broadcast to write) does not try to read: on a busy server a read attempt
    /// costs more than the write of a small frame.
    may_read: bool,
}

/// The waker the socket's read side gets: notes that it woke, then wakes the connection's
/// task (through the outbound queue's writer waker, which the link registers before it
/// reads).
impl Wake for ConnInner {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.read_woken.store(true, Ordering::Release);
        self.queue.wake_writer();
    }
}

impl<S: Socket> Link<S> {
    pub(crate) fn new(socket: S) -> Self {
        Link {
            socket,
            batch: VecDeque::new(),
            unreported: (0, 0),
            ping_due: false,
            unflushed: false,
            written: (0, 0),
            failed: false,
            may_read: true,
        }
    }

    /// Writes what is queued and, if `read`, waits for the next incoming frame.
    pub(crate) async fn next(&mut self, inner: &Arc<ConnInner>, read: bool) -> Event {
        std::future::poll_fn(|cx| {
            match self.poll_write(inner, cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Event::Drained),
                Poll::Ready(Err(e)) => {
                    self.failed = true;
                    return Poll::Ready(Event::WriteFailed(e));
                }
                Poll::Pending => {}
            }
            if read {
                self.poll_read(inner, cx).map(Event::Read)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Reads the next frame if the read side may have one (see `may_read`).
    fn poll_read(
        &mut self,
        inner: &Arc<ConnInner>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<WsIn, TransportError>>> {
        inner.queue.register_writer(cx.waker());
        if !(self.may_read || inner.read_woken.swap(false, Ordering::AcqRel)) {
            return Poll::Pending;
        }
        let waker = Waker::from(inner.clone());
        let read = Pin::new(&mut self.socket).poll_next(&mut Context::from_waker(&waker));
        self.may_read = read.is_ready();
        read
    }

    /// Sends a ping before the next queued frame.
    pub(crate) fn ping(&mut self) {
        self.ping_due = true;
    }

    /// Writes one frame at once (the client's handshake, before the queue is in use).
    #[cfg(feature = "client")]
    pub(crate) async fn send(&mut self, item: WsOut) -> Result<(), TransportError> {
        self.socket.send(item).await
    }

    /// Reads the next frame, writing nothing (the client's handshake).
    #[cfg(feature = "client")]
    pub(crate) async fn read(&mut self) -> Option<Result<WsIn, TransportError>> {
        let read = std::future::poll_fn(|cx| Pin::new(&mut self.socket).poll_next(cx)).await;
        // The socket holds the task's own waker now, not the link's read waker.
        self.may_read = true;
        read
    }

    /// Writes queued frames until the queue is empty (`Pending`, woken by the next frame or
    /// by the socket) or closed and written (`Ready(Ok)`).
    fn poll_write(
        &mut self,
        inner: &ConnInner,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        if self.failed {
            return Poll::Pending;
        }
        let mut sent = 0;
        loop {
            if self.ping_due {
                ready!(Pin::new(&mut self.socket).poll_ready(cx))?;
                self.ping_due = false;
                if inner
                    .acknowledged
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    self.unflushed = true;
                    Pin::new(&mut self.socket).start_send(WsOut::Ping)?;
                }
            }
            while !self.batch.is_empty() {
                if sent == MAX_BATCH {
                    // Flush this batch and give the connection's other work (and other
                    // tasks) a turn before the next.
                    self.report_written(inner);
                    ready!(self.poll_flush(inner, cx))?;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if Pin::new(&mut self.socket).poll_ready(cx)?.is_pending() {
                    self.report_written(inner);
                    return Poll::Pending;
                }
                let Some(item) = self.batch.pop_front() else {
                    break;
                };
                self.unreported.0 += 1;
                self.unreported.1 += super::queue::cost(&item);
                if let Some(len) = item.data_len() {
                    self.written.0 += 1;
                    self.written.1 += len as u64;
                }
                self.unflushed = true;
                sent += 1;
                Pin::new(&mut self.socket).start_send(item)?;
            }
            let written = std::mem::take(&mut self.unreported);
            match inner.queue.poll_take(cx, &mut self.batch, written) {
                Poll::Ready(true) => inner.server.writer_took(),
                Poll::Ready(false) => {
                    ready!(self.poll_flush(inner, cx))?;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => {
                    ready!(self.poll_flush(inner, cx))?;
                    return Poll::Pending;
                }
            }
        }
    }

    /// Tells the queue what was written so far: a large batch takes a while to write, and
    /// the queue must see the writer's progress meanwhile (its stall clock, and whether a
    /// publisher is held back for this reader).
    fn report_written(&mut self, inner: &ConnInner) {
        let written = std::mem::take(&mut self.unreported);
        if written.0 > 0 {
            inner.queue.written(written);
        }
    }

    /// Flushes what was handed to the sink since the last flush, and counts it.
    fn poll_flush(
        &mut self,
        inner: &ConnInner,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        if !self.unflushed {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.socket).poll_flush(cx))?;
        self.unflushed = false;
        let (frames, bytes) = std::mem::take(&mut self.written);
        if frames > 0 {
            inner.server.frames_written(frames, bytes);
        }
        Poll::Ready(Ok(()))
    }

    /// Closes the connection's end: refuses further frames, writes what was queued before
    /// (e.g. the `H` refusal), then the close frame with the connection's close reason,
    /// all within the close timeout. Nothing after a failed write.
    pub(crate) async fn close(mut self, inner: &Arc<ConnInner>) {
        inner.queue.close();
        if self.failed {
            return;
        }
        let (code, reason) = inner
            .close_reason()
            .unwrap_or((super::close_code::NORMAL, String::new()));
        let graceful = async {
            loop {
                match self.next(inner, false).await {
                    Event::Drained => break,
                    Event::WriteFailed(_) => return Ok(()),
                    Event::Read(_) => {}
                }
            }
            // After the peer's close frame tungstenite has queued its own reply and refuses
            // ours; `close` still flushes that reply, so errors here are not the end.
            let _ = self
                .socket
                .feed(WsOut::Close(code, truncate(reason, 123)))
                .await;
            let _ = self.socket.flush().await;
            self.socket.close().await
        };
        let _ = tokio::time::timeout(inner.config.close_timeout, graceful).await;
    }
}

/// A close reason may hold at most 123 bytes; cut on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
