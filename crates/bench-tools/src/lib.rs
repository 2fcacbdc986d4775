//! The benchmark tooling of neffos-rs: the load generator ([`loadgen`], binary
//! `neffos-loadgen`), the server under test ([`server`], binary `neffos-bench-server`:
//! neffos-rs, or the raw axum WebSocket floor with `--mode raw`) and the side-by-side suite
//! behind `cargo xtask bench` ([`suite`]: orchestration, report, plots). The criterion
//! benches are in the `neffos-benches` package (`benches/`).

pub mod loadgen;
pub mod server;
pub mod suite;
