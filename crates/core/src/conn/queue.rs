//! The outbound queue of one connection: many producers (broadcasts, handlers, Ask
//! replies), one consumer (the writer).
//!
//! A short lock around a `VecDeque` instead of a `tokio::sync::mpsc` channel: a bounded
//! mpsc costs a semaphore round per frame and allocates its first 32-slot block for every
//! connection up front (1.8 KiB of an idle connection, and about a sixth of the server's
//! CPU per delivery in the fan-out profile). Here a frame costs one uncontended lock on
//! each side, and an idle connection holds no allocation until its first frame.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::transport::WsOut;

/// A queue that grew past this during a burst gives its memory back once drained.
const SHRINK_ABOVE: usize = 64;

/// Why a frame was not queued.
#[derive(Debug)]
pub(crate) enum PushError {
    /// The queue holds its capacity.
    Full,
    /// The writer is gone.
    Closed,
}

#[derive(Default)]
struct State {
    items: VecDeque<WsOut>,
    closed: bool,
    /// A producer waits in [`OutQueue::push`] for room.
    room_wanted: bool,
}

pub(crate) struct OutQueue {
    state: Mutex<State>,
    capacity: usize,
    /// The writer, when it found the queue empty.
    writer: AtomicWaker,
    /// Producers waiting for room.
    room: Notify,
}

impl OutQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        OutQueue {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            writer: AtomicWaker::new(),
            room: Notify::new(),
        }
    }

    /// Queues `item` if there is room.
    pub(crate) fn try_push(&self, item: WsOut) -> Result<(), PushError> {
        {
            let mut state = self.state.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.items.len() >= self.capacity {
                return Err(PushError::Full);
            }
            state.items.push_back(item);
        }
        self.writer.wake();
        Ok(())
    }

    /// Queues `item`, waiting for room; fails once the queue is closed.
    pub(crate) async fn push(&self, item: WsOut) -> Result<(), PushError> {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before looking, so a writer making room after our look wakes us.
            notified.as_mut().enable();
            {
                let mut state = self.state.lock();
                if state.closed {
                    return Err(PushError::Closed);
                }
                if state.items.len() < self.capacity {
                    state.items.push_back(item);
                    drop(state);
                    self.writer.wake();
                    return Ok(());
                }
                state.room_wanted = true;
            }
            notified.await;
        }
    }

    /// The next frame; `Ready(None)` once the queue is closed and empty.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<WsOut>> {
        let mut state = self.state.lock();
        match self.pop_locked(&mut state) {
            Some(item) => Poll::Ready(Some(item)),
            None if state.closed => Poll::Ready(None),
            None => {
                // Under the lock: a producer pushes under it too and wakes after.
                self.writer.register(cx.waker());
                Poll::Pending
            }
        }
    }

    /// The next frame, waiting for one; `None` once closed and empty.
    pub(crate) async fn pop(&self) -> Option<WsOut> {
        std::future::poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// The next frame if one is queued.
    pub(crate) fn try_pop(&self) -> Option<WsOut> {
        let mut state = self.state.lock();
        self.pop_locked(&mut state)
    }

    fn pop_locked(&self, state: &mut State) -> Option<WsOut> {
        let item = state.items.pop_front()?;
        if state.items.is_empty() && state.items.capacity() > SHRINK_ABOVE {
            state.items = VecDeque::new();
        }
        if std::mem::take(&mut state.room_wanted) {
            self.room.notify_waiters();
        }
        Some(item)
    }

    /// Refuses further frames and wakes everyone waiting; queued frames stay poppable.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.room.notify_waiters();
        self.writer.wake();
    }

    /// Frames queued now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().items.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;

    fn frame(n: u8) -> WsOut {
        WsOut::Frame(neffos_protocol::Frame::text(bytes::Bytes::from(vec![
            b'a' + n,
        ])))
    }

    fn byte(item: WsOut) -> u8 {
        match item {
            WsOut::Frame(f) => f.bytes[0],
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bounded_fifo() {
        let q = OutQueue::new(2);
        q.try_push(frame(0)).unwrap();
        q.try_push(frame(1)).unwrap();
        assert!(matches!(q.try_push(frame(2)), Err(PushError::Full)));
        assert_eq!(byte(q.try_pop().unwrap()), b'a');
        q.try_push(frame(2)).unwrap();
        assert_eq!(byte(q.try_pop().unwrap()), b'b');
        assert_eq!(byte(q.try_pop().unwrap()), b'c');
        assert!(q.try_pop().is_none());
    }

    #[test]
    fn closed_refuses_but_drains() {
        let q = OutQueue::new(4);
        q.try_push(frame(0)).unwrap();
        q.close();
        assert!(matches!(q.try_push(frame(1)), Err(PushError::Closed)));
        assert_eq!(byte(q.try_pop().unwrap()), b'a');
        assert_eq!(q.len(), 0);
    }

    /// A queue of capacity 1 holding frame `a`, and a task pushing frame `b` into it.
    fn full_queue_with_waiting_producer() -> (
        Arc<OutQueue>,
        tokio::task::JoinHandle<Result<(), PushError>>,
    ) {
        let q = Arc::new(OutQueue::new(1));
        q.try_push(frame(0)).unwrap();
        let producer = tokio::spawn({
            let q = q.clone();
            async move { q.push(frame(1)).await }
        });
        (q, producer)
    }

    #[tokio::test]
    async fn waiting_producer_gets_room_in_order() {
        let (q, producer) = full_queue_with_waiting_producer();
        // The producer cannot finish before the writer makes room.
        tokio::task::yield_now().await;
        assert!(!producer.is_finished());
        assert_eq!(byte(q.pop().await.unwrap()), b'a');
        producer.await.unwrap().unwrap();
        assert_eq!(byte(q.pop().await.unwrap()), b'b');
    }

    #[tokio::test]
    async fn close_wakes_writer_and_producers() {
        let (q, producer) = full_queue_with_waiting_producer();
        tokio::task::yield_now().await;
        q.close();
        assert!(matches!(producer.await.unwrap(), Err(PushError::Closed)));
        assert_eq!(byte(q.pop().await.unwrap()), b'a');
        assert!(q.pop().await.is_none());
    }

    #[tokio::test]
    async fn writer_wakes_on_push() {
        let q = Arc::new(OutQueue::new(8));
        let writer = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await.map(byte) }
        });
        tokio::task::yield_now().await;
        q.try_push(frame(3)).unwrap();
        assert_eq!(writer.await.unwrap(), Some(b'd'));
    }

    #[test]
    fn burst_memory_is_returned() {
        let q = OutQueue::new(1000);
        for _ in 0..500 {
            q.try_push(frame(0)).unwrap();
        }
        while q.try_pop().is_some() {}
        assert_eq!(q.state.lock().items.capacity(), 0);
    }
}
