//! The namespace and room protocol (PROTOCOL.md §3) from both ends: answering the peer's
//! requests, asking the peer, and dispatching custom events to handlers.

use std::sync::Arc;

use bytestring::ByteString;
use neffos_protocol::{Message, encode_empty_reply, events, known_errors};

use super::{Conn, ConnInner, Count, NsConn, Role};
use crate::error::{
    AskError, AskErrorKind, NamespaceError, NamespaceErrorKind, RemoteError, RoomError,
    RoomErrorKind,
};
use crate::handler::Outcome;

/// Runs the handler of `event` in namespace `ns` (or its `_OnAnyEvent` fallback).
pub(crate) async fn fire(inner: &Arc<ConnInner>, ns: &ByteString, msg: Message) -> Outcome {
    let handler = inner
        .handlers
        .get(ns)
        .and_then(|events| events.get(&msg.event))
        .cloned();
    match handler {
        Some(handler) => handler(NsConn::new(Conn(inner.clone()), ns.clone()), msg).await,
        None => Outcome::Done,
    }
}

fn local_event(ns: &ByteString, room: &ByteString, event: &'static str) -> Message {
    Message::new(ns.clone(), event, bytes::Bytes::new()).with_room(room.clone())
}

async fn reply_empty(inner: &ConnInner, msg: &Message) {
    let _ = inner.send_frame(encode_empty_reply(&msg.wait)).await;
}

async fn reply_error(inner: &ConnInner, msg: &Message, text: &str) {
    let reply = request_echo(msg).error_reply(bytes::Bytes::copy_from_slice(text.as_bytes()));
    let _ = inner.send_frame(reply.to_frame()).await;
}

fn request_echo(msg: &Message) -> Message {
    Message::new(
        msg.namespace.clone(),
        msg.event.clone(),
        bytes::Bytes::new(),
    )
    .with_room(msg.room.clone())
    .with_wait(msg.wait.clone())
}

/// Handles one incoming message that is not a reply to our own Ask.
pub(crate) async fn dispatch(inner: Arc<ConnInner>, msg: Message) {
    if msg.is_native {
        // Native messages belong to namespace "" and need it connected (PROTOCOL.md §1.6).
        if inner.can_receive("", "") {
            let ns = ByteString::new();
            let _ = fire(&inner, &ns, msg).await;
        }
        return;
    }
    let is_request = !msg.wait.is_empty();
    match &*msg.event {
        events::ON_NAMESPACE_CONNECT => {
            if is_request && !msg.is_noop {
                reply_connect(&inner, msg).await;
            }
        }
        events::ON_NAMESPACE_DISCONNECT => {
            if is_request && !msg.is_noop {
                reply_disconnect(&inner, msg).await;
            }
        }
        events::ON_ROOM_JOIN => {
            if is_request && !msg.is_noop {
                reply_join(&inner, msg).await;
            }
        }
        // neffos.js `leaveAll()` asks with `_OnRoomLeft`: treat it as a leave so it settles.
        events::ON_ROOM_LEAVE | events::ON_ROOM_LEFT => {
            if is_request && !msg.is_noop {
                reply_leave(&inner, msg).await;
            }
        }
        // Local-only system events are never accepted from the wire.
        events::ON_NAMESPACE_CONNECTED
        | events::ON_ROOM_JOINED
        | events::ON_ANY_EVENT
        | events::ON_NATIVE_MESSAGE => {
            tracing::debug!(id = %inner.id, event = %msg.event, "dropped a local-only event from the peer");
        }
        _ => dispatch_custom(&inner, msg).await,
    }
}

async fn dispatch_custom(inner: &Arc<ConnInner>, msg: Message) {
    let is_request = !msg.wait.is_empty();
    if !inner.can_receive(&msg.namespace, "") {
        tracing::debug!(id = %inner.id, ns = %msg.namespace, "event for a namespace that is not connected");
        if is_request && !msg.is_error {
            reply_error(inner, &msg, known_errors::BAD_NAMESPACE).await;
        }
        return;
    }
    if !msg.room.is_empty() && !inner.can_receive(&msg.namespace, &msg.room) {
        if is_request && !msg.is_error {
            reply_error(inner, &msg, known_errors::BAD_ROOM).await;
        }
        return;
    }
    let ns = msg.namespace.clone();
    let echo = request_echo(&msg);
    let incoming_error = msg.is_error;
    match fire(inner, &ns, msg).await {
        Outcome::Done => {}
        Outcome::Reply(answer) => {
            let (body, binary) = answer.into_parts();
            let mut reply = echo.with_binary(binary);
            reply.body = body;
            if let Err(e) = inner.write_async(&reply).await {
                tracing::debug!(id = %inner.id, error = %e, "reply not written");
            }
        }
        // Never answer an error with an error: two peers would ping-pong forever.
        Outcome::Error(_) if incoming_error => {}
        Outcome::Error(text) => reply_error(inner, &echo, &text).await,
    }
}

async fn reply_connect(inner: &Arc<ConnInner>, msg: Message) {
    let ns = msg.namespace.clone();
    if inner.namespaces.lock().contains_key(&ns) {
        return reply_empty(inner, &msg).await;
    }
    if inner.handlers.get(&ns).is_none() {
        return reply_error(inner, &msg, known_errors::BAD_NAMESPACE).await;
    }
    if inner.namespaces.lock().len() >= inner.config.max_namespaces {
        return reply_error(inner, &msg, "too many namespaces").await;
    }
    // The JS client cannot refuse a server's connect; neither do we on the client side.
    if inner.role == Role::Server
        && let Outcome::Error(text) = fire(inner, &ns, request_echo(&msg)).await
    {
        return reply_error(inner, &msg, &text).await;
    }
    if !add_namespace(inner, &ns) {
        return reply_empty(inner, &msg).await;
    }
    reply_empty(inner, &msg).await;
    crate::recovery::after_namespace_connect(inner, &ns);
    let _ = fire(
        inner,
        &ns,
        local_event(&ns, &ByteString::new(), events::ON_NAMESPACE_CONNECTED),
    )
    .await;
}

async fn reply_disconnect(inner: &Arc<ConnInner>, msg: Message) {
    let ns = msg.namespace.clone();
    if !inner.namespaces.lock().contains_key(&ns) {
        return reply_empty(inner, &msg).await;
    }
    if inner.role == Role::Server {
        if let Outcome::Error(text) = fire(inner, &ns, request_echo(&msg)).await {
            return reply_error(inner, &msg, &text).await;
        }
        leave_namespace(inner, &ns).await;
        reply_empty(inner, &msg).await;
    } else {
        leave_namespace(inner, &ns).await;
        reply_empty(inner, &msg).await;
        let _ = fire(inner, &ns, request_echo(&msg)).await;
    }
}

async fn reply_join(inner: &Arc<ConnInner>, msg: Message) {
    let (ns, room) = (msg.namespace.clone(), msg.room.clone());
    let joined = {
        let table = inner.namespaces.lock();
        table
            .get(&ns)
            .map(|rooms| (rooms.contains(&room), rooms.len()))
    };
    match joined {
        None => return reply_error(inner, &msg, known_errors::BAD_NAMESPACE).await,
        Some((true, _)) => return reply_empty(inner, &msg).await,
        Some((false, n)) if n >= inner.config.max_rooms => {
            return reply_error(inner, &msg, "too many rooms").await;
        }
        Some((false, _)) => {}
    }
    if let Outcome::Error(text) = fire(inner, &ns, request_echo(&msg)).await {
        return reply_error(inner, &msg, &text).await;
    }
    add_room(inner, &ns, &room);
    let _ = fire(inner, &ns, local_event(&ns, &room, events::ON_ROOM_JOINED)).await;
    reply_empty(inner, &msg).await;
}

async fn reply_leave(inner: &Arc<ConnInner>, msg: Message) {
    let (ns, room) = (msg.namespace.clone(), msg.room.clone());
    let member = {
        let table = inner.namespaces.lock();
        table.get(&ns).map(|rooms| rooms.contains(&room))
    };
    match member {
        None => return reply_error(inner, &msg, known_errors::BAD_NAMESPACE).await,
        Some(false) => return reply_empty(inner, &msg).await,
        Some(true) => {}
    }
    let leave = local_event(&ns, &room, events::ON_ROOM_LEAVE).with_wait(msg.wait.clone());
    let outcome = fire(inner, &ns, leave).await;
    if inner.role == Role::Server
        && let Outcome::Error(text) = outcome
    {
        return reply_error(inner, &msg, &text).await;
    }
    remove_room(inner, &ns, &room);
    let _ = fire(inner, &ns, local_event(&ns, &room, events::ON_ROOM_LEFT)).await;
    reply_empty(inner, &msg).await;
}

/// Records `ns` as connected; false if it already was.
fn add_namespace(inner: &Arc<ConnInner>, ns: &ByteString) -> bool {
    // Not `insert`: a namespace connected twice (the peer's request and our own, racing)
    // keeps the rooms joined in between.
    let added = inner.namespaces.lock().add(ns.clone());
    inner.notify_namespaces_changed();
    if added {
        inner.server.namespace_added(inner, ns);
    }
    added
}

fn add_room(inner: &Arc<ConnInner>, ns: &ByteString, room: &ByteString) {
    let added = inner
        .namespaces
        .lock()
        .get_mut(ns)
        .is_some_and(|rooms| rooms.insert(room.clone()));
    if added {
        inner.server.room_added(inner, ns, room);
    }
}

fn remove_room(inner: &Arc<ConnInner>, ns: &ByteString, room: &ByteString) {
    let removed = inner
        .namespaces
        .lock()
        .get_mut(ns)
        .is_some_and(|rooms| rooms.remove(room));
    if removed {
        inner.server.room_removed(inner, ns, room);
    }
}

/// Leaves every room of `ns` (firing leave/left), forgets `ns`, and fires its disconnect
/// event. Used by disconnect from either side and by close.
pub(crate) async fn leave_namespace(inner: &Arc<ConnInner>, ns: &ByteString) {
    let rooms: Vec<ByteString> = inner
        .namespaces
        .lock()
        .get(ns)
        .map(|r| r.iter().cloned().collect())
        .unwrap_or_default();
    for room in rooms {
        let _ = fire(inner, ns, local_event(ns, &room, events::ON_ROOM_LEAVE)).await;
        remove_room(inner, ns, &room);
        let _ = fire(inner, ns, local_event(ns, &room, events::ON_ROOM_LEFT)).await;
    }
    let removed = inner.namespaces.lock().remove(ns).is_some();
    inner.notify_namespaces_changed();
    if removed {
        inner.server.namespace_removed(inner, ns);
    }
}

/// Fires the local disconnect events of every namespace (on close).
pub(crate) async fn leave_all(inner: &Arc<ConnInner>) {
    let namespaces: Vec<ByteString> = inner.namespaces.lock().keys().cloned().collect();
    for ns in namespaces {
        leave_namespace(inner, &ns).await;
        let _ = fire(
            inner,
            &ns,
            local_event(&ns, &ByteString::new(), events::ON_NAMESPACE_DISCONNECT),
        )
        .await;
    }
}

fn namespace_context(op: &str, ns: &str, id: &str) -> String {
    format!("{op} namespace {ns:?} on connection {id:?}")
}

fn room_context(op: &str, ns: &str, room: &str, id: &str) -> String {
    format!("{op} room {room:?} of namespace {ns:?} on connection {id:?}")
}

fn namespace_error(ask: AskError, context: String) -> NamespaceError {
    let kind = match ask.kind() {
        AskErrorKind::Remote => NamespaceErrorKind::Refused,
        AskErrorKind::Timeout => NamespaceErrorKind::Timeout,
        _ => NamespaceErrorKind::Closed,
    };
    ask.into_kind(kind, context)
}

fn room_error(ask: AskError, context: String) -> RoomError {
    let kind = match ask.kind() {
        AskErrorKind::Remote => RoomErrorKind::Refused,
        AskErrorKind::Timeout => RoomErrorKind::Timeout,
        _ => RoomErrorKind::Closed,
    };
    ask.into_kind(kind, context)
}

pub(crate) async fn ask_connect(
    inner: &Arc<ConnInner>,
    ns: ByteString,
) -> Result<(), NamespaceError> {
    if inner.namespaces.lock().contains_key(&ns) {
        return Ok(());
    }
    let context = || namespace_context("connect", &ns, &inner.id);
    if inner.handlers.get(&ns).is_none() {
        return Err(NamespaceError::new(NamespaceErrorKind::Unknown, context()));
    }
    let req = local_event(&ns, &ByteString::new(), events::ON_NAMESPACE_CONNECT);
    if let Outcome::Error(text) = fire(inner, &ns, req.clone()).await {
        return Err(NamespaceError::new(NamespaceErrorKind::Refused, context())
            .with_source(RemoteError::new(text)));
    }
    inner
        .ask(req, inner.config.ask_timeout)
        .await
        .map_err(|e| namespace_error(e, context()))?;
    if add_namespace(inner, &ns) {
        let _ = fire(
            inner,
            &ns,
            local_event(&ns, &ByteString::new(), events::ON_NAMESPACE_CONNECTED),
        )
        .await;
    }
    Ok(())
}

pub(crate) async fn ask_disconnect(
    inner: &Arc<ConnInner>,
    ns: ByteString,
) -> Result<(), NamespaceError> {
    let context = || namespace_context("disconnect", &ns, &inner.id);
    if !inner.namespaces.lock().contains_key(&ns) {
        return Err(NamespaceError::new(
            NamespaceErrorKind::NotConnected,
            context(),
        ));
    }
    let req = local_event(&ns, &ByteString::new(), events::ON_NAMESPACE_DISCONNECT);
    inner
        .ask(req.clone(), inner.config.ask_timeout)
        .await
        .map_err(|e| namespace_error(e, context()))?;
    leave_namespace(inner, &ns).await;
    let _ = fire(inner, &ns, req).await;
    Ok(())
}

pub(crate) async fn ask_join(
    inner: &Arc<ConnInner>,
    ns: ByteString,
    room: ByteString,
) -> Result<(), RoomError> {
    let context = || room_context("join", &ns, &room, &inner.id);
    let member = inner
        .namespaces
        .lock()
        .get(&ns)
        .map(|r| (r.contains(&room), r.len()));
    match member {
        None => {
            return Err(RoomError::new(
                RoomErrorKind::NamespaceNotConnected,
                context(),
            ));
        }
        Some((true, _)) => return Ok(()),
        Some((false, n)) if n >= inner.config.max_rooms => {
            let context = format!("{} (limit {})", context(), inner.config.max_rooms);
            return Err(RoomError::new(RoomErrorKind::TooManyRooms, context));
        }
        Some((false, _)) => {}
    }
    inner
        .ask(
            local_event(&ns, &room, events::ON_ROOM_JOIN),
            inner.config.ask_timeout,
        )
        .await
        .map_err(|e| room_error(e, context()))?;
    add_room(inner, &ns, &room);
    let _ = fire(inner, &ns, local_event(&ns, &room, events::ON_ROOM_JOINED)).await;
    Ok(())
}

pub(crate) async fn ask_leave(
    inner: &Arc<ConnInner>,
    ns: ByteString,
    room: ByteString,
) -> Result<(), RoomError> {
    let context = || room_context("leave", &ns, &room, &inner.id);
    let member = inner.namespaces.lock().get(&ns).map(|r| r.contains(&room));
    match member {
        None => {
            return Err(RoomError::new(
                RoomErrorKind::NamespaceNotConnected,
                context(),
            ));
        }
        Some(false) => return Err(RoomError::new(RoomErrorKind::NotJoined, context())),
        Some(true) => {}
    }
    inner
        .ask(
            local_event(&ns, &room, events::ON_ROOM_LEAVE),
            inner.config.ask_timeout,
        )
        .await
        .map_err(|e| room_error(e, context()))?;
    let _ = fire(inner, &ns, local_event(&ns, &room, events::ON_ROOM_LEAVE)).await;
    remove_room(inner, &ns, &room);
    let _ = fire(inner, &ns, local_event(&ns, &room, events::ON_ROOM_LEFT)).await;
    Ok(())
}

/// Server side, restoring a kept session: the namespace is connected here first (the
/// handlers may refuse), so that the client's own requests that follow find it, then the
/// client is told with a server-initiated connect.
pub(crate) async fn force_connect(inner: &Arc<ConnInner>, ns: &ByteString) -> Result<(), String> {
    if !inner.namespaces.lock().contains_key(ns) {
        if inner.handlers.get(ns).is_none() {
            return Err(known_errors::BAD_NAMESPACE.to_owned());
        }
        let req = local_event(ns, &ByteString::new(), events::ON_NAMESPACE_CONNECT);
        if let Outcome::Error(text) = fire(inner, ns, req).await {
            return Err(text);
        }
        if add_namespace(inner, ns) {
            let connected = local_event(ns, &ByteString::new(), events::ON_NAMESPACE_CONNECTED);
            let _ = fire(inner, ns, connected).await;
        }
    }
    let req = local_event(ns, &ByteString::new(), events::ON_NAMESPACE_CONNECT);
    inner
        .ask(req, inner.config.ask_timeout)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Like [`force_connect`], for a room of a connected namespace.
pub(crate) async fn force_join(
    inner: &Arc<ConnInner>,
    ns: &ByteString,
    room: &ByteString,
) -> Result<(), String> {
    let member = inner.namespaces.lock().get(ns).map(|r| r.contains(room));
    match member {
        None => return Err(known_errors::BAD_NAMESPACE.to_owned()),
        Some(true) => {}
        Some(false) => {
            if let Outcome::Error(text) =
                fire(inner, ns, local_event(ns, room, events::ON_ROOM_JOIN)).await
            {
                return Err(text);
            }
            add_room(inner, ns, room);
            let _ = fire(inner, ns, local_event(ns, room, events::ON_ROOM_JOINED)).await;
        }
    }
    let req = local_event(ns, room, events::ON_ROOM_JOIN);
    if let Err(e) = inner.ask(req, inner.config.ask_timeout).await {
        // The client refused (or is gone): not a member on either side.
        remove_room(inner, ns, room);
        return Err(e.to_string());
    }
    Ok(())
}

/// Pre-connects namespace `""` for native-only connections (no wire exchange).
pub(crate) fn connect_native(inner: &Arc<ConnInner>) {
    add_namespace(inner, &ByteString::new());
}

/// Counts a reply nobody waits for.
pub(crate) fn late_reply(inner: &ConnInner, msg: &Message) {
    tracing::debug!(id = %inner.id, wait = %msg.wait, "reply without a waiter (late or unknown): dropped");
    inner.server.count(Count::LateReply);
}
