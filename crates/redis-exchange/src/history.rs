//! [`RedisHistory`]: connection-state recovery's [`HistoryStore`] in Redis, shared by every
//! instance, so a client comes back with its session on any of them.
//!
//! Per namespace: a Stream of recorded broadcasts trimmed with `MAXLEN ~`, whose entry IDs
//! are the dense offsets `<n>-0` (so a gap left by trimming is seen exactly), and a hash
//! with the epoch and the last offset. A namespace whose hash is gone (FLUSHALL, eviction,
//! a failover without persistence) starts a new epoch and an empty stream: positions of
//! the old history are answered "epoch changed", never with a silent gap. Sessions are
//! plain keys with a TTL, taken with `GETDEL` so only one reconnect gets one.
//! Each operation is one script, run atomically by Redis.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use neffos::recovery::{HistoryLimits, HistoryStore, Position, Replay, StoreError, StoreFuture};
use redis::aio::{MultiplexedConnection, MultiplexedConnection as Conn};
use redis::{AsyncConnectionConfig, IntoConnectionInfo, Value};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// Default key prefix.
pub const DEFAULT_HISTORY_PREFIX: &str = "neffos:recovery:";

const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'n', 0)
  epoch = ARGV[2]
end
local count = #ARGV - 2
local first = redis.call('HINCRBY', KEYS[2], 'n', count) - count + 1
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, count do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], (first + i - 1) .. '-0', 't', ms, 'p', ARGV[i + 2])
end
return {epoch, first}
";

const HEAD: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'n', 0)
  return {ARGV[1], 0}
end
return {epoch, tonumber(redis.call('HGET', KEYS[2], 'n'))}
";

const READ: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if epoch ~= ARGV[1] then return {'epoch'} end
local n = tonumber(redis.call('HGET', KEYS[2], 'n'))
local after = tonumber(ARGV[2])
if n <= after then return {'ok', n} end
if n - after > tonumber(ARGV[3]) then return {'toomany'} end
local first = (after + 1) .. '-0'
local entries = redis.call('XRANGE', KEYS[1], first, '+')
if #entries == 0 or entries[1][1] ~= first then return {'trimmed'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now - tonumber(entries[1][2][2]) > tonumber(ARGV[4]) then return {'trimmed'} end
local out = {'ok', n}
for _, e in ipairs(entries) do out[#out + 1] = e[2][4] end
return out
";

/// A Lua script and its SHA1 once Redis told it.
struct Script {
    text: &'static str,
    sha: std::sync::OnceLock<String>,
}

impl Script {
    const fn new(text: &'static str) -> Self {
        Script {
            text,
            sha: std::sync::OnceLock::new(),
        }
    }
}

/// Recorded broadcasts and kept sessions in Redis, shared by every instance.
///
/// Per namespace: a Stream of recorded broadcasts trimmed with `MAXLEN ~`, whose entry IDs
/// are the dense offsets `<n>-0` (a gap left by trimming is seen exactly), and a hash with
/// the epoch and the last offset. A namespace whose hash is gone (FLUSHALL, eviction, a
/// failover without persistence) starts a new epoch: positions of the old history are
/// answered "epoch changed", never with a silent gap. The age bound applies when a client
/// comes back (an older missed broadcast means "not recovered"); storage is bounded by the
/// count. Sessions are keys with a TTL, taken with `GETDEL`.
pub struct RedisHistory {
    client: redis::Client,
    conn: Mutex<Option<Conn>>,
    limits: HistoryLimits,
    prefix: String,
    response_timeout: Duration,
    append: Script,
    head: Script,
    read: Script,
}

impl fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHistory")
            .field("limits", &self.limits)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisHistory {
    /// Connects to `url` (`redis://…`) and keeps up to `limits` per namespace, under keys
    /// starting with [`DEFAULT_HISTORY_PREFIX`].
    pub async fn connect(url: &str, limits: HistoryLimits) -> Result<Self> {
        Self::connect_with_prefix(url, limits, DEFAULT_HISTORY_PREFIX).await
    }

    /// Like [`Self::connect`], with keys under `prefix` (several apps on one Redis).
    pub async fn connect_with_prefix(
        url: &str,
        limits: HistoryLimits,
        prefix: &str,
    ) -> Result<Self> {
        let info = url.into_connection_info().map_err(|e| Error::InvalidUrl {
            source: Box::new(e),
        })?;
        let client = redis::Client::open(info).map_err(|e| Error::InvalidUrl {
            source: Box::new(e),
        })?;
        let history = RedisHistory {
            client,
            conn: Mutex::new(None),
            limits,
            prefix: prefix.to_owned(),
            response_timeout: Duration::from_secs(5),
            append: Script::new(APPEND),
            head: Script::new(HEAD),
            read: Script::new(READ),
        };
        let mut conn = history.connection().await.map_err(Error::connect)?;
        for script in [&history.append, &history.head, &history.read] {
            let sha: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(script.text)
                .query_async(&mut conn)
                .await
                .map_err(Error::command)?;
            let _ = script.sha.set(sha);
        }
        Ok(history)
    }

    /// The sessions kept now (live connections' checkpoints included), for inspection: scans
    /// the session keys.
    ///
    /// # Errors
    ///
    /// When Redis cannot be read.
    pub async fn kept_sessions(&self) -> std::result::Result<Vec<Bytes>, StoreError> {
        let mut pattern = Vec::new();
        for b in self.key('k', "") {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(b);
        }
        pattern.push(b'*');
        let mut kept = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<Vec<u8>>) =
                redis::from_redis_value(self.run(&scan).await?).map_err(store_error)?;
            for key in keys {
                // Taken or expired since the scan: not kept.
                if let Value::BulkString(b) = self.run(redis::cmd("GET").arg(key)).await? {
                    kept.push(Bytes::from(b));
                }
            }
            if next == 0 {
                return Ok(kept);
            }
            cursor = next;
        }
    }

    fn key(&self, kind: char, name: &str) -> Vec<u8> {
        // One letter per kind of key: stream, meta, session names cannot collide.
        let mut key = Vec::with_capacity(self.prefix.len() + 2 + name.len());
        key.extend_from_slice(self.prefix.as_bytes());
        key.push(kind as u8);
        key.push(b':');
        key.extend_from_slice(name.as_bytes());
        key
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = &*slot {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.response_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `cmd`; a lost connection is dropped so the next call connects again.
    async fn run(&self, cmd: &redis::Cmd) -> std::result::Result<Value, StoreError> {
        let mut conn = self.connection().await.map_err(store_error)?;
        match cmd.query_async::<Value>(&mut conn).await {
            Ok(value) => Ok(value),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *self.conn.lock().await = None;
                }
                Err(store_error(e))
            }
        }
    }

    /// Runs a script by its SHA1, or by its text when Redis forgot it (restart, flush).
    async fn eval(
        &self,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> std::result::Result<Value, StoreError> {
        let build = |verb: &str, body: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(body).arg(keys.len());
            for k in keys {
                cmd.arg(*k);
            }
            for a in args {
                cmd.arg(*a);
            }
            cmd
        };
        if let Some(sha) = script.sha.get() {
            let mut conn = self.connection().await.map_err(store_error)?;
            match build("EVALSHA", sha).query_async::<Value>(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(e) if e.code() == Some("NOSCRIPT") => {}
                Err(e) => {
                    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                        *self.conn.lock().await = None;
                    }
                    return Err(store_error(e));
                }
            }
        }
        self.run(&build("EVAL", script.text)).await
    }
}

fn store_error(e: impl fmt::Display) -> StoreError {
    StoreError(format!("redis: {e}"))
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().as_u64_pair().0.to_string()
}

fn bytes_of(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int_of(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => std::str::from_utf8(bytes_of(other)?).ok()?.parse().ok(),
    }
}

/// `{epoch, n}` → a position.
fn position(value: Value) -> std::result::Result<Position, StoreError> {
    let Value::Array(items) = value else {
        return Err(StoreError("redis: unexpected reply".into()));
    };
    match items.as_slice() {
        [epoch, n] => Ok(Position {
            epoch: int_of(epoch).ok_or_else(|| StoreError("redis: bad epoch".into()))?,
            offset: int_of(n).ok_or_else(|| StoreError("redis: bad offset".into()))?,
        }),
        _ => Err(StoreError("redis: unexpected reply".into())),
    }
}

impl HistoryStore for RedisHistory {
    /// One script call for all of them: Redis runs it atomically, so the positions are
    /// consecutive and in this order.
    fn append_all<'a>(
        &'a self,
        namespace: &'a str,
        payloads: &'a [Bytes],
    ) -> StoreFuture<'a, Vec<Position>> {
        Box::pin(async move {
            if payloads.is_empty() {
                return Ok(Vec::new());
            }
            let (stream, meta) = (self.key('s', namespace), self.key('m', namespace));
            let max = self.limits.max_entries.to_string();
            let epoch = new_epoch();
            let mut args: Vec<&[u8]> = Vec::with_capacity(payloads.len() + 2);
            args.push(max.as_bytes());
            args.push(epoch.as_bytes());
            args.extend(payloads.iter().map(|p| &p[..]));
            let first = position(self.eval(&self.append, &[&stream, &meta], &args).await?)?;
            Ok((0..payloads.len() as u64)
                .map(|i| Position {
                    epoch: first.epoch,
                    offset: first.offset + i,
                })
                .collect())
        })
    }

    fn head<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Position> {
        Box::pin(async move {
            let (stream, meta) = (self.key('s', namespace), self.key('m', namespace));
            let epoch = new_epoch();
            let reply = self
                .eval(&self.head, &[&stream, &meta], &[epoch.as_bytes()])
                .await?;
            position(reply)
        })
    }

    fn read_after<'a>(
        &'a self,
        namespace: &'a str,
        after: Position,
        limit: usize,
    ) -> StoreFuture<'a, Replay> {
        Box::pin(async move {
            let (stream, meta) = (self.key('s', namespace), self.key('m', namespace));
            let args = [
                after.epoch.to_string(),
                after.offset.to_string(),
                limit.to_string(),
                self.limits.max_age.as_millis().to_string(),
            ];
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let reply = self.eval(&self.read, &[&stream, &meta], &args).await?;
            let Value::Array(items) = reply else {
                return Err(StoreError("redis: unexpected reply".into()));
            };
            let mut items = items.into_iter();
            let verdict = items.next();
            match verdict.as_ref().and_then(bytes_of) {
                Some(b"epoch") => Ok(Replay::EpochChanged),
                Some(b"trimmed") => Ok(Replay::Trimmed),
                Some(b"toomany") => Ok(Replay::TooMany),
                Some(b"ok") => {
                    let head = items
                        .next()
                        .as_ref()
                        .and_then(int_of)
                        .ok_or_else(|| StoreError("redis: bad head".into()))?;
                    let mut entries = Vec::new();
                    for (i, item) in items.enumerate() {
                        let Value::BulkString(payload) = item else {
                            return Err(StoreError("redis: bad entry".into()));
                        };
                        let pos = Position {
                            epoch: after.epoch,
                            offset: after.offset + 1 + i as u64,
                        };
                        entries.push((pos, Bytes::from(payload)));
                    }
                    Ok(Replay::Entries {
                        entries,
                        head: Position {
                            epoch: after.epoch,
                            offset: head.max(after.offset),
                        },
                    })
                }
                _ => Err(StoreError("redis: unexpected reply".into())),
            }
        })
    }

    fn save_session<'a>(
        &'a self,
        key: &'a str,
        session: Bytes,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key('k', key))
                .arg(&session[..])
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64);
            self.run(&cmd).await.map(|_| ())
        })
    }

    fn take_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GETDEL");
            cmd.arg(self.key('k', key));
            match self.run(&cmd).await? {
                Value::Nil => Ok(None),
                Value::BulkString(b) => Ok(Some(Bytes::from(b))),
                _ => Err(StoreError("redis: unexpected reply".into())),
            }
        })
    }

    fn delete_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.key('k', key));
            self.run(&cmd).await.map(|_| ())
        })
    }
}
