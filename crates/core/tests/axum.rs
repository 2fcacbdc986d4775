//! The axum integration: mounting in an existing app with state, layers and a custom auth
//! handler, and neffos.js's HTTP-level behaviours (HEAD probe, header query parameters).
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use neffos::axum::Upgrade;
use neffos::error::DialErrorKind;
use neffos::{Client, Events, Namespaces, Server};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Ws;

const T: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq)]
struct User(String);

#[derive(Clone)]
struct AppState {
    neffos: Server,
    greeting: &'static str,
}

async fn ws_handler(State(app): State<AppState>, headers: HeaderMap, upgrade: Upgrade) -> Response {
    // A user's own auth, before the upgrade: reject with an HTTP status.
    let Some(user) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return (StatusCode::UNAUTHORIZED, "missing credentials").into_response();
    };
    upgrade.with(User(user.to_owned())).serve(&app.neffos)
}

async fn add_layer_header(mut req: Request, next: Next) -> Response {
    req.headers_mut()
        .insert("x-layer", HeaderValue::from_static("seen"));
    next.run(req).await
}

/// What `on_connect` saw: ID, attached user, layer header, reconnect tries, remote address known.
type Seen = (String, Option<User>, Option<String>, u32, bool);

struct App {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

async fn app() -> App {
    let (tx, seen) = mpsc::unbounded_channel();
    let server = Server::builder(Namespaces::new().namespace("default", Events::new()))
        .id_generator(|parts| {
            parts
                .headers
                .get("x-username")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("anonymous")
                .to_owned()
        })
        .on_connect(move |conn| {
            let tx = tx.clone();
            async move {
                let layer = conn
                    .headers()
                    .get("x-layer")
                    .map(|v| v.to_str().unwrap_or("").to_owned());
                let _ = tx.send((
                    conn.id().to_owned(),
                    conn.get::<User>(),
                    layer,
                    conn.reconnect_tries(),
                    conn.remote_addr().is_some(),
                ));
                if conn.id() == "banned" {
                    return Err("banned user".to_string());
                }
                Ok(())
            }
        })
        .build();
    let state = AppState {
        neffos: server.clone(),
        greeting: "hello",
    };
    let router = Router::new()
        .route(
            "/",
            get(|State(s): State<AppState>| async move { s.greeting }),
        )
        .route("/api/ws", get(ws_handler).head(ws_handler))
        .route("/open", server.route())
        .layer(middleware::from_fn(add_layer_header))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    App { addr, seen }
}

async fn http(addr: SocketAddr, method: &str, path: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(T, tcp.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn head_probe_answers_302_and_plain_get_is_rejected() {
    let app = app().await;
    let head = http(app.addr, "HEAD", "/open", "").await;
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    let head = http(app.addr, "HEAD", "/api/ws", "Authorization: x\r\n").await;
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    let get = http(app.addr, "GET", "/open", "").await;
    assert!(get.starts_with("HTTP/1.1 4"), "{get}");
    // The rest of the app still works with its own state.
    let root = http(app.addr, "GET", "/", "").await;
    assert!(root.ends_with("hello"), "{root}");
}

#[tokio::test]
async fn query_parameters_become_headers_before_the_id_is_chosen() {
    let mut app = app().await;
    let url = format!(
        "ws://{}/open?X-Websocket-Header-X-Username=bob&x-websocket-header-x-websocket-reconnect=3&other=1",
        app.addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Ws::text("M")).await.unwrap();
    let ack = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ack, Ws::text("Abob"));
    let (id, user, layer, tries, has_addr) = app.seen.recv().await.unwrap();
    assert_eq!(id, "bob");
    assert_eq!(user, None);
    assert_eq!(
        layer.as_deref(),
        Some("seen"),
        "tower layers run before the upgrade"
    );
    assert_eq!(tries, 3);
    assert!(has_addr, "remote address from ConnectInfo");
}

#[tokio::test]
async fn custom_auth_handler_rejects_or_attaches_state() {
    let mut app = app().await;
    let url = format!("ws://{}/api/ws", app.addr);
    let err = Client::builder(&url).connect().await.unwrap_err();
    assert_eq!(err.kind(), DialErrorKind::Transport, "{err}");
    let status = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<tokio_tungstenite::tungstenite::Error>())
        .and_then(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response) => Some(response.status()),
            _ => None,
        });
    assert_eq!(status, Some(StatusCode::UNAUTHORIZED), "{err:?}");

    let client = Client::builder(&url)
        .header("Authorization", "token-1")
        .header("X-Username", "alice")
        .connect()
        .await
        .unwrap();
    assert_eq!(client.id(), "alice");
    let (_, user, ..) = app.seen.recv().await.unwrap();
    assert_eq!(user, Some(User("token-1".into())));

    // Refused after the upgrade with the neffos rejection.
    let err = Client::builder(&url)
        .header("Authorization", "token-2")
        .header("X-Username", "banned")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.remote()),
        (DialErrorKind::Refused, Some("banned user"))
    );
}
