//! Prometheus metrics for the examples (`--metrics 127.0.0.1:9100`).
//!
//! neffos reports through the `metrics` facade; this installs the Prometheus exporter as
//! the process's recorder with an HTTP listener serving `/metrics`. Install it before
//! building any `Server`: a server registers its metric handles when it is built.

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusBuilder;

/// Serves the process's metrics at `http://<addr>/metrics`. Must run inside a tokio runtime.
pub fn install_prometheus(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("cannot serve Prometheus metrics on {addr}"))
}
