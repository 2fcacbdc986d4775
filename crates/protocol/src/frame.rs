//! The neffos message frame: `wait;namespace;room;event;isError;isNoOp;body` (PROTOCOL.md §2).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use memchr::memmem;

use crate::error::{DecodeError, Field};
use crate::escape::{ESCAPE_TOKEN, escaped_len, put_escaped};
use crate::events;
use crate::token::WaitToken;

/// Default [`DecodeOptions::max_frame_size`]: 1 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;
/// Default [`DecodeOptions::max_field_len`]: 1 KiB for wait, namespace, room and event.
pub const DEFAULT_MAX_FIELD_LEN: usize = 1024;

const SEPARATOR: u8 = b';';
/// How many leading bytes [`decode`] scans byte by byte for separators before using `memchr`.
const SCALAR_SCAN: usize = 128;
const HEADER_FIELDS: [Field; 6] = [
    Field::Wait,
    Field::Namespace,
    Field::Room,
    Field::Event,
    Field::IsError,
    Field::IsNoOp,
];

/// How frames that are not 7-field neffos messages are treated (PROTOCOL.md §1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NativeMode {
    /// Only neffos messages; a frame with fewer fields is [`DecodeError::TooFewFields`].
    #[default]
    Off,
    /// "Native allowed": a frame with fewer than 7 fields becomes a native message of
    /// namespace `""`, and a 7-field frame whose event is `_OnNativeMessage` is flagged native.
    Allowed,
    /// "Native only": every frame is a native message, whatever its content.
    Only,
}

/// Limits and modes applied by [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeOptions {
    /// Largest accepted frame, in bytes.
    pub max_frame_size: usize,
    /// Largest accepted wait, namespace, room, event or flag field, in bytes (before unescaping).
    pub max_field_len: usize,
    /// Treatment of frames that are not neffos messages.
    pub native: NativeMode,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_field_len: DEFAULT_MAX_FIELD_LEN,
            native: NativeMode::Off,
        }
    }
}

impl DecodeOptions {
    /// Sets [`Self::max_frame_size`].
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`Self::max_field_len`].
    pub fn max_field_len(mut self, bytes: usize) -> Self {
        self.max_field_len = bytes;
        self
    }

    /// Sets [`Self::native`].
    pub fn native(mut self, mode: NativeMode) -> Self {
        self.native = mode;
        self
    }
}

/// One neffos message.
///
/// Field values are cheap to clone: after [`decode`] they share the frame's buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// Request/reply token; see [`WaitToken::kind`].
    pub wait: WaitToken,
    /// Namespace (unescaped).
    pub namespace: ByteString,
    /// Room (unescaped); empty when the message is not room-scoped.
    pub room: ByteString,
    /// Event name (unescaped).
    pub event: ByteString,
    /// Body, or the error text when [`Self::is_error`] is set.
    pub body: Bytes,
    /// The isError flag: the body is an error text.
    pub is_error: bool,
    /// The isNoOp flag (reserved; requests carrying it are ignored).
    pub is_noop: bool,
    /// A native (raw WebSocket) message: its body is the whole frame.
    pub is_native: bool,
    /// Sent or received as a binary WebSocket frame.
    pub binary: bool,
}

/// An encoded message ready to be written: the bytes and the WebSocket frame type.
///
/// Cloning shares the buffer, so one encoded broadcast serves every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame payload.
    pub bytes: Bytes,
    /// Send as a binary frame (else text).
    pub binary: bool,
}

impl Frame {
    /// A text frame.
    pub fn text(bytes: impl Into<Bytes>) -> Self {
        Frame {
            bytes: bytes.into(),
            binary: false,
        }
    }

    /// A binary frame.
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Frame {
            bytes: bytes.into(),
            binary: true,
        }
    }
}

impl Message {
    /// A fire-and-forget event in `namespace`.
    pub fn new(
        namespace: impl Into<ByteString>,
        event: impl Into<ByteString>,
        body: impl Into<Bytes>,
    ) -> Self {
        Message {
            namespace: namespace.into(),
            event: event.into(),
            body: body.into(),
            ..Message::default()
        }
    }

    /// A native (raw WebSocket) message carrying `body`.
    pub fn native(body: impl Into<Bytes>, binary: bool) -> Self {
        Message {
            event: ByteString::from_static(events::ON_NATIVE_MESSAGE),
            body: body.into(),
            is_native: true,
            binary,
            ..Message::default()
        }
    }

    /// Sets the room.
    pub fn with_room(mut self, room: impl Into<ByteString>) -> Self {
        self.room = room.into();
        self
    }

    /// Sets the wait token.
    pub fn with_wait(mut self, wait: WaitToken) -> Self {
        self.wait = wait;
        self
    }

    /// Marks the message to be sent as a binary frame.
    pub fn with_binary(mut self, binary: bool) -> Self {
        self.binary = binary;
        self
    }

    /// The reply to this request carrying `body` (same wait, namespace, room and event).
    pub fn reply(&self, body: impl Into<Bytes>) -> Message {
        Message {
            wait: self.wait.clone(),
            namespace: self.namespace.clone(),
            room: self.room.clone(),
            event: self.event.clone(),
            body: body.into(),
            ..Message::default()
        }
    }

    /// The error reply to this request (isError set, `text` in the body).
    pub fn error_reply(&self, text: impl Into<Bytes>) -> Message {
        Message {
            is_error: true,
            ..self.reply(text)
        }
    }

    /// The error text, when this message carries one. As in neffos Go, an isError message
    /// with an empty body carries no error.
    pub fn error(&self) -> Option<&str> {
        if self.is_error && !self.body.is_empty() {
            Some(std::str::from_utf8(&self.body).unwrap_or("<non UTF-8 error text>"))
        } else {
            None
        }
    }

    /// True when this message is written as its raw body (a native message without a wait).
    fn is_raw(&self) -> bool {
        self.is_native && self.wait.is_empty()
    }

    /// Exact number of bytes [`Self::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        if self.is_raw() {
            return self.body.len();
        }
        self.wait.as_str().len()
            + escaped_len(&self.namespace)
            + escaped_len(&self.room)
            + escaped_len(&self.event)
            + 2 // the two flags
            + 6 // separators
            + self.body.len()
    }

    /// Appends the wire form of this message to `out` (the exact inverse of [`decode`]).
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        self.encode_reserved(out);
    }

    /// [`Self::encode`] into a buffer that already has room for [`Self::encoded_len`] bytes.
    fn encode_reserved(&self, out: &mut BytesMut) {
        if self.is_raw() {
            out.extend_from_slice(&self.body);
            return;
        }
        out.extend_from_slice(self.wait.as_str().as_bytes());
        out.put_u8(SEPARATOR);
        put_escaped(out, &self.namespace);
        out.put_u8(SEPARATOR);
        put_escaped(out, &self.room);
        out.put_u8(SEPARATOR);
        put_escaped(out, &self.event);
        out.put_u8(SEPARATOR);
        out.put_u8(if self.is_error { b'1' } else { b'0' });
        out.put_u8(SEPARATOR);
        out.put_u8(if self.is_noop { b'1' } else { b'0' });
        out.put_u8(SEPARATOR);
        out.extend_from_slice(&self.body);
    }

    /// Encodes once into a shareable [`Frame`] of the right type.
    pub fn to_frame(&self) -> Frame {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode_reserved(&mut out);
        Frame {
            bytes: out.freeze(),
            binary: self.binary,
        }
    }
}

/// The empty reply `<wait>;;;;;;` that acknowledges connect, disconnect, join and leave.
pub fn encode_empty_reply(wait: &WaitToken) -> Frame {
    let mut out = BytesMut::with_capacity(wait.as_str().len() + 6);
    out.extend_from_slice(wait.as_str().as_bytes());
    out.extend_from_slice(b";;;;;;");
    Frame::text(out.freeze())
}

/// Parses one WebSocket frame payload. `binary` is the frame type, kept on the message.
///
/// Zero-copy: wait, namespace, room, event and body are slices of `frame`, except a header
/// field containing the escape token, which is unescaped into a new string.
pub fn decode(frame: Bytes, binary: bool, opts: &DecodeOptions) -> Result<Message, DecodeError> {
    if frame.is_empty() {
        return Err(DecodeError::Empty);
    }
    if frame.len() > opts.max_frame_size {
        return Err(DecodeError::FrameTooLarge {
            len: frame.len(),
            max: opts.max_frame_size,
        });
    }
    if opts.native == NativeMode::Only {
        return Ok(Message::native(frame, binary));
    }

    // Positions of the first six separators; the body is everything after the sixth.
    // Header fields are short: a plain loop over the first bytes beats setting up `memchr`
    // six times; `memchr` takes over for long headers and separator-less frames.
    let mut seps = [0usize; 6];
    let mut found = 0;
    let mut pos = 0;
    let scalar_end = frame.len().min(SCALAR_SCAN);
    while found < 6 && pos < scalar_end {
        if frame[pos] == SEPARATOR {
            seps[found] = pos;
            found += 1;
        }
        pos += 1;
    }
    if found < 6 {
        for (slot, at) in seps[found..]
            .iter_mut()
            .zip(memchr::memchr_iter(SEPARATOR, &frame[pos..]))
        {
            *slot = pos + at;
            found += 1;
        }
    }
    if found < 6 {
        return match opts.native {
            NativeMode::Allowed => Ok(Message::native(frame, binary)),
            _ => Err(DecodeError::TooFewFields { found: found + 1 }),
        };
    }

    // Header fields are validated and sliced out of the frame (one reference-count increment
    // each, none for an empty field); the flags are only looked at; the body takes the frame
    // itself, so decoding never copies or allocates unless a field has to be unescaped.
    let mut start = 0;
    let mut strings: [ByteString; 4] = Default::default();
    let mut flags = [false; 2];
    for (i, (&end, field)) in seps.iter().zip(HEADER_FIELDS).enumerate() {
        let len = end - start;
        if len > opts.max_field_len {
            return Err(DecodeError::FieldTooLong {
                field,
                len,
                max: opts.max_field_len,
            });
        }
        match field {
            Field::IsError | Field::IsNoOp => {
                let raw = &frame[start..end];
                // Only the exact byte `1` is true; anything else is false, but still text.
                if std::str::from_utf8(raw).is_err() {
                    return Err(DecodeError::InvalidUtf8 { field });
                }
                flags[i - 4] = raw == b"1";
            }
            _ => strings[i] = header_field(&frame, start, end, field)?,
        }
        start = end + 1;
    }
    let [wait, namespace, room, event] = strings;
    let [is_error, is_noop] = flags;
    let is_native = opts.native == NativeMode::Allowed && &*event == events::ON_NATIVE_MESSAGE;
    let mut body = frame;
    body.advance(start);
    Ok(Message {
        wait: WaitToken::new(wait),
        namespace,
        room,
        event,
        body,
        is_error,
        is_noop,
        is_native,
        binary,
    })
}

/// One of wait, namespace, room and event: a slice of the frame, or, for a field holding the
/// escape token (never the wait), a new unescaped string.
fn header_field(
    frame: &Bytes,
    start: usize,
    end: usize,
    field: Field,
) -> Result<ByteString, DecodeError> {
    let raw = &frame[start..end];
    if field != Field::Wait && contains_escape_token(raw) {
        let text = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8 { field })?;
        return Ok(ByteString::from(text.replace(ESCAPE_TOKEN, ";")));
    }
    ByteString::try_from(frame.slice(start..end)).map_err(|_| DecodeError::InvalidUtf8 { field })
}

/// Whether `raw` holds [`ESCAPE_TOKEN`]; a plain `memchr` for its first byte rules out almost
/// every field before a substring search is set up.
fn contains_escape_token(raw: &[u8]) -> bool {
    if raw.len() < ESCAPE_TOKEN.len() {
        return false;
    }
    match memchr::memchr(ESCAPE_TOKEN.as_bytes()[0], raw) {
        Some(at) => memmem::find(&raw[at..], ESCAPE_TOKEN.as_bytes()).is_some(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shares_the_input_buffer() {
        let frame = Bytes::from(b";default;room;chat;0;0;payload".to_vec());
        let range = frame.as_ptr_range();
        let msg = decode(frame, false, &DecodeOptions::default()).unwrap();
        assert!(range.contains(&msg.body.as_ptr()));
        assert!(range.contains(&msg.namespace.as_bytes().as_ptr()));
        assert!(range.contains(&msg.event.as_bytes().as_ptr()));
    }

    #[test]
    fn encoded_len_is_exact() {
        let msg = Message::new("a;b", "e;v", "x;y")
            .with_room("r;")
            .with_wait(WaitToken::client(1));
        let frame = msg.to_frame();
        assert_eq!(frame.bytes.len(), msg.encoded_len());
    }
}
