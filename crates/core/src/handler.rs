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
    Reply(Bytes),
    /// The request is answered with this error text (and a connect/join is refused).
    Error(String),
}

/// A reply body: return `Reply::new(body)` (or `Ok(Reply::new(body))`) from a handler to
/// answer an Ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(pub Bytes);

impl Reply {
    /// A reply carrying `body`.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Reply(body.into())
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
        Outcome::Reply(self.0)
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
}

impl Namespaces {
    /// No namespaces.
    pub fn new() -> Self {
        Self::default()
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
