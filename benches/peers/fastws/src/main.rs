//! Raw WebSocket broadcast server on `fastwebsockets` + hyper: the stack ceiling of the
//! neffos-rs benchmark (no protocol at all).
//!
//! Every text or binary frame a client sends is broadcast to every other connected client,
//! unchanged. One `tokio::sync::broadcast` channel carries `(sender, frame)`; each
//! connection has a reader task and a writer loop that skips its own frames and writes
//! every frame queued so far into an 8 KiB buffer before one flush (as our writer does).
//!
//! ```sh
//! peer-fastws --addr 127.0.0.1:0 --lifetime-secs 600
//! ```
//!
//! Prints `{"event":"listening","addr":"127.0.0.1:<port>"}` once listening, then exits when
//! its standard input closes or after the lifetime.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// Frames waiting for the slowest connection before it starts missing some.
const CHANNEL_CAPACITY: usize = 4096;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

type Bus = broadcast::Sender<(u64, OpCode, Bytes)>;

async fn handle_client(fut: upgrade::UpgradeFut, bus: Bus) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut rx = bus.subscribe();
    // Frames are written into a buffer and flushed once the queue is drained.
    let (read, mut write) = ws.split(|s| {
        let (r, w) = tokio::io::split(s);
        (r, tokio::io::BufWriter::with_capacity(8 * 1024, w))
    });
    let mut read = fastwebsockets::FragmentCollectorRead::new(read);
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let reader = tokio::spawn(async move {
        loop {
            let pong_tx = pong_tx.clone();
            let frame = read
                .read_frame::<_, WebSocketError>(&mut move |f: Frame<'_>| {
                    let tx = pong_tx.clone();
                    let payload = Bytes::copy_from_slice(&f.payload);
                    async move {
                        let _ = tx.send(payload).await;
                        Ok(())
                    }
                })
                .await;
            match frame {
                Ok(frame) => match frame.opcode {
                    OpCode::Close => break,
                    op @ (OpCode::Text | OpCode::Binary) => {
                        let body = Bytes::copy_from_slice(&frame.payload);
                        let _ = bus.send((id, op, body));
                    }
                    _ => {}
                },
                Err(_) => break,
            }
        }
    });
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(first) => {
                    let mut next = Some(first);
                    let mut failed = false;
                    while let Some((from, op, body)) = next.take() {
                        if from != id {
                            let frame = Frame::new(true, op, None, Payload::Borrowed(&body));
                            if write.write_frame(frame).await.is_err() {
                                failed = true;
                                break;
                            }
                        }
                        next = match rx.try_recv() {
                            Ok(m) => Some(m),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => rx.try_recv().ok(),
                            Err(_) => None,
                        };
                    }
                    if failed || write.flush().await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            pong = pong_rx.recv() => match pong {
                Some(payload) => {
                    // Obligated writes (pongs, the close reply) asked by the reader.
                    let frame = Frame::new(true, OpCode::Pong, None, Payload::Borrowed(&payload));
                    if write.write_frame(frame).await.is_err() || write.flush().await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    reader.abort();
    Ok(())
}

fn main() -> std::io::Result<()> {
    let mut addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut lifetime = Duration::from_secs(600);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--addr" => addr = value.parse().map_err(std::io::Error::other)?,
            "--lifetime-secs" => {
                lifetime = Duration::from_secs(value.parse().map_err(std::io::Error::other)?)
            }
            other => return Err(std::io::Error::other(format!("unknown argument {other}"))),
        }
    }
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        std::process::exit(0);
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!(
            "{{\"event\":\"listening\",\"addr\":\"{}\"}}",
            listener.local_addr()?
        );
        let (bus, _) = broadcast::channel(CHANNEL_CAPACITY);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let bus: Bus = bus.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let bus = bus.clone();
                    async move {
                        let (response, fut) = upgrade::upgrade(&mut req)?;
                        tokio::spawn(async move {
                            let _ = handle_client(fut, bus).await;
                        });
                        Ok::<Response<Empty<Bytes>>, WebSocketError>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await;
            });
        }
    })
}
