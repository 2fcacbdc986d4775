//! A minimal WebSocket client (RFC 6455) for load generation: the opening handshake, masked
//! client frames, unmasked server frames, fragments reassembled. No extensions, no TLS.
//!
//! It exists so that the load generator spends as little CPU per delivered frame as
//! possible (one read per wake-up, no per-frame allocation except the shared payload), and
//! so that a connection can be bound to a chosen source address (127.0.0.x) before it
//! connects, to spread many connections over several ephemeral port ranges.

use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Text frame opcode.
pub const TEXT: u8 = 0x1;
/// Binary frame opcode.
pub const BINARY: u8 = 0x2;
/// Close frame opcode.
pub const CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub const PING: u8 = 0x9;
/// Pong frame opcode.
pub const PONG: u8 = 0xA;

/// Largest frame accepted from a server.
const MAX_PAYLOAD: usize = 16 << 20;

/// Where to connect: parsed from a `ws://host:port/path?query` URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The `Host` header value.
    pub host: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// Path and query of the request.
    pub path: String,
}

impl Endpoint {
    /// Parses a `ws://` URL (the host must resolve; loopback in practice).
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow::anyhow!("{url}: only ws:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = host
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{host}: no address"))?;
        Ok(Endpoint {
            host: host.to_owned(),
            addr,
            path: path.to_owned(),
        })
    }
}

/// One received frame (fragments already joined).
#[derive(Debug, Clone)]
pub struct Frame {
    /// The opcode ([`TEXT`], [`BINARY`], [`CLOSE`], [`PING`], [`PONG`]).
    pub opcode: u8,
    /// The payload.
    pub payload: Bytes,
}

/// A small xorshift generator for masking keys (unpredictability is not a concern here).
#[derive(Debug, Clone)]
pub struct MaskRng(u64);

impl MaskRng {
    /// A generator seeded from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        MaskRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next masking key.
    pub fn next_key(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x as u32).to_le_bytes()
    }
}

/// Appends one masked client frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], key: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Parses one server frame from the front of `buf`; `Ok(None)` when more bytes are needed.
fn parse_frame(buf: &mut BytesMut) -> io::Result<Option<(bool, u8, Bytes)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut header) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let key = if masked {
        if buf.len() < header + 4 {
            return Ok(None);
        }
        let k = [
            buf[header],
            buf[header + 1],
            buf[header + 2],
            buf[header + 3],
        ];
        header += 4;
        Some(k)
    } else {
        None
    };
    if buf.len() < header + len {
        buf.reserve(header + len - buf.len());
        return Ok(None);
    }
    buf.advance(header);
    let mut payload = buf.split_to(len);
    if let Some(key) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i & 3];
        }
    }
    Ok(Some((fin, opcode, payload.freeze())))
}

/// A client WebSocket over a tokio `TcpStream`.
#[derive(Debug)]
pub struct WsClient {
    stream: TcpStream,
    buf: BytesMut,
    fragments: Option<(u8, BytesMut)>,
    out: Vec<u8>,
    rng: MaskRng,
}

impl WsClient {
    /// Connects to `endpoint` from `source` (port chosen by the kernel) and performs the
    /// WebSocket opening handshake, within `timeout`.
    pub async fn connect(
        endpoint: &Endpoint,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> io::Result<WsClient> {
        tokio::time::timeout(timeout, Self::connect_inner(endpoint, source))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    async fn connect_inner(endpoint: &Endpoint, source: Option<IpAddr>) -> io::Result<WsClient> {
        let socket = if endpoint.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream = socket.connect(endpoint.addr).await?;
        stream.set_nodelay(true)?;
        let mut request = Vec::with_capacity(256);
        write!(
            request,
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            endpoint.path, endpoint.host
        )?;
        stream.write_all(&request).await?;
        let mut buf = BytesMut::with_capacity(1024);
        let end = loop {
            if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "handshake response too long",
                ));
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the handshake",
                ));
            }
        };
        let head = &buf[..end];
        if !(head.starts_with(b"HTTP/1.1 101") || head.starts_with(b"HTTP/1.0 101")) {
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("upgrade refused: {}", String::from_utf8_lossy(line)),
            ));
        }
        buf.advance(end);
        let seed = stream.local_addr().map(|a| a.port() as u64).unwrap_or(7);
        Ok(WsClient {
            stream,
            buf,
            fragments: None,
            out: Vec::with_capacity(128),
            rng: MaskRng::new(seed),
        })
    }

    /// Receives the next frame; `Ok(None)` when the server closed the TCP connection.
    ///
    /// Cancel safety: safe (partial frames stay buffered).
    pub async fn recv(&mut self) -> io::Result<Option<Frame>> {
        loop {
            while let Some((fin, opcode, payload)) = parse_frame(&mut self.buf)? {
                if opcode >= 0x8 {
                    return Ok(Some(Frame { opcode, payload }));
                }
                match (opcode, self.fragments.as_mut()) {
                    (0, Some((_, acc))) => acc.extend_from_slice(&payload),
                    (0, None) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "continuation without a start",
                        ));
                    }
                    (op, _) if !fin => {
                        self.fragments = Some((op, BytesMut::from(&payload[..])));
                        continue;
                    }
                    (op, _) => {
                        return Ok(Some(Frame {
                            opcode: op,
                            payload,
                        }));
                    }
                }
                if fin && let Some((op, acc)) = self.fragments.take() {
                    return Ok(Some(Frame {
                        opcode: op,
                        payload: acc.freeze(),
                    }));
                }
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(4096);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Sends one frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.out.clear();
        let key = self.rng.next_key();
        encode_frame(&mut self.out, opcode, payload, key);
        self.stream.write_all(&self.out).await
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send(TEXT, payload).await
    }

    /// Answers a ping with its payload.
    pub async fn pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send(PONG, payload).await
    }

    /// A second, blocking handle on the same socket for a sender thread, which writes
    /// whole frames with [`StdWriter::send`]. Nothing else may write to this connection
    /// while it is in use.
    pub fn std_writer(&self) -> io::Result<StdWriter> {
        let socket = socket2::SockRef::from(&self.stream).try_clone()?;
        let seed = self
            .stream
            .local_addr()
            .map(|a| a.port() as u64)
            .unwrap_or(9)
            ^ 0xABCD;
        Ok(StdWriter {
            stream: std::net::TcpStream::from(socket),
            out: Vec::with_capacity(256),
            rng: MaskRng::new(seed),
        })
    }

    /// Closes cleanly: a close frame (1000), then waits (at most `timeout`) for the server
    /// to close the TCP connection, so that `TIME_WAIT` stays on the server's side.
    pub async fn close(mut self, timeout: Duration) {
        if self.send(CLOSE, &1000u16.to_be_bytes()).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(timeout, async {
            let mut scratch = [0u8; 512];
            while let Ok(n) = self.stream.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// A blocking writer on a duplicate of a connection's socket (which stays non-blocking,
/// since the flag is shared with the tokio handle): a would-block write is retried after a
/// short sleep, for at most ten seconds.
#[derive(Debug)]
pub struct StdWriter {
    stream: std::net::TcpStream,
    out: Vec<u8>,
    rng: MaskRng,
}

impl StdWriter {
    /// Writes one whole text frame.
    pub fn send_text(&mut self, payload: &[u8]) -> io::Result<()> {
        self.out.clear();
        let key = self.rng.next_key();
        encode_frame(&mut self.out, TEXT, payload, key);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut off = 0;
        while off < self.out.len() {
            match (&self.stream).write(&self.out[off..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() > deadline {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "write stalled"));
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_parser() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            encode_frame(&mut out, TEXT, &payload, [1, 2, 3, 4]);
            let mut buf = BytesMut::from(&out[..]);
            let (fin, op, got) = parse_frame(&mut buf).unwrap().unwrap();
            assert!(fin);
            assert_eq!(op, TEXT);
            assert_eq!(&got[..], &payload[..]);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut out = Vec::new();
        encode_frame(&mut out, BINARY, b"hello", [9, 9, 9, 9]);
        let mut buf = BytesMut::from(&out[..4]);
        assert!(parse_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&out[4..]);
        assert_eq!(&parse_frame(&mut buf).unwrap().unwrap().2[..], b"hello");
    }

    #[test]
    fn endpoints_parse() {
        let e =
            Endpoint::parse("ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket").unwrap();
        assert_eq!(e.addr.port(), 8080);
        assert_eq!(e.path, "/socket.io/?EIO=4&transport=websocket");
        assert!(Endpoint::parse("http://x").is_err());
    }
}
