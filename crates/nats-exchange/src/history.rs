//! [`NatsHistory`] (feature `history`): connection-state recovery's store in JetStream.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use neffos::recovery::{HistoryLimits, HistoryStore, Position, Replay, StoreError, StoreFuture};
use tokio::sync::Mutex;

/// The stream of kept sessions (the last message per subject `neffos.s.<hex of the key>`).
const SESSIONS_STREAM: &str = "NEFFOS_SESSIONS";

/// The sessions stream's age bound until a longer window asks for more.
const DEFAULT_SESSION_AGE: Duration = Duration::from_secs(120);

/// A session record: its deadline (Unix milliseconds, big-endian), then the session.
fn record(session: &[u8], ttl: Duration) -> Bytes {
    let deadline = unix_millis().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let mut record = Vec::with_capacity(8 + session.len());
    record.extend_from_slice(&deadline.to_be_bytes());
    record.extend_from_slice(session);
    Bytes::from(record)
}

/// The session of a record whose deadline has not passed.
fn unexpired(record: Bytes) -> Option<Bytes> {
    let deadline = u64::from_be_bytes(record.get(..8)?.try_into().ok()?);
    (deadline > unix_millis()).then(|| record.slice(8..))
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Recorded broadcasts and kept sessions in NATS JetStream, shared by every instance.
///
/// One stream per namespace (`NEFFOS_H_<hex of the name>`, bounded by `max_messages` and
/// `max_age`), whose sequence numbers are the offsets; its creation time is the epoch, so a
/// stream deleted and created again is a new history ("epoch changed"), and a purged or
/// trimmed one shows a gap ("history trimmed"): never a silent one. Sessions live in the
/// stream `NEFFOS_SESSIONS`, one subject per key keeping its last message; each record
/// carries its deadline (the window), the stream's age bound is the longest window seen. A
/// session is taken by deleting its message by sequence, which succeeds for one reconnect
/// only.
pub struct NatsHistory {
    js: jetstream::Context,
    limits: HistoryLimits,
    /// Epoch of each namespace's stream, as last seen.
    epochs: Mutex<HashMap<String, u64>>,
    sessions: Mutex<Option<stream::Stream>>,
}

impl fmt::Debug for NatsHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsHistory")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn stream_name(namespace: &str) -> String {
    format!("NEFFOS_H_{}", hex(namespace))
}

fn subject(namespace: &str) -> String {
    format!("neffos.h.x{}", hex(namespace))
}

fn store_error(e: impl fmt::Display) -> StoreError {
    StoreError(format!("nats: {e}"))
}

fn epoch_of(info: &stream::Info) -> u64 {
    // Nanoseconds since 1970 fit in 64 bits until 2554.
    info.created.unix_timestamp_nanos() as u64
}

impl NatsHistory {
    /// Uses the JetStream of `client` (the server must run with JetStream, `-js`) and keeps
    /// up to `limits` per namespace.
    pub fn new(client: async_nats::Client, limits: HistoryLimits) -> Self {
        NatsHistory {
            js: jetstream::new(client),
            limits,
            epochs: Mutex::new(HashMap::new()),
            sessions: Mutex::new(None),
        }
    }

    /// Connects to `url` and uses its JetStream ([`Self::new`]).
    pub async fn connect(url: &str, limits: HistoryLimits) -> crate::Result<Self> {
        let client = async_nats::connect(url)
            .await
            .map_err(crate::Error::connect)?;
        Ok(Self::new(client, limits))
    }

    async fn stream(&self, namespace: &str) -> Result<stream::Stream, StoreError> {
        let config = stream::Config {
            name: stream_name(namespace),
            subjects: vec![subject(namespace)],
            max_messages: i64::try_from(self.limits.max_entries).unwrap_or(i64::MAX),
            max_age: self.limits.max_age,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let mut stream = self
            .js
            .get_or_create_stream(config)
            .await
            .map_err(store_error)?;
        let info = stream.info().await.map_err(store_error)?;
        self.epochs
            .lock()
            .await
            .insert(namespace.to_owned(), epoch_of(info));
        Ok(stream)
    }

    /// The sessions stream; its age bound grows to the longest `ttl` asked for (each record
    /// carries its own deadline, so a shorter window still ends on time).
    async fn sessions(&self, ttl: Option<Duration>) -> Result<stream::Stream, StoreError> {
        let mut slot = self.sessions.lock().await;
        if let Some(stream) = &*slot
            && ttl.is_none_or(|ttl| ttl <= stream.cached_info().config.max_age)
        {
            return Ok(stream.clone());
        }
        let config = stream::Config {
            name: SESSIONS_STREAM.to_owned(),
            subjects: vec!["neffos.s.>".to_owned()],
            max_messages_per_subject: 1,
            max_age: ttl.unwrap_or(DEFAULT_SESSION_AGE),
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let mut stream = self
            .js
            .get_or_create_stream(config.clone())
            .await
            .map_err(store_error)?;
        let max_age = stream.info().await.map_err(store_error)?.config.max_age;
        if let Some(ttl) = ttl
            && ttl > max_age
        {
            self.js.update_stream(config).await.map_err(store_error)?;
            stream.info().await.map_err(store_error)?;
        }
        *slot = Some(stream.clone());
        Ok(stream)
    }

    /// The sessions kept now (records not expired, live connections' checkpoints included),
    /// for inspection: reads the whole sessions stream.
    ///
    /// # Errors
    ///
    /// When JetStream cannot be read.
    pub async fn kept_sessions(&self) -> Result<Vec<Bytes>, StoreError> {
        let mut stream = self.sessions(None).await?;
        let state = stream.info().await.map_err(store_error)?.state.clone();
        let mut kept = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            if state.messages == 0 {
                break;
            }
            // Deleted (taken) or expired since the info: not kept.
            if let Ok(msg) = stream.get_raw_message(seq).await
                && let Some(session) = unexpired(msg.payload)
            {
                kept.push(session);
            }
        }
        Ok(kept)
    }

    async fn epoch(&self, namespace: &str) -> Result<u64, StoreError> {
        if let Some(epoch) = self.epochs.lock().await.get(namespace) {
            return Ok(*epoch);
        }
        self.stream(namespace).await?;
        self.epochs
            .lock()
            .await
            .get(namespace)
            .copied()
            .ok_or_else(|| StoreError("nats: no epoch".into()))
    }
}

impl HistoryStore for NatsHistory {
    /// Published one after the other on the one connection, so JetStream numbers them in
    /// this order, and the acknowledgements awaited after: one round trip for the batch.
    fn append_all<'a>(
        &'a self,
        namespace: &'a str,
        payloads: &'a [Bytes],
    ) -> StoreFuture<'a, Vec<Position>> {
        Box::pin(async move {
            if payloads.is_empty() {
                return Ok(Vec::new());
            }
            match self.publish_all(namespace, payloads).await {
                Ok(positions) => Ok(positions),
                // The stream is gone (deleted), nothing was recorded: a new stream, a new
                // epoch.
                Err((true, _)) => {
                    self.stream(namespace).await?;
                    self.publish_all(namespace, payloads)
                        .await
                        .map_err(|(_, e)| e)
                }
                Err((false, e)) => Err(e),
            }
        })
    }

    fn head<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Position> {
        Box::pin(async move {
            let mut stream = self.stream(namespace).await?;
            let info = stream.info().await.map_err(store_error)?;
            Ok(Position {
                epoch: epoch_of(info),
                offset: info.state.last_sequence,
            })
        })
    }

    fn read_after<'a>(
        &'a self,
        namespace: &'a str,
        after: Position,
        limit: usize,
    ) -> StoreFuture<'a, Replay> {
        Box::pin(async move {
            let Ok(mut stream) = self.js.get_stream(stream_name(namespace)).await else {
                return Ok(Replay::EpochChanged);
            };
            let info = stream.info().await.map_err(store_error)?;
            if epoch_of(info) != after.epoch {
                return Ok(Replay::EpochChanged);
            }
            let (first, last) = (info.state.first_sequence, info.state.last_sequence);
            if last <= after.offset {
                return Ok(Replay::Entries {
                    entries: Vec::new(),
                    head: after,
                });
            }
            if last - after.offset > limit as u64 {
                return Ok(Replay::TooMany);
            }
            if first > after.offset + 1 || info.state.messages < last - after.offset {
                return Ok(Replay::Trimmed);
            }
            let mut entries = Vec::with_capacity((last - after.offset) as usize);
            for seq in after.offset + 1..=last {
                match stream.get_raw_message(seq).await {
                    Ok(msg) => entries.push((
                        Position {
                            epoch: after.epoch,
                            offset: seq,
                        },
                        msg.payload,
                    )),
                    // Dropped since the info (age bound): a gap.
                    Err(_) => return Ok(Replay::Trimmed),
                }
            }
            Ok(Replay::Entries {
                entries,
                head: Position {
                    epoch: after.epoch,
                    offset: last,
                },
            })
        })
    }

    fn save_session<'a>(
        &'a self,
        key: &'a str,
        session: Bytes,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.sessions(Some(ttl)).await?;
            self.js
                .publish(session_subject(key), record(&session, ttl))
                .await
                .map_err(store_error)?
                .await
                .map(|_| ())
                .map_err(store_error)
        })
    }

    fn take_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let sessions = self.sessions(None).await?;
            let Ok(msg) = sessions
                .get_last_raw_message_by_subject(&session_subject(key))
                .await
            else {
                return Ok(None);
            };
            // Only the reconnect whose delete succeeds gets it, if its window has not passed.
            match sessions.delete_message(msg.sequence).await {
                Ok(true) => Ok(unexpired(msg.payload)),
                _ => Ok(None),
            }
        })
    }

    fn delete_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let sessions = self.sessions(None).await?;
            sessions
                .purge()
                .filter(session_subject(key))
                .await
                .map(|_| ())
                .map_err(store_error)
        })
    }
}

fn session_subject(key: &str) -> String {
    format!("neffos.s.x{}", hex(key))
}

impl NatsHistory {
    /// [`HistoryStore::append_all`] without the retry; an error says whether it is worth
    /// one: the stream was not found for the first of them, so none was recorded.
    async fn publish_all(
        &self,
        namespace: &str,
        payloads: &[Bytes],
    ) -> Result<Vec<Position>, (bool, StoreError)> {
        let epoch = self.epoch(namespace).await.map_err(|e| (false, e))?;
        let subject = subject(namespace);
        let mut acks = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let ack = self
                .js
                .publish(subject.clone(), payload.clone())
                .await
                .map_err(|e| (false, store_error(e)))?;
            acks.push(ack);
        }
        let mut positions = Vec::with_capacity(acks.len());
        for ack in acks {
            let ack = ack.await.map_err(|e| {
                let gone = positions.is_empty()
                    && e.kind() == jetstream::context::PublishErrorKind::StreamNotFound;
                (gone, store_error(e))
            })?;
            positions.push(Position {
                epoch,
                offset: ack.sequence,
            });
        }
        Ok(positions)
    }
}
