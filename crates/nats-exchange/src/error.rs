//! Errors of the NATS exchange.

use std::error::Error as StdError;

/// A broker or client-library error, kept only as the [`source`](StdError::source) of an
/// [`Error`] so that no `async-nats` error type appears in this crate's API.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What can go wrong when configuring or connecting a [`NatsExchange`](crate::NatsExchange).
///
/// Once the exchange runs, broker failures are not returned to anybody: publishing never
/// blocks or fails for the caller. They are counted in
/// [`ExchangeStats`](neffos::ExchangeStats), logged with `tracing`, and `async-nats`
/// reconnects by itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No server URL was given.
    #[error("no NATS server URL given")]
    NoUrl,
    /// One of the server URLs is not a valid NATS URL (`nats://`, `tls://`, `host:port`…).
    #[error("invalid NATS server URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        #[source]
        source: BoxError,
    },
    /// A `tls://` URL, but this build has no TLS provider: enable the `tls` feature (or
    /// install a process-wide rustls `CryptoProvider` before connecting).
    #[error("`tls://` needs the `tls` feature of neffos-nats")]
    TlsNotEnabled,
    /// The subject prefix is empty, longer than 128 bytes, or not made of dot-separated
    /// non-empty tokens of `A-Z a-z 0-9 - _`.
    #[error(
        "invalid subject prefix {0:?}: use 1 to 128 characters, dot-separated non-empty tokens of A-Z, a-z, 0-9, '-', '_'"
    )]
    InvalidPrefix(String),
    /// The credentials (file) could not be read or parsed.
    #[error("invalid NATS credentials: {source}")]
    InvalidCredentials {
        /// Why they were refused.
        #[source]
        source: BoxError,
    },
    /// The broker could not be reached, or refused the credentials or the TLS handshake.
    #[error("cannot connect to NATS: {source}")]
    Connect {
        /// The client library's error.
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
}

impl Error {
    /// The class of this error, as the core sees it.
    pub fn kind(&self) -> neffos::error::ExchangeErrorKind {
        use neffos::error::ExchangeErrorKind as Kind;
        match self {
            Error::NoUrl
            | Error::InvalidUrl { .. }
            | Error::TlsNotEnabled
            | Error::InvalidPrefix(_)
            | Error::InvalidCredentials { .. } => Kind::Config,
            Error::Connect { .. } => Kind::Connect,
        }
    }
}

/// Shown to the core as a [`neffos::ExchangeError`] whose source is this error.
impl From<Error> for neffos::ExchangeError {
    fn from(e: Error) -> Self {
        neffos::ExchangeError::new(e.kind(), "NATS exchange").with_source(e)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
