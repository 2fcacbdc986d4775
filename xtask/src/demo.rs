//! `cargo xtask demo`: the chat example in the browser, no broker needed.
//!
//! Installs the page's npm dependency (neffos.js, pinned) into `target/npm-demo` when it is
//! missing or another version, then runs the `chat` example with the path of its browser
//! bundle. The example prints the URL to open.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The neffos.js version the project is wire-compatible with (PROTOCOL.md §6).
const NEFFOS_JS_VERSION: &str = "0.1.34";

/// Runs the demo on `port`, passing `extra` to the chat example.
pub(crate) fn demo(root: &Path, port: u16, extra: &[String]) -> Result<()> {
    let prefix = target_dir(root).join("npm-demo");
    let package = prefix.join("node_modules/neffos.js");
    if !is_installed(&package) {
        install(&prefix)?;
    }
    let bundle = package.join("dist/neffos.js");
    if !bundle.is_file() {
        bail!(
            "npm installed neffos.js but its browser bundle is missing: {}",
            bundle.display()
        );
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.args(["run", "-p", "neffos-examples", "--bin", "chat", "--"])
        .arg("--neffos-js")
        .arg(&bundle)
        .arg("--port")
        .arg(port.to_string())
        .args(extra)
        .current_dir(root);
    eprintln!(
        "$ cargo run -p neffos-examples --bin chat -- --neffos-js {} --port {port} {}",
        bundle.display(),
        extra.join(" ")
    );
    let status = cmd.status().context("cannot start `cargo run`")?;
    if !status.success() {
        bail!("the chat example exited with {status}");
    }
    Ok(())
}

/// `CARGO_TARGET_DIR` when set, else `<workspace>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"))
}

/// True when `node_modules/neffos.js` holds the pinned version.
fn is_installed(package: &Path) -> bool {
    std::fs::read_to_string(package.join("package.json")).is_ok_and(|manifest| {
        manifest
            .lines()
            .any(|line| line.contains("\"version\"") && line.contains(NEFFOS_JS_VERSION))
    })
}

fn install(prefix: &Path) -> Result<()> {
    let npm_works = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !npm_works {
        bail!(
            "`npm` was not found on PATH. The demo page needs neffos.js {NEFFOS_JS_VERSION} \
             from npm: install Node.js and npm (e.g. `apt-get install nodejs npm`, or \
             https://nodejs.org), then run `cargo xtask demo` again."
        );
    }
    std::fs::create_dir_all(prefix)
        .with_context(|| format!("cannot create {}", prefix.display()))?;
    let spec = format!("neffos.js@{NEFFOS_JS_VERSION}");
    eprintln!(
        "$ npm install --prefix {} --no-audit --no-fund {spec}",
        prefix.display()
    );
    let status = Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(prefix)
        .args(["--no-audit", "--no-fund", &spec])
        .status()
        .context("cannot start `npm`")?;
    if !status.success() {
        bail!("`npm install {spec}` failed with {status} (is the npm registry reachable?)");
    }
    Ok(())
}
