//! Sequence numbers that make cross-node delivery exactly ordered and duplicate-free.
//!
//! During a failover a shard's messages reach a subscriber through two nodes for a moment
//! (the demoted master still receives the shard's traffic over the cluster bus, and
//! propagation between nodes is asynchronous), so the same payload can arrive twice, or an
//! older one after a newer one. Every payload the cluster exchange publishes carries a
//! header, `nfx1` + the publishing instance's ID (16 bytes) + a sequence number (8 bytes,
//! big-endian, increasing per instance); a receiver drops a payload whose number is not
//! above the last one it delivered from that instance on that channel. Delivery stays at
//! most once, and is never duplicated or reordered.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use uuid::Uuid;

const MAGIC: &[u8; 4] = b"nfx1";
const HEADER: usize = 4 + 16 + 8;

/// Most (instance, channel) pairs remembered; beyond, the table starts over (a duplicate
/// could then slip through once, never a loss).
const MAX_TRACKED: usize = 100_000;

/// `payload` with the header of message `seq` from `instance`.
pub(crate) fn stamp(instance: Uuid, seq: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER + payload.len());
    out.put_slice(MAGIC);
    out.put_slice(instance.as_bytes());
    out.put_u64(seq);
    out.put_slice(payload);
    out.freeze()
}

/// The last sequence number delivered per (origin instance, channel).
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    last: Mutex<HashMap<(Uuid, Vec<u8>), u64>>,
}

impl Dedup {
    /// The payload to deliver, or `None` for a duplicate or late copy. Payloads without a
    /// header (published by something else) are delivered as they are.
    pub(crate) fn accept(&self, channel: &[u8], payload: Vec<u8>) -> Option<Bytes> {
        if payload.len() < HEADER || &payload[..4] != MAGIC {
            return Some(Bytes::from(payload));
        }
        let instance = Uuid::from_slice(&payload[4..20]).ok()?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&payload[20..HEADER]);
        let seq = u64::from_be_bytes(seq);
        {
            let mut last = self.last.lock();
            if last.len() >= MAX_TRACKED {
                last.clear();
            }
            let entry = last.entry((instance, channel.to_vec())).or_insert(0);
            if seq <= *entry {
                return None;
            }
            *entry = seq;
        }
        Some(Bytes::from(payload).slice(HEADER..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_duplicates_and_late_copies() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let d = Dedup::default();
        let m = |i, s| stamp(i, s, b"x").to_vec();
        assert_eq!(d.accept(b"c", m(a, 1)).as_deref(), Some(&b"x"[..]));
        assert_eq!(d.accept(b"c", m(a, 3)).as_deref(), Some(&b"x"[..]));
        assert!(d.accept(b"c", m(a, 3)).is_none(), "duplicate");
        assert!(d.accept(b"c", m(a, 2)).is_none(), "late");
        assert!(d.accept(b"other", m(a, 2)).is_some(), "per channel");
        assert!(d.accept(b"c", m(b, 1)).is_some(), "per instance");
        assert_eq!(
            d.accept(b"c", b"raw".to_vec()).as_deref(),
            Some(&b"raw"[..])
        );
    }
}
