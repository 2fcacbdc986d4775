//! What the load generator says on a connection, per peer protocol: joining (namespace,
//! rooms), the frame a sender emits for a fan-out, the frame of an Ask, and the keep-alive
//! answers a receiver owes.
//!
//! Every peer exposes the same behaviour (see `crates/bench-tools/src/server.rs`): namespace `bench`;
//! event `fanout` broadcasts `msg` with the same body to every other connection of the
//! namespace or of the sender's room; event `ask` replies with the same body. neffos-rs
//! also has event `ask-peer` (body `<connection ID>|<rest>`): the server Asks that
//! connection, wherever it lives in the cluster, and replies with its reply.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::ws::{self, Frame, WsClient};

/// The namespace every peer serves.
pub const NAMESPACE: &str = "bench";

/// Deadline of each step of a join.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// The protocol spoken to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// neffos: `M` → `A<id>`, `_OnNamespaceConnect`, `_OnRoomJoin`, events, Asks.
    Neffos,
    /// Socket.IO v5 over engine.io v4 WebSocket: `0{..}`, `40/bench,`, `42`, `43` acks,
    /// ping `2` / pong `3`.
    Socketio,
    /// Raw WebSocket: no protocol, every frame is a message to broadcast.
    Raw,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Neffos => "neffos",
            Proto::Socketio => "socketio",
            Proto::Raw => "raw",
        })
    }
}

async fn next(ws: &mut WsClient, proto: Proto) -> anyhow::Result<Frame> {
    loop {
        let frame = tokio::time::timeout(STEP_TIMEOUT, ws.recv())
            .await
            .context("timed out waiting for the server")??
            .context("the server closed the connection")?;
        match frame.opcode {
            ws::PING => ws.pong(&frame.payload).await?,
            ws::CLOSE => bail!(
                "the server closed the WebSocket: {}",
                String::from_utf8_lossy(frame.payload.get(2..).unwrap_or_default())
            ),
            ws::TEXT if proto == Proto::Socketio && &frame.payload[..] == b"2" => {
                ws.send_text(b"3").await?;
            }
            ws::TEXT | ws::BINARY => return Ok(frame),
            _ => {}
        }
    }
}

/// Waits for the frame that starts with `prefix`, skipping others (broadcasts already
/// flowing, for instance).
async fn expect(ws: &mut WsClient, proto: Proto, prefix: &[u8]) -> anyhow::Result<Frame> {
    loop {
        let frame = next(ws, proto).await?;
        if frame.payload.starts_with(prefix) {
            return Ok(frame);
        }
    }
}

/// True for a neffos frame whose isError field is set (an error reply).
pub(crate) fn neffos_is_error(frame: &[u8]) -> bool {
    // wait;ns;room;event;isError;...
    frame.split(|&b| b == b';').nth(4) == Some(b"1")
}

impl Proto {
    /// After the WebSocket handshake: the protocol's handshake, the namespace connection
    /// and the room joins, each awaited. Returns the connection's ID (neffos: the server's
    /// `A<id>`).
    pub async fn join(self, ws: &mut WsClient, rooms: &[String]) -> anyhow::Result<Option<String>> {
        match self {
            Proto::Raw => Ok(None),
            Proto::Neffos => {
                ws.send_text(b"M").await?;
                let ack = next(ws, self).await?;
                let id = match ack.payload.first() {
                    Some(b'A') => String::from_utf8_lossy(&ack.payload[1..]).into_owned(),
                    Some(b'H') => bail!(
                        "refused by the server: {}",
                        String::from_utf8_lossy(&ack.payload[1..])
                    ),
                    _ => bail!(
                        "unexpected first frame {:?}",
                        String::from_utf8_lossy(&ack.payload)
                    ),
                };
                ws.send_text(format!("$1;{NAMESPACE};;_OnNamespaceConnect;0;0;").as_bytes())
                    .await?;
                let reply = expect(ws, self, b"$1;").await?;
                if neffos_is_error(&reply.payload) {
                    bail!(
                        "namespace connect refused: {}",
                        String::from_utf8_lossy(&reply.payload)
                    );
                }
                for (i, room) in rooms.iter().enumerate() {
                    let token = format!("${};", i + 2);
                    ws.send_text(format!("{token}{NAMESPACE};{room};_OnRoomJoin;0;0;").as_bytes())
                        .await?;
                    let reply = expect(ws, self, token.as_bytes()).await?;
                    if neffos_is_error(&reply.payload) {
                        bail!(
                            "room join refused: {}",
                            String::from_utf8_lossy(&reply.payload)
                        );
                    }
                }
                Ok(Some(id))
            }
            Proto::Socketio => {
                let open = next(ws, self).await?;
                if open.payload.first() != Some(&b'0') {
                    bail!(
                        "expected the engine.io open packet, got {:?}",
                        String::from_utf8_lossy(&open.payload)
                    );
                }
                ws.send_text(format!("40/{NAMESPACE},").as_bytes()).await?;
                let connect_prefix = format!("40/{NAMESPACE},");
                let error_prefix = format!("44/{NAMESPACE},");
                loop {
                    let frame = next(ws, self).await?;
                    if frame.payload.starts_with(connect_prefix.as_bytes()) {
                        break;
                    }
                    if frame.payload.starts_with(error_prefix.as_bytes()) {
                        bail!(
                            "namespace connect refused: {}",
                            String::from_utf8_lossy(&frame.payload)
                        );
                    }
                }
                for (i, room) in rooms.iter().enumerate() {
                    let id = i + 1;
                    ws.send_text(format!("42/{NAMESPACE},{id}[\"join\",\"{room}\"]").as_bytes())
                        .await?;
                    expect(ws, self, format!("43/{NAMESPACE},{id}").as_bytes()).await?;
                }
                Ok(None)
            }
        }
    }

    /// Whether the peer can join rooms and Ask.
    pub fn has_rooms(self) -> bool {
        self != Proto::Raw
    }

    /// Appends the frame a sender emits to have `body` broadcast to the namespace (`room`
    /// empty) or to `room`.
    pub fn fanout_frame(self, out: &mut Vec<u8>, room: &str, body: &[u8]) {
        match self {
            Proto::Neffos => {
                out.extend_from_slice(format!(";{NAMESPACE};{room};fanout;0;0;").as_bytes());
                out.extend_from_slice(body);
            }
            Proto::Socketio => {
                out.extend_from_slice(
                    format!("42/{NAMESPACE},[\"fanout\",\"{room}\",\"").as_bytes(),
                );
                out.extend_from_slice(body);
                out.extend_from_slice(b"\"]");
            }
            Proto::Raw => out.extend_from_slice(body),
        }
    }

    /// Appends the frame of Ask number `token` carrying `body` (the reply echoes it).
    pub fn ask_frame(self, out: &mut Vec<u8>, token: u64, body: &[u8]) {
        match self {
            Proto::Neffos => {
                out.extend_from_slice(format!("${token};{NAMESPACE};;ask;0;0;").as_bytes());
                out.extend_from_slice(body);
            }
            Proto::Socketio => {
                out.extend_from_slice(format!("42/{NAMESPACE},{token}[\"ask\",\"").as_bytes());
                out.extend_from_slice(body);
                out.extend_from_slice(b"\"]");
            }
            Proto::Raw => out.extend_from_slice(body),
        }
    }

    /// Appends the neffos frame of Ask number `token` for event `ask-peer`: the server Asks
    /// connection `responder` (on any instance) with `body` and replies with its reply.
    pub fn ask_peer_frame(out: &mut Vec<u8>, token: u64, responder: &str, body: &[u8]) {
        out.extend_from_slice(format!("${token};{NAMESPACE};;ask-peer;0;0;").as_bytes());
        out.extend_from_slice(responder.as_bytes());
        out.push(b'|');
        out.extend_from_slice(body);
    }

    /// A responder's answer to a server's Ask (neffos): the same frame, which carries the
    /// same wait token, event and body. `None` for anything else (client-ask replies,
    /// broadcasts, other protocols).
    pub fn server_ask_echo(self, payload: &[u8]) -> Option<&[u8]> {
        // wait;ns;room;event;isError;isNoOp;body: a server's Ask has a wait token that is
        // neither empty nor a client's (`$…`) nor the confirmation shape (`#…`).
        match (self, payload.first()) {
            (Proto::Neffos, Some(b';' | b'$' | b'#')) | (Proto::Neffos, None) => None,
            (Proto::Neffos, Some(_)) if !neffos_is_error(payload) => Some(payload),
            _ => None,
        }
    }

    /// The text a receiver must answer to a text frame to stay connected (Socket.IO's
    /// engine.io ping), if any.
    pub fn keepalive_answer(self, payload: &[u8]) -> Option<&'static [u8]> {
        (self == Proto::Socketio && payload == b"2").then_some(b"3")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ask_peer_frames_name_the_responder() {
        let mut out = Vec::new();
        Proto::ask_peer_frame(&mut out, 107, "a-b-c", b"#body");
        assert_eq!(out, b"$107;bench;;ask-peer;0;0;a-b-c|#body");
    }

    #[test]
    fn responders_echo_server_asks_only() {
        let ask = b"42;bench;;ask-peer;0;0;#body";
        assert_eq!(Proto::Neffos.server_ask_echo(ask), Some(&ask[..]));
        // A client's Ask reply, a broadcast, the confirmation shape, an error, empty.
        for other in [
            &b"$42;bench;;ask;0;0;#body"[..],
            b";bench;;msg;0;0;#body",
            b"#1;bench;;x;0;0;",
            b"42;bench;;ask-peer;1;0;failed",
            b"",
        ] {
            assert_eq!(Proto::Neffos.server_ask_echo(other), None);
        }
        assert_eq!(Proto::Socketio.server_ask_echo(ask), None);
        assert!(neffos_is_error(b"$1;bench;;ask-peer;1;0;timed out"));
        assert!(!neffos_is_error(b"$1;bench;;ask-peer;0;0;#x"));
    }
}
