//! Why a cluster query or remote operation could not be started.

use std::fmt;

/// Why a [`Cluster`](crate::Cluster) query or remote operation could not be started. A
/// slow or dead instance is never an error: it is listed in the result's `missing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClusterErrorKind {
    /// This instance started more queries per second than
    /// [`ClusterConfig::max_queries_per_second`](crate::ClusterConfig::max_queries_per_second).
    RateLimited,
    /// The server is shutting down.
    ShuttingDown,
    /// The query could not be encoded.
    Encode,
}

impl fmt::Display for ClusterErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterErrorKind::RateLimited => "cluster query rate limit reached",
            ClusterErrorKind::ShuttingDown => "server shutting down",
            ClusterErrorKind::Encode => "cannot encode the cluster message",
        })
    }
}

/// An [`Error`](crate::error::Error) whose kind is a [`ClusterErrorKind`].
pub type ClusterError = crate::error::Error<ClusterErrorKind>;
