//! [`MemoryHistory`]: the in-process [`HistoryStore`] (one instance; the default).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::store::{HistoryLimits, HistoryStore, Position, Replay, StoreFuture};

/// Recorded broadcasts and kept sessions in this process's memory: recovery on the instance
/// the client was on. The default store when recovery is on; use the Redis or NATS store
/// to recover on any instance.
#[derive(Debug, Clone, Default)]
pub struct MemoryHistory {
    limits: HistoryLimits,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<String, Stream>,
    sessions: HashMap<String, (Bytes, Instant)>,
}

#[derive(Debug)]
struct Stream {
    epoch: u64,
    /// `(offset, appended at, payload)`, oldest first; offsets increase by one.
    entries: VecDeque<(u64, Instant, Bytes)>,
    last: u64,
    /// The highest offset dropped by a bound (0: none).
    trimmed: u64,
}

impl Stream {
    fn new() -> Self {
        Stream {
            epoch: uuid::Uuid::new_v4().as_u64_pair().0,
            entries: VecDeque::new(),
            last: 0,
            trimmed: 0,
        }
    }

    fn head(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.last,
        }
    }

    fn trim(&mut self, limits: &HistoryLimits, now: Instant) {
        while let Some(&(offset, at, _)) = self.entries.front() {
            let too_many = self.entries.len() > limits.max_entries;
            let too_old = now.saturating_duration_since(at) > limits.max_age;
            if !too_many && !too_old {
                break;
            }
            self.trimmed = offset;
            self.entries.pop_front();
        }
    }
}

impl MemoryHistory {
    /// A store keeping up to `limits` per namespace.
    pub fn new(limits: HistoryLimits) -> Self {
        MemoryHistory {
            limits,
            state: Arc::default(),
        }
    }

    /// Drops `namespace`'s history and starts a new epoch, as a broker that lost its data
    /// would (for tests and operators).
    pub fn forget(&self, namespace: &str) {
        self.state
            .lock()
            .streams
            .insert(namespace.to_owned(), Stream::new());
    }

    /// Sessions currently kept (expired ones excluded).
    pub fn session_count(&self) -> usize {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.sessions.retain(|_, (_, until)| *until > now);
        state.sessions.len()
    }

    /// Bytes of the kept sessions' records (what sessions cost, bookkeeping excluded).
    pub fn session_bytes(&self) -> usize {
        self.state
            .lock()
            .sessions
            .values()
            .map(|(s, _)| s.len())
            .sum()
    }

    /// Bytes of the recorded payloads of `namespace` (what the history costs in memory,
    /// bookkeeping excluded).
    pub fn recorded_bytes(&self, namespace: &str) -> usize {
        self.state
            .lock()
            .streams
            .get(namespace)
            .map_or(0, |s| s.entries.iter().map(|(_, _, b)| b.len()).sum())
    }
}

fn ready<T: Send + 'static>(value: T) -> StoreFuture<'static, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl HistoryStore for MemoryHistory {
    fn append_all<'a>(
        &'a self,
        namespace: &'a str,
        payloads: &'a [Bytes],
    ) -> StoreFuture<'a, Vec<Position>> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let stream = state
            .streams
            .entry(namespace.to_owned())
            .or_insert_with(Stream::new);
        let mut positions = Vec::with_capacity(payloads.len());
        for payload in payloads {
            stream.last += 1;
            stream
                .entries
                .push_back((stream.last, now, payload.clone()));
            positions.push(stream.head());
        }
        stream.trim(&self.limits, now);
        ready(positions)
    }

    fn head<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Position> {
        let mut state = self.state.lock();
        let stream = state
            .streams
            .entry(namespace.to_owned())
            .or_insert_with(Stream::new);
        ready(stream.head())
    }

    fn read_after<'a>(
        &'a self,
        namespace: &'a str,
        after: Position,
        limit: usize,
    ) -> StoreFuture<'a, Replay> {
        let mut state = self.state.lock();
        let Some(stream) = state.streams.get_mut(namespace) else {
            return ready(Replay::EpochChanged);
        };
        if stream.epoch != after.epoch {
            return ready(Replay::EpochChanged);
        }
        stream.trim(&self.limits, Instant::now());
        if stream.trimmed > after.offset {
            return ready(Replay::Trimmed);
        }
        let new = stream.last.saturating_sub(after.offset);
        if new > limit as u64 {
            return ready(Replay::TooMany);
        }
        let entries = stream
            .entries
            .iter()
            .filter(|(offset, _, _)| *offset > after.offset)
            .map(|(offset, _, payload)| {
                let pos = Position {
                    epoch: stream.epoch,
                    offset: *offset,
                };
                (pos, payload.clone())
            })
            .collect();
        let head = if stream.last > after.offset {
            stream.head()
        } else {
            after
        };
        ready(Replay::Entries { entries, head })
    }

    fn save_session<'a>(
        &'a self,
        key: &'a str,
        session: Bytes,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        let until = Instant::now() + ttl;
        let mut state = self.state.lock();
        state.sessions.retain(|_, (_, u)| *u > Instant::now());
        state.sessions.insert(key.to_owned(), (session, until));
        ready(())
    }

    fn take_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Bytes>> {
        let taken = self.state.lock().sessions.remove(key);
        ready(taken.and_then(|(s, until)| (until > Instant::now()).then_some(s)))
    }

    fn delete_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.state.lock().sessions.remove(key);
        ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(f: StoreFuture<'_, T>) -> T {
        futures_util::FutureExt::now_or_never(f)
            .expect("memory store is synchronous")
            .expect("memory store does not fail")
    }

    #[test]
    fn replays_after_a_position_and_detects_gaps_and_epochs() {
        let store = MemoryHistory::new(HistoryLimits::default().max_entries(3));
        let start = block(store.head("ns"));
        let p1 = block(store.append("ns", Bytes::from_static(b"1")));
        let p2 = block(store.append("ns", Bytes::from_static(b"2")));
        assert!(p1 < p2 && p1.epoch == start.epoch);
        match block(store.read_after("ns", p1, 10)) {
            Replay::Entries { entries, head } => {
                assert_eq!(entries, vec![(p2, Bytes::from_static(b"2"))]);
                assert_eq!(head, p2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(block(store.read_after("ns", start, 1)), Replay::TooMany);
        for _ in 0..3 {
            block(store.append("ns", Bytes::new()));
        }
        // p1 and p2 were trimmed by the count bound: a replay from start would have a gap.
        assert_eq!(block(store.read_after("ns", start, 10)), Replay::Trimmed);
        store.forget("ns");
        assert_eq!(block(store.read_after("ns", p2, 10)), Replay::EpochChanged);
        assert_eq!(
            block(store.read_after("other", p2, 10)),
            Replay::EpochChanged
        );
    }

    #[test]
    fn age_bound_trims_on_read() {
        let store = MemoryHistory::new(HistoryLimits::default().max_age(Duration::ZERO));
        let start = block(store.head("ns"));
        block(store.append("ns", Bytes::new()));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(block(store.read_after("ns", start, 10)), Replay::Trimmed);
    }

    #[test]
    fn a_session_is_taken_once_and_expires() {
        let store = MemoryHistory::default();
        block(store.save_session("k", Bytes::from_static(b"s"), Duration::from_secs(60)));
        assert_eq!(store.session_count(), 1);
        assert_eq!(
            block(store.take_session("k")),
            Some(Bytes::from_static(b"s"))
        );
        assert_eq!(block(store.take_session("k")), None);
        block(store.save_session("k", Bytes::new(), Duration::ZERO));
        assert_eq!(block(store.take_session("k")), None);
    }
}
