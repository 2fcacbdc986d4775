//! `neffos-redis`: scale a neffos-rs server out over Redis.
//!
//! Status: planned. This crate will own `RedisExchange`, an implementation of
//! `neffos::Exchange` on the `redis` crate: a fixed number of broker connections per
//! instance (one pipelined publisher, one subscriber), interest-based plain `SUBSCRIBE`s
//! reference-counted by the server, escaped channel names under a configurable prefix,
//! a per-instance inbox for cross-instance Ask replies, and reconnection with
//! re-subscription after broker loss. No Redis type leaks into `neffos`.
