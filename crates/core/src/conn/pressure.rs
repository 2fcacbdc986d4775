//! Push back on publishers instead of closing readers that are behind, and pace publishers
//! to the recipients' writers when the server is behind.
//!
//! **Push-back.** A recipient whose queue is over its budget while its writer keeps taking
//! frames reads; the server is just sending faster than it can deliver (a burst, a CPU
//! hiccup, a publisher faster than the network). A broadcast that finds a quarter of its
//! recipients in that state, or one of them over twice its budget, notes them here, on the
//! thread that runs the publishing handler. The connection whose handler it was then stops
//! reading until those recipients caught up, are closed, or turn out to be stuck (TCP
//! carries the pause to the publisher). Stuck clients are not waited for: they are closed
//! by the stall timeout.
//!
//! **Pacing.** Long before any budget is reached, a broadcast that finds most of its
//! recipients with frames still waiting for their writers (the server is behind: the
//! writers have not had their turn since the last broadcast) notes a round of the writers
//! ([`Rounds`]): the publisher reads its next frames once that many writers took their
//! frames, at most [`PACE_MAX`] later. What the publisher sent meanwhile waits in its
//! socket and is read at once, and the broadcasts read in one poll reach each recipient as
//! one burst ([`crate::server::coalesce`]): one lock round and one wake-up per recipient
//! per round of the writers instead of one per broadcast. The work per delivery shrinks
//! exactly when the server is behind, as with the raw floor's broadcast channel, whose
//! receivers pull what accumulated. While the server keeps up, the recipients' queues are
//! empty when a broadcast comes, and nothing waits.

use std::cell::RefCell;
use std::num::NonZeroU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::rounds::Rounds;
use super::{ConnInner, Fill};

/// Laggards remembered per broadcast (enough to know when the burst drained).
const MAX_LAGGARDS: usize = 8;

/// A broadcast to fewer recipients does not pace its publisher: its fan-out is cheap.
const PACE_MIN_RECIPIENTS: usize = 32;

/// The longest a paced publisher waits for its round (the writers of clients that stopped
/// reading take nothing until they are closed as stuck).
pub(crate) const PACE_MAX: Duration = Duration::from_millis(10);

thread_local! {
    /// What broadcasts noted during the current poll of a handler.
    static NOTED: RefCell<Held> = const { RefCell::new(Held { laggards: Vec::new(), round: None }) };
}

/// What a publisher waits for before it reads on.
#[derive(Default)]
pub(crate) struct Held {
    /// Recipients left behind while they read (push-back).
    laggards: Vec<Weak<ConnInner>>,
    /// The count of [`Rounds`] to wait for (pacing; never zero: 8 bytes in every
    /// connection, not 16).
    round: Option<NonZeroU64>,
}

/// Why a publisher does not read now.
pub(crate) enum Hold {
    /// It reads.
    No,
    /// Recipients it left behind still are (looked at again every little while).
    Laggards,
    /// The server is behind: it waits for the writers' takes to reach this count.
    Round(u64),
}

/// The recipients of one broadcast that were behind (no allocation: a stuck client is
/// behind on every broadcast until it is closed).
#[derive(Default)]
pub(crate) struct Lagging {
    behind: usize,
    far_behind: bool,
    some: [Option<Weak<ConnInner>>; MAX_LAGGARDS],
    /// Recipients that still had frames waiting for their writer.
    waiting: usize,
}

impl Lagging {
    /// A frame was queued for `conn`, leaving its queue at `fill`.
    pub(crate) fn add(&mut self, conn: &Arc<ConnInner>, fill: Fill) {
        if fill == Fill::Within {
            return;
        }
        self.waiting += 1;
        if fill == Fill::Waiting {
            return;
        }
        if let Some(slot) = self.some.get_mut(self.behind) {
            *slot = Some(Arc::downgrade(conn));
        }
        self.behind += 1;
        self.far_behind |= fill == Fill::FarBehind;
    }

    /// Notes the laggards for the publishing handler if the broadcast to `delivered`
    /// recipients left a quarter of them behind, or one far behind; and the round of
    /// `rounds` to pace it on if most of them still had frames waiting.
    pub(crate) fn note(self, delivered: usize, rounds: &Rounds) {
        let laggards = self.far_behind || (self.behind > 0 && self.behind * 4 >= delivered);
        let pace = delivered >= PACE_MIN_RECIPIENTS && self.waiting * 2 >= delivered;
        if !laggards && !pace {
            return;
        }
        NOTED.with(|noted| {
            let mut noted = noted.borrow_mut();
            if laggards {
                let room = MAX_LAGGARDS.saturating_sub(noted.laggards.len());
                noted
                    .laggards
                    .extend(self.some.into_iter().flatten().take(room));
            }
            if pace {
                // Most of the recipients' writers, each taking once: the ones behind and
                // the ones this broadcast woke alike.
                noted.round = NonZeroU64::new(rounds.now() + (delivered as u64 * 3).div_ceil(4));
            }
        });
    }
}

/// Runs one poll of `inner`'s task: its broadcasts are coalesced (see
/// [`crate::server::coalesce`]), and what they noted is handed to the connection, whose
/// reader then pauses (see [`holds`]).
pub(crate) fn poll_publisher<R>(inner: &ConnInner, poll: impl FnOnce() -> R) -> R {
    NOTED.with(|noted| {
        let mut noted = noted.borrow_mut();
        noted.laggards.clear();
        noted.round = None;
    });
    let out = crate::server::coalesce::scope(poll);
    take_noted(inner);
    out
}

/// Hands what was noted so far in this poll to `inner`.
fn take_noted(inner: &ConnInner) {
    NOTED.with(|noted| {
        let mut noted = noted.borrow_mut();
        if noted.laggards.is_empty() && noted.round.is_none() {
            return;
        }
        let mut held = inner.held.lock();
        let room = MAX_LAGGARDS.saturating_sub(held.laggards.len());
        held.laggards.extend(noted.laggards.drain(..).take(room));
        if let Some(round) = noted.round.take()
            && held.round.replace(round).is_none()
        {
            inner.server.count(super::Count::PublisherPaced);
        }
    });
}

/// Runs one poll of a task that delivers without a publisher to push back (the exchange's
/// inbound task): coalesced, and what it noted forgotten.
pub(crate) fn poll_inbound<R>(poll: impl FnOnce() -> R) -> R {
    let out = crate::server::coalesce::scope(poll);
    NOTED.with(|noted| {
        let mut noted = noted.borrow_mut();
        noted.laggards.clear();
        noted.round = None;
    });
    out
}

/// Whether `inner` holds its reading now: some recipient its broadcasts left behind still
/// is, while it reads, or the writers' round it is paced on is not over. Forgets the
/// laggards that caught up, closed or got stuck, and a round that is over.
pub(crate) fn holds(inner: &ConnInner) -> Hold {
    // Bursts delivered earlier in this poll count at once.
    take_noted(inner);
    let mut held = inner.held.lock();
    if !held.laggards.is_empty() {
        held.laggards
            .retain(|l| l.upgrade().is_some_and(|l| l.queue.behind_while_reading()));
        if !held.laggards.is_empty() {
            return Hold::Laggards;
        }
    }
    if let Some(due) = held.round.map(NonZeroU64::get) {
        if inner
            .server
            .rounds()
            .is_some_and(|rounds| rounds.now() < due)
        {
            return Hold::Round(due);
        }
        held.round = None;
    }
    Hold::No
}

/// Forgets the laggards (they stayed behind past the stall timeout).
pub(crate) fn forget_laggards(inner: &ConnInner) {
    inner.held.lock().laggards.clear();
}

/// Forgets the round (it took longer than [`PACE_MAX`]).
pub(crate) fn forget_round(inner: &ConnInner) {
    inner.held.lock().round = None;
}
