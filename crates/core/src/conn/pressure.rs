//! Push back on publishers instead of closing readers that are behind.
//!
//! A recipient whose queue is over its budget while its writer keeps taking frames reads;
//! the server is just sending faster than it can deliver (a burst, a CPU hiccup, a publisher
//! faster than the network). A broadcast that finds a quarter of its recipients in that
//! state, or one of them over twice its budget, notes them here, on the thread that runs the
//! publishing handler. The connection whose handler it was then stops reading until those
//! recipients caught up, are closed, or turn out to be stuck (TCP carries the pause to the
//! publisher). Stuck clients are not waited for: they are closed by the stall timeout.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use super::{ConnInner, Fill};

/// Laggards remembered per broadcast (enough to know when the burst drained).
const MAX_LAGGARDS: usize = 8;

thread_local! {
    /// Laggards noted by broadcasts during the current poll of a handler.
    static NOTED: RefCell<Vec<Weak<ConnInner>>> = const { RefCell::new(Vec::new()) };
}

/// The recipients of one broadcast that were behind (no allocation: a stuck client is
/// behind on every broadcast until it is closed).
#[derive(Default)]
pub(crate) struct Lagging {
    behind: usize,
    far_behind: bool,
    some: [Option<Weak<ConnInner>>; MAX_LAGGARDS],
}

impl Lagging {
    /// `conn` was left over its budget (`fill` is not `Within`).
    pub(crate) fn add(&mut self, conn: &Arc<ConnInner>, fill: Fill) {
        if let Some(slot) = self.some.get_mut(self.behind) {
            *slot = Some(Arc::downgrade(conn));
        }
        self.behind += 1;
        self.far_behind |= fill == Fill::FarBehind;
    }

    /// Notes the laggards for the publishing handler if the broadcast to `delivered`
    /// recipients left a quarter of them behind, or one far behind.
    pub(crate) fn note(self, delivered: usize) {
        if self.far_behind || (self.behind > 0 && self.behind * 4 >= delivered) {
            NOTED.with(|noted| {
                let mut noted = noted.borrow_mut();
                let room = MAX_LAGGARDS.saturating_sub(noted.len());
                noted.extend(self.some.into_iter().flatten().take(room));
            });
        }
    }
}

/// A connection's handler future; hands the laggards its broadcasts noted to the
/// connection, whose reader then pauses (see [`holds`]).
pub(crate) struct Watched<F> {
    inner: Arc<ConnInner>,
    fut: F,
}

impl<F> Watched<F> {
    pub(crate) fn new(inner: Arc<ConnInner>, fut: F) -> Self {
        Watched { inner, fut }
    }
}

impl<F: Future<Output = ()> + Unpin> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        NOTED.with(|noted| noted.borrow_mut().clear());
        let poll = Pin::new(&mut self.fut).poll(cx);
        NOTED.with(|noted| {
            let mut noted = noted.borrow_mut();
            if !noted.is_empty() {
                let mut laggards = self.inner.laggards.lock();
                let room = MAX_LAGGARDS.saturating_sub(laggards.len());
                laggards.extend(noted.drain(..).take(room));
            }
        });
        poll
    }
}

/// Whether `inner` is pushed back now: some recipient its broadcasts left behind still is,
/// while it reads. Forgets the ones that caught up, closed or got stuck.
pub(crate) fn holds(inner: &ConnInner) -> bool {
    let mut laggards = inner.laggards.lock();
    if laggards.is_empty() {
        return false;
    }
    laggards.retain(|l| l.upgrade().is_some_and(|l| l.queue.behind_while_reading()));
    !laggards.is_empty()
}
