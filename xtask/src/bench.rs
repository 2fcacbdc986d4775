//! `cargo xtask bench [--quick]`: builds every peer of the side-by-side benchmark, then runs
//! `neffos-loadgen suite`, which writes `BENCHMARKS.md` and the plots under `docs/bench/`.
//!
//! Built here:
//! - `neffos-loadgen` and `neffos-bench-server` (package `neffos-bench-tools`, release), with
//!   the `redis` and `nats` features when the exchanges build (else without: the Redis and
//!   NATS cluster runs of neffos-rs are then reported as not measured);
//! - the socketioxide and fastwebsockets peers, each its own workspace under
//!   `benches/peers/`, into `target/peers`;
//! - the Go neffos v0.0.25 server `interop/go/benchserver` (with its Redis and NATS
//!   StackExchanges, `-exchange none|redis|nats`) into `target/peers`, with
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

/// Builds the load generator and our bench server; with the Redis and NATS exchanges if
/// they build.
fn build_ours(root: &Path) -> Result<()> {
    let with_brokers = [
        "build",
        "--release",
        "-p",
        "neffos-bench-tools",
        "--bins",
        "--features",
        "redis,nats",
    ];
    if run(root, "cargo", &with_brokers).is_ok() {
        return Ok(());
    }
    eprintln!("the Redis or NATS exchange does not build: benchmarking without them");
    run(
        root,
        "cargo",
        &["build", "--release", "-p", "neffos-bench-tools", "--bins"],
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

/// Builds `neffos-bench-server` as it was at git revision `rev` (a copy of that tree from
/// `git archive`, in `target/before/<rev>`, with its own target directory), so that a
/// before/after comparison is measured in one run. Returns the binary and the short revision.
fn build_before(root: &Path, target: &Path, rev: &str) -> Result<(PathBuf, String)> {
    let out = Command::new("git")
        .current_dir(root)
        .args(["rev-parse", "--short", &format!("{rev}^{{commit}}")])
        .output()
        .context("running git rev-parse")?;
    if !out.status.success() {
        bail!("`{rev}` is not a commit of this repository");
    }
    let short = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dir = target.join("before").join(&short);
    let src = dir.join("src");
    if !src.join("Cargo.toml").is_file() {
        std::fs::create_dir_all(&src)?;
        eprintln!("$ git archive {short} | tar -x -C {}", src.display());
        let archive = Command::new("git")
            .current_dir(root)
            .args(["archive", "--format=tar", &short])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running git archive")?;
        let status = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&src)
            .stdin(archive.stdout.context("git archive output")?)
            .status()
            .context("running tar")?;
        if !status.success() {
            bail!("unpacking {short} failed ({status})");
        }
    }
    let manifest = src.join("Cargo.toml");
    let manifest = manifest.to_string_lossy();
    let target_dir = dir.join("target");
    let target_arg = target_dir.to_string_lossy();
    // Older revisions may lack a feature, and before the tools had their own package the
    // bench server was in `neffos-benches`: the richest build that works.
    let built = ["neffos-bench-tools", "neffos-benches"]
        .into_iter()
        .flat_map(|package| {
            [Some("redis,nats"), Some("redis"), None].map(|features| (package, features))
        })
        .any(|(package, features)| {
            let mut args = vec![
                "build",
                "--release",
                "--manifest-path",
                &manifest,
                "--target-dir",
                &target_arg,
                "-p",
                package,
                "--bin",
                "neffos-bench-server",
            ];
            if let Some(features) = features {
                args.extend(["--features", features]);
            }
            run(root, "cargo", &args).is_ok()
        });
    if !built {
        bail!("neffos-bench-server does not build at {short}");
    }
    Ok((target_dir.join("release/neffos-bench-server"), short))
}

/// `cargo xtask bench [--quick] [--scale-out] [-- <suite args>]`: the scale-out
/// demonstration (100,000 clients over 6 instances, `neffos-loadgen suite --scale-out`)
/// runs in the full suite, and in a quick one only when asked for; `suite_args` go to
/// `neffos-loadgen suite` as they are (e.g. `--only-recovery`).
pub(crate) fn bench(
    root: &Path,
    quick: bool,
    scale_out: bool,
    before: Option<&str>,
    suite_args: &[String],
) -> Result<()> {
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
    let before = before
        .map(|rev| build_before(root, &target, rev))
        .transpose()?;

    let loadgen = target.join("release/neffos-loadgen");
    let root_arg = root.to_string_lossy();
    let peers_arg = peers.to_string_lossy();
    let mut args = vec!["suite", "--root", &root_arg, "--peers", &peers_arg];
    if quick {
        args.push("--quick");
    }
    let one_phase = suite_args
        .iter()
        .any(|a| a.starts_with("--only") || a == "--cluster-only");
    if (scale_out || !quick) && !one_phase {
        args.push("--scale-out");
    }
    let before_program = before
        .as_ref()
        .map(|(program, _)| program.to_string_lossy().into_owned());
    if let (Some(program), Some((_, label))) = (&before_program, &before) {
        args.extend(["--before", program, "--before-label", label]);
    }
    args.extend(suite_args.iter().map(String::as_str));
    run(root, &loadgen.to_string_lossy(), &args)
}
