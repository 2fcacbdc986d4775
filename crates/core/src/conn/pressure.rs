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
use std::sync::{Arc, Weak};

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

/// Runs one poll of `inner`'s task: its broadcasts are coalesced (see
/// [`crate::server::coalesce`]), and the laggards they noted are handed to the connection,
/// whose reader then pauses (see [`holds`]).
pub(crate) fn poll_publisher<R>(inner: &ConnInner, poll: impl FnOnce() -> R) -> R {
    NOTED.with(|noted| noted.borrow_mut().clear());
    let out = crate::server::coalesce::scope(poll);
    take_noted(inner);
    out
}

/// Hands the laggards noted so far in this poll to `inner`.
fn take_noted(inner: &ConnInner) {
    NOTED.with(|noted| {
        let mut noted = noted.borrow_mut();
        if !noted.is_empty() {
            let mut laggards = inner.laggards.lock();
            let room = MAX_LAGGARDS.saturating_sub(laggards.len());
            laggards.extend(noted.drain(..).take(room));
        }
    });
}

/// Runs one poll of a task that delivers without a publisher to push back (the exchange's
/// inbound task): coalesced, and what it noted forgotten.
pub(crate) fn poll_inbound<R>(poll: impl FnOnce() -> R) -> R {
    let out = crate::server::coalesce::scope(poll);
    NOTED.with(|noted| noted.borrow_mut().clear());
    out
}

/// Whether `inner` is pushed back now: some recipient its broadcasts left behind still is,
/// while it reads. Forgets the ones that caught up, closed or got stuck.
pub(crate) fn holds(inner: &ConnInner) -> bool {
    // Bursts delivered earlier in this poll count at once.
    take_noted(inner);
    let mut laggards = inner.laggards.lock();
    if laggards.is_empty() {
        return false;
    }
    laggards.retain(|l| l.upgrade().is_some_and(|l| l.queue.behind_while_reading()));
    !laggards.is_empty()
}
