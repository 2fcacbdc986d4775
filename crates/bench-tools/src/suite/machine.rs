//! The machine and the versions a suite ran with, read from `/proc`, the lock files and
//! the toolchains.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Memory, MiB (`/proc/meminfo`).
    pub memory_mib: u64,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// Open file limit of the load generator.
    pub fd_limit: String,
    /// Ephemeral port range.
    pub port_range: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Machine {
    /// Reads the machine's description.
    pub fn detect() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1);
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or(0);
        let fd_limit = read("/proc/self/limits")
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .map(|l| {
                l.split_whitespace()
                    .skip(3)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default();
        Machine {
            cpu_model,
            cores,
            memory_mib,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            fd_limit,
            port_range: read("/proc/sys/net/ipv4/ip_local_port_range")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join("–"),
        }
    }
}

/// Versions of toolchains and packages, by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Versions(pub BTreeMap<String, String>);

impl Versions {
    /// The version of `name`, or `?`.
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("?")
    }

    /// Collects the versions: rustc, Go (from the built Go program), and the packages of
    /// the workspace and peer lock files.
    pub fn detect(root: &Path, go_program: &Path) -> Versions {
        let mut v = BTreeMap::new();
        if let Some(rustc) = command_line("rustc", &["-V"]) {
            v.insert("rustc".into(), rustc);
        }
        if let Some(go) = command_line("go", &["version", &go_program.to_string_lossy()])
            && let Some(version) = go.split_whitespace().last()
        {
            v.insert("go".into(), version.to_owned());
        }
        let locks = [
            (
                root.join("Cargo.lock"),
                &["axum", "tokio", "tokio-tungstenite", "tungstenite", "hyper"][..],
            ),
            (
                root.join("benches/peers/socketioxide/Cargo.lock"),
                &["socketioxide", "engineioxide", "socketioxide-redis"][..],
            ),
            (
                root.join("benches/peers/fastws/Cargo.lock"),
                &["fastwebsockets"][..],
            ),
        ];
        for (lock, names) in locks {
            let text = std::fs::read_to_string(&lock).unwrap_or_default();
            for name in names {
                if let Some(version) = lock_version(&text, name) {
                    v.entry((*name).to_owned()).or_insert(version);
                }
            }
        }
        let go_mod = std::fs::read_to_string(root.join("interop/go/go.mod")).unwrap_or_default();
        if let Some(line) = go_mod
            .lines()
            .find(|l| l.contains("github.com/kataras/neffos "))
            && let Some(version) = line.split_whitespace().last()
        {
            v.insert("kataras/neffos".into(), version.to_owned());
        }
        v.insert("neffos-rs".into(), env!("CARGO_PKG_VERSION").to_owned());
        Versions(v)
    }
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The version of package `name` in a `Cargo.lock` (the first entry).
fn lock_version(lock: &str, name: &str) -> Option<String> {
    let needle = format!("name = \"{name}\"\n");
    let at = lock.find(&needle)? + needle.len();
    let line = lock[at..].lines().next()?;
    Some(
        line.strip_prefix("version = ")?
            .trim_matches('"')
            .to_owned(),
    )
}

/// The CPUs this process may run on (`Cpus_allowed_list`).
pub(crate) fn allowed_cpus() -> String {
    read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_versions_are_found() {
        let lock = "[[package]]\nname = \"axum\"\nversion = \"0.8.9\"\nsource = \"x\"\n";
        assert_eq!(lock_version(lock, "axum").as_deref(), Some("0.8.9"));
        assert_eq!(lock_version(lock, "tokio"), None);
    }

    #[test]
    fn the_machine_is_described() {
        let m = Machine::detect();
        assert!(m.cores >= 1);
        assert!(!m.kernel.is_empty());
    }
}
