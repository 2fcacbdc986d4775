//! Numbered streams for outage tests: a sender broadcasting `0, 1, 2…` at a fixed period,
//! and receivers that check every arrival (increasing: no duplicate, no reordering), count
//! what is missing and tell when delivery resumed after an event (a broker kill, a
//! failover…).
//!
//! ```no_run
//! # async fn run(a: neffos::Server, url: String) {
//! use std::time::{Duration, Instant};
//! use neffos::Target;
//! use neffos::testkit::numbered::{Numbered, stream};
//! let (_client, mut received) = Numbered::connect(&url, "chat", "seq").await;
//! let sender = stream(a, Target::namespace("chat"), "seq", Duration::from_millis(5));
//! received.until(50, Instant::now()).await; // flowing
//! let changed = Instant::now();
//! // … kill the broker …
//! let outage = received.until(received.last().unwrap_or(0) + 100, changed).await;
//! println!("{} lost, resumed after {:?}", outage.missing, outage.resumed_after);
//! sender.abort();
//! # }
//! ```

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Client, Events, Message, Namespaces, NsConn, Server, Target};

/// How long [`Numbered::until`] waits for the next arrival.
pub const WAIT: Duration = Duration::from_secs(15);

/// Broadcasts `Message::new("", event, n)` with `n = 0, 1, 2…` (decimal) to `target` from
/// `server` every `period`, until the task is aborted. Failed broadcasts are skipped (their
/// number is then missing at the receivers).
pub fn stream(server: Server, target: Target, event: &str, period: Duration) -> JoinHandle<()> {
    let event = event.to_owned();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        for n in 0u64.. {
            tick.tick().await;
            let _ = server.broadcast(
                target.clone(),
                Message::new("", event.as_str(), n.to_string()),
            );
        }
    })
}

/// What happened to a stream around an event: numbers missing, and the time from the event
/// to the first arrival after a gap (or, without a gap, the first arrival after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// Numbers skipped.
    pub missing: u64,
    /// When delivery resumed, counted from the event.
    pub resumed_after: Duration,
}

/// A receiver of numbered messages, checking each arrival.
#[derive(Debug)]
pub struct Numbered {
    rx: mpsc::UnboundedReceiver<(u64, Instant)>,
    last: Option<u64>,
    missing: u64,
}

impl Numbered {
    /// A client of `url` connected to `namespace`, recording the numbers its `event`
    /// messages carry. Keep the client: dropping it disconnects.
    ///
    /// # Panics
    ///
    /// When the client cannot connect.
    pub async fn connect(url: &str, namespace: &str, event: &str) -> (Client, Numbered) {
        let (tx, rx) = mpsc::unbounded_channel();
        let events = Events::new().on(event, move |_ns: NsConn, msg: Message| {
            let tx = tx.clone();
            async move {
                if let Some(n) = std::str::from_utf8(&msg.body)
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    let _ = tx.send((n, Instant::now()));
                }
            }
        });
        let client = Client::builder(url)
            .namespaces(Namespaces::new().namespace(namespace, events))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("a numbered receiver cannot connect to {url}: {e}"));
        client
            .connect(namespace)
            .await
            .unwrap_or_else(|e| panic!("a numbered receiver cannot join {namespace}: {e}"));
        (client, Numbered::new(rx))
    }

    /// Wraps a channel of `(number, arrival time)`.
    pub fn new(rx: mpsc::UnboundedReceiver<(u64, Instant)>) -> Self {
        Numbered {
            rx,
            last: None,
            missing: 0,
        }
    }

    /// The last number received.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Numbers skipped so far.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    fn check(&mut self, n: u64) -> bool {
        let gap = match self.last {
            Some(last) => {
                assert!(n > last, "{n} after {last}: duplicate or reordered");
                self.missing += n - last - 1;
                n > last + 1
            }
            None => false,
        };
        self.last = Some(n);
        gap
    }

    /// The next arrival if one is queued (checked), without waiting.
    pub fn try_next(&mut self) -> Option<(u64, Instant)> {
        let (n, at) = self.rx.try_recv().ok()?;
        self.check(n);
        Some((n, at))
    }

    /// The next arrival (checked).
    ///
    /// # Panics
    ///
    /// When nothing arrives within [`WAIT`].
    pub async fn next(&mut self) -> (u64, Instant) {
        let (n, at) = tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no numbered message within {WAIT:?}"))
            .unwrap_or_else(|| panic!("the numbered receiver's client closed"));
        self.check(n);
        (n, at)
    }

    /// Receives until number `at_least` arrived; returns what was missing meanwhile and
    /// when delivery resumed, counted from `since`.
    pub async fn until(&mut self, at_least: u64, since: Instant) -> Outage {
        let before = self.missing;
        let mut resumed = None;
        let mut first_gap = true;
        loop {
            let (n, at) = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("delivery did not resume within {WAIT:?}"))
                .unwrap_or_else(|| panic!("the numbered receiver's client closed"));
            if self.check(n) && first_gap {
                // Delivery resumes after the (first) gap.
                resumed = Some(at);
                first_gap = false;
            }
            if resumed.is_none() && at >= since {
                resumed = Some(at);
            }
            if n >= at_least {
                break;
            }
        }
        Outage {
            missing: self.missing - before,
            resumed_after: resumed.unwrap_or(since).saturating_duration_since(since),
        }
    }
}
