//! The cluster seen over HTTP, as JSON: what `server.cluster()` answers, for the chat
//! page's "who is online" ([`online_router`]) and for operators and tests
//! ([`admin_router`], the `cluster-node` example).
//!
//! Every query answer has the shape `{"value": …, "missing": [instance IDs],
//! "answered": n, "micros": t}`: `missing` lists the live instances that did not answer
//! by the deadline, `micros` is how long the query took on the server.

use std::collections::HashMap;
use std::collections::{BTreeSet, HashSet};
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use neffos::error::AskErrorKind;
use neffos::{
    Applied, ClusterError, Member, Message, Partial, PresenceEvent, PresenceKind, Server,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Parameters of the query endpoints (each uses the ones it needs).
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    ns: Option<String>,
    room: Option<String>,
    id: Option<String>,
    reason: Option<String>,
    to: Option<String>,
    question: Option<String>,
    timeout_ms: Option<u64>,
}

impl Params {
    fn ns(&self) -> &str {
        self.ns.as_deref().unwrap_or("default")
    }
    fn room(&self) -> &str {
        self.room.as_deref().unwrap_or_default()
    }
    fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }
}

fn partial<T>(
    result: Result<Partial<T>, ClusterError>,
    started: Instant,
    value: impl FnOnce(T) -> Value,
) -> Response {
    match result {
        Ok(p) => json_body(json!({
            "value": value(p.value),
            "missing": strings(&p.missing),
            "answered": p.answered.len(),
            "micros": started.elapsed().as_micros() as u64,
        }))
        .into_response(),
        Err(e) => (StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response(),
    }
}

/// A JSON response.
fn json_body(value: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn strings<T: Display>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn members(members: Vec<Member>) -> Value {
    members
        .into_iter()
        .map(|m| json!({"id": m.id, "instance": m.instance.to_string()}))
        .collect()
}

fn applied(result: Result<Applied, ClusterError>, started: Instant) -> Response {
    match result {
        Ok(a) => json_body(json!({
            "applied": a.applied.iter().map(|(i, n)| json!({"instance": i.to_string(), "connections": n})).collect::<Vec<_>>(),
            "failed": a.failed.iter().map(|(i, e)| json!({"instance": i.to_string(), "error": e})).collect::<Vec<_>>(),
            "missing": strings(&a.missing),
            "nowhere": a.nowhere(),
            "micros": started.elapsed().as_micros() as u64,
        }))
        .into_response(),
        Err(e) => (StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response(),
    }
}

async fn instances(State(server): State<Server>) -> Response {
    let now = std::time::SystemTime::now();
    json_body(
        server
            .cluster()
            .instances()
            .into_iter()
            .map(|i| {
                let age = now.duration_since(i.last_seen).unwrap_or_default();
                json!({
                    "id": i.id.to_string(),
                    "label": i.label,
                    "generation": i.generation,
                    "self": i.is_self,
                    "seen_ms_ago": age.as_millis() as u64,
                })
            })
            .collect(),
    )
}

async fn stats(State(server): State<Server>) -> Response {
    let s = server.cluster().stats();
    let (published, received) = server
        .exchanges()
        .iter()
        .map(|x| x.stats())
        .fold((0, 0), |(p, r), x| (p + x.published, r + x.received));
    json_body(json!({
        "exchange_published": published,
        "exchange_received": received,
        "instances": s.instances,
        "settled": s.settled,
        "generation": s.generation,
        "queries_answered": s.queries_answered,
        "pending_queries": s.pending_queries,
    }))
}

async fn count(State(server): State<Server>, Query(p): Query<Params>) -> Response {
    let t = Instant::now();
    partial(server.cluster().count(p.ns()).await, t, |n| json!(n))
}

async fn connections(State(server): State<Server>, Query(p): Query<Params>) -> Response {
    let t = Instant::now();
    partial(server.cluster().connections(p.ns()).await, t, members)
}

async fn rooms(State(server): State<Server>, Query(p): Query<Params>) -> Response {
    let t = Instant::now();
    partial(server.cluster().rooms(p.ns()).await, t, |r| json!(r))
}

async fn room_members(State(server): State<Server>, Query(p): Query<Params>) -> Response {
    let t = Instant::now();
    partial(
        server.cluster().room_members(p.ns(), p.room()).await,
        t,
        members,
    )
}

async fn room_count(State(server): State<Server>, Query(p): Query<Params>) -> Response {
    let t = Instant::now();
    partial(
        server.cluster().room_count(p.ns(), p.room()).await,
        t,
        |n| json!(n),
    )
}

async fn find(State(server): State<Server>, Query(p): Query<Params>) -> Response {
    let t = Instant::now();
    partial(server.cluster().find(p.id()).await, t, |holders| {
        holders
            .into_iter()
            .map(|(i, n)| json!({"instance": i.to_string(), "connections": n}))
            .collect()
    })
}

async fn disconnect(State(server): State<Server>, Query(p): Query<Params>) -> Response {
    let t = Instant::now();
    let reason = p.reason.as_deref().unwrap_or("disconnected by the server");
    applied(server.cluster().disconnect(p.id(), reason).await, t)
}

async fn join(State(server): State<Server>, Query(p): Query<Params>) -> Response {
    let t = Instant::now();
    applied(
        server.cluster().join_room(p.id(), p.ns(), p.room()).await,
        t,
    )
}

async fn leave(State(server): State<Server>, Query(p): Query<Params>) -> Response {
    let t = Instant::now();
    applied(
        server.cluster().leave_room(p.id(), p.ns(), p.room()).await,
        t,
    )
}

/// `Server::ask` with the outcome as JSON: `{"outcome": "reply"|"unknown"|"timeout"|"error",
/// "body", "micros"}` (event `question`).
async fn ask(State(server): State<Server>, Query(p): Query<Params>) -> Response {
    let to = p.to.as_deref().unwrap_or_default();
    let timeout = Duration::from_millis(p.timeout_ms.unwrap_or(5000));
    let question = p.question.clone().unwrap_or_default();
    let t = Instant::now();
    let result = server
        .ask(to, Message::new(p.ns(), "question", question), timeout)
        .await;
    let micros = t.elapsed().as_micros() as u64;
    json_body(match result {
        Ok(reply) => json!({
            "outcome": "reply",
            "body": String::from_utf8_lossy(&reply.body),
            "micros": micros,
        }),
        Err(e) => {
            let outcome = match e.kind() {
                AskErrorKind::UnknownConnection => "unknown",
                AskErrorKind::Timeout => "timeout",
                _ => "error",
            };
            json!({"outcome": outcome, "body": e.to_string(), "micros": micros})
        }
    })
}

/// The presence events an instance received, for `GET /cluster/presence`.
#[derive(Debug, Clone, Default)]
pub struct PresenceLog(Arc<Mutex<Vec<PresenceEvent>>>);

impl PresenceLog {
    /// Records one event.
    pub fn record(&self, event: PresenceEvent) {
        if let Ok(mut log) = self.0.lock() {
            log.push(event);
        }
    }

    /// A summary: joins and leaves, and for the leaves of each expired instance how many,
    /// how many distinct (connection, room) pairs, and who reported them.
    pub fn summary(&self) -> Value {
        let Ok(log) = self.0.lock() else {
            return Value::Null;
        };
        let mut joins = 0;
        let mut leaves = 0;
        let mut joins_by_instance: HashMap<String, usize> = HashMap::new();
        type Expired = (usize, HashSet<(String, Option<String>)>, BTreeSet<String>);
        let mut expired: HashMap<String, Expired> = HashMap::new();
        for e in log.iter() {
            match (e.kind, e.expired) {
                (PresenceKind::Joined, _) => {
                    joins += 1;
                    *joins_by_instance.entry(e.instance.to_string()).or_default() += 1;
                }
                (PresenceKind::Left, false) => leaves += 1,
                (PresenceKind::Left, true) => {
                    let entry = expired.entry(e.instance.to_string()).or_default();
                    entry.0 += 1;
                    entry.1.insert((e.id.clone(), e.room.clone()));
                    entry.2.insert(e.reported_by.to_string());
                }
                _ => {}
            }
        }
        json!({
            "events": log.len(),
            "joins": joins,
            "leaves": leaves,
            "joins_by_instance": joins_by_instance,
            "expired": expired
                .into_iter()
                .map(|(instance, (n, distinct, reporters))| {
                    (instance, json!({"leaves": n, "distinct": distinct.len(), "reporters": reporters}))
                })
                .collect::<serde_json::Map<String, Value>>(),
        })
    }
}

/// `GET /online[?room=<room>]`: who is connected to namespace `ns` (or in `room`) across
/// instances, with each one's instance label: `{"users": [{"id", "instance"}], "missing": n}`.
pub fn online_router(server: &Server, namespace: &'static str) -> Router {
    Router::new()
        .route(
            "/online",
            get(move |State(server): State<Server>, Query(p): Query<Params>| async move {
                let cluster = server.cluster();
                let labels: HashMap<_, String> = cluster
                    .instances()
                    .into_iter()
                    .map(|i| (i.id, i.label))
                    .collect();
                let result = match p.room.as_deref() {
                    Some(room) => cluster.room_members(namespace, room).await,
                    None => cluster.connections(namespace).await,
                };
                match result {
                    Ok(found) => {
                        let mut users: Vec<(String, String)> = found
                            .value
                            .into_iter()
                            .map(|m| {
                                let label = labels.get(&m.instance).cloned().unwrap_or_default();
                                (m.id, label)
                            })
                            .collect();
                        users.sort();
                        users.dedup();
                        json_body(json!({
                            "users": users.into_iter().map(|(id, instance)| json!({"id": id, "instance": instance})).collect::<Vec<_>>(),
                            "missing": found.missing.len(),
                        }))
                        .into_response()
                    }
                    Err(e) => (StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response(),
                }
            }),
        )
        .with_state(server.clone())
}

/// The query, operation and Ask endpoints under `/cluster/` (no authentication: mount it
/// only where operators and tests can reach it). `presence` adds `GET /cluster/presence`.
pub fn admin_router(server: &Server, presence: Option<PresenceLog>) -> Router {
    let router = Router::new()
        .route("/cluster/instances", get(instances))
        .route("/cluster/stats", get(stats))
        .route("/cluster/count", get(count))
        .route("/cluster/connections", get(connections))
        .route("/cluster/rooms", get(rooms))
        .route("/cluster/room_members", get(room_members))
        .route("/cluster/room_count", get(room_count))
        .route("/cluster/find", get(find))
        .route("/cluster/disconnect", post(disconnect))
        .route("/cluster/join", post(join))
        .route("/cluster/leave", post(leave))
        .route("/cluster/ask", get(ask))
        .with_state(server.clone());
    match presence {
        Some(log) => router.route(
            "/cluster/presence",
            get(move || {
                let log = log.clone();
                async move { json_body(log.summary()) }
            }),
        ),
        None => router,
    }
}
