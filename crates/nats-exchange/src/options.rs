//! Our own connection options and events, so that no `async-nats` type is part of this
//! crate's API (its releases do not change our semver), and so that secrets never reach a
//! log line through `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use neffos::redact::REDACTED;

#[cfg(feature = "nkeys")]
use crate::error::Error;
use crate::error::Result;

/// How the exchange authenticates.
#[derive(Clone, Default)]
enum Auth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    #[cfg(feature = "nkeys")]
    NKey(String),
    #[cfg(feature = "nkeys")]
    CredentialsFile(PathBuf),
    #[cfg(feature = "nkeys")]
    Credentials(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &REDACTED)
                .finish(),
            Auth::Token(_) => f.debug_tuple("Token").field(&REDACTED).finish(),
            #[cfg(feature = "nkeys")]
            Auth::NKey(_) => f.debug_tuple("NKey").field(&REDACTED).finish(),
            // The path is not a secret; the file's contents are never read into this value.
            #[cfg(feature = "nkeys")]
            Auth::CredentialsFile(path) => f.debug_tuple("CredentialsFile").field(path).finish(),
            #[cfg(feature = "nkeys")]
            Auth::Credentials(_) => f.debug_tuple("Credentials").field(&REDACTED).finish(),
        }
    }
}

/// How the exchange connects to NATS: credentials, TLS, timeouts, connection name.
/// `Debug` never shows a password, token, NKey seed or credentials.
///
/// ```
/// use std::time::Duration;
/// use neffos_nats::ConnectOptions;
/// let options = ConnectOptions::with_user_and_password("chat", "hunter2")
///     .name("chat-server")
///     .connection_timeout(Duration::from_secs(2));
/// assert!(!format!("{options:?}").contains("hunter2"));
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct ConnectOptions {
    auth: Auth,
    name: Option<String>,
    connection_timeout: Option<Duration>,
    ping_interval: Option<Duration>,
    require_tls: bool,
    root_certificates: Vec<PathBuf>,
    client_certificate: Option<(PathBuf, PathBuf)>,
    retain_servers_order: bool,
    inbox_prefix: Option<String>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("auth", &self.auth)
            .field("name", &self.name)
            .field("connection_timeout", &self.connection_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("require_tls", &self.require_tls)
            .field("root_certificates", &self.root_certificates)
            .field("client_certificate", &self.client_certificate)
            .field("retain_servers_order", &self.retain_servers_order)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

impl ConnectOptions {
    /// No credentials (or those of the URL), default timeouts.
    pub fn new() -> Self {
        Self::default()
    }

    /// User and password authentication.
    pub fn with_user_and_password(user: impl Into<String>, password: impl Into<String>) -> Self {
        ConnectOptions {
            auth: Auth::UserPassword {
                user: user.into(),
                password: password.into(),
            },
            ..Self::default()
        }
    }

    /// Token authentication.
    pub fn with_token(token: impl Into<String>) -> Self {
        ConnectOptions {
            auth: Auth::Token(token.into()),
            ..Self::default()
        }
    }

    /// NKey authentication with this seed (`SU…`).
    #[cfg(feature = "nkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nkeys")))]
    pub fn with_nkey(seed: impl Into<String>) -> Self {
        ConnectOptions {
            auth: Auth::NKey(seed.into()),
            ..Self::default()
        }
    }

    /// JWT authentication with a credentials file (`.creds`), read when connecting.
    #[cfg(feature = "nkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nkeys")))]
    pub fn with_credentials_file(path: impl Into<PathBuf>) -> Self {
        ConnectOptions {
            auth: Auth::CredentialsFile(path.into()),
            ..Self::default()
        }
    }

    /// JWT authentication with the contents of a credentials file.
    #[cfg(feature = "nkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nkeys")))]
    pub fn with_credentials(credentials: impl Into<String>) -> Self {
        ConnectOptions {
            auth: Auth::Credentials(credentials.into()),
            ..Self::default()
        }
    }

    /// The connection's name, shown by the server's monitoring (default `neffos`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long connecting may take.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = Some(timeout);
        self
    }

    /// How often the client pings the server.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = Some(interval);
        self
    }

    /// Refuses servers that do not offer TLS.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn require_tls(mut self, required: bool) -> Self {
        self.require_tls = required;
        self
    }

    /// Trusts the CA certificates in this PEM file.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn add_root_certificates(mut self, pem: impl Into<PathBuf>) -> Self {
        self.root_certificates.push(pem.into());
        self
    }

    /// Authenticates with this client certificate and key (PEM files).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn add_client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// Tries the configured servers in the order given (default: shuffled).
    pub fn retain_servers_order(mut self) -> Self {
        self.retain_servers_order = true;
        self
    }

    /// The prefix of the inboxes `flush` uses (default `_INBOX`): set it when permissions
    /// allow only some subjects.
    pub fn custom_inbox_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inbox_prefix = Some(prefix.into());
        self
    }

    /// True when credentials were given (else those of the URL are used).
    pub(crate) fn has_auth(&self) -> bool {
        !matches!(self.auth, Auth::None)
    }

    /// The `async-nats` options these stand for.
    pub(crate) async fn build(self) -> Result<async_nats::ConnectOptions> {
        let mut options = match self.auth {
            Auth::None => async_nats::ConnectOptions::new(),
            Auth::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user, password)
            }
            Auth::Token(token) => async_nats::ConnectOptions::with_token(token),
            #[cfg(feature = "nkeys")]
            Auth::NKey(seed) => async_nats::ConnectOptions::with_nkey(seed),
            #[cfg(feature = "nkeys")]
            Auth::CredentialsFile(path) => async_nats::ConnectOptions::with_credentials_file(&path)
                .await
                .map_err(|e| Error::InvalidCredentials {
                    source: Box::new(e),
                })?,
            #[cfg(feature = "nkeys")]
            Auth::Credentials(text) => async_nats::ConnectOptions::with_credentials(&text)
                .map_err(|e| Error::InvalidCredentials {
                    source: Box::new(e),
                })?,
        };
        options = options.name(self.name.as_deref().unwrap_or("neffos"));
        if let Some(timeout) = self.connection_timeout {
            options = options.connection_timeout(timeout);
        }
        if let Some(interval) = self.ping_interval {
            options = options.ping_interval(interval);
        }
        if self.require_tls {
            options = options.require_tls(true);
        }
        for pem in self.root_certificates {
            options = options.add_root_certificates(pem);
        }
        if let Some((cert, key)) = self.client_certificate {
            options = options.add_client_certificate(cert, key);
        }
        if self.retain_servers_order {
            options = options.retain_servers_order();
        }
        if let Some(prefix) = self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        Ok(options)
    }
}

/// A connection event of the exchange's NATS connection, given to
/// [`NatsExchangeBuilder::on_event`](crate::NatsExchangeBuilder::on_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatsEvent {
    /// Connected (first connection or reconnection).
    Connected,
    /// The connection was lost; the client reconnects.
    Disconnected,
    /// The server is shutting down gracefully (lame duck mode).
    LameDuckMode,
    /// The connection is draining.
    Draining,
    /// The connection is closed for good.
    Closed,
    /// Messages of this subscription were dropped: its queue was full.
    SlowConsumer {
        /// The subscription's ID.
        subscription: u64,
    },
    /// The server reported an error (`-ERR`), with its text.
    ServerError(String),
    /// The client library reported an error, with its text.
    ClientError(String),
}

impl From<&async_nats::Event> for NatsEvent {
    fn from(event: &async_nats::Event) -> Self {
        use async_nats::Event;
        match event {
            Event::Connected => NatsEvent::Connected,
            Event::Disconnected => NatsEvent::Disconnected,
            Event::LameDuckMode => NatsEvent::LameDuckMode,
            Event::Draining => NatsEvent::Draining,
            Event::Closed => NatsEvent::Closed,
            Event::SlowConsumer(sid) => NatsEvent::SlowConsumer { subscription: *sid },
            Event::ServerError(e) => NatsEvent::ServerError(e.to_string()),
            Event::ClientError(e) => NatsEvent::ClientError(e.to_string()),
        }
    }
}

impl fmt::Display for NatsEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsEvent::Connected => f.write_str("connected"),
            NatsEvent::Disconnected => f.write_str("disconnected"),
            NatsEvent::LameDuckMode => f.write_str("lame duck mode"),
            NatsEvent::Draining => f.write_str("draining"),
            NatsEvent::Closed => f.write_str("closed"),
            NatsEvent::SlowConsumer { subscription } => {
                write!(f, "slow consumer (subscription {subscription})")
            }
            NatsEvent::ServerError(text) => write!(f, "server error: {text}"),
            NatsEvent::ClientError(text) => write!(f, "client error: {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_every_secret() {
        let secret = "hunter2-secret";
        let all = [
            ConnectOptions::with_user_and_password("chat", secret),
            ConnectOptions::with_token(secret),
            #[cfg(feature = "nkeys")]
            ConnectOptions::with_nkey(secret),
            #[cfg(feature = "nkeys")]
            ConnectOptions::with_credentials(secret),
        ];
        for options in all {
            let shown = format!("{options:?} {options:#?}");
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
        }
        let user = format!(
            "{:?}",
            ConnectOptions::with_user_and_password("chat", secret)
        );
        assert!(
            user.contains("chat"),
            "the user name is not a secret: {user}"
        );
    }
}
