//! The writer task: owns the socket's sink, drains the bounded outbound queue, writes
//! several queued frames before one flush, pings, and sends the close frame.

use std::sync::Arc;

use super::ConnInner;
use crate::transport::{TransportError, WsOut};
use futures_util::{Sink, SinkExt};

/// Frames written before a flush when the queue holds many.
const MAX_BATCH: usize = 64;

/// The writer's future. A plain function returning an `async move` block: an `async fn`
/// would keep a second copy of `sink` in its state for the connection's whole life.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<W>(inner: Arc<ConnInner>, mut sink: W) -> impl Future<Output = ()> + Send
where
    W: Sink<WsOut, Error = TransportError> + Send + Unpin,
{
    async move {
        // The close interrupts a write that waits for a peer which does not read; what is
        // still queued then gets the close timeout below, like the close frame. A frame taken
        // from the queue but not yet accepted by the sink waits in `held`, so that the peer
        // gets everything up to the close frame without a gap.
        let mut held = None;
        let result = tokio::select! {
            biased;
            () = inner.cancel.cancelled() => Ok(()),
            result = write_queued(&inner, &mut sink, &mut held) => result,
        };
        // No frame is accepted from now on; those already queued can still be written below.
        inner.queue.close();
        if let Err(e) = result {
            tracing::debug!(id = %inner.id, error = %e, "write failed; dropping the connection");
            inner.cancel.cancel();
            return;
        }
        // Closing: deliver what was queued before the close (e.g. the `H` refusal), then the
        // close frame, all within the close timeout.
        let (code, reason) = inner
            .close_reason()
            .unwrap_or((super::close_code::NORMAL, String::new()));
        let graceful = async {
            let held = held.into_iter();
            for item in held.chain(std::iter::from_fn(|| inner.queue.try_pop())) {
                if sink.feed(item).await.is_err() {
                    break;
                }
            }
            // After the peer's close frame tungstenite has queued its own reply and refuses
            // ours; `close` still flushes that reply, so errors here are not the end.
            let _ = sink.feed(WsOut::Close(code, truncate(reason, 123))).await;
            let _ = sink.flush().await;
            sink.close().await
        };
        let _ = tokio::time::timeout(inner.config.close_timeout, graceful).await;
    }
}

/// Writes queued frames (several before one flush) and pings until the queue is closed.
async fn write_queued<W>(
    inner: &ConnInner,
    sink: &mut W,
    held: &mut Option<WsOut>,
) -> Result<(), TransportError>
where
    W: Sink<WsOut, Error = TransportError> + Unpin,
{
    let mut ping = inner.config.ping_interval.map(|every| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        tokio::select! {
            biased;
            item = inner.queue.pop() => {
                let Some(item) = item else { return Ok(()) };
                let (mut frames, mut bytes) = (0u64, 0u64);
                let mut count = |item: &WsOut| if let Some(len) = item.data_len() {
                    frames += 1;
                    bytes += len as u64;
                };
                count(&item);
                feed(sink, held, item).await?;
                for _ in 0..MAX_BATCH {
                    match inner.queue.try_pop() {
                        Some(item) => {
                            count(&item);
                            feed(sink, held, item).await?;
                        }
                        None => break,
                    }
                }
                sink.flush().await?;
                inner.server.frames_written(frames, bytes);
            }
            _ = async { match ping.as_mut() { Some(t) => t.tick().await, None => std::future::pending().await } } => {
                if inner.acknowledged.load(std::sync::atomic::Ordering::Acquire) {
                    sink.send(WsOut::Ping).await?;
                }
            }
        }
    }
}

/// Hands `item` to the sink once it is ready, keeping it in `held` while it waits (a write
/// interrupted by the close leaves it there).
async fn feed<W>(sink: &mut W, held: &mut Option<WsOut>, item: WsOut) -> Result<(), TransportError>
where
    W: Sink<WsOut, Error = TransportError> + Unpin,
{
    *held = Some(item);
    std::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).await?;
    match held.take() {
        Some(item) => sink.start_send_unpin(item),
        None => Ok(()),
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
