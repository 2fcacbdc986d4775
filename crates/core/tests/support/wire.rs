//! WebSocket by hand over a plain `TcpStream`, for attackers that must cost the test process
//! next to nothing (a tungstenite client keeps a 128 KiB read buffer) and that send what no
//! library would.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A WebSocket upgrade request for `target` (path and query).
pub(crate) fn upgrade_request(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// Dials and sends the upgrade request; returns the socket and the response's status code.
pub(crate) async fn upgrade(addr: SocketAddr, target: &str) -> (TcpStream, u16) {
    upgrade_on(TcpStream::connect(addr).await.unwrap(), target).await
}

/// Sends the upgrade request on a connected socket; returns it and the status code.
pub(crate) async fn upgrade_on(mut tcp: TcpStream, target: &str) -> (TcpStream, u16) {
    tcp.write_all(upgrade_request(target).as_bytes())
        .await
        .unwrap();
    // Read the response head byte by byte: nothing after it may be consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (tcp, status)
}

/// A masked client frame (mask key 0, so the payload goes as is).
pub(crate) fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// A whole text frame.
pub(crate) fn text(payload: impl AsRef<[u8]>) -> Vec<u8> {
    client_frame(0x1, true, payload.as_ref())
}

/// One server frame: opcode and payload; `None` at EOF or on a reset.
pub(crate) async fn read_frame(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.ok()?;
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).await.ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            tcp.read_exact(&mut b).await.ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((head[0] & 0x0F, payload))
}

/// The next text frame's payload, skipping pings; `None` at close, EOF or reset.
pub(crate) async fn next_text(tcp: &mut TcpStream) -> Option<String> {
    loop {
        match read_frame(tcp).await? {
            (0x1 | 0x2, payload) => return Some(String::from_utf8_lossy(&payload).into_owned()),
            (0x8, _) => return None,
            _ => continue,
        }
    }
}

/// Reads (and discards) frames up to the close frame: its code and reason. `None` when
/// the connection ended without one (what a peer sees as 1006).
pub(crate) async fn close_of(tcp: &mut TcpStream) -> Option<(u16, String)> {
    loop {
        let (opcode, payload) = read_frame(tcp).await?;
        if opcode == 0x8 {
            let code = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
            return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
        }
    }
}

/// Upgrades and completes the neffos handshake (`M` → `A<id>`), then connects `ns`.
pub(crate) async fn acked(addr: SocketAddr, ns: &str) -> TcpStream {
    acked_on(TcpStream::connect(addr).await.unwrap(), ns).await
}

/// [`acked`] on a connected socket.
pub(crate) async fn acked_on(tcp: TcpStream, ns: &str) -> TcpStream {
    let (mut tcp, status) = upgrade_on(tcp, "/echo").await;
    assert_eq!(status, 101);
    tcp.write_all(&text("M")).await.unwrap();
    let ack = next_text(&mut tcp).await.unwrap();
    assert!(ack.starts_with('A'), "{ack}");
    tcp.write_all(&text(format!("$1;{ns};;_OnNamespaceConnect;0;0;")))
        .await
        .unwrap();
    assert_eq!(next_text(&mut tcp).await.as_deref(), Some("$1;;;;;;"));
    tcp
}

/// Resident memory of this process, in KiB.
pub(crate) fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Raises this process's soft limit of open files to at least `want` (up to the hard
/// limit) with `prlimit`, and returns the soft limit then in force.
pub(crate) fn raise_fd_limit(want: u64) -> u64 {
    let soft = || {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_owned();
        let mut numbers = line.split_whitespace().filter_map(|w| {
            w.parse::<u64>()
                .ok()
                .or((w == "unlimited").then_some(u64::MAX))
        });
        (numbers.next().unwrap(), numbers.next().unwrap())
    };
    let (current, hard) = soft();
    if current < want {
        let target = want.min(hard);
        let status = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={target}:{hard}"))
            .status()
            .expect("prlimit (util-linux) raises the open-file limit");
        assert!(status.success(), "prlimit failed");
    }
    soft().0
}
