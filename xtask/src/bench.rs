//! `cargo xtask bench [--quick]`: builds every peer of the side-by-side benchmark, then runs
//! `neffos-loadgen suite`, which writes `BENCHMARKS.md` and the plots under `docs/bench/`.
//!
//! Built here:
//! - `neffos-loadgen` and `neffos-bench-server` (package `neffos-benches`, release), with
//!   the `redis` feature when the Redis exchange builds (else without: the Redis cluster
//!   run is then reported as not measured);
//! - the socketioxide and fastwebsockets peers, each its own workspace under
//!   `benches/peers/`, into `target/peers`;
//! - the Go neffos v0.0.25 server `interop/go/benchserver` into `target/peers`, with
//!   `GOTOOLCHAIN=go1.27.3` (fetched by Go itself).
//!
//! The suite starts the peers one at a time on free loopback ports, pins them and itself to
//! separate CPUs (`taskset`), and stops every process it started, on success or failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::tools::{require, run};

/// The Go toolchain neffos v0.0.25 needs.
const GO_TOOLCHAIN: &str = "go1.27.3";

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Builds the load generator and our bench server; with the Redis exchange if it builds.
fn build_ours(root: &Path) -> Result<()> {
    let with_redis = [
        "build",
        "--release",
        "-p",
        "neffos-benches",
        "--bins",
        "--features",
        "redis",
    ];
    if run(root, "cargo", &with_redis).is_ok() {
        return Ok(());
    }
    eprintln!("the Redis exchange does not build: benchmarking without it");
    run(
        root,
        "cargo",
        &["build", "--release", "-p", "neffos-benches", "--bins"],
    )
}

fn build_rust_peer(root: &Path, peers: &Path, name: &str) -> Result<()> {
    let manifest = root.join("benches/peers").join(name).join("Cargo.toml");
    let manifest = manifest.to_string_lossy();
    let peers = peers.to_string_lossy();
    run(
        root,
        "cargo",
        &[
            "build",
            "--release",
            "--locked",
            "--manifest-path",
            &manifest,
            "--target-dir",
            &peers,
        ],
    )
}

fn build_go_peer(root: &Path, peers: &Path) -> Result<()> {
    let go_found = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !go_found {
        bail!(
            "`go` is required but was not found on PATH. Install Go >= 1.21 (it fetches \
             {GO_TOOLCHAIN} itself), e.g. from https://go.dev/dl/."
        );
    }
    let out = peers.join("neffos-go-benchserver");
    eprintln!(
        "$ GOTOOLCHAIN={GO_TOOLCHAIN} go build -o {} ./benchserver",
        out.display()
    );
    let status = Command::new("go")
        .current_dir(root.join("interop/go"))
        .env("GOTOOLCHAIN", GO_TOOLCHAIN)
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&out)
        .arg("./benchserver")
        .status()
        .context("running go build")?;
    if !status.success() {
        bail!("building the Go neffos bench server failed ({status})");
    }
    Ok(())
}

/// `cargo xtask bench [--quick]`.
pub(crate) fn bench(root: &Path, quick: bool) -> Result<()> {
    require(
        "taskset",
        "Install util-linux (`apt-get install util-linux`): the suite pins servers and load generator to separate CPUs.",
    )?;
    let target = target_dir(root);
    let peers = target.join("peers");
    std::fs::create_dir_all(&peers)?;
    build_ours(root)?;
    build_rust_peer(root, &peers, "socketioxide")?;
    build_rust_peer(root, &peers, "fastws")?;
    build_go_peer(root, &peers)?;

    let loadgen = target.join("release/neffos-loadgen");
    let root_arg = root.to_string_lossy();
    let peers_arg = peers.to_string_lossy();
    let mut args = vec!["suite", "--root", &root_arg, "--peers", &peers_arg];
    if quick {
        args.push("--quick");
    }
    run(root, &loadgen.to_string_lossy(), &args)
}
