//! Event handlers: what a namespace does when an event arrives.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use neffos_protocol::{Message, NativeMode, events};

use crate::conn::NsConn;

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a handler's return value asks the framework to send back (PROTOCOL.md §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Nothing is sent back.
    Done,
    /// The request is answered with this body.
    Reply(Reply),
    /// The request is answered with this error text (and a connect/join is refused).
    Error(String),
}

/// A reply body: return `Reply::new(body)` (or `Ok(Reply::new(body))`) from a handler to
/// answer an Ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    body: Bytes,
    binary: bool,
}

impl Reply {
    /// A reply carrying `body` (a text frame: `body` must be UTF-8).
    pub fn new(body: impl Into<Bytes>) -> Self {
        Reply {
            body: body.into(),
            binary: false,
        }
    }

    /// A reply carrying `body` in a binary frame.
    pub fn binary(body: impl Into<Bytes>) -> Self {
        Reply {
            body: body.into(),
            binary: true,
        }
    }

    /// A reply whose body is `value` as JSON.
    ///
    /// ```
    /// # use neffos::Reply;
    /// let reply = Reply::json(&serde_json::json!({ "ok": true })).unwrap();
    /// assert_eq!(&reply.body()[..], br#"{"ok":true}"#);
    /// ```
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, crate::error::BodyError> {
        Self::encoded::<crate::body::Json<()>, T>(value)
    }

    /// A reply whose body is `value` as MessagePack (binary frame).
    #[cfg(feature = "msgpack")]
    #[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
    pub fn msgpack<T: serde::Serialize + ?Sized>(
        value: &T,
    ) -> Result<Self, crate::error::BodyError> {
        Self::encoded::<crate::body::MsgPack<()>, T>(value)
    }

    #[cfg(any(feature = "json", feature = "msgpack"))]
    fn encoded<F: crate::body::Format, T: serde::Serialize + ?Sized>(
        value: &T,
    ) -> Result<Self, crate::error::BodyError> {
        let body = crate::body::encode::<F, T>(value, || format!("a {} reply", F::NAME))?;
        Ok(Reply {
            body,
            binary: F::BINARY,
        })
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Sent in a binary frame.
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    pub(crate) fn into_parts(self) -> (Bytes, bool) {
        (self.body, self.binary)
    }
}

/// Types a handler may return: `()`, [`Reply`], [`Outcome`], or a `Result` of those whose
/// error is displayed as the neffos error text.
pub trait IntoOutcome {
    /// Converts into the [`Outcome`].
    fn into_outcome(self) -> Outcome;
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Outcome {
        Outcome::Done
    }
}

impl IntoOutcome for Reply {
    fn into_outcome(self) -> Outcome {
        Outcome::Reply(self)
    }
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Outcome {
        self
    }
}

impl<T: IntoOutcome> IntoOutcome for Option<T> {
    fn into_outcome(self) -> Outcome {
        self.map_or(Outcome::Done, IntoOutcome::into_outcome)
    }
}

impl<T: IntoOutcome, E: fmt::Display> IntoOutcome for Result<T, E> {
    fn into_outcome(self) -> Outcome {
        match self {
            Ok(v) => v.into_outcome(),
            Err(e) => Outcome::Error(e.to_string()),
        }
    }
}

pub(crate) type EventFn = Arc<dyn Fn(NsConn, Message) -> BoxFuture<Outcome> + Send + Sync>;

/// The event handlers of one namespace.
///
/// ```
/// use neffos::{Events, Reply};
/// let events = Events::new()
///     .on("chat", |ns, msg| async move {
///         // Send the message to everyone else in the namespace.
///         ns.broadcast_others(msg)
///     })
///     .on("time", |_ns, _msg| async { Reply::new("12:00") });
/// assert!(events.has("chat"));
/// ```
#[derive(Clone, Default)]
pub struct Events {
    map: HashMap<String, EventFn>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.map.keys()).finish()
    }
}

impl Events {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `event` (a custom name or one of [`events`]).
    pub fn on<F, Fut, O>(mut self, event: impl Into<String>, handler: F) -> Self
    where
        F: Fn(NsConn, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: IntoOutcome + 'static,
    {
        let f: EventFn = Arc::new(move |ns, msg| {
            let fut = handler(ns, msg);
            Box::pin(async move { fut.await.into_outcome() })
        });
        self.map.insert(event.into(), f);
        self
    }

    /// Registers `handler` for `event`, with its arguments taken from the message: after
    /// the [`NsConn`], any [`FromMessage`](crate::extract::FromMessage) types, such as a
    /// typed body ([`Json`](crate::Json)), the [`State`](crate::State) or the [`Message`].
    /// A body that does not decode is answered with a neffos error reply naming the event
    /// and the decoder's error; the handler does not run and the connection stays.
    ///
    /// ```
    /// use neffos::{Events, Json, NsConn, Reply, State};
    /// #[derive(serde::Deserialize)]
    /// struct Join { room: String }
    /// #[derive(Clone)]
    /// struct App { motd: String }
    ///
    /// let events = Events::new().handle(
    ///     "join",
    ///     |ns: NsConn, State(app): State<App>, Json(join): Json<Join>| async move {
    ///         ns.join_room(&join.room).await?;
    ///         Ok::<_, neffos::RoomError>(Reply::new(app.motd))
    ///     },
    /// );
    /// # let _ = events;
    /// ```
    pub fn handle<H, Args>(mut self, event: impl Into<String>, handler: H) -> Self
    where
        H: crate::extract::Handler<Args>,
    {
        let f: EventFn = Arc::new(move |ns, msg| handler.call(ns, msg));
        self.map.insert(event.into(), f);
        self
    }

    /// True when `event` has its own handler.
    pub fn has(&self, event: &str) -> bool {
        self.map.contains_key(event)
    }

    /// The handler of `event`, else the `_OnAnyEvent` fallback.
    pub(crate) fn get(&self, event: &str) -> Option<&EventFn> {
        self.map
            .get(event)
            .or_else(|| self.map.get(events::ON_ANY_EVENT))
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Every namespace a server (or client) serves, with its events.
///
/// ```
/// use neffos::{Events, Namespaces};
/// let namespaces = Namespaces::new()
///     .namespace("default", Events::new().on("chat", |_ns, _msg| async {}))
///     .on("admin", "kick", |_ns, _msg| async {});
/// assert!(namespaces.get("admin").is_some());
/// ```
#[derive(Clone, Default, Debug)]
pub struct Namespaces {
    map: HashMap<String, Events>,
    state: http::Extensions,
}

impl Namespaces {
    /// No namespaces.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an application state value, reachable in every handler of these namespaces
    /// as the [`State`](crate::State) argument or with [`NsConn::state`]. One value per
    /// type; share mutable parts through `Arc`s. [`ServerBuilder::with_state`](crate::ServerBuilder::with_state)
    /// does the same for a server.
    pub fn with_state<S: Clone + Send + Sync + 'static>(mut self, state: S) -> Self {
        self.state.insert(state);
        self
    }

    /// The state value of type `S`, if given.
    pub(crate) fn state<S: Clone + Send + Sync + 'static>(&self) -> Option<S> {
        self.state.get::<S>().cloned()
    }

    /// Declares `name` with `events` (replacing an earlier declaration).
    pub fn namespace(mut self, name: impl Into<String>, events: Events) -> Self {
        self.map.insert(name.into(), events);
        self
    }

    /// Adds one handler to namespace `ns`, declaring it if needed.
    pub fn on<F, Fut, O>(
        mut self,
        ns: impl Into<String>,
        event: impl Into<String>,
        handler: F,
    ) -> Self
    where
        F: Fn(NsConn, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: IntoOutcome + 'static,
    {
        let ns = ns.into();
        let events = self.map.remove(&ns).unwrap_or_default().on(event, handler);
        self.map.insert(ns, events);
        self
    }

    /// The declared namespace names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// The events of namespace `name`.
    pub fn get(&self, name: &str) -> Option<&Events> {
        self.map.get(name)
    }

    /// The native-message mode these namespaces imply (PROTOCOL.md §1.6): "native only" when
    /// the only namespace is `""` with the only event `_OnNativeMessage`; "native allowed"
    /// when namespace `""` has `_OnNativeMessage` among others.
    pub fn native_mode(&self) -> NativeMode {
        match self.map.get("") {
            Some(ev) if ev.has(events::ON_NATIVE_MESSAGE) => {
                if self.map.len() == 1 && ev.len() == 1 {
                    NativeMode::Only
                } else {
                    NativeMode::Allowed
                }
            }
            _ => NativeMode::Off,
        }
    }
}
