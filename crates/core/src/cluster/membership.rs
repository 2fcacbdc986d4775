//! Which instances are alive: each renews a lease with heartbeats; one that stops renewing
//! drops out of the live set once its lease runs out, and is remembered as expired (with
//! its generation) so that late heartbeats of that generation do not bring it back.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use neffos_protocol::cluster::Heartbeat;
use uuid::Uuid;

/// A live instance of the cluster, as [`Cluster::instances`](crate::Cluster::instances)
/// lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceInfo {
    /// The instance ID ([`Server::instance_id`](crate::Server::instance_id)).
    pub id: Uuid,
    /// Its label ([`ClusterConfig::label`](crate::ClusterConfig::label)).
    pub label: String,
    /// When its last heartbeat arrived (now for this instance).
    pub last_seen: SystemTime,
    /// Incremented each time it came back after having been expired.
    pub generation: u64,
    /// This instance.
    pub is_self: bool,
}

#[derive(Debug, Clone)]
struct Peer {
    label: String,
    generation: u64,
    seen: Instant,
    seen_wall: SystemTime,
    lease: Duration,
}

/// What a heartbeat meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// An instance (or generation) not in the live set until now.
    New,
    /// A live instance renewed its lease.
    Renewed,
    /// A heartbeat of a generation the cluster expired: ignored, the sender must be told.
    Zombie(u64),
}

#[derive(Debug)]
pub(crate) struct Membership {
    peers: HashMap<Uuid, Peer>,
    expired: HashMap<Uuid, u64>,
    last_sweep: Instant,
    settled_at: Option<Instant>,
}

impl Membership {
    pub(crate) fn new() -> Self {
        Membership {
            peers: HashMap::new(),
            expired: HashMap::new(),
            last_sweep: Instant::now(),
            settled_at: None,
        }
    }

    pub(crate) fn heard(&mut self, from: Uuid, hb: &Heartbeat, now: Instant) -> Heard {
        if self.expired.get(&from).is_some_and(|&g| hb.generation <= g) {
            return Heard::Zombie(hb.generation);
        }
        let lease = Duration::from_millis(hb.lease_ms);
        let peer = Peer {
            label: hb.label.clone(),
            generation: hb.generation,
            seen: now,
            seen_wall: SystemTime::now(),
            lease,
        };
        match self.peers.insert(from, peer) {
            Some(old) if old.generation == hb.generation => Heard::Renewed,
            _ => Heard::New,
        }
    }

    /// The instance said goodbye: gone at once, not expired (its connections left one by one).
    pub(crate) fn bye(&mut self, from: Uuid) {
        self.peers.remove(&from);
    }

    /// Instances whose lease runs now.
    pub(crate) fn live(&self, now: Instant) -> Vec<Uuid> {
        self.peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.seen) < p.lease)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(crate) fn infos(&self, now: Instant) -> Vec<InstanceInfo> {
        self.peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.seen) < p.lease)
            .map(|(id, p)| InstanceInfo {
                id: *id,
                label: p.label.clone(),
                last_seen: p.seen_wall,
                generation: p.generation,
                is_self: false,
            })
            .collect()
    }

    /// The oldest heartbeat among live instances.
    pub(crate) fn oldest_heartbeat(&self, now: Instant) -> Duration {
        self.peers
            .values()
            .map(|p| now.duration_since(p.seen))
            .filter(|age| *age < Duration::from_secs(3600))
            .max()
            .unwrap_or_default()
    }

    /// Removes the instances whose lease ran out and returns them with their generation.
    ///
    /// If this instance itself did not run for longer than `stall` (it was paused, e.g.
    /// SIGSTOP, or starved), nobody is expired this time: every lease is renewed from now,
    /// since the heartbeats that arrived meanwhile were not read yet.
    pub(crate) fn sweep(&mut self, now: Instant, stall: Duration) -> Vec<(Uuid, u64)> {
        let stalled = now.duration_since(self.last_sweep) > stall;
        self.last_sweep = now;
        if stalled {
            for peer in self.peers.values_mut() {
                peer.seen = now;
            }
            return Vec::new();
        }
        let gone: Vec<(Uuid, u64)> = self
            .peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.seen) >= p.lease)
            .map(|(id, p)| (*id, p.generation))
            .collect();
        for (id, generation) in &gone {
            self.peers.remove(id);
            self.expired.insert(*id, *generation);
        }
        gone
    }

    /// Records that the first heartbeat went out at `at`; the live set is complete one
    /// heartbeat interval later (every live instance renewed its lease once meanwhile).
    pub(crate) fn settle_after(&mut self, at: Instant) {
        self.settled_at.get_or_insert(at);
    }

    pub(crate) fn is_settled(&self, now: Instant) -> bool {
        self.settled_at.is_some_and(|at| now >= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(generation: u64) -> Heartbeat {
        Heartbeat::new("x", generation, 100, false)
    }

    #[test]
    fn leases_expire_and_expired_generations_stay_out() {
        let mut m = Membership::new();
        let a = Uuid::from_u128(1);
        let t0 = Instant::now();
        assert_eq!(m.heard(a, &hb(0), t0), Heard::New);
        assert_eq!(m.heard(a, &hb(0), t0), Heard::Renewed);
        assert_eq!(m.live(t0 + Duration::from_millis(50)), vec![a]);
        assert!(m.live(t0 + Duration::from_millis(100)).is_empty());
        let stall = Duration::from_secs(1);
        assert!(m.sweep(t0 + Duration::from_millis(50), stall).is_empty());
        assert_eq!(
            m.sweep(t0 + Duration::from_millis(150), stall),
            vec![(a, 0)]
        );
        // A late heartbeat of the expired generation does not bring it back.
        assert_eq!(
            m.heard(a, &hb(0), t0 + Duration::from_millis(160)),
            Heard::Zombie(0)
        );
        assert_eq!(
            m.heard(a, &hb(1), t0 + Duration::from_millis(170)),
            Heard::New
        );
    }

    #[test]
    fn a_stalled_sweeper_expires_nobody() {
        let mut m = Membership::new();
        let a = Uuid::from_u128(1);
        let t0 = m.last_sweep;
        m.heard(a, &hb(0), t0);
        let later = t0 + Duration::from_secs(10);
        assert!(m.sweep(later, Duration::from_secs(1)).is_empty());
        assert_eq!(m.live(later), vec![a]);
    }
}
