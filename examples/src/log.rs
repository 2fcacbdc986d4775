//! Logging set-up shared by the example binaries.

use tracing_subscriber::EnvFilter;

/// Installs a `tracing-subscriber` formatter filtered by `RUST_LOG` (default: `info`).
/// Calling it twice is harmless (the second call does nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}
