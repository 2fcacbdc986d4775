//! Why a cluster query or remote operation could not be started.

/// The error of [`Cluster`](crate::Cluster) queries and remote operations. A slow or dead
/// instance is never an error: it is listed in the result's `missing`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// This instance started more queries per second than
    /// [`ClusterConfig::max_queries_per_second`](crate::ClusterConfig::max_queries_per_second).
    #[error("cluster query rate limit reached")]
    RateLimited,
    /// The server is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
    /// The query could not be encoded.
    #[error("cluster query not encoded: {0}")]
    Encode(String),
}
