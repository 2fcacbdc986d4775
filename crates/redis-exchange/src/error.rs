//! Errors of the Redis exchange.

use std::error::Error as StdError;

/// A broker error, kept only as the [`source`](StdError::source) of an [`Error`] so no
/// `redis` type appears in this crate's API.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What can go wrong when configuring or connecting a [`RedisExchange`](crate::RedisExchange).
///
/// Once the exchange runs, broker failures are not returned to anybody: publishing never
/// blocks or fails for the caller. They are counted in
/// [`ExchangeStats`](neffos::ExchangeStats), logged with `tracing`, and the exchange
/// reconnects by itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a valid `redis://`, `rediss://` or `redis+unix://` URL.
    #[error("invalid Redis URL: {source}")]
    InvalidUrl {
        /// Why the URL was refused.
        #[source]
        source: BoxError,
    },
    /// A `rediss://` URL, but this build has no TLS (enable the `tls` feature).
    #[error("`rediss://` needs the `tls` feature of neffos-redis")]
    TlsNotEnabled,
    /// The channel prefix is empty, too long, or has characters outside `[A-Za-z0-9_.-]`.
    #[error(
        "invalid channel prefix {0:?}: use 1 to 64 characters among A-Z, a-z, 0-9, '_', '.', '-'"
    )]
    InvalidPrefix(String),
    /// The broker could not be reached, refused the credentials, or does not speak RESP3
    /// (Redis 6 or newer is needed).
    #[error("cannot connect to Redis: {source}")]
    Connect {
        /// The broker's error.
        #[source]
        source: BoxError,
    },
    /// A command failed or timed out on an established connection.
    #[error("Redis command failed: {source}")]
    Command {
        /// The broker's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    pub(crate) fn connect(e: impl StdError + Send + Sync + 'static) -> Self {
        Error::Connect {
            source: Box::new(e),
        }
    }

    /// A connection attempt the broker's host refused (nothing listens on the port): the
    /// broker is restarting or gone, not slow.
    pub(crate) fn is_refusal(&self) -> bool {
        let Error::Connect { source } = self else {
            return false;
        };
        if let Some(e) = source.downcast_ref::<redis::RedisError>() {
            return e.is_connection_refusal();
        }
        source
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    }

    /// A connection attempt or a command that waited out its timeout: the host is
    /// unreachable or frozen, not refusing.
    #[cfg(feature = "cluster")]
    pub(crate) fn is_timeout(&self) -> bool {
        let (Error::Connect { source } | Error::Command { source }) = self else {
            return false;
        };
        if let Some(e) = source.downcast_ref::<redis::RedisError>() {
            return e.is_timeout();
        }
        source
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
    }

    pub(crate) fn command(e: impl StdError + Send + Sync + 'static) -> Self {
        Error::Command {
            source: Box::new(e),
        }
    }
}

impl Error {
    /// The class of this error, as the core sees it.
    pub fn kind(&self) -> neffos::error::ExchangeErrorKind {
        use neffos::error::ExchangeErrorKind as Kind;
        match self {
            Error::InvalidUrl { .. } | Error::TlsNotEnabled | Error::InvalidPrefix(_) => {
                Kind::Config
            }
            Error::Connect { .. } => Kind::Connect,
            Error::Command { .. } => Kind::Broker,
        }
    }
}

/// Shown to the core as a [`neffos::ExchangeError`] whose source is this error.
impl From<Error> for neffos::ExchangeError {
    fn from(e: Error) -> Self {
        neffos::ExchangeError::new(e.kind(), "Redis exchange").with_source(e)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
