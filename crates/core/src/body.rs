//! Typed bodies: JSON (feature `json`, on by default, `serde_json`) and MessagePack
//! (feature `msgpack`, `rmp-serde`).
//!
//! - Decode an incoming body with a handler argument ([`Json<T>`], [`MsgPack<T>`], see
//!   [`Events::handle`](crate::Events::handle)) or with [`MessageExt::json`].
//! - Answer with [`Reply::json`](crate::Reply::json), send with
//!   [`NsConn::emit_json`](crate::NsConn::emit_json),
//!   [`Server::broadcast_json`](crate::Server::broadcast_json), ask with
//!   [`NsConn::ask_json`](crate::NsConn::ask_json).
//!
//! JSON bodies travel in text frames, as neffos.js (`JSON.stringify`) and Go neffos
//! (`neffos.Marshal`) send them; MessagePack bodies travel in binary frames.

use bytes::Bytes;
use neffos_protocol::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BodyError, BodyErrorKind, BoxError};

/// A body encoding.
pub(crate) trait Format {
    /// How errors name it.
    const NAME: &'static str;
    /// Sent in binary frames (else text).
    const BINARY: bool;
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BoxError>;
    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, BoxError>;
}

/// A JSON body: as a handler argument, the incoming body decoded into `T`.
///
/// ```
/// use neffos::{Events, Json, NsConn, Reply};
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Chat { text: String }
///
/// let events = Events::new().handle("chat", |ns: NsConn, Json(chat): Json<Chat>| async move {
///     Reply::json(&Chat { text: chat.text.to_uppercase() })
/// });
/// # let _ = events;
/// ```
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

/// JSON (`serde_json`), in text frames.
#[cfg(feature = "json")]
impl<T> Format for Json<T> {
    const NAME: &'static str = "JSON";
    const BINARY: bool = false;

    fn encode<V: Serialize + ?Sized>(value: &V) -> Result<Vec<u8>, BoxError> {
        serde_json::to_vec(value).map_err(Into::into)
    }

    fn decode<V: DeserializeOwned>(body: &[u8]) -> Result<V, BoxError> {
        serde_json::from_slice(body).map_err(Into::into)
    }
}

/// A MessagePack body: as a handler argument, the incoming body decoded into `T`.
/// Structs are encoded as maps (field names kept), as other MessagePack peers expect.
#[cfg(feature = "msgpack")]
#[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgPack<T>(pub T);

/// MessagePack (`rmp-serde`, structs as maps), in binary frames.
#[cfg(feature = "msgpack")]
impl<T> Format for MsgPack<T> {
    const NAME: &'static str = "MessagePack";
    const BINARY: bool = true;

    fn encode<V: Serialize + ?Sized>(value: &V) -> Result<Vec<u8>, BoxError> {
        rmp_serde::to_vec_named(value).map_err(Into::into)
    }

    fn decode<V: DeserializeOwned>(body: &[u8]) -> Result<V, BoxError> {
        rmp_serde::from_slice(body).map_err(Into::into)
    }
}

/// `the JSON body of "chat" on namespace "default"`.
fn context<F: Format>(msg_event: &str, namespace: &str) -> String {
    format!(
        "the {} body of {msg_event:?} on namespace {namespace:?}",
        F::NAME
    )
}

/// Decodes `msg`'s body as `F`.
pub(crate) fn decode<F: Format, T: DeserializeOwned>(msg: &Message) -> Result<T, BodyError> {
    F::decode(&msg.body).map_err(|e| {
        BodyError::new(
            BodyErrorKind::Decode,
            context::<F>(&msg.event, &msg.namespace),
        )
        .with_source(e)
    })
}

/// Encodes `value` as `F`; `what` names it in the error.
pub(crate) fn encode<F: Format, T: Serialize + ?Sized>(
    value: &T,
    what: impl FnOnce() -> String,
) -> Result<Bytes, BodyError> {
    F::encode(value)
        .map(Bytes::from)
        .map_err(|e| BodyError::new(BodyErrorKind::Encode, what()).with_source(e))
}

/// A message for `event` on `namespace` with `value` encoded as `F` (binary frame for
/// binary formats).
pub(crate) fn message<F: Format, T: Serialize + ?Sized>(
    namespace: &str,
    event: &str,
    value: &T,
) -> Result<Message, BodyError> {
    let body = encode::<F, T>(value, || context::<F>(event, namespace))?;
    Ok(Message::new(namespace, event, body).with_binary(F::BINARY))
}

/// Typed access to a [`Message`]'s body.
///
/// ```
/// use neffos::{Message, MessageExt};
/// #[derive(Debug, serde::Deserialize)]
/// struct Chat { text: String }
///
/// let msg = Message::new("default", "chat", r#"{"text":"hi"}"#);
/// let chat: Chat = msg.json().unwrap();
/// assert_eq!(chat.text, "hi");
/// let err = Message::new("default", "chat", "not json").json::<Chat>().unwrap_err();
/// assert!(err.to_string().starts_with(r#"the JSON body of "chat" on namespace "default""#));
/// ```
pub trait MessageExt: sealed::Sealed {
    /// The body decoded from JSON.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    fn json<T: DeserializeOwned>(&self) -> Result<T, BodyError>;

    /// The body decoded from MessagePack.
    #[cfg(feature = "msgpack")]
    #[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
    fn msgpack<T: DeserializeOwned>(&self) -> Result<T, BodyError>;

    /// A message for `event` on `namespace` whose body is `value` as JSON.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    fn new_json<T: Serialize + ?Sized>(
        namespace: &str,
        event: &str,
        value: &T,
    ) -> Result<Message, BodyError>;

    /// A message for `event` on `namespace` whose body is `value` as MessagePack (binary).
    #[cfg(feature = "msgpack")]
    #[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
    fn new_msgpack<T: Serialize + ?Sized>(
        namespace: &str,
        event: &str,
        value: &T,
    ) -> Result<Message, BodyError>;
}

impl MessageExt for Message {
    #[cfg(feature = "json")]
    fn json<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        decode::<Json<()>, T>(self)
    }

    #[cfg(feature = "msgpack")]
    fn msgpack<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        decode::<MsgPack<()>, T>(self)
    }

    #[cfg(feature = "json")]
    fn new_json<T: Serialize + ?Sized>(
        namespace: &str,
        event: &str,
        value: &T,
    ) -> Result<Message, BodyError> {
        message::<Json<()>, T>(namespace, event, value)
    }

    #[cfg(feature = "msgpack")]
    fn new_msgpack<T: Serialize + ?Sized>(
        namespace: &str,
        event: &str,
        value: &T,
    ) -> Result<Message, BodyError> {
        message::<MsgPack<()>, T>(namespace, event, value)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for neffos_protocol::Message {}
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Chat {
        from: String,
        text: String,
        n: u32,
    }

    fn chat() -> Chat {
        Chat {
            from: "ana".into(),
            text: "hé; ok".into(),
            n: 3,
        }
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trips_in_text() {
        let msg = Message::new_json("default", "chat", &chat()).unwrap();
        assert!(!msg.binary);
        assert_eq!(
            &msg.body[..],
            r#"{"from":"ana","text":"hé; ok","n":3}"#.as_bytes()
        );
        assert_eq!(msg.json::<Chat>().unwrap(), chat());
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack_round_trips_in_binary_with_field_names() {
        let msg = Message::new_msgpack("default", "chat", &chat()).unwrap();
        assert!(msg.binary);
        assert!(msg.body.windows(4).any(|w| w == b"from"), "maps keep names");
        assert_eq!(msg.msgpack::<Chat>().unwrap(), chat());
    }

    #[cfg(feature = "json")]
    #[test]
    fn a_bad_body_names_event_namespace_and_the_serde_error() {
        let msg = Message::new("lobby", "chat", r#"{"from":"ana"}"#);
        let err = msg.json::<Chat>().unwrap_err();
        assert_eq!(err.kind(), BodyErrorKind::Decode);
        let text = err.to_string();
        assert!(
            text.starts_with(r#"the JSON body of "chat" on namespace "lobby": cannot be decoded: missing field `text`"#),
            "{text}"
        );
        let source = std::error::Error::source(&err).unwrap();
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
    }

    #[cfg(feature = "json")]
    #[test]
    fn an_unencodable_value_is_an_encode_error() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        let err = Message::new_json("ns", "ev", &map).unwrap_err();
        assert_eq!(err.kind(), BodyErrorKind::Encode);
    }
}
