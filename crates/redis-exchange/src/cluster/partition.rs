//! Namespace partitions: a namespace's traffic spread over several channels, hence over
//! several shards (see
//! [`RedisClusterExchangeBuilder::namespace_partitions`](super::RedisClusterExchangeBuilder::namespace_partitions)).
//!
//! With `n` partitions, namespace `ns` is carried by `n` channels
//! `<prefix>:nsp:<k>:{<tag>}:<len>:<ns>` (`k` in `0..n`); every instance with a connection
//! in `ns` subscribes to all of them, and each instance publishes on one, `k`, the same for
//! all its messages (so the order per (origin instance, namespace) is kept: one channel,
//! one shard). The hash tag puts partition `k` at the namespace's own slot plus `k × 16384
//! / n`: the partitions of a namespace sit at evenly spaced slots, so over masters that
//! share the slots in equal ranges (as `redis-cli --cluster create` makes them) `n` equal
//! to the number of masters puts one partition on each.
//!
//! The name cannot collide with another kind: the kind word `nsp` differs, the prefix has
//! no `{`, and the tag is ours (decimal digits).

use std::sync::OnceLock;

use neffos::Topic;
use uuid::Uuid;

use super::slot::{SLOTS, key_slot};
use crate::channel::Channels;

/// The channels of the cluster exchange: those of [`Channels`], with namespaces spread
/// over `partitions` channels when more than one.
#[derive(Debug, Clone)]
pub(crate) struct ClusterChannels {
    channels: Channels,
    partitions: u16,
    /// The partition this instance publishes on (`None`: from its instance ID).
    index: Option<u16>,
}

impl ClusterChannels {
    pub(crate) fn new(channels: Channels, partitions: u16, index: Option<u16>) -> Self {
        let partitions = partitions.max(1);
        ClusterChannels {
            channels,
            partitions,
            index: index.map(|i| i % partitions),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        self.channels.prefix()
    }

    /// Namespaces are spread over more than one channel.
    pub(crate) fn partitioned(&self) -> bool {
        self.partitions > 1
    }

    /// The partition `instance` publishes on.
    pub(crate) fn own_partition(&self, instance: Uuid) -> u16 {
        self.index.unwrap_or_else(|| {
            // The instance ID is random: instances spread evenly over the partitions.
            (instance.as_u128() % u128::from(self.partitions)) as u16
        })
    }

    /// The channel `instance` publishes `topic` on.
    pub(crate) fn publish_name(&self, topic: &Topic, instance: Uuid) -> Option<String> {
        match topic {
            Topic::Namespace(ns) if self.partitions > 1 => {
                Some(self.partition(ns, self.own_partition(instance)))
            }
            _ => self.channels.name(topic),
        }
    }

    /// The channels carrying `topic` (all the partitions of a namespace).
    pub(crate) fn subscribe_names(&self, topic: &Topic) -> Vec<String> {
        match topic {
            Topic::Namespace(ns) if self.partitions > 1 => (0..self.partitions)
                .map(|k| self.partition(ns, k))
                .collect(),
            _ => self.channels.name(topic).into_iter().collect(),
        }
    }

    /// The channel of partition `k` of namespace `ns`.
    fn partition(&self, ns: &str, k: u16) -> String {
        let base = self
            .channels
            .name(&Topic::Namespace(ns.to_owned()))
            .unwrap_or_default();
        let offset = u32::from(k) * u32::from(SLOTS) / u32::from(self.partitions);
        let slot = ((u32::from(key_slot(base.as_bytes())) + offset) % u32::from(SLOTS)) as u16;
        format!(
            "{}:nsp:{k}:{{{}}}:{}:{ns}",
            self.channels.prefix(),
            tag_of(slot),
            ns.len()
        )
    }
}

/// A short hash tag (decimal digits) whose slot is `slot`.
fn tag_of(slot: u16) -> u32 {
    static TAGS: OnceLock<Vec<u32>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        // The smallest number whose decimal text hashes to each slot: every slot is
        // reached well before 10⁶ (about 160,000 numbers are tried).
        let mut tags = vec![u32::MAX; usize::from(SLOTS)];
        let mut missing = usize::from(SLOTS);
        let mut n = 0u32;
        while missing > 0 {
            let s = key_slot(n.to_string().as_bytes());
            if tags[usize::from(s)] == u32::MAX {
                tags[usize::from(s)] = n;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    tags[usize::from(slot)]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn chans(n: u16, index: Option<u16>) -> ClusterChannels {
        ClusterChannels::new(Channels::new("app").expect("valid prefix"), n, index)
    }

    #[test]
    fn one_partition_is_the_plain_channel() {
        let c = chans(1, None);
        let ns = Topic::Namespace("chat".into());
        assert_eq!(
            c.publish_name(&ns, Uuid::new_v4()).as_deref(),
            Some("app:ns:4:chat")
        );
        assert_eq!(c.subscribe_names(&ns), vec!["app:ns:4:chat".to_owned()]);
    }

    #[test]
    fn partitions_sit_at_evenly_spaced_slots() {
        for n in [2u16, 3, 16] {
            let c = chans(n, None);
            for ns in ["chat", "", "a{b}c", "{x}"] {
                let names = c.subscribe_names(&Topic::Namespace(ns.into()));
                assert_eq!(names.len(), usize::from(n));
                let base = key_slot(format!("app:ns:{}:{ns}", ns.len()).as_bytes());
                for (k, name) in names.iter().enumerate() {
                    let want = (u32::from(base) + k as u32 * 16_384 / u32::from(n)) % 16_384;
                    assert_eq!(u32::from(key_slot(name.as_bytes())), want, "{name}");
                }
                let distinct: HashSet<_> = names.iter().collect();
                assert_eq!(distinct.len(), names.len());
            }
        }
    }

    #[test]
    fn an_instance_publishes_on_one_of_the_partitions() {
        let ns = Topic::Namespace("chat".into());
        let c = chans(3, None);
        let all = c.subscribe_names(&ns);
        let id = Uuid::new_v4();
        let name = c.publish_name(&ns, id).expect("a channel");
        assert!(all.contains(&name));
        assert_eq!(c.publish_name(&ns, id), Some(name), "always the same");
        let pinned = chans(3, Some(5));
        assert_eq!(pinned.own_partition(id), 2);
        assert_eq!(pinned.publish_name(&ns, id), Some(all[2].clone()));
        // Other topics are not partitioned.
        assert_eq!(
            c.subscribe_names(&Topic::Conn("x".into())),
            vec!["app:conn:1:x".to_owned()]
        );
    }

    #[test]
    fn names_do_not_collide_across_namespaces() {
        let c = chans(4, None);
        let mut seen = HashSet::new();
        for ns in ["", "1", "1:x", "x", "nsp:0:{1}:1:x", "{0}"] {
            for name in c.subscribe_names(&Topic::Namespace(ns.into())) {
                assert!(seen.insert(name.clone()), "{name} twice");
            }
        }
    }
}
