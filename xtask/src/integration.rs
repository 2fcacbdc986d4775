//! `cargo xtask integration`: the tests that need a real broker (Redis, NATS).
//!
//! The tests start their own brokers, one per test, from the local `redis-server` and
//! `nats-server` binaries (`neffos::testkit::broker`: free loopback port, temporary
//! directory, killed on drop), so this command starts nothing itself: it checks that the
//! binaries are there and runs the broker test suites. `NEFFOS_REDIS_SERVER` and
//! `NEFFOS_NATS_SERVER` point the tests at binaries outside PATH.
//!
//! Brokers come from `neffos-test-brokers`: containers (`redis:7.0.15`, `nats:2.9.25`, via
//! testcontainers) when a Docker-API engine is reachable (`DOCKER_HOST` set or
//! `/var/run/docker.sock` present; `NEFFOS_BROKERS=local|containers` forces a choice), else
//! the local binaries; the first test that starts a broker prints which on stderr. Tests that
//! stop, pause or kill a broker always use the local binaries, so they are checked here too.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::tools::run;

/// A broker binary the tests need, with the variable that overrides its path.
struct Broker {
    binary: &'static str,
    env: &'static str,
    version_flag: &'static str,
}

const BROKERS: [Broker; 2] = [
    Broker {
        binary: "redis-server",
        env: "NEFFOS_REDIS_SERVER",
        version_flag: "--version",
    },
    Broker {
        binary: "nats-server",
        env: "NEFFOS_NATS_SERVER",
        version_flag: "--version",
    },
];

const INSTALL_HINT: &str = "install them with `apt-get install redis-server nats-server` \
    (macOS: `brew install redis nats-server`), or set NEFFOS_REDIS_SERVER / NEFFOS_NATS_SERVER";

fn found(broker: &Broker) -> Option<String> {
    let path = std::env::var(broker.env).unwrap_or_else(|_| broker.binary.to_owned());
    let out = Command::new(&path).arg(broker.version_flag).output().ok()?;
    out.status.success().then(|| {
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().next().unwrap_or_default().trim().to_owned()
    })
}

/// Checks the brokers, then runs the broker tests (extra arguments go to `cargo test`).
pub(crate) fn integration(root: &Path, extra: &[String]) -> Result<()> {
    let versions: Vec<Option<String>> = BROKERS.iter().map(found).collect();
    let missing: Vec<&str> = BROKERS
        .iter()
        .zip(&versions)
        .filter(|(_, v)| v.is_none())
        .map(|(b, _)| b.binary)
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} not found on PATH: {INSTALL_HINT}",
            missing.join(" and ")
        );
    }
    for (b, v) in BROKERS.iter().zip(&versions) {
        eprintln!("{}: {}", b.binary, v.as_deref().unwrap_or_default());
    }
    let mut args = vec![
        "test",
        "-p",
        "neffos-redis",
        "-p",
        "neffos-nats",
        "--all-features",
        "--no-fail-fast",
    ];
    args.extend(extra.iter().map(String::as_str));
    run(root, "cargo", &args)?;
    // The broker harness's own tests (start, kill -9, restart, pause/resume), single
    // nodes and clusters (`testkit::broker_cluster`).
    run(
        root,
        "cargo",
        &[
            "test",
            "-p",
            "neffos",
            "--all-features",
            "--lib",
            "--",
            "testkit::broker",
        ],
    )
}
