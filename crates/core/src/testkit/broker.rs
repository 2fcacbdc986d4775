//! Real brokers for tests, as RAII guards: [`RedisServer`] and [`NatsServer`] run the local
//! `redis-server` / `nats-server` binaries on a free loopback port, in a temporary directory,
//! and kill them when dropped.
//!
//! No Docker and no broker client library: just processes. A missing binary is a test
//! failure with a one-line install hint, never a skipped test. `NEFFOS_REDIS_SERVER` and
//! `NEFFOS_NATS_SERVER` override the binaries' paths.
//!
//! Starting waits until the broker answers on its port (polled under a deadline), so a test
//! can connect right away. The guards can also kill the broker (`kill -9`), restart it on the
//! same port, and pause/resume it (`SIGSTOP`/`SIGCONT`) to simulate broker loss and hangs.
//!
//! These calls block the calling thread for the few milliseconds a broker takes to start;
//! call them from tests only.
//!
//! ```no_run
//! use neffos::testkit::broker::RedisServer;
//! let redis = RedisServer::start();
//! let url = redis.url(); // redis://127.0.0.1:<port>
//! redis.kill(); // as kill -9
//! redis.restart(); // same port, empty
//! # let _ = url;
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a broker may take to accept connections after being spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Port attempts before giving up (another process may grab a free port before the broker).
pub(super) const PORT_ATTEMPTS: usize = 5;

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// Which broker a [`Process`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Redis,
    Nats,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Nats => "nats-server",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Kind::Redis => "NEFFOS_REDIS_SERVER",
            Kind::Nats => "NEFFOS_NATS_SERVER",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Kind::Redis => {
                "install it (`apt-get install redis-server`, `brew install redis`) or set NEFFOS_REDIS_SERVER to its path"
            }
            Kind::Nats => {
                "install it (`apt-get install nats-server`, `go install github.com/nats-io/nats-server/v2@latest`) or set NEFFOS_NATS_SERVER to its path"
            }
        }
    }

    fn binary(self) -> String {
        std::env::var(self.env()).unwrap_or_else(|_| self.name().to_owned())
    }

    fn log_file(self) -> &'static str {
        match self {
            Kind::Redis => "redis.log",
            Kind::Nats => "nats.log",
        }
    }

    fn args(self, port: u16, dir: &Path, extra: &[String]) -> Vec<String> {
        let log = dir.join(self.log_file()).display().to_string();
        let mut args: Vec<String> = match self {
            Kind::Redis => [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.display().to_string(),
                "--logfile",
                &log,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            Kind::Nats => ["-a", "127.0.0.1", "-p", &port.to_string(), "-l", &log]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        args.extend(extra.iter().cloned());
        // JetStream stores in the broker's own directory (not the shared default), kept
        // across restarts, removed with the broker.
        if self == Kind::Nats
            && extra.iter().any(|a| a == "-js")
            && !extra.iter().any(|a| a == "-sd")
        {
            args.extend([
                "-sd".to_owned(),
                dir.join("jetstream").display().to_string(),
            ]);
        }
        args
    }

    /// True when the broker at `addr` answers like a ready server.
    pub(super) fn ready(self, addr: SocketAddr) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 256];
        match self {
            Kind::Redis => {
                if stream.write_all(b"PING\r\n").is_err() {
                    return false;
                }
                match stream.read(&mut buf) {
                    // `+PONG`, or an error such as `-NOAUTH` when a password is required:
                    // either way the server is serving commands. `-LOADING` is not ready.
                    Ok(n) if n > 0 => {
                        (buf[0] == b'+' || buf[0] == b'-') && !buf[..n].starts_with(b"-LOADING")
                    }
                    _ => false,
                }
            }
            Kind::Nats => match stream.read(&mut buf) {
                Ok(n) => buf[..n].starts_with(b"INFO "),
                Err(_) => false,
            },
        }
    }
}

/// Runs the broker as a child of a small `sh` watchdog whose standard input is a pipe held
/// by this process: when the test process ends in any way (a panic, a timeout kill, a
/// server leaked through a reference cycle so that no guard is ever dropped), the pipe
/// closes and the watchdog kills the broker. Its first output line is the broker's PID
/// (signals go to the broker itself); it exits with the broker.
const WATCHDOG: &str = r#"exec 3<&0
"$0" "$@" </dev/null >/dev/null &
broker=$!
echo "$broker"
(read -r _ <&3; kill -9 "$broker") </dev/null >/dev/null 2>&1 &
wait "$broker""#;

/// A running broker: its watchdog (see [`WATCHDOG`]) and the broker's own PID.
#[derive(Debug)]
struct Running {
    watchdog: Child,
    pid: u32,
}

/// One broker process on a fixed port; shared by [`RedisServer`] and [`NatsServer`].
#[derive(Debug)]
pub(super) struct Process {
    kind: Kind,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Mutex<Option<Running>>,
}

/// Whether `binary` (a path, or a name looked up in `PATH`) names an existing file.
fn binary_exists(binary: &str) -> bool {
    let path = Path::new(binary);
    if path.components().count() > 1 {
        return path.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

pub(super) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

fn temp_dir(kind: Kind) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "neffos-{}-{}-{}",
        kind.name(),
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

impl Process {
    pub(super) fn start(kind: Kind, extra: &[&str]) -> Process {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match Process::try_start(kind, extra) {
                Ok(process) => return process,
                Err(e) => last = e,
            }
        }
        panic!(
            "{} did not start after {PORT_ATTEMPTS} attempts: {last}",
            kind.name()
        );
    }

    /// One attempt on a fresh free port (callers whose `extra` names other ports retry
    /// with fresh ones for those too).
    pub(super) fn try_start(kind: Kind, extra: &[&str]) -> Result<Process, String> {
        let process = Process {
            kind,
            port: free_port(),
            dir: temp_dir(kind),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: Mutex::new(None),
        };
        process.spawn_and_wait().map(|()| process)
    }

    pub(super) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns the broker on `self.port` and waits until it serves, or explains why not.
    fn spawn_and_wait(&self) -> Result<(), String> {
        let binary = self.kind.binary();
        if !binary_exists(&binary) {
            panic!(
                "`{binary}` was not found: {} is needed by this test; {}",
                self.kind.name(),
                self.kind.hint()
            );
        }
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(&binary)
            .args(self.kind.args(self.port, &self.dir, &self.extra))
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `sh` to run `{binary}`: {e}"));
        let pid = watchdog
            .stdout
            .take()
            .and_then(|out| {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).ok()?;
                line.trim().parse::<u32>().ok()
            })
            .unwrap_or_else(|| panic!("the watchdog of `{binary}` did not report its PID"));
        *self.lock() = Some(Running { watchdog, pid });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.kind.ready(self.addr()) {
                return Ok(());
            }
            if let Some(exit) = self.exited() {
                return Err(format!(
                    "exited with {exit} on port {}: {}",
                    self.port,
                    self.diagnostics()
                ));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "not serving on port {} after {START_TIMEOUT:?}: {}",
                    self.port,
                    self.diagnostics()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The exit status if the process ended (its stderr is then kept for diagnostics).
    fn exited(&self) -> Option<String> {
        let mut guard = self.lock();
        let child = &mut guard.as_mut()?.watchdog;
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                *guard = None;
                Some(format!("{status} {}", stderr.trim()))
            }
            _ => None,
        }
    }

    /// The last lines of the broker's log file.
    fn diagnostics(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join(self.kind.log_file())).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(|running| running.pid)
    }

    /// `kill -9` of the broker; waits until it is gone.
    fn kill(&self) {
        if let Some(mut running) = self.lock().take() {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(running.pid.to_string())
                .status();
            // The watchdog exits with the broker; closing its stdin also ends its helper.
            drop(running.watchdog.stdin.take());
            let _ = running.watchdog.wait();
        }
    }

    fn restart(&self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        // The port was ours a moment ago; the kernel may need a moment to release it.
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!(
                        "{} did not restart on port {}: {e}",
                        self.kind.name(),
                        self.port
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn signal(&self, signal: &str) {
        let Some(pid) = self.pid() else {
            panic!("{} is not running", self.kind.name());
        };
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run `kill {signal} {pid}`: {e}"));
        assert!(status.success(), "`kill {signal} {pid}` failed: {status}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` on a free loopback port, without persistence, killed on drop.
///
/// Started as `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no` in a
/// temporary directory, plus any extra configuration from [`RedisServer::start_with`].
#[derive(Debug)]
pub struct RedisServer(pub(super) Process);

impl RedisServer {
    /// Starts a broker and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed (with an install hint) or does not start.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a broker with extra command-line configuration, e.g.
    /// `["--requirepass", "secret"]`.
    pub fn start_with(args: &[&str]) -> RedisServer {
        RedisServer(Process::start(Kind::Redis, args))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.0.port)
    }

    /// The loopback port (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    /// Kills the broker with `SIGKILL` (as `kill -9`): no goodbye to its clients.
    pub fn kill(&self) {
        self.0.kill();
    }

    /// Kills the broker if it runs, then starts an empty one on the same port and waits
    /// until it serves.
    pub fn restart(&self) {
        self.0.restart();
    }

    /// Freezes the broker (`SIGSTOP`): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.0.signal("-STOP");
    }

    /// Resumes a paused broker (`SIGCONT`).
    pub fn resume(&self) {
        self.0.signal("-CONT");
    }
}

/// A `nats-server` on a free loopback port, killed on drop.
///
/// Started as `nats-server -a 127.0.0.1 -p P` with its log in a temporary directory, plus
/// any extra arguments from [`NatsServer::start_with`] (with `-js`, JetStream stores in
/// that directory unless `-sd` says otherwise).
#[derive(Debug)]
pub struct NatsServer(pub(super) Process);

impl NatsServer {
    /// Starts a broker and waits until it greets with `INFO`.
    ///
    /// # Panics
    ///
    /// When `nats-server` is not installed (with an install hint) or does not start.
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Starts a broker with extra command-line arguments, e.g. `["--user", "u", "--pass", "p"]`.
    pub fn start_with(args: &[&str]) -> NatsServer {
        NatsServer(Process::start(Kind::Nats, args))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.0.port)
    }

    /// The loopback port (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    /// Kills the broker with `SIGKILL` (as `kill -9`).
    pub fn kill(&self) {
        self.0.kill();
    }

    /// Kills the broker if it runs, then starts a fresh one on the same port and waits
    /// until it serves.
    pub fn restart(&self) {
        self.0.restart();
    }

    /// Freezes the broker (`SIGSTOP`).
    pub fn pause(&self) {
        self.0.signal("-STOP");
    }

    /// Resumes a paused broker (`SIGCONT`).
    pub fn resume(&self) {
        self.0.signal("-CONT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(addr: SocketAddr) -> bool {
        Kind::Redis.ready(addr)
    }

    #[test]
    fn redis_lifecycle() {
        let redis = RedisServer::start();
        let addr = redis.0.addr();
        assert!(answers(addr));
        assert!(redis.url().ends_with(&redis.port().to_string()));
        redis.pause();
        assert!(!answers(addr), "a paused broker answers nothing");
        redis.resume();
        assert!(answers(addr));
        redis.kill();
        assert!(!answers(addr));
        assert_eq!(redis.pid(), None);
        redis.restart();
        assert!(answers(addr), "restarted on the same port");
        drop(redis);
        assert!(!answers(addr), "killed on drop");
    }

    #[test]
    fn nats_lifecycle() {
        let nats = NatsServer::start();
        let addr = nats.0.addr();
        assert!(Kind::Nats.ready(addr));
        nats.restart();
        assert!(Kind::Nats.ready(addr));
        drop(nats);
        assert!(!Kind::Nats.ready(addr));
    }

    #[test]
    fn extra_arguments_are_passed() {
        let redis = RedisServer::start_with(&["--requirepass", "secret"]);
        let mut stream = TcpStream::connect(redis.0.addr()).expect("connect");
        stream.write_all(b"PING\r\n").expect("write");
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).expect("read");
        assert!(buf[..n].starts_with(b"-NOAUTH"), "{:?}", &buf[..n]);
    }
}
