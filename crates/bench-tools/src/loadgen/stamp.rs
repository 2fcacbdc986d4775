//! The stamp every measured message carries in its body: which sender, which message, and
//! when it was meant to be sent.
//!
//! Layout (ASCII, so it travels unchanged as neffos text, a Socket.IO JSON string or a raw
//! frame): `#`, the sender number (3 digits), the sequence number (12 digits), the intended
//! send time in nanoseconds since the Unix epoch (19 digits), then `x` up to the body size.
//! The receiver finds the `#` wherever the protocol put the body.
//!
//! `ask-peer` replies (cluster-ask) may carry one more field in the padding right after the
//! stamp: `@` and the nanoseconds the bench server's `Server::ask` call took (12 digits),
//! written over the `x`s so that the body keeps its length ([`put_server_ns`],
//! [`decode_server_ns`]).

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of a stamp; the smallest body size.
pub const STAMP_LEN: usize = 1 + 3 + 12 + 19;

/// A decoded stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sender number.
    pub sender: u32,
    /// Sequence number of the message for its sender (or the Ask number).
    pub seq: u64,
    /// Intended send time, nanoseconds since the Unix epoch.
    pub t_ns: u64,
}

/// Nanoseconds since the Unix epoch: the clock every process on this machine shares.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn put_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for i in (0..width).rev() {
        out[start + i] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Writes the body of `size` bytes (at least [`STAMP_LEN`]) carrying `stamp` into `out`.
pub fn encode(out: &mut Vec<u8>, stamp: Stamp, size: usize) {
    let start = out.len();
    out.push(b'#');
    put_digits(out, u64::from(stamp.sender % 1000), 3);
    put_digits(out, stamp.seq % 1_000_000_000_000, 12);
    put_digits(out, stamp.t_ns, 19);
    let written = out.len() - start;
    if size > written {
        out.resize(start + size, b'x');
    }
}

fn digits(bytes: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    Some(v)
}

/// Finds and decodes the stamp in a received frame payload.
pub fn decode(payload: &[u8]) -> Option<Stamp> {
    let at = memchr::memchr(b'#', payload)?;
    let s = payload.get(at + 1..at + STAMP_LEN)?;
    Some(Stamp {
        sender: digits(&s[..3])? as u32,
        seq: digits(&s[3..15])?,
        t_ns: digits(&s[15..34])?,
    })
}

/// Length of the server-side duration field (`@` and 12 digits) after the stamp.
pub const SERVER_NS_LEN: usize = 1 + 12;

/// The largest duration the server-side field holds (about 16 minutes).
const SERVER_NS_MAX: u64 = 999_999_999_999;

/// Writes `@` and `ns` (12 digits) over the padding right after the stamp in `body`,
/// keeping its length. Returns false (and leaves `body` as is) when `body` has no stamp or
/// too little padding after it.
pub fn put_server_ns(body: &mut [u8], ns: u64) -> bool {
    let Some(at) = memchr::memchr(b'#', body) else {
        return false;
    };
    let from = at + STAMP_LEN;
    let Some(field) = body.get_mut(from..from + SERVER_NS_LEN) else {
        return false;
    };
    field[0] = b'@';
    let mut value = ns.min(SERVER_NS_MAX);
    for b in field[1..].iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
    true
}

/// The server-side duration that [`put_server_ns`] wrote after the stamp in a received
/// frame payload, nanoseconds.
pub fn decode_server_ns(payload: &[u8]) -> Option<u64> {
    let at = memchr::memchr(b'#', payload)?;
    let field = payload.get(at + STAMP_LEN..at + STAMP_LEN + SERVER_NS_LEN)?;
    if field[0] != b'@' {
        return None;
    }
    digits(&field[1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_inside_frames() {
        let stamp = Stamp {
            sender: 7,
            seq: 123_456,
            t_ns: now_ns(),
        };
        let mut body = Vec::new();
        encode(&mut body, stamp, 64);
        assert_eq!(body.len(), 64);
        let mut frame = b";bench;;msg;0;0;".to_vec();
        frame.extend_from_slice(&body);
        assert_eq!(decode(&frame), Some(stamp));
        let sio = format!(
            "42/bench,[\"msg\",\"{}\"]",
            String::from_utf8(body).unwrap()
        );
        assert_eq!(decode(sio.as_bytes()), Some(stamp));
        assert_eq!(decode(b"no stamp"), None);
        assert_eq!(decode(b"#12"), None);
    }

    #[test]
    fn small_sizes_still_carry_the_whole_stamp() {
        let mut body = Vec::new();
        encode(
            &mut body,
            Stamp {
                sender: 1,
                seq: 2,
                t_ns: 3,
            },
            8,
        );
        assert_eq!(body.len(), STAMP_LEN);
    }

    #[test]
    fn server_durations_ride_in_the_padding() {
        let stamp = Stamp {
            sender: 3,
            seq: 9,
            t_ns: now_ns(),
        };
        let mut body = Vec::new();
        encode(&mut body, stamp, 64);
        assert_eq!(decode_server_ns(&body), None);
        assert!(put_server_ns(&mut body, 123_456));
        assert_eq!(body.len(), 64);
        let mut frame = b";bench;;ask-peer;0;0;".to_vec();
        frame.extend_from_slice(&body);
        assert_eq!(decode(&frame), Some(stamp));
        assert_eq!(decode_server_ns(&frame), Some(123_456));
        let mut short = Vec::new();
        encode(&mut short, stamp, STAMP_LEN + SERVER_NS_LEN - 1);
        assert!(!put_server_ns(&mut short, 1));
        assert_eq!(decode_server_ns(&short), None);
    }
}
