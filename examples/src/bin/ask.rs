//! Ask: request/reply in both directions, with the Rust client.
//!
//! ```sh
//! cargo run -p neffos-examples --bin ask
//! ```
//!
//! Starts a server on a free loopback port (or `--port`), dials it with `neffos::Client`
//! as user `ferris`, then:
//!
//! 1. the client asks the server (`add`) and gets the sum;
//! 2. the client asks with a bad body and gets the handler's error;
//! 3. the server asks the client by its ID (`Server::ask`) and gets its answer;
//! 4. the client asks `greet`, whose server handler first asks the client back for its
//!    name (`NsConn::ask` inside a handler), then replies.
//!
//! Everything is logged with `tracing`; the program exits when done.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use neffos::{Client, Events, Message, Namespaces, NsConn, Reply, Server};
use neffos_examples::{log, serve};

const NAMESPACE: &str = "default";
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(about = "neffos-rs ask example: request/reply in both directions")]
struct Args {
    /// Port to listen on (0: any free port).
    #[arg(long, env = "PORT", default_value_t = 0)]
    port: u16,
}

fn text(msg: &Message) -> String {
    String::from_utf8_lossy(&msg.body).into_owned()
}

/// The server's events.
fn server_namespaces() -> Namespaces {
    Namespaces::new().namespace(
        NAMESPACE,
        Events::new()
            // "2 40" -> "42"; anything else is an error reply.
            .on("add", |_ns: NsConn, msg: Message| async move {
                let numbers: Vec<i64> = text(&msg)
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| "expected integers, like `2 40`")?;
                Ok::<_, &str>(Reply::new(numbers.iter().sum::<i64>().to_string()))
            })
            // Asks the client back before answering.
            .on("greet", |ns: NsConn, _msg: Message| async move {
                let name = ns.ask("name", "").await.map_err(|e| e.to_string())?;
                Ok::<_, String>(Reply::new(format!("hello, {}!", text(&name))))
            }),
    )
}

/// The client's events: what it answers when the server asks.
fn client_namespaces() -> Namespaces {
    Namespaces::new().namespace(
        NAMESPACE,
        Events::new()
            .on("name", |_ns: NsConn, _msg: Message| async {
                Reply::new("ferris")
            })
            .on("question", |_ns: NsConn, msg: Message| async move {
                tracing::info!(question = %text(&msg), "client: the server asks");
                Reply::new("42")
            }),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    log::init();
    let args = Args::parse();

    let server = Server::builder(server_namespaces())
        .id_generator(|parts| {
            parts
                .headers
                .get("x-username")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("anonymous")
                .to_owned()
        })
        .build();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .context("cannot listen")?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/echo", server.route());
    let serving = tokio::spawn(serve::serve(listener, app, std::future::pending()));
    tracing::info!(%addr, "server listening");

    let client = Client::builder(format!("ws://{addr}/echo"))
        .header("X-Username", "ferris")
        .namespaces(client_namespaces())
        .connect()
        .await
        .context("dial")?;
    let ns = client
        .connect(NAMESPACE)
        .await
        .context("connect namespace")?;
    tracing::info!(id = client.id(), "client connected");

    // 1. Client asks the server.
    let sum = ns.ask("add", "2 40").await.context("ask add")?;
    tracing::info!(reply = %text(&sum), "1. client asked `add 2 40`");

    // 2. The handler's error comes back as `Error::Remote`.
    match ns.ask("add", "two forty").await {
        Err(e) => tracing::info!(error = %e, "2. client asked `add two forty`"),
        Ok(reply) => anyhow::bail!("expected an error, got {:?}", text(&reply)),
    }

    // 3. Server asks the client, by connection ID.
    let answer = server
        .ask(
            &client.id(),
            Message::new(NAMESPACE, "question", "what is six times seven?"),
            TIMEOUT,
        )
        .await
        .context("server ask")?;
    tracing::info!(reply = %text(&answer), "3. server asked the client");

    // 4. Client asks; the server's handler asks the client back first.
    let greeting = tokio::time::timeout(TIMEOUT, ns.ask("greet", ""))
        .await
        .context("greet timed out")?
        .context("ask greet")?;
    tracing::info!(reply = %text(&greeting), "4. client asked `greet`");

    client.close();
    server.shutdown(TIMEOUT).await;
    serving.abort();
    Ok(())
}
