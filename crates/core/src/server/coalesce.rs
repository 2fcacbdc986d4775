//! Broadcasts coalesced within one poll of a task: consecutive broadcasts to the same
//! recipients go out together, each recipient taking the burst under one lock with one
//! wake-up instead of one per broadcast.
//!
//! A connection's task handles every frame that is ready before it yields, and so does the
//! exchange's inbound task with its envelopes. When the server is behind, many frames are
//! ready at once, so the bursts grow exactly when the work per recipient must shrink (the
//! raw floor's broadcast channel gets the same effect by letting receivers pull). While the
//! server keeps up, a poll handles one frame and delivers it when the poll ends: no delay
//! beyond the poll.
//!
//! Order is kept: anything else this thread queues for any connection delivers the pending
//! burst first ([`deliver_pending`], called by the outbound queue's producers), and so do a
//! broadcast to other recipients, a change of the recipients, and the end of the poll.

use std::cell::RefCell;
use std::sync::Arc;

use super::registry::Recipients;
use super::{ServerShared, Target};
use crate::transport::WsOut;

/// Broadcasts in one burst at most (a recipient's queue takes them in one go).
const MAX_BURST: usize = 64;

thread_local! {
    static SCOPE: RefCell<Scope> = const { RefCell::new(Scope { active: false, pending: None }) };
}

struct Scope {
    /// A coalescing poll runs on this thread.
    active: bool,
    pending: Option<Burst>,
}

/// Broadcasts to one target, with the recipients they were sent to.
struct Burst {
    server: Arc<ServerShared>,
    target: Target,
    recipients: Recipients,
    frames: Vec<WsOut>,
    /// Payload bytes of `frames`.
    bytes: usize,
}

impl Burst {
    fn takes(
        &self,
        server: &Arc<ServerShared>,
        target: &Target,
        recipients: &Recipients,
        frame: &WsOut,
    ) -> bool {
        // A quarter of the outbound budget at most: a burst alone never takes a recipient
        // from within its budget to the hard limit (four budgets), and the push-back that
        // follows a burst comes before the next one.
        let bytes = self.bytes + frame.data_len().unwrap_or(0);
        self.frames.len() < MAX_BURST
            && bytes <= self.server.config.outbound_budget / 4
            && Arc::ptr_eq(&self.server, server)
            && self.recipients.members.same(&recipients.members)
            && self.target.same_recipients(target)
    }

    fn deliver(self) {
        self.server
            .deliver_frames(&self.target, &self.recipients, &self.frames, None);
    }
}

/// Runs `poll` (one poll of a task) with coalescing on, and delivers what it coalesced
/// before returning.
pub(crate) fn scope<R>(poll: impl FnOnce() -> R) -> R {
    /// Delivers the burst and restores the outer state even if `poll` panics.
    struct Guard(bool);
    impl Drop for Guard {
        fn drop(&mut self) {
            deliver_pending();
            SCOPE.with(|s| s.borrow_mut().active = self.0);
        }
    }
    let _guard = Guard(SCOPE.with(|s| std::mem::replace(&mut s.borrow_mut().active, true)));
    poll()
}

/// Adds a broadcast of `frame` to `recipients` (`target` selecting among them) to this
/// thread's burst; gives them back when no coalescing poll runs here.
pub(crate) fn offer(
    server: &Arc<ServerShared>,
    target: &Target,
    recipients: Recipients,
    frame: WsOut,
) -> Result<(), (Recipients, WsOut)> {
    if !SCOPE.with(|s| s.borrow().active) {
        return Err((recipients, frame));
    }
    // `Some`: the burst pending (if any) does not take this frame.
    let apart = SCOPE.with(|s| {
        let mut s = s.borrow_mut();
        match s.pending.take() {
            Some(mut burst) if burst.takes(server, target, &recipients, &frame) => {
                burst.bytes += frame.data_len().unwrap_or(0);
                burst.frames.push(frame);
                s.pending = Some(burst);
                None
            }
            earlier => Some((earlier, recipients, frame)),
        }
    });
    if let Some((earlier, recipients, frame)) = apart {
        // The earlier burst goes first; nothing is pending while it is delivered.
        if let Some(earlier) = earlier {
            earlier.deliver();
        }
        let burst = Burst {
            server: server.clone(),
            target: target.clone(),
            recipients,
            bytes: frame.data_len().unwrap_or(0),
            frames: vec![frame],
        };
        SCOPE.with(|s| s.borrow_mut().pending = Some(burst));
    }
    Ok(())
}

/// Delivers this thread's pending burst now (before anything else is queued, to keep the
/// order).
pub(crate) fn deliver_pending() {
    if let Some(burst) = SCOPE.with(|s| s.borrow_mut().pending.take()) {
        burst.deliver();
    }
}
