//! Mounting a [`Server`] in an axum application (feature `axum`, on by default).
//!
//! The simplest form is [`Server::route`]:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use axum::Router;
//! use neffos::{Events, Namespaces, Server};
//!
//! let server = Server::builder(Namespaces::new().namespace("default", Events::new())).build();
//! let app: Router = Router::new().route("/echo", server.route());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // Timeouts before the upgrade, TCP_NODELAY and the peer's address: see `neffos::serve`.
//! neffos::serve(listener, app).await
//! # }
//! ```
//!
//! For authentication before the upgrade, write your own handler with your extractors and
//! finish with the [`Upgrade`] extractor: reject with any HTTP response, or accept and attach
//! state to the connection.
//!
//! ```no_run
//! use axum::{extract::State, http::{HeaderMap, StatusCode}, response::{IntoResponse, Response}};
//! use neffos::{Server, axum::Upgrade};
//!
//! #[derive(Clone)]
//! struct User(String);
//!
//! async fn ws(State(server): State<Server>, headers: HeaderMap, upgrade: Upgrade) -> Response {
//!     let Some(user) = headers.get("x-user").and_then(|v| v.to_str().ok()) else {
//!         return StatusCode::UNAUTHORIZED.into_response();
//!     };
//!     upgrade.with(User(user.to_owned())).serve(&server)
//! }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any};
use futures_util::FutureExt;

use crate::conn::RequestInfo;
use crate::server::{Refusal, Server};
use crate::transport::axum_ws;

/// The query-parameter prefix neffos.js uses to send headers from browsers.
pub const HEADER_QUERY_PREFIX: &str = "x-websocket-header-";

/// Adds every `X-Websocket-Header-<Name>=<value>` query parameter (case-insensitive) to the
/// request headers as `<Name>: <value>` (PROTOCOL.md §1.1). The query string is kept.
pub fn query_params_to_headers(parts: &mut Parts) {
    let Some(query) = parts.uri.query() else {
        return;
    };
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .filter_map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            let name = lower.strip_prefix(HEADER_QUERY_PREFIX)?;
            (!name.is_empty()).then(|| (name.to_owned(), v.into_owned()))
        })
        .collect();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            parts.headers.append(name, value);
        }
    }
}

/// An axum extractor for a neffos endpoint: either the neffos.js reconnection probe
/// (`HEAD`, answered with 302 as neffos does) or a WebSocket upgrade.
#[derive(Debug)]
pub struct Upgrade {
    kind: Kind,
    extensions: http::Extensions,
}

#[derive(Debug)]
enum Kind {
    Probe,
    Ws(Box<WebSocketUpgrade>, Box<Parts>),
    Rejected(Response),
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let kind = if parts.method == Method::HEAD {
            Kind::Probe
        } else {
            query_params_to_headers(parts);
            match WebSocketUpgrade::from_request_parts(parts, state).await {
                Ok(ws) => Kind::Ws(Box::new(ws), Box::new(parts.clone())),
                Err(rejection) => Kind::Rejected(rejection.into_response()),
            }
        };
        Ok(Upgrade {
            kind,
            extensions: http::Extensions::new(),
        })
    }
}

impl Upgrade {
    /// Attaches a typed value to the connection (read it with [`Conn::get`](crate::Conn::get)),
    /// e.g. the user your auth extractor found.
    pub fn with<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Answers the request: 302 for the probe, 503 while shutting down, else the upgrade,
    /// after which `server` serves the socket.
    pub fn serve(self, server: &Server) -> Response {
        let (ws, parts) = match self.kind {
            Kind::Probe => return StatusCode::FOUND.into_response(),
            Kind::Rejected(response) => return response,
            Kind::Ws(ws, parts) => (ws, parts),
        };
        let remote_addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        if remote_addr.is_none() && server.config().max_connections_per_ip.is_some() {
            server.warn_no_peer_address();
        }
        let config = server.config();
        if request_head_size(&parts) > config.max_request_head {
            server.0.stats.budget_close();
            // The connection goes too: its client is hostile or broken.
            return (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                [(http::header::CONNECTION, "close")],
                "request head over the budget (URI, headers and X-Websocket-Header-* parameters)",
            )
                .into_response();
        }
        let admission = match server.admit(remote_addr.map(|a| a.ip())) {
            Ok(admission) => admission,
            Err(Refusal::TooManyFromIp) => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from this address",
                )
                    .into_response();
            }
            Err(Refusal::TooManyConnections) => {
                return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
            }
            Err(Refusal::ShuttingDown) => {
                return (StatusCode::SERVICE_UNAVAILABLE, "server shutting down").into_response();
            }
        };
        let ws = ws
            .read_buffer_size(config.read_buffer_size)
            .write_buffer_size(config.write_buffer_size)
            .max_message_size(config.max_message_size)
            .max_frame_size(config.max_frame_size.min(config.max_message_size));
        let server = server.clone();
        let extensions = self.extensions;
        // A plain closure returning the connection's future: the socket, the request head
        // and the rest are consumed here, not kept in the state of the task that runs for
        // the connection's whole life.
        ws.on_upgrade(move |socket| {
            let request = detach(&parts, remote_addr);
            let socket = axum_ws::socket(socket);
            // `map`, not `async move { serve.await }`: an async block would hold the
            // future twice (once captured, once being awaited).
            server
                .serve_socket(request, Some(parts), socket, extensions)
                .map(move |()| drop(admission))
        })
    }
}

/// Headers that only served the upgrade itself; not kept with the connection.
/// (`Sec-WebSocket-Protocol` is kept: applications use it to carry tokens.)
const UPGRADE_ONLY: [HeaderName; 5] = [
    http::header::CONNECTION,
    http::header::UPGRADE,
    http::header::SEC_WEBSOCKET_KEY,
    http::header::SEC_WEBSOCKET_VERSION,
    http::header::SEC_WEBSOCKET_EXTENSIONS,
];

/// Bytes of the request head a connection would keep (see [`Config::max_request_head`](crate::Config::max_request_head)):
/// the URI, and each kept header's name, value and 32 bytes for its slot.
fn request_head_size(parts: &Parts) -> usize {
    let headers: usize = parts
        .headers
        .iter()
        .filter(|(name, _)| !UPGRADE_ONLY.contains(name))
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    parts.uri.to_string().len() + headers
}

/// The request head in fresh allocations, without [`UPGRADE_ONLY`] headers. hyper's header values and URI are slices of its
/// 16 KiB per-connection read buffer: a shallow clone would keep that buffer alive for as
/// long as the WebSocket lives (it more than doubled the memory of an idle connection).
fn detach(parts: &Parts, remote_addr: Option<SocketAddr>) -> RequestInfo {
    let kept = |name: &HeaderName| !UPGRADE_ONLY.contains(name);
    let mut headers = HeaderMap::with_capacity(parts.headers.keys().filter(|n| kept(n)).count());
    // Header names are parsed into their own allocation (or a static); values are not. They
    // are copied into one buffer that every value shares (one allocation, not one each).
    let values: Vec<&HeaderValue> = parts
        .headers
        .iter()
        .filter(|(n, _)| kept(n))
        .map(|(_, v)| v)
        .collect();
    let mut buffer = bytes::BytesMut::with_capacity(values.iter().map(|v| v.len()).sum());
    for value in &values {
        buffer.extend_from_slice(value.as_bytes());
    }
    let mut buffer = buffer.freeze();
    for (name, value) in parts.headers.iter().filter(|(n, _)| kept(n)) {
        let copy = buffer.split_to(value.len());
        if let Ok(mut copy) = HeaderValue::from_maybe_shared(copy) {
            copy.set_sensitive(value.is_sensitive());
            headers.append(name.clone(), copy);
        }
    }
    let uri = Uri::try_from(parts.uri.to_string()).unwrap_or_default();
    RequestInfo {
        headers,
        uri,
        remote_addr,
    }
}

impl Server {
    /// A route to mount at any path of an axum `Router`, whatever its state type:
    /// `Router::new().route("/echo", server.route())`.
    pub fn route<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let server = self.clone();
        any(move |request: Request| {
            let server = server.clone();
            async move {
                let (mut parts, _body) = request.into_parts();
                match Upgrade::from_request_parts(&mut parts, &()).await {
                    Ok(upgrade) => upgrade.serve(&server),
                    Err(never) => match never {},
                }
            }
        })
    }
}
