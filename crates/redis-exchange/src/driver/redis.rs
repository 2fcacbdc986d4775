//! The [`Driver`] on the `redis` crate: RESP3 multiplexed connections, whose pub/sub
//! messages arrive as pushes handed straight to [`Pushes`].

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};

use super::{Connection, Driver, Pushes};
use crate::error::{Error, Result};

/// Connects to one Redis server.
#[derive(Debug, Clone)]
pub(crate) struct RedisDriver {
    client: redis::Client,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl RedisDriver {
    /// Parses `url` (`redis://[user][:password@]host[:port][/db]`, `rediss://…` with the
    /// `tls` feature, `redis+unix:///path`) and selects RESP3.
    pub(crate) fn new(
        url: &str,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self> {
        let scheme = url.split("://").next().unwrap_or_default();
        if cfg!(not(feature = "tls")) && matches!(scheme, "rediss" | "valkeys") {
            return Err(Error::TlsNotEnabled);
        }
        let info = url.into_connection_info().map_err(|e| Error::InvalidUrl {
            source: Box::new(e),
        })?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(|e| {
            Error::InvalidUrl {
                source: Box::new(e),
            }
        })?;
        Ok(RedisDriver {
            client,
            connect_timeout,
            response_timeout,
        })
    }
}

/// Hands one push to the exchange. Runs on the connection's driver task: must not block.
fn on_push(pushes: &Pushes, info: PushInfo) {
    match info.kind {
        PushKind::Message => {
            let mut data = info.data.into_iter();
            // [channel, payload]; anything else is not a message we could have caused.
            if let (Some(channel), Some(Value::BulkString(payload)), None) =
                (data.next(), data.next(), data.next())
            {
                let channel = match &channel {
                    Value::BulkString(name) => name.as_slice(),
                    _ => &[],
                };
                pushes.message(channel, Bytes::from(payload));
            } else {
                tracing::debug!("ignored a malformed pub/sub push from Redis");
            }
        }
        PushKind::Disconnection => pushes.disconnected(),
        _ => {}
    }
}

impl Driver for RedisDriver {
    type Conn = RedisConn;

    async fn connect(&self, pushes: Pushes) -> Result<RedisConn> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_push_sender(move |info: PushInfo| {
                on_push(&pushes, info);
                Ok::<(), Infallible>(())
            });
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(Error::connect)?;
        Ok(RedisConn { conn })
    }
}

/// One RESP3 connection.
#[derive(Clone)]
pub(crate) struct RedisConn {
    conn: MultiplexedConnection,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn").finish_non_exhaustive()
    }
}

impl Connection for RedisConn {
    async fn set_name(&mut self, name: &str) -> Result<()> {
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(name)
            .exec_async(&mut self.conn)
            .await
            .map_err(Error::command)
    }

    async fn publish(&mut self, batch: &[(String, Bytes)]) -> Result<()> {
        let mut pipe = redis::pipe();
        for (channel, payload) in batch {
            pipe.cmd("PUBLISH")
                .arg(channel.as_str())
                .arg(&payload[..])
                .ignore();
        }
        pipe.exec_async(&mut self.conn)
            .await
            .map_err(Error::command)
    }

    async fn subscribe(&mut self, channels: &[String]) -> Result<()> {
        self.conn.subscribe(channels).await.map_err(Error::command)
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> Result<()> {
        self.conn
            .unsubscribe(channels)
            .await
            .map_err(Error::command)
    }

    async fn ping(&mut self) -> Result<()> {
        redis::cmd("PING")
            .exec_async(&mut self.conn)
            .await
            .map_err(Error::command)
    }
}
