//! The chat application served by the `chat` and `scale-out` examples.
//!
//! - Namespace [`NAMESPACE`] (`default`) at the WebSocket endpoint [`ENDPOINT`] (`/echo`).
//! - The browser page asks a username and dials with the header `X-Username`; neffos.js
//!   sends it from browsers as the query parameter `X-Websocket-Header-X-Username`, which
//!   the server turns back into a header. The [`server`]'s ID generator uses it as the
//!   connection ID, and its `on_connect` refuses connections without one.
//! - Rooms: the page joins and leaves rooms by name; the server tells the other members
//!   (`notice` event) when someone joins or leaves.
//! - `chat`: a message sent inside a room goes to the other members of that room, on every
//!   instance; outside a room it goes to the whole namespace.
//!
//! Events the page receives (bodies are JSON):
//!
//! | event | body |
//! |---|---|
//! | `chat` | `{"from": "alice", "room": "lobby" or null, "text": "hi"}` |
//! | `private` | `{"from": "alice", "room": null, "text": "hi"}`: sent with `private` and body `{"to": "bob", "text": "hi"}`, it reaches the connection(s) with ID `bob` on whichever instance |
//! | `notice` | `{"room": "lobby" or null, "text": "alice joined lobby"}` |
//!
//! `GET /ask?to=bob&question=...` makes the server Ask `bob` (event `question`, body the
//! question, on any instance) and answers with the reply: the scale-out demonstration of
//! `Server::ask`. The page shows the question and answers `bob read "<question>" on <its
//! instance label>`; it sends `private` for a message written as `@bob hi`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use neffos::recovery::{HistoryStore, Recovery};
use neffos::{
    ClusterConfig, Events, Exchange, Json, Message, Namespaces, NsConn, Server, Target, events,
};
use serde::Serialize;

/// The namespace of the chat.
pub const NAMESPACE: &str = "default";
/// The path of the WebSocket endpoint.
pub const ENDPOINT: &str = "/echo";
/// The header carrying the username (browsers send it as a query parameter).
pub const USERNAME_HEADER: &str = "x-username";
/// Longest accepted username, in characters.
pub const MAX_USERNAME: usize = 32;
/// Longest accepted room name, in characters.
pub const MAX_ROOM: usize = 32;
/// Longest accepted chat message, in characters.
pub const MAX_TEXT: usize = 2000;

const PAGE: &str = include_str!("../static/chat.html");
const SCRIPT: &str = include_str!("../static/chat.js");
const STYLE: &str = include_str!("../static/chat.css");

/// Where the page comes from and how it labels this instance.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// The neffos.js browser bundle (`node_modules/neffos.js/dist/neffos.js`, an ES module),
    /// served at `/neffos.js`.
    pub neffos_js: PathBuf,
    /// Shown in the page header (e.g. `instance 2 (:8081)`).
    pub instance: String,
}

impl ChatOptions {
    /// Serves the neffos.js bundle found at `neffos_js`.
    pub fn new(neffos_js: impl Into<PathBuf>) -> Self {
        ChatOptions {
            neffos_js: neffos_js.into(),
            instance: "neffos-rs".to_owned(),
        }
    }

    /// Sets the label shown in the page header.
    pub fn instance(mut self, label: impl Into<String>) -> Self {
        self.instance = label.into();
        self
    }
}

/// Where `cargo xtask demo` installs neffos.js: `<workspace>/target/npm-demo`.
pub fn default_neffos_js() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or(manifest)
        .join("target/npm-demo/node_modules/neffos.js/dist/neffos.js")
}

/// Fails with a hint when the neffos.js bundle is missing.
pub fn check_bundle(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!(
            "the neffos.js browser bundle was not found at {}.\n\
             Run `cargo xtask demo` (it installs neffos.js 0.1.34 with npm), or install it \
             yourself (`npm install --prefix target/npm-demo neffos.js@0.1.34`) and pass \
             `--neffos-js <node_modules/neffos.js/dist/neffos.js>` (or env NEFFOS_JS).",
            path.display()
        );
    }
    Ok(())
}

/// The namespaces and events of the chat.
pub fn namespaces() -> Namespaces {
    let events = Events::new()
        .on(
            events::ON_NAMESPACE_CONNECTED,
            |ns: NsConn, _msg: Message| async move {
                tracing::info!(user = ns.conn().id(), "online");
                let text = format!("{} is online", ns.conn().id());
                notice(&ns, Target::namespace(NAMESPACE), None, text);
            },
        )
        .on(
            events::ON_NAMESPACE_DISCONNECT,
            |ns: NsConn, _msg: Message| async move {
                tracing::info!(user = ns.conn().id(), "offline");
                let text = format!("{} is offline", ns.conn().id());
                notice(&ns, Target::namespace(NAMESPACE), None, text);
            },
        )
        // Before a join: refusing here answers the client's joinRoom() with the error.
        .on(
            events::ON_ROOM_JOIN,
            |_ns: NsConn, msg: Message| async move {
                match msg.room.chars().count() {
                    0 => Err("a room needs a name"),
                    n if n > MAX_ROOM => Err("room names are at most 32 characters"),
                    _ => Ok(()),
                }
            },
        )
        .on(
            events::ON_ROOM_JOINED,
            |ns: NsConn, msg: Message| async move {
                let (user, room) = (ns.conn().id(), &*msg.room);
                tracing::info!(user, room, "joined");
                let text = format!("{user} joined {room}");
                notice(&ns, Target::room(NAMESPACE, room), Some(room), text);
            },
        )
        .on(
            events::ON_ROOM_LEFT,
            |ns: NsConn, msg: Message| async move {
                let (user, room) = (ns.conn().id(), &*msg.room);
                tracing::info!(user, room, "left");
                let text = format!("{user} left {room}");
                notice(&ns, Target::room(NAMESPACE, room), Some(room), text);
            },
        )
        // Typed handlers: the chat's limits come from the state, a private message's
        // JSON body is decoded before the handler runs (a body that does not decode is
        // answered with an error naming the event).
        .handle(
            "chat",
            |ns: NsConn, neffos::State(state): neffos::State<ChatState>, msg: Message| async move {
                chat(&ns, &state, &msg)
            },
        )
        .handle(
            "private",
            |ns: NsConn,
             neffos::State(state): neffos::State<ChatState>,
             Json(body): Json<PrivateBody>| async move { private(&ns, &state, body) },
        );
    Namespaces::new().namespace(NAMESPACE, events)
}

/// What every chat handler shares: the chat's limits and this instance's label. Given
/// once to the server ([`neffos::ServerBuilder::with_state`]), reached in handlers as
/// their [`neffos::State`] argument.
#[derive(Debug, Clone)]
pub struct ChatState {
    /// Longest accepted chat message, in characters.
    pub max_text: usize,
    /// This instance's label (may be empty).
    pub label: Arc<str>,
}

/// Builds the chat server: usernames as IDs, optional exchange for scale-out.
pub fn server(exchange: Option<Arc<dyn Exchange>>) -> Server {
    server_with_label(exchange, "")
}

/// [`server`], with the label "who is online" shows for this instance's users. The
/// instance takes part in its cluster: `/online` lists users across instances, and `/ask`
/// to a user connected nowhere answers 404 at once.
pub fn server_with_label(exchange: Option<Arc<dyn Exchange>>, label: &str) -> Server {
    server_with_recovery(exchange, label, None)
}

/// [`server_with_label`], with connection-state recovery of the chat's rooms when a
/// `history` shared by the instances is given.
pub fn server_with_recovery(
    exchange: Option<Arc<dyn Exchange>>,
    label: &str,
    history: Option<Arc<dyn HistoryStore>>,
) -> Server {
    let builder = Server::builder(namespaces())
        .with_state(ChatState {
            max_text: MAX_TEXT,
            label: label.into(),
        })
        .cluster(ClusterConfig::default().label(label))
        .id_generator(|parts| {
            parts
                .headers
                .get(USERNAME_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(clean_username)
                .unwrap_or_default()
        })
        .on_connect(|conn| async move {
            if conn.id().is_empty() {
                return Err("choose a username first (header X-Username)".to_owned());
            }
            tracing::info!(user = conn.id(), addr = ?conn.remote_addr(), "connected");
            Ok(())
        })
        .on_disconnect(|conn| async move {
            tracing::info!(user = conn.id(), "disconnected");
        });
    let builder = match history {
        // A page whose connection drops gets its rooms and the messages it missed back, on
        // any instance sharing `history` (the page presents a per-tab session key).
        Some(history) => builder.recovery(Recovery::new().namespace(NAMESPACE).store(history)),
        None => builder,
    };
    match exchange {
        Some(exchange) => builder.exchange(exchange).build(),
        None => builder.build(),
    }
}

/// The HTTP application: the page at `/`, its script and style, the neffos.js bundle at
/// `/neffos.js`, the WebSocket endpoint at [`ENDPOINT`], `/ask` and `/online` (who is
/// online, or in a room with `?room=`, across instances).
pub fn router(server: &Server, options: ChatOptions) -> Router {
    let ask_route = Router::new()
        .route("/ask", get(ask))
        .with_state(server.clone());
    Router::new()
        .route("/", get(page))
        .route("/chat.js", get(script))
        .route("/chat.css", get(style))
        .route("/neffos.js", get(bundle))
        .route(ENDPOINT, server.route())
        .with_state(Arc::new(options))
        .merge(ask_route)
        .merge(crate::cluster_api::online_router(server, NAMESPACE))
}

#[derive(serde::Deserialize)]
struct AskQuery {
    to: String,
    question: String,
}

/// `GET /ask?to=<id>&question=<text>`: asks connection `to` wherever it is and answers with
/// its reply (200), 404 when no instance holds `to`, its error (502) or the deadline (504).
async fn ask(State(server): State<Server>, Query(q): Query<AskQuery>) -> Response {
    let msg = Message::new(NAMESPACE, "question", q.question);
    match server
        .ask(&q.to, msg, std::time::Duration::from_secs(5))
        .await
    {
        Ok(reply) => (StatusCode::OK, reply.body).into_response(),
        Err(e) if e.kind() == neffos::error::AskErrorKind::Timeout => {
            (StatusCode::GATEWAY_TIMEOUT, "no reply").into_response()
        }
        Err(e) if e.kind() == neffos::error::AskErrorKind::UnknownConnection => {
            (StatusCode::NOT_FOUND, "nobody with that name is online").into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Trims the username, drops characters that cannot be in an ID, and caps its length.
fn clean_username(raw: &str) -> String {
    raw.trim()
        .chars()
        .filter(|c| *c != ';' && !c.is_control())
        .take(MAX_USERNAME)
        .collect()
}

#[derive(Serialize)]
struct ChatBody<'a> {
    from: &'a str,
    room: Option<&'a str>,
    text: &'a str,
}

#[derive(Serialize)]
struct NoticeBody<'a> {
    room: Option<&'a str>,
    text: &'a str,
}

/// A `chat` message: to the other members of its room, or of the namespace outside rooms.
fn chat(ns: &NsConn, state: &ChatState, msg: &Message) -> Result<(), String> {
    let text = std::str::from_utf8(&msg.body)
        .map_err(|_| "messages must be UTF-8 text")?
        .trim();
    if text.is_empty() {
        return Ok(());
    }
    if text.chars().count() > state.max_text {
        return Err(format!(
            "messages are at most {} characters",
            state.max_text
        ));
    }
    let room = (!msg.room.is_empty()).then_some(&*msg.room);
    let body = ChatBody {
        from: ns.conn().id(),
        room,
        text,
    };
    let target = match room {
        Some(room) => Target::room(NAMESPACE, room),
        None => Target::namespace(NAMESPACE),
    };
    let server = ns.conn().server().ok_or("not a server connection")?;
    server
        .broadcast_json(target.except(ns.conn()), "chat", &body)
        .map_err(|e| e.to_string())
}

/// The body of a `private` message the page sends.
#[derive(Debug, serde::Deserialize)]
pub struct PrivateBody {
    to: String,
    text: String,
}

/// A `private` message: to the connection(s) with ID `to`, on whichever instance.
fn private(ns: &NsConn, state: &ChatState, body: PrivateBody) -> Result<(), String> {
    if body.to.is_empty() || body.text.trim().is_empty() {
        return Err("a private message needs a name and a text (@bob hi)".to_owned());
    }
    if body.text.chars().count() > state.max_text {
        return Err(format!(
            "messages are at most {} characters",
            state.max_text
        ));
    }
    let out = ChatBody {
        from: ns.conn().id(),
        room: None,
        text: &body.text,
    };
    let server = ns.conn().server().ok_or("not a server connection")?;
    server
        .broadcast_json(Target::conn(NAMESPACE, &body.to), "private", &out)
        .map_err(|e| e.to_string())
}

/// Sends a `notice` to `target` except `ns`'s connection. Failures are logged only: a
/// notice must never refuse the join, leave or disconnect that caused it.
fn notice(ns: &NsConn, target: Target, room: Option<&str>, text: String) {
    let Some(server) = ns.conn().server() else {
        return;
    };
    let body = NoticeBody { room, text: &text };
    if let Err(e) = server.broadcast_json(target.except(ns.conn()), "notice", &body) {
        tracing::warn!(error = %e, "notice not sent");
    }
}

async fn page(State(options): State<Arc<ChatOptions>>) -> Html<String> {
    Html(PAGE.replace("{{INSTANCE}}", &html_escape(&options.instance)))
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// Serves the installed neffos.js bundle (read at each request: it is small, and a
/// re-install is picked up without a restart).
async fn bundle(State(options): State<Arc<ChatOptions>>) -> Response {
    match tokio::fs::read(&options.neffos_js)
        .await
        .with_context(|| format!("cannot read {}", options.neffos_js.display()))
    {
        Ok(js) => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            js,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "neffos.js bundle missing");
            (
                StatusCode::NOT_FOUND,
                "neffos.js bundle not found: run `cargo xtask demo` or pass --neffos-js",
            )
                .into_response()
        }
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_cleaned() {
        assert_eq!(clean_username("  alice "), "alice");
        assert_eq!(clean_username("a;b\nc"), "abc");
        assert_eq!(clean_username(&"x".repeat(40)).len(), MAX_USERNAME);
    }

    #[test]
    fn instance_label_is_escaped() {
        assert_eq!(html_escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
