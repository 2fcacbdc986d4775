//! A one-way "closed" flag that tasks can wait for.
//!
//! `tokio_util`'s `CancellationToken` supports trees of tokens, and pays for it: every
//! token allocates a node, and `is_cancelled` takes that node's mutex. A connection checks
//! its flag once per queued frame and never needs children, so an atomic and a `Notify`,
//! both inline, do the same job without the lock or the allocation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Latch {
    set: AtomicBool,
    notify: Notify,
}

/// A [`Latch`] that one task (the connection's own) polls on every wake-up: an atomic
/// waker slot for it, where polling a `Notify` waiter takes its lock each time.
#[derive(Debug, Default)]
pub(crate) struct OwnedLatch {
    latch: Latch,
    owner: AtomicWaker,
}

impl OwnedLatch {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes every waiter and the owner; later calls do nothing.
    pub(crate) fn cancel(&self) {
        if self.latch.set_once() {
            self.owner.wake();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.latch.is_cancelled()
    }

    /// Ready once [`OwnedLatch::cancel`] was called. For the owner only (the last task to
    /// poll is woken); others use [`OwnedLatch::cancelled`].
    pub(crate) fn poll_owner(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the check, so a `cancel` after the check wakes us.
        self.owner.register(cx.waker());
        if self.is_cancelled() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves once [`OwnedLatch::cancel`] was called (at once if it was already).
    pub(crate) async fn cancelled(&self) {
        self.latch.cancelled().await;
    }
}

impl Latch {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes every waiter; later calls do nothing.
    pub(crate) fn cancel(&self) {
        self.set_once();
    }

    /// Sets the flag and wakes every waiter; false if it was set already.
    fn set_once(&self) -> bool {
        let first = !self.set.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_waiters();
        }
        first
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Resolves once [`Latch::cancel`] was called (at once if it was already).
    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a `cancel` after the check wakes us.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn wakes_waiters_set_before_and_after() {
        let latch = Arc::new(Latch::new());
        let waiter = tokio::spawn({
            let latch = latch.clone();
            async move { latch.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(!latch.is_cancelled());
        latch.cancel();
        latch.cancel();
        waiter.await.unwrap();
        assert!(latch.is_cancelled());
        // Already set: resolves at once.
        latch.cancelled().await;
    }
}
