//! Measurements: HDR histograms (sharded so that a thousand receiving tasks rarely
//! contend), their summaries, and process CPU time and resident memory read from `/proc`.

use std::path::Path;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Largest latency recorded (larger values are clamped): one minute, in nanoseconds.
const MAX_NS: u64 = 60_000_000_000;

/// Shards of a [`Recorder`].
const SHARDS: usize = 32;

/// A new latency histogram: 1 ns to one minute, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_NS, 3) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts.
        Err(e) => unreachable!("histogram bounds: {e}"),
    }
}

/// A smaller latency histogram (1 ns to one minute, 2 significant digits: about 30 KiB),
/// for one message's deliveries.
pub fn new_message_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_NS, 2) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts.
        Err(e) => unreachable!("histogram bounds: {e}"),
    }
}

/// Latency histograms sharded by connection.
#[derive(Debug)]
pub struct Recorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }
}

impl Recorder {
    /// Records `ns` in the shard of connection `conn`.
    pub fn record(&self, conn: usize, ns: u64) {
        let _ = self.shards[conn % SHARDS]
            .lock()
            .record(ns.clamp(1, MAX_NS));
    }

    /// Every shard merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            let _ = all.add(&*shard.lock());
        }
        all
    }
}

/// A histogram as `(value, count)` pairs: how workers hand theirs to the coordinator.
pub fn to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds `(value, count)` pairs to `h`.
pub fn add_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        let _ = h.record_n(value.clamp(1, MAX_NS), count);
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest value.
    pub max_us: f64,
}

impl Latency {
    /// The summary of `h` (values in nanoseconds).
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on every
/// Linux we run on).
const CLK_TCK: f64 = 100.0;

/// CPU time (user + system) of process `pid` (or this process), in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces: fields are counted after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

/// CPU time the whole machine spent busy (`/proc/stat`, all CPUs: user, nice, system,
/// irq and softirq), in seconds.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .take(7)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 7 {
        return None;
    }
    // user nice system idle iowait irq softirq
    Some((fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / CLK_TCK)
}

/// The `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let r = Recorder::default();
        for i in 1..1000u64 {
            r.record(i as usize, i * 1000);
        }
        let h = r.merged();
        let mut back = new_histogram();
        add_pairs(&mut back, &to_pairs(&h));
        assert_eq!(Latency::of(&h), Latency::of(&back));
        assert_eq!(back.len(), 999);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(cpu_seconds(None).is_some());
        assert!(machine_busy_seconds().is_some());
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
