//! The chat example in real headless Chromium, driven by playwright-core.
//!
//! Starts the chat app (the same router as the `chat` binary) on a free loopback port,
//! installs `interop/browser/package.json` (playwright-core, neffos.js 0.1.34) into
//! `target/browser-npm` when missing, and runs `interop/browser/chat.mjs`: three pages log
//! in with different usernames, two join a room and talk, one leaves, a message to
//! everyone reaches the third, alice and bob write privately (`@bob …`, a click on a name),
//! and `GET /ask?to=bob&question=...` returns the answer of bob's page. Then the same with
//! two `scale-out` processes joined through a real Redis (the README's "Without Docker"
//! lines), bob's page on the second, so every one of those crosses instances. Screenshots
//! go to `target/browser/` (`chat.png`, `scale-out.png`, and one per other user).
//!
//! Needs Node.js 20+, npm (first run only) and Chromium (`/usr/bin/chromium`, or env
//! `CHROMIUM`); it fails, never skips, when one is missing.
#![allow(clippy::print_stderr)]
#![cfg(feature = "redis")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use neffos::testkit::broker::RedisServer;
use neffos::{MemoryExchange, Server};
use neffos_examples::chat::{self, ChatOptions};
use tokio::process::Command;

const NPM_TIMEOUT: Duration = Duration::from_secs(300);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo target directory (parent of `CARGO_TARGET_TMPDIR`), wherever it is.
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// Runs `cmd` to completion within `timeout`; panics with its output otherwise.
async fn run(mut cmd: Command, what: &str, timeout: Duration) -> String {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {timeout:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{text}",
        output.status
    );
    text
}

async fn require_node() {
    let found = Command::new("node")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "Node.js 20+ is required for the browser test but `node` was not found on PATH \
         (install it, e.g. `apt-get install nodejs npm`)"
    );
}

fn chromium_path() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "Chromium is required for the browser test but {} does not exist \
         (install it with `apt-get install -y chromium`, or set CHROMIUM to its path)",
        path.display()
    );
    path
}

/// Copies the driver into `dir` and installs its npm dependencies there when they are
/// missing or `package.json` changed.
async fn install_driver(dir: &Path) {
    let source = workspace_root().join("interop/browser");
    std::fs::create_dir_all(dir).expect("create the npm folder");
    let manifest = std::fs::read_to_string(source.join("package.json"))
        .expect("read interop/browser/package.json");
    let installed = std::fs::read_to_string(dir.join("package.json")).ok();
    let complete = ["playwright-core", "neffos.js"].iter().all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .is_file()
    });
    std::fs::copy(source.join("chat.mjs"), dir.join("chat.mjs")).expect("copy chat.mjs");
    if complete && installed.as_deref() == Some(manifest.as_str()) {
        return;
    }
    std::fs::write(dir.join("package.json"), &manifest).expect("write package.json");
    let mut npm = Command::new("npm");
    npm.args(["install", "--no-audit", "--no-fund", "--no-package-lock"])
        .current_dir(dir);
    run(npm, "`npm install` (is npm installed?)", NPM_TIMEOUT).await;
}

/// The `chat` app (one instance, as `cargo xtask demo` serves it) on a free loopback port.
async fn instance(bundle: &Path, label: &str) -> (Server, SocketAddr) {
    let server = chat::server_with_label(Some(Arc::new(MemoryExchange::new())), label);
    let app = chat::router(&server, ChatOptions::new(bundle).instance(label));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(neffos_examples::serve::serve(
        listener,
        app,
        std::future::pending(),
    ));
    (server, addr)
}

/// Runs `chat.mjs`: alice and carol on `url`, bob on `url2`; screenshots `<name>*.png`.
async fn drive(npm_dir: &Path, chromium: &Path, url: &str, url2: &str, name: &str) {
    let screenshots = target_dir().join("browser");
    let mut node = Command::new("node");
    node.arg(npm_dir.join("chat.mjs"))
        .args(["--url", url, "--url2", url2, "--name", name])
        .arg("--chromium")
        .arg(chromium)
        .arg("--screenshots")
        .arg(&screenshots);
    let output = run(node, "the Chromium driver (chat.mjs)", BROWSER_TIMEOUT).await;
    eprintln!("{name}:\n{output}");
    assert!(output.contains("browser test: passed"), "{output}");
    assert!(screenshots.join(format!("{name}.png")).is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_chat_in_a_room_in_chromium() {
    require_node().await;
    let chromium = chromium_path();
    let npm_dir = target_dir().join("browser-npm");
    install_driver(&npm_dir).await;
    let bundle = npm_dir.join("node_modules/neffos.js/dist/neffos.js");
    chat::check_bundle(&bundle).expect("neffos.js bundle");

    // One instance: what `chat` (and `cargo xtask demo`) serves.
    let (server, addr) = instance(&bundle, "browser test").await;
    let url = format!("http://{addr}");
    drive(&npm_dir, &chromium, &url, &url, "chat").await;
    assert!(server.stats().accepted >= 3, "{:?}", server.stats());

    // Two `scale-out` processes joined through Redis, as the README runs them: bob is on
    // the second, so his messages, privates and his answer to `/ask` cross the broker.
    let (_redis, one, two) = tokio::task::block_in_place(|| {
        let redis = RedisServer::start();
        let one = ScaleOut::start(&redis, &bundle);
        let two = ScaleOut::start(&redis, &bundle);
        (redis, one, two)
    });
    drive(&npm_dir, &chromium, &one.url(), &two.url(), "scale-out").await;
}

/// One `scale-out` process (one instance, `--exchange redis`) on a free port; killed on drop.
struct ScaleOut {
    child: std::process::Child,
    port: u16,
}

impl ScaleOut {
    fn start(redis: &RedisServer, bundle: &Path) -> ScaleOut {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scale-out"))
            .args(["--ports", "0", "--exchange", "redis", "--redis-url"])
            .arg(redis.url())
            .arg("--neffos-js")
            .arg(bundle)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the scale-out example");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let port = line
                    .split("open http://")
                    .nth(1)
                    .and_then(|addr| addr.rsplit(':').next())
                    .and_then(|port| port.trim().parse::<u16>().ok());
                if let Some(port) = port {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("scale-out printed its address");
        ScaleOut { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ScaleOut {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
