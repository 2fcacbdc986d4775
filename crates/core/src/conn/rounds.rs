//! The writers' rounds: a server-wide count of the times a connection's writer took frames
//! from its queue. A publisher paced by [`super::pressure`] waits until the count grew by
//! about the number of recipients its broadcast found behind: by then their writers have
//! had their turn, whatever order the scheduler ran them in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// Takes counted server-wide, and the publishers waiting for a count.
#[derive(Debug)]
pub(crate) struct Rounds {
    takes: AtomicU64,
    /// The smallest count a publisher waits for (`u64::MAX`: none waits), so that a take
    /// looks at the waiters only when one is due.
    next_due: AtomicU64,
    waiters: Mutex<Vec<(u64, Waker)>>,
}

impl Default for Rounds {
    fn default() -> Self {
        Rounds {
            takes: AtomicU64::new(0),
            next_due: AtomicU64::new(u64::MAX),
            waiters: Mutex::new(Vec::new()),
        }
    }
}

impl Rounds {
    /// The count now.
    pub(crate) fn now(&self) -> u64 {
        self.takes.load(Ordering::SeqCst)
    }

    /// A writer took frames.
    pub(crate) fn took(&self) {
        let now = self.takes.fetch_add(1, Ordering::SeqCst) + 1;
        if now >= self.next_due.load(Ordering::SeqCst) {
            self.wake_due(now);
        }
    }

    fn wake_due(&self, now: u64) {
        let mut waiters = self.waiters.lock();
        let mut next = u64::MAX;
        waiters.retain(|(due, waker)| {
            if *due <= now {
                waker.wake_by_ref();
                false
            } else {
                next = next.min(*due);
                true
            }
        });
        self.next_due.store(next, Ordering::SeqCst);
    }

    /// `Ready` once the count reached `due`.
    pub(crate) fn poll_reached(&self, due: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.now() >= due {
            return Poll::Ready(());
        }
        {
            let mut waiters = self.waiters.lock();
            if let Some(slot) = waiters
                .iter_mut()
                .find(|(d, w)| *d == due && w.will_wake(cx.waker()))
            {
                slot.1 = cx.waker().clone();
            } else {
                waiters.push((due, cx.waker().clone()));
            }
            self.next_due.fetch_min(due, Ordering::SeqCst);
        }
        // Looked at again after registering: a take between the first look and the
        // registration saw no waiter due (the entry left behind is woken by a later take).
        if self.now() >= due {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Resolves once the count reached `due`.
    pub(crate) async fn reached(&self, due: u64) {
        std::future::poll_fn(|cx| self.poll_reached(due, cx)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_waiter_is_woken_when_the_count_is_reached() {
        let rounds = Arc::new(Rounds::default());
        let due = rounds.now() + 3;
        let waiter = tokio::spawn({
            let rounds = rounds.clone();
            async move { rounds.reached(due).await }
        });
        tokio::task::yield_now().await;
        rounds.took();
        rounds.took();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "two takes of three");
        rounds.took();
        waiter.await.unwrap();
        assert_eq!(
            rounds.next_due.load(Ordering::SeqCst),
            u64::MAX,
            "nobody waits"
        );
    }

    #[tokio::test]
    async fn a_count_already_reached_does_not_wait() {
        let rounds = Rounds::default();
        rounds.took();
        rounds.reached(1).await;
        assert!(rounds.waiters.lock().is_empty());
    }
}
