//! The outbound queue of one connection: many producers (broadcasts, handlers, Ask
//! replies), one consumer (the writer).
//!
//! A short lock around a `VecDeque` instead of a `tokio::sync::mpsc` channel: a bounded
//! mpsc costs a semaphore round per frame and allocates its first 32-slot block for every
//! connection up front (1.8 KiB of an idle connection, and about a sixth of the server's
//! CPU per delivery in the fan-out profile). Here a frame costs one uncontended lock on
//! each side, and an idle connection holds no allocation until its first frame.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::transport::WsOut;

/// A queue that grew past this during a burst gives its memory back once drained.
const SHRINK_ABOVE: usize = 64;

/// What one queued frame costs besides its payload (the slot, the shared frame's header).
pub(crate) const FRAME_OVERHEAD: usize = 64;

/// How far over its budget a queue may grow with broadcasts while its writer makes
/// progress: a server momentarily behind for everyone is not a stuck client.
const BURST_FACTOR: usize = 4;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue is far over its budget (or holds its frame capacity).
    Full,
    /// The queue is over its budget and its writer made no progress for the stall timeout.
    Stalled,
    /// The writer is gone.
    Closed,
}

/// A writer that took a frame this recently is still reading-side healthy: its client reads.
const RECENT: Duration = Duration::from_secs(1);

/// Where a queue stands after a frame was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fill {
    /// Within the budget, and the writer had taken everything before: it is woken for
    /// this frame.
    Within,
    /// Within the budget, behind frames the writer has not taken yet: the server is behind
    /// on this recipient (the writer has not had its turn since the last frame).
    Waiting,
    /// Over the budget.
    Over,
    /// Over twice the budget while its writer keeps taking frames: the client reads, the
    /// server sends faster than it can deliver.
    FarBehind,
}

/// The limits of one queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Frames at most.
    pub(crate) frames: usize,
    /// Bytes (payload + [`FRAME_OVERHEAD`] each) before replies wait and the stall clock runs.
    pub(crate) budget: usize,
    /// Over the budget without progress for this long: stuck.
    pub(crate) stall: Duration,
}

#[derive(Default)]
struct State {
    items: VecDeque<WsOut>,
    /// Cost of the queued frames.
    bytes: usize,
    closed: bool,
    /// A producer waits in [`OutQueue::push`] for room.
    room_wanted: bool,
    /// While over the budget: when it went over or the writer last took a frame.
    progress: Option<Instant>,
    /// Frames the writer took and has not reported written yet (still counted in `bytes`).
    taken: usize,
}

impl State {
    fn push(&mut self, item: WsOut) {
        // The first frame gets one slot, not the four of a vector's first growth: most
        // connections hold at most one frame at a time for most of their life.
        if self.items.capacity() == 0 {
            self.items.reserve_exact(1);
        }
        self.items.push_back(item);
    }

    /// Frames queued or being written.
    fn frames(&self) -> usize {
        self.items.len() + self.taken
    }

    fn stalled(&self, stall: Duration, now: Instant) -> bool {
        self.progress
            .is_some_and(|at| now.saturating_duration_since(at) >= stall)
    }
}

pub(crate) struct OutQueue {
    state: Mutex<State>,
    limits: Packed,
    /// The writer, when it found the queue empty.
    writer: AtomicWaker,
    /// Producers waiting for room; made by the first one (most connections never have one).
    room: OnceLock<Box<Notify>>,
}

/// [`Limits`] as every connection holds them: 16 bytes, not 32.
#[derive(Debug, Clone, Copy)]
struct Packed {
    budget: usize,
    frames: u32,
    stall_ms: u32,
}

impl Packed {
    fn new(limits: Limits) -> Self {
        Packed {
            budget: limits.budget,
            frames: u32::try_from(limits.frames.max(1)).unwrap_or(u32::MAX),
            stall_ms: u32::try_from(limits.stall.as_millis()).unwrap_or(u32::MAX),
        }
    }

    fn frames(&self) -> usize {
        self.frames as usize
    }

    fn stall(&self) -> Duration {
        Duration::from_millis(u64::from(self.stall_ms))
    }
}

/// Bytes a frame costs in the budget.
pub(crate) fn cost(item: &WsOut) -> usize {
    item.data_len().unwrap_or(0) + FRAME_OVERHEAD
}

impl OutQueue {
    pub(crate) fn new(limits: Limits) -> Self {
        OutQueue {
            state: Mutex::new(State::default()),
            limits: Packed::new(limits),
            writer: AtomicWaker::new(),
            room: OnceLock::new(),
        }
    }

    /// Queues `item` unless the queue is far over its budget, or over it and stuck.
    pub(crate) fn try_push(&self, item: WsOut) -> Result<Fill, PushError> {
        // A burst this thread still holds goes first, to keep the order.
        crate::server::coalesce::deliver_pending();
        self.try_push_all(std::iter::once(item))
            .map_err(|(why, _)| why)
    }

    /// Queues `items` in order under one lock with one wake-up (a burst of broadcasts to
    /// the same recipients), each as [`Self::try_push`] would. At the first frame refused
    /// the rest are refused too (nothing was taken in between): `Err((why, refused))`,
    /// the ones before it stay queued. `Ok`: the fullest the queue got. (The fan-out's
    /// entry: it delivered any pending burst before its loop.)
    pub(crate) fn try_push_all(
        &self,
        items: impl ExactSizeIterator<Item = WsOut>,
    ) -> Result<Fill, (PushError, usize)> {
        let total = items.len();
        let mut queued = 0;
        let mut fullest = Fill::Within;
        let refused = {
            let mut state = self.state.lock();
            if state.frames() > 0 {
                fullest = Fill::Waiting;
            }
            let mut refused = None;
            for item in items {
                match self.admit(&mut state, cost(&item)) {
                    Ok(fill) => {
                        state.push(item);
                        fullest = fullest.max(fill);
                        queued += 1;
                    }
                    Err(why) => {
                        refused = Some(why);
                        break;
                    }
                }
            }
            refused
        };
        if queued > 0 {
            self.writer.wake();
        }
        match refused {
            None => Ok(fullest),
            Some(why) => Err((why, total - queued)),
        }
    }

    /// Counts a frame of `cost` in, unless the queue is far over its budget, or over it and
    /// stuck.
    fn admit(&self, state: &mut State, cost: usize) -> Result<Fill, PushError> {
        if state.closed {
            return Err(PushError::Closed);
        }
        let bytes = state.bytes + cost;
        // Something queued or being written: a frame larger than the burst allowance
        // still goes through an otherwise empty queue.
        let busy = state.bytes > 0;
        if state.frames() >= self.limits.frames()
            || (bytes > self.limits.budget.saturating_mul(BURST_FACTOR) && busy)
        {
            return Err(PushError::Full);
        }
        let fill = if bytes > self.limits.budget {
            // The clock is read only on this (rare) path.
            let now = Instant::now();
            if state.stalled(self.limits.stall(), now) {
                return Err(PushError::Stalled);
            }
            let since = *state.progress.get_or_insert(now);
            if bytes > self.limits.budget.saturating_mul(2)
                && now.saturating_duration_since(since) < RECENT
            {
                Fill::FarBehind
            } else {
                Fill::Over
            }
        } else {
            Fill::Within
        };
        state.bytes = bytes;
        Ok(fill)
    }

    /// Queues `items` in order if they fit the budget, under one lock with one wake-up.
    /// Over the budget frames are shed (`Ok((_, shed))` counts them; once one is, the rest
    /// are: nothing was taken in between) while the writer makes progress, and the queue is
    /// stuck once it made none for the stall timeout. The queue never grows past the
    /// budget by more than one frame, and what is queued keeps its order. The [`Fill`] is
    /// `Waiting` if frames were waiting before, `Within` otherwise.
    pub(crate) fn try_push_or_shed_all(
        &self,
        items: impl ExactSizeIterator<Item = WsOut>,
    ) -> Result<(Fill, usize), PushError> {
        let total = items.len();
        let mut queued = 0;
        let mut fill = Fill::Within;
        let outcome = {
            let mut state = self.state.lock();
            if state.frames() > 0 {
                fill = Fill::Waiting;
            }
            let mut outcome = Ok(());
            for item in items {
                if state.closed {
                    outcome = Err(PushError::Closed);
                    break;
                }
                let bytes = state.bytes + cost(&item);
                if state.bytes > 0
                    && (bytes > self.limits.budget || state.frames() >= self.limits.frames())
                {
                    let now = Instant::now();
                    if state.stalled(self.limits.stall(), now) {
                        outcome = Err(PushError::Stalled);
                        break;
                    }
                    // The stall clock runs from the first shed frame; the writer's next
                    // progress stops it once the queue is back within the budget.
                    state.progress.get_or_insert(now);
                    break;
                }
                state.bytes = bytes;
                state.push(item);
                queued += 1;
            }
            outcome
        };
        if queued > 0 {
            self.writer.wake();
        }
        outcome.map(|()| (fill, total - queued))
    }

    /// Whether the client is still behind while it reads (over the budget, its writer took a
    /// frame recently): a publisher pushed back for it waits. Within the budget, closed or
    /// stuck: no reason to wait.
    pub(crate) fn behind_while_reading(&self) -> bool {
        let state = self.state.lock();
        !state.closed
            && state.bytes > self.limits.budget
            && state.progress.is_some_and(|at| at.elapsed() < RECENT)
    }

    /// Queues `item` once the queue is within its budget (it may then go over by this one
    /// frame); fails once the queue is closed, or when it stays over the budget without
    /// write progress for the stall timeout.
    pub(crate) async fn push(&self, item: WsOut) -> Result<(), PushError> {
        crate::server::coalesce::deliver_pending();
        let cost = cost(&item);
        loop {
            let room = self.room.get_or_init(Box::default);
            let notified = room.notified();
            tokio::pin!(notified);
            // Registered before looking, so a writer making room after our look wakes us.
            notified.as_mut().enable();
            let stuck_at = {
                let mut state = self.state.lock();
                if state.closed {
                    return Err(PushError::Closed);
                }
                if state.bytes <= self.limits.budget && state.frames() < self.limits.frames() {
                    state.bytes += cost;
                    if state.bytes > self.limits.budget {
                        state.progress.get_or_insert_with(Instant::now);
                    }
                    state.push(item);
                    drop(state);
                    self.writer.wake();
                    return Ok(());
                }
                let now = Instant::now();
                if state.stalled(self.limits.stall(), now) {
                    return Err(PushError::Stalled);
                }
                state.room_wanted = true;
                state.progress.unwrap_or(now) + self.limits.stall()
            };
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(stuck_at) => {}
            }
        }
    }

    /// Moves every queued frame to the writer's `batch` (empty, and given back to the
    /// queue once written so that an idle connection keeps one buffer), and reports what
    /// the writer wrote since its last call: `written` frames of `cost` bytes, which no
    /// longer count against the budget. `Ready(true)`: `batch` holds frames;
    /// `Ready(false)`: the queue is closed and everything was written; `Pending`: the queue
    /// is empty, the writer is woken by the next frame.
    pub(crate) fn poll_take(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<WsOut>,
        written: (usize, usize),
    ) -> Poll<bool> {
        debug_assert!(batch.is_empty());
        let mut state = self.state.lock();
        self.account_written(&mut state, written);
        if batch.capacity() > SHRINK_ABOVE {
            // A burst grew it: its memory goes back.
            *batch = VecDeque::new();
        }
        if state.items.is_empty() {
            if state.items.capacity() > SHRINK_ABOVE {
                state.items = VecDeque::new();
            }
            if state.items.capacity() == 0 {
                std::mem::swap(&mut state.items, batch);
            }
            if state.closed && state.taken == 0 {
                return Poll::Ready(false);
            }
            // Under the lock: a producer pushes under it too and wakes after.
            self.writer.register(cx.waker());
            return Poll::Pending;
        }
        std::mem::swap(&mut state.items, batch);
        state.taken += batch.len();
        Poll::Ready(true)
    }

    /// Wakes the writer (the connection's task) if it waits.
    pub(crate) fn wake_writer(&self) {
        self.writer.wake();
    }

    /// The connection's task, to be woken by [`Self::wake_writer`] too.
    pub(crate) fn register_writer(&self, waker: &std::task::Waker) {
        self.writer.register(waker);
    }

    /// The writer wrote `written` frames of `cost` bytes of what it took: they no longer
    /// count against the budget, and it makes progress.
    pub(crate) fn written(&self, written: (usize, usize)) {
        let mut state = self.state.lock();
        self.account_written(&mut state, written);
    }

    fn account_written(&self, state: &mut State, (frames, cost): (usize, usize)) {
        if frames > 0 {
            state.taken -= frames;
            state.bytes -= cost;
            self.progressed(state);
        }
    }

    fn wake_producers(&self) {
        if let Some(room) = self.room.get() {
            room.notify_waiters();
        }
    }

    /// The writer took or wrote frames: it makes progress.
    fn progressed(&self, state: &mut State) {
        if state.progress.is_some() {
            state.progress = (state.bytes > self.limits.budget).then(Instant::now);
        }
        if std::mem::take(&mut state.room_wanted) {
            self.wake_producers();
        }
    }

    /// The next frame; `Ready(None)` once the queue is closed and empty.
    #[cfg(test)]
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<WsOut>> {
        let mut state = self.state.lock();
        match self.pop_locked(&mut state) {
            Some(item) => Poll::Ready(Some(item)),
            None if state.closed => Poll::Ready(None),
            None => {
                self.writer.register(cx.waker());
                Poll::Pending
            }
        }
    }

    /// The next frame, waiting for one; `None` once closed and empty.
    #[cfg(test)]
    pub(crate) async fn pop(&self) -> Option<WsOut> {
        std::future::poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// The next frame if one is queued.
    #[cfg(test)]
    pub(crate) fn try_pop(&self) -> Option<WsOut> {
        let mut state = self.state.lock();
        self.pop_locked(&mut state)
    }

    #[cfg(test)]
    fn pop_locked(&self, state: &mut State) -> Option<WsOut> {
        let item = state.items.pop_front()?;
        state.bytes -= cost(&item);
        if state.items.is_empty() && state.items.capacity() > SHRINK_ABOVE {
            state.items = VecDeque::new();
        }
        self.progressed(state);
        Some(item)
    }

    /// Refuses further frames and wakes everyone waiting; queued frames stay poppable.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.wake_producers();
        self.writer.wake();
    }

    /// Frames queued now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// Bytes queued now (payload and overhead).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;

    /// Limits of `n` frames and no byte budget to speak of.
    fn frames(n: usize) -> Limits {
        Limits {
            frames: n,
            budget: usize::MAX / BURST_FACTOR,
            stall: Duration::from_secs(3600),
        }
    }

    /// A byte budget of `n` one-byte frames, no frame limit.
    fn budget(n: usize, stall: Duration) -> Limits {
        Limits {
            frames: usize::MAX,
            budget: n * (1 + FRAME_OVERHEAD),
            stall,
        }
    }

    fn frame(n: u8) -> WsOut {
        WsOut::Frame(neffos_protocol::Frame::text(bytes::Bytes::from(vec![
            b'a' + n,
        ])))
    }

    fn shed_one(q: &OutQueue, item: WsOut) -> Result<usize, PushError> {
        q.try_push_or_shed_all(std::iter::once(item))
            .map(|(_, shed)| shed)
    }

    fn byte(item: WsOut) -> u8 {
        match item {
            WsOut::Frame(f) => f.bytes[0],
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bounded_fifo() {
        let q = OutQueue::new(frames(2));
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
    fn shedding_keeps_the_queue_within_its_budget_and_in_order() {
        let q = OutQueue::new(budget(3, Duration::from_secs(3600)));
        for n in 0..3 {
            assert_eq!(shed_one(&q, frame(n)), Ok(0));
        }
        assert_eq!(shed_one(&q, frame(3)), Ok(1));
        assert_eq!(q.len(), 3);
        assert_eq!(byte(q.try_pop().unwrap()), b'a');
        // Room again: the next frame is queued behind the older ones.
        assert_eq!(shed_one(&q, frame(4)), Ok(0));
        let rest: Vec<u8> = std::iter::from_fn(|| q.try_pop()).map(byte).collect();
        assert_eq!(rest, b"bce");
        assert!(q.bytes() <= 3 * (1 + FRAME_OVERHEAD));
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_that_sheds_without_progress_is_stuck() {
        let q = OutQueue::new(budget(1, Duration::from_secs(5)));
        assert_eq!(shed_one(&q, frame(0)), Ok(0));
        assert_eq!(shed_one(&q, frame(1)), Ok(1));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(shed_one(&q, frame(2)), Err(PushError::Stalled));
    }

    #[test]
    fn closed_refuses_but_drains() {
        let q = OutQueue::new(frames(4));
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
        let q = Arc::new(OutQueue::new(frames(1)));
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
        let q = Arc::new(OutQueue::new(frames(8)));
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
        let q = OutQueue::new(frames(1000));
        for _ in 0..500 {
            q.try_push(frame(0)).unwrap();
        }
        while q.try_pop().is_some() {}
        assert_eq!(q.state.lock().items.capacity(), 0);
    }

    #[test]
    fn bytes_are_counted_and_released() {
        let q = OutQueue::new(frames(8));
        q.try_push(frame(0)).unwrap();
        q.try_push(frame(1)).unwrap();
        assert_eq!(q.bytes(), 2 * (1 + FRAME_OVERHEAD));
        q.try_pop().unwrap();
        assert_eq!(q.bytes(), 1 + FRAME_OVERHEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn far_behind_only_while_the_writer_takes_frames() {
        let q = OutQueue::new(budget(2, Duration::from_secs(3600)));
        assert_eq!(q.try_push(frame(0)), Ok(Fill::Within));
        assert_eq!(q.try_push(frame(0)), Ok(Fill::Waiting));
        assert_eq!(q.try_push(frame(0)), Ok(Fill::Over));
        assert_eq!(q.try_push(frame(0)), Ok(Fill::Over));
        assert_eq!(q.try_push(frame(0)), Ok(Fill::FarBehind));
        assert!(q.behind_while_reading());
        // No frame taken for a while: not reading (stuck), no reason to hold publishers.
        tokio::time::advance(RECENT).await;
        assert_eq!(q.try_push(frame(0)), Ok(Fill::Over));
        assert!(!q.behind_while_reading());
        q.try_pop().unwrap();
        assert!(q.behind_while_reading(), "taking a frame is progress");
        while q.try_pop().is_some() {}
        assert!(!q.behind_while_reading());
    }

    #[test]
    fn broadcasts_may_burst_to_four_budgets_then_full() {
        let q = OutQueue::new(budget(2, Duration::from_secs(3600)));
        for _ in 0..2 * BURST_FACTOR {
            q.try_push(frame(0)).unwrap();
        }
        assert_eq!(q.try_push(frame(0)), Err(PushError::Full));
    }

    #[tokio::test(start_paused = true)]
    async fn over_budget_without_progress_is_stalled() {
        let stall = Duration::from_secs(5);
        let q = OutQueue::new(budget(2, stall));
        for _ in 0..3 {
            q.try_push(frame(0)).unwrap();
        }
        tokio::time::advance(stall).await;
        assert_eq!(q.try_push(frame(0)), Err(PushError::Stalled));
        // A frame taken by the writer is progress.
        q.try_pop().unwrap();
        q.try_pop().unwrap();
        q.try_push(frame(0)).unwrap();
        q.try_push(frame(0)).unwrap();
        assert_eq!(q.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_waits_for_the_budget_and_fails_when_stuck() {
        let stall = Duration::from_secs(5);
        let q = Arc::new(OutQueue::new(budget(2, stall)));
        for _ in 0..3 {
            q.try_push(frame(0)).unwrap();
        }
        let started = Instant::now();
        assert_eq!(q.push(frame(1)).await, Err(PushError::Stalled));
        assert_eq!(started.elapsed(), stall);
        // Within the budget again, a reply is queued at once.
        for _ in 0..3 {
            q.try_pop().unwrap();
        }
        q.push(frame(1)).await.unwrap();
    }

    /// A writer that took a long batch reports what it wrote as it goes: that is progress,
    /// and the stall clock restarts from it (the batch took 8 s over the budget here).
    #[tokio::test(start_paused = true)]
    async fn written_frames_of_a_taken_batch_are_progress() {
        let stall = Duration::from_secs(5);
        let q = OutQueue::new(budget(2, stall));
        for _ in 0..4 {
            q.try_push(frame(0)).unwrap();
        }
        let mut batch = VecDeque::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(q.poll_take(&mut cx, &mut batch, (0, 0)), Poll::Ready(true));
        assert_eq!(batch.len(), 4);
        assert_eq!(q.bytes(), 4 * (1 + FRAME_OVERHEAD), "counted until written");
        for _ in 0..3 {
            q.try_push(frame(0)).unwrap();
        }
        tokio::time::advance(Duration::from_secs(4)).await;
        q.written((1, 1 + FRAME_OVERHEAD));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(q.try_push(frame(0)).is_ok(), "the writer wrote 4 s ago");
        tokio::time::advance(stall).await;
        assert_eq!(q.try_push(frame(0)), Err(PushError::Stalled));
    }
}
