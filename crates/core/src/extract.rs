//! Handler arguments taken from the incoming message, modelled on axum's extractors:
//! [`Events::handle`](crate::Events::handle) takes a handler whose arguments after the
//! [`NsConn`] are any [`FromMessage`] types: the [`Message`] itself, a typed body
//! ([`Json`](crate::Json), [`MsgPack`](crate::MsgPack)), the application [`State`].
//!
//! An argument that cannot be taken (a body that does not decode) answers the peer with
//! a neffos error reply naming the event and the cause; the handler does not run, the
//! connection stays, and the server counts it
//! ([`StatsSnapshot::rejected_messages`](crate::StatsSnapshot::rejected_messages)).

use std::any::type_name;
use std::future::Future;

use neffos_protocol::Message;

use crate::conn::NsConn;
use crate::error::{ExtractError, ExtractErrorKind};
use crate::handler::{BoxFuture, IntoOutcome, Outcome};

/// A handler argument taken from the incoming message (see the [module](self) docs).
pub trait FromMessage: Sized + Send + 'static {
    /// Takes the value from `msg`, received on `ns`.
    fn from_message(ns: &NsConn, msg: &Message) -> Result<Self, ExtractError>;
}

/// The message itself.
impl FromMessage for Message {
    fn from_message(_ns: &NsConn, msg: &Message) -> Result<Self, ExtractError> {
        Ok(msg.clone())
    }
}

#[cfg(feature = "json")]
impl<T: serde::de::DeserializeOwned + Send + 'static> FromMessage for crate::body::Json<T> {
    fn from_message(_ns: &NsConn, msg: &Message) -> Result<Self, ExtractError> {
        crate::body::decode::<Self, T>(msg)
            .map(crate::body::Json)
            .map_err(body_rejected)
    }
}

#[cfg(feature = "msgpack")]
impl<T: serde::de::DeserializeOwned + Send + 'static> FromMessage for crate::body::MsgPack<T> {
    fn from_message(_ns: &NsConn, msg: &Message) -> Result<Self, ExtractError> {
        crate::body::decode::<Self, T>(msg)
            .map(crate::body::MsgPack)
            .map_err(body_rejected)
    }
}

#[cfg(any(feature = "json", feature = "msgpack"))]
fn body_rejected(e: crate::error::BodyError) -> ExtractError {
    let (context, source) = e.into_parts();
    let error = ExtractError::new(ExtractErrorKind::Body, context);
    match source {
        Some(source) => error.with_source(source),
        None => error,
    }
}

/// The application state given to [`ServerBuilder::with_state`](crate::ServerBuilder::with_state)
/// (or [`Namespaces::with_state`](crate::Namespaces::with_state)), as a handler argument.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use neffos::{Events, Message, Namespaces, NsConn, Reply, Server, State};
///
/// #[derive(Clone, Default)]
/// struct App { hits: Arc<AtomicU64> }
///
/// let events = Events::new().handle("hit", |_ns: NsConn, State(app): State<App>, _msg: Message| async move {
///     Reply::new(app.hits.fetch_add(1, Ordering::Relaxed).to_string())
/// });
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let server = Server::builder(Namespaces::new().namespace("default", events))
///     .with_state(App::default())
///     .build();
/// # let _ = server; });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

impl<S: Clone + Send + Sync + 'static> FromMessage for State<S> {
    fn from_message(ns: &NsConn, _msg: &Message) -> Result<Self, ExtractError> {
        ns.state::<S>().map(State).ok_or_else(|| {
            ExtractError::new(
                ExtractErrorKind::MissingState,
                format!(
                    "state {} for a handler of namespace {:?}",
                    type_name::<S>(),
                    ns.namespace()
                ),
            )
        })
    }
}

/// A function usable with [`Events::handle`](crate::Events::handle): `async fn(NsConn, A)`,
/// `async fn(NsConn, A, B)` or `async fn(NsConn, A, B, C)` whose arguments implement
/// [`FromMessage`] and whose output implements [`IntoOutcome`].
pub trait Handler<Args>: Send + Sync + 'static {
    /// Takes the arguments from `msg` and runs the handler.
    fn call(&self, ns: NsConn, msg: Message) -> BoxFuture<Outcome>;
}

/// Answers a message whose arguments could not be taken: an error reply, counted.
fn rejected(ns: &NsConn, msg: &Message, e: ExtractError) -> BoxFuture<Outcome> {
    tracing::debug!(
        id = ns.conn().id(),
        namespace = ns.namespace(),
        event = &*msg.event,
        error = %e,
        "message rejected"
    );
    if let Some(server) = ns.conn().0.server.shared() {
        server.stats.message_rejected();
    }
    let text = e.to_string();
    Box::pin(std::future::ready(Outcome::Error(text)))
}

macro_rules! handler {
    ($($arg:ident),+) => {
        impl<F, Fut, O, $($arg),+> Handler<($($arg,)+)> for F
        where
            F: Fn(NsConn, $($arg),+) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = O> + Send + 'static,
            O: IntoOutcome + 'static,
            $($arg: FromMessage,)+
        {
            #[allow(non_snake_case)]
            fn call(&self, ns: NsConn, msg: Message) -> BoxFuture<Outcome> {
                $(
                    let $arg = match $arg::from_message(&ns, &msg) {
                        Ok(v) => v,
                        Err(e) => return rejected(&ns, &msg, e),
                    };
                )+
                let fut = self(ns, $($arg),+);
                Box::pin(async move { fut.await.into_outcome() })
            }
        }
    };
}

handler!(A);
handler!(A, B);
handler!(A, B, C);
