//! Escaping of `;` in the namespace, room and event fields (PROTOCOL.md §2.2).

use std::borrow::Cow;

use memchr::memmem;

/// The exact token neffos writes in place of every `;` inside namespace, room and event.
pub const ESCAPE_TOKEN: &str = "@%!semicolon@%!";

/// Replaces every `;` with [`ESCAPE_TOKEN`]; borrows when there is nothing to replace.
pub fn escape(s: &str) -> Cow<'_, str> {
    if memchr::memchr(b';', s.as_bytes()).is_none() {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.replace(';', ESCAPE_TOKEN))
    }
}

/// Replaces every [`ESCAPE_TOKEN`] with `;`; borrows when there is nothing to replace.
pub fn unescape(s: &str) -> Cow<'_, str> {
    if memmem::find(s.as_bytes(), ESCAPE_TOKEN.as_bytes()).is_none() {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.replace(ESCAPE_TOKEN, ";"))
    }
}

/// Length of `s` once escaped, without allocating.
pub(crate) fn escaped_len(s: &str) -> usize {
    // Fields are short: a plain (auto-vectorised) count beats `memchr`'s per-call setup.
    let separators = s.bytes().filter(|&b| b == b';').count();
    s.len() + separators * (ESCAPE_TOKEN.len() - 1)
}

/// Appends `s` escaped to `out`.
pub(crate) fn put_escaped(out: &mut bytes::BytesMut, s: &str) {
    if !s.as_bytes().contains(&b';') {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let mut rest = s.as_bytes();
    while let Some(i) = memchr::memchr(b';', rest) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(ESCAPE_TOKEN.as_bytes());
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_borrowing() {
        assert!(matches!(escape("plain"), Cow::Borrowed("plain")));
        assert!(matches!(unescape("plain"), Cow::Borrowed("plain")));
        assert_eq!(escape("a;b"), "a@%!semicolon@%!b");
        assert_eq!(unescape("a@%!semicolon@%!b"), "a;b");
        assert_eq!(escaped_len("a;b;"), escape("a;b;").len());
        let mut out = bytes::BytesMut::new();
        put_escaped(&mut out, ";x;");
        assert_eq!(&out[..], escape(";x;").as_bytes());
    }
}
