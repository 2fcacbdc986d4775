//! Queries to every live instance: published once on the cluster topic, answered to the
//! asker's inbox, collected until every live instance answered or the deadline passed.
//! What did not answer in time is reported, never turned into an error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use neffos_protocol::cluster::{Answer, ClusterMessage, Query};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{ClusterError, ClusterErrorKind};
use crate::server::ServerShared;

/// A cluster-wide answer: the value merged from every instance that answered by the
/// deadline, and the live instances that did not.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Partial<T> {
    /// The merged answer (this instance's part included).
    pub value: T,
    /// Live instances that did not answer by the deadline (slow, paused or dead).
    pub missing: Vec<Uuid>,
    /// Instances whose answer is included, this one first.
    pub answered: Vec<Uuid>,
}

impl<T> Partial<T> {
    /// True when every live instance answered.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Partial<U> {
        Partial {
            value: f(self.value),
            missing: self.missing,
            answered: self.answered,
        }
    }
}

/// One connection somewhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct Member {
    /// Connection ID.
    pub id: String,
    /// The instance holding the connection.
    pub instance: Uuid,
}

/// The answers of one query, per instance.
pub(crate) type Answers = Partial<Vec<(Uuid, Answer)>>;

/// Queries waiting for answers, by token.
#[derive(Debug, Default)]
pub(crate) struct PendingQueries {
    waiting: Mutex<HashMap<u64, mpsc::UnboundedSender<(Uuid, Answer)>>>,
}

impl PendingQueries {
    /// Hands an answer to its query; false when nobody waits for it any more.
    pub(crate) fn answer(&self, token: u64, from: Uuid, answer: Answer) -> bool {
        match self.waiting.lock().get(&token) {
            Some(tx) => tx.send((from, answer)).is_ok(),
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.lock().len()
    }
}

struct Registration<'a> {
    pending: &'a PendingQueries,
    token: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.pending.waiting.lock().remove(&self.token);
    }
}

/// Asks every live instance (and this one, through `local`) and collects the answers
/// until all live instances answered or `deadline` passed.
///
/// `limited`: counts against [`ClusterConfig::max_queries_per_second`](crate::ClusterConfig);
/// the lookups behind [`Server::ask`](crate::Server::ask) are not (each follows an Ask the
/// application made).
pub(crate) async fn ask_all(
    shared: &Arc<ServerShared>,
    query: Query,
    deadline: Duration,
    limited: bool,
) -> Result<Answers, ClusterError> {
    let state = &shared.cluster;
    if shared.is_shutting_down() {
        return Err(ClusterError::new(
            ClusterErrorKind::ShuttingDown,
            format!("cluster query {query:?}"),
        ));
    }
    if limited && !state.query_bucket.try_take() {
        state.metrics.rate_limited.increment(1);
        return Err(ClusterError::new(
            ClusterErrorKind::RateLimited,
            format!("cluster query {query:?}"),
        ));
    }
    state.metrics.queries.increment(1);
    let started = Instant::now();
    let expected: HashSet<Uuid> = state.live_peers(started).into_iter().collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let token = shared.next_token();
    state.pending.waiting.lock().insert(token, tx);
    let _registration = Registration {
        pending: &state.pending,
        token,
    };
    if !expected.is_empty() {
        let msg = ClusterMessage::Query {
            token,
            query: query.clone(),
        };
        super::publish_to_all(shared, &msg)?;
    }
    let mut answers = vec![(shared.instance, super::answer::local(shared, &query).await)];
    let mut waiting = expected.clone();
    let stop = tokio::time::Instant::from_std(started + deadline);
    while !waiting.is_empty() {
        match tokio::time::timeout_at(stop, rx.recv()).await {
            Ok(Some((from, answer))) => {
                if answers.iter().any(|(id, _)| *id == from) {
                    continue;
                }
                waiting.remove(&from);
                answers.push((from, answer));
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut missing: Vec<Uuid> = waiting.into_iter().collect();
    missing.sort();
    if !missing.is_empty() {
        state.metrics.query_timeouts.increment(1);
        state
            .metrics
            .missing_instances
            .increment(missing.len() as u64);
    }
    state
        .metrics
        .query_seconds
        .record(started.elapsed().as_secs_f64());
    let answered = answers.iter().map(|(id, _)| *id).collect();
    Ok(Partial {
        value: answers,
        missing,
        answered,
    })
}

/// Members from [`Answer::Ids`] answers, sorted.
pub(crate) fn members(answers: Answers) -> Partial<Vec<Member>> {
    answers.map(|answers| {
        let mut out: Vec<Member> = answers
            .into_iter()
            .flat_map(|(instance, answer)| {
                match answer {
                    Answer::Ids(ids) => ids,
                    _ => Vec::new(),
                }
                .into_iter()
                .map(move |id| Member { id, instance })
            })
            .collect();
        out.sort();
        out
    })
}

/// The sum of [`Answer::Count`] answers.
pub(crate) fn sum(answers: Answers) -> Partial<usize> {
    answers.map(|answers| {
        answers
            .iter()
            .map(|(_, answer)| match answer {
                Answer::Count(n) => usize::try_from(*n).unwrap_or(usize::MAX),
                _ => 0,
            })
            .fold(0usize, usize::saturating_add)
    })
}

/// Room sizes summed over [`Answer::Rooms`] answers.
pub(crate) fn rooms(answers: Answers) -> Partial<BTreeMap<String, usize>> {
    answers.map(|answers| {
        let mut out = BTreeMap::new();
        for (_, answer) in answers {
            if let Answer::Rooms(rooms) = answer {
                for (room, n) in rooms {
                    *out.entry(room).or_insert(0usize) += usize::try_from(n).unwrap_or(0);
                }
            }
        }
        out
    })
}

/// The instances holding a connection ID, with how many connections each.
pub(crate) fn holders(answers: Answers) -> Partial<Vec<(Uuid, usize)>> {
    answers.map(|answers| {
        answers
            .into_iter()
            .filter_map(|(instance, answer)| match answer {
                Answer::Count(n) if n > 0 => Some((instance, usize::try_from(n).unwrap_or(0))),
                _ => None,
            })
            .collect()
    })
}

/// Asks one instance (through its inbox) and waits for its answer until `deadline`.
pub(crate) async fn ask_one(
    shared: &Arc<ServerShared>,
    instance: Uuid,
    query: Query,
    deadline: Duration,
) -> Option<Answer> {
    let state = &shared.cluster;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let token = shared.next_token();
    state.pending.waiting.lock().insert(token, tx);
    let _registration = Registration {
        pending: &state.pending,
        token,
    };
    let msg = ClusterMessage::Query { token, query };
    super::publish_to(shared, instance, &msg).ok()?;
    let stop = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(stop, rx.recv()).await {
            Ok(Some((from, answer))) if from == instance => return Some(answer),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}
