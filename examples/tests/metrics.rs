//! The Prometheus exporter the `scale-out` example installs (`--metrics`): scraped over
//! HTTP while clients use the chat, it shows neffos's connections, frames and fan-out.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use neffos::{Client, Events, MemoryExchange, Namespaces};
use neffos_examples::chat::{self, ChatOptions, NAMESPACE};

const T: Duration = Duration::from_secs(5);

async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(T, tcp.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_reports_connections_and_frames() {
    // A free port for the exporter, then the recorder before any server is built.
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    neffos_examples::metrics::install_prometheus(metrics_addr).unwrap();

    let server = chat::server(Some(Arc::new(MemoryExchange::new())));
    let app = chat::router(&server, ChatOptions::new("unused-neffos.js"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(neffos_examples::serve::serve(
        listener,
        app,
        std::future::pending(),
    ));

    let url = format!("ws://{addr}/echo");
    let mut clients = Vec::new();
    for name in ["ann", "ben"] {
        let client = Client::builder(&url)
            .header("X-Username", name)
            .namespaces(Namespaces::new().namespace(NAMESPACE, Events::new()))
            .connect()
            .await
            .unwrap();
        client.connect(NAMESPACE).await.unwrap();
        clients.push(client);
    }

    // The listener may take a moment to start; scrape until the gauges show both clients.
    let deadline = tokio::time::Instant::now() + T;
    let text = loop {
        let text = scrape(metrics_addr).await;
        if value(&text, "neffos_connections") == Some(2.0)
            && value(&text, "neffos_namespaces") == Some(1.0)
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed 2 connections:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(value(&text, "neffos_connections_accepted_total").unwrap() >= 2.0);
    assert!(
        value(&text, "neffos_frames_in_total").unwrap() >= 4.0,
        "{text}"
    );
    assert!(
        value(&text, "neffos_frames_out_total").unwrap() >= 4.0,
        "{text}"
    );
    assert!(text.contains("neffos_broadcast_recipients"), "{text}");

    for c in &clients {
        c.close();
    }
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let text = scrape(metrics_addr).await;
        if value(&text, "neffos_connections") == Some(0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections gauge never returned to 0:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
