//! The brokers of the broker tests: Redis and NATS as containers when a Docker-API engine is
//! reachable (feature `containers`, testcontainers), else as the local `redis-server` /
//! `nats-server` binaries (`neffos::testkit::broker`). The first broker a test process
//! starts prints which it used, on stderr.
//!
//! | broker | image (containers) | local binary |
//! |---|---|---|
//! | Redis | [`REDIS_IMAGE`]`:`[`REDIS_TAG`] (`redis:7.0.15`) | `redis-server` 7.0 (`NEFFOS_REDIS_SERVER`) |
//! | NATS | [`NATS_IMAGE`]`:`[`NATS_TAG`] (`nats:2.9.25`) | `nats-server` 2.9 (`NEFFOS_NATS_SERVER`) |
//!
//! The selection ([`select`]): `NEFFOS_BROKERS=local` or `NEFFOS_BROKERS=containers`
//! forces one; otherwise containers when `DOCKER_HOST` is set or the default socket
//! `/var/run/docker.sock` exists, local binaries when not. Containers need this crate's
//! `containers` feature; without it, a reachable engine still gets local binaries (and the
//! reason says so). Tests that stop, pause or kill a broker keep using the local binaries
//! (they drive the process directly).
use std::io::Write as _;
use std::path::Path;
use std::sync::OnceLock;

/// The Redis image used with a container engine (the version of the local `redis-server`).
pub const REDIS_IMAGE: &str = "redis";
/// The Redis image's tag.
pub const REDIS_TAG: &str = "7.0.15";
/// The NATS image used with a container engine (the version of the local `nats-server`).
pub const NATS_IMAGE: &str = "nats";
/// The NATS image's tag.
pub const NATS_TAG: &str = "2.9.25";

/// The Docker engine's default socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where the brokers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The local `redis-server` / `nats-server` binaries.
    Local,
    /// Containers through testcontainers.
    Containers,
}

/// The backend and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Where the brokers come from.
    pub backend: Backend,
    /// Why (printed by the harness).
    pub reason: String,
}

/// Chooses the backend from the environment (`env` reads a variable) and whether the
/// default socket exists; `containers_built` says whether the `containers` feature is on.
pub fn select(
    env: impl Fn(&str) -> Option<String>,
    default_socket_exists: bool,
    containers_built: bool,
) -> Selection {
    let forced = env("NEFFOS_BROKERS").map(|v| v.trim().to_ascii_lowercase());
    let engine = match env("DOCKER_HOST").filter(|h| !h.trim().is_empty()) {
        Some(host) => Some(format!("DOCKER_HOST={host}")),
        None => default_socket_exists.then(|| format!("{DEFAULT_SOCKET} exists")),
    };
    let local = |reason: String| Selection {
        backend: Backend::Local,
        reason,
    };
    match (forced.as_deref(), engine) {
        (Some("local"), _) => local("NEFFOS_BROKERS=local".to_owned()),
        (Some("containers"), _) if !containers_built => local(
            "NEFFOS_BROKERS=containers, but built without the `containers` feature of \
             neffos-test-brokers"
                .to_owned(),
        ),
        (Some("containers"), _) => Selection {
            backend: Backend::Containers,
            reason: "NEFFOS_BROKERS=containers".to_owned(),
        },
        (_, Some(engine)) if containers_built => Selection {
            backend: Backend::Containers,
            reason: format!("a Docker engine is reachable ({engine})"),
        },
        (_, Some(engine)) => local(format!(
            "a Docker engine is reachable ({engine}), but built without the `containers` \
             feature of neffos-test-brokers"
        )),
        (_, None) => local(format!(
            "no Docker engine (DOCKER_HOST unset, {DEFAULT_SOCKET} absent)"
        )),
    }
}

/// This process's selection, printed once.
pub fn selection() -> &'static Selection {
    static SELECTION: OnceLock<Selection> = OnceLock::new();
    SELECTION.get_or_init(|| {
        let selection = select(
            |name| std::env::var(name).ok(),
            Path::new(DEFAULT_SOCKET).exists(),
            cfg!(feature = "containers"),
        );
        let what = match selection.backend {
            Backend::Local => "local redis-server / nats-server binaries".to_owned(),
            Backend::Containers => {
                format!("containers {REDIS_IMAGE}:{REDIS_TAG} and {NATS_IMAGE}:{NATS_TAG}")
            }
        };
        // Straight to stderr: the test harness captures `eprintln!`, and this line is
        // for whoever runs the tests.
        let _ = writeln!(
            std::io::stderr(),
            "neffos test brokers: {what} ({})",
            selection.reason
        );
        selection
    })
}

/// A running broker: its URL, and what keeps it running (dropping it stops the broker).
#[derive(Debug)]
pub struct Broker {
    url: String,
    _running: Running,
}

impl Broker {
    /// The broker's URL (`redis://127.0.0.1:<port>` or `nats://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        self.url.clone()
    }
}

/// Held for its `Drop`, which stops the broker.
#[derive(Debug)]
#[allow(dead_code)]
enum Running {
    Redis(neffos::testkit::broker::RedisServer),
    Nats(neffos::testkit::broker::NatsServer),
    #[cfg(feature = "containers")]
    Container(Box<containers::Guard>),
}

/// A Redis for one test.
pub fn redis() -> Broker {
    match selection().backend {
        Backend::Local => {
            let server = neffos::testkit::broker::RedisServer::start();
            Broker {
                url: server.url(),
                _running: Running::Redis(server),
            }
        }
        #[cfg(feature = "containers")]
        Backend::Containers => containers::start(containers::Kind::Redis),
        #[cfg(not(feature = "containers"))]
        Backend::Containers => unreachable!("selected only with the containers feature"),
    }
}

/// A NATS server for one test.
pub fn nats() -> Broker {
    match selection().backend {
        Backend::Local => {
            let server = neffos::testkit::broker::NatsServer::start();
            Broker {
                url: server.url(),
                _running: Running::Nats(server),
            }
        }
        #[cfg(feature = "containers")]
        Backend::Containers => containers::start(containers::Kind::Nats),
        #[cfg(not(feature = "containers"))]
        Backend::Containers => unreachable!("selected only with the containers feature"),
    }
}

#[cfg(feature = "containers")]
mod containers {
    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::SyncRunner;
    use testcontainers::{Container, GenericImage};

    use super::{Broker, NATS_IMAGE, NATS_TAG, REDIS_IMAGE, REDIS_TAG, Running};

    pub(super) enum Kind {
        Redis,
        Nats,
    }

    /// Keeps a container running; stops it on a thread of its own when dropped (the
    /// blocking client must not run on an async runtime's thread).
    pub(super) struct Guard(Option<Container<GenericImage>>);

    impl std::fmt::Debug for Guard {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("container")
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(container) = self.0.take() {
                let _ = std::thread::spawn(move || drop(container)).join();
            }
        }
    }

    /// Starts the container on a thread of its own, for the same reason.
    pub(super) fn start(kind: Kind) -> Broker {
        let (image, port, ready, scheme) = match kind {
            Kind::Redis => (
                GenericImage::new(REDIS_IMAGE, REDIS_TAG),
                6379,
                WaitFor::message_on_stdout("Ready to accept connections"),
                "redis",
            ),
            Kind::Nats => (
                GenericImage::new(NATS_IMAGE, NATS_TAG),
                4222,
                WaitFor::message_on_stderr("Server is ready"),
                "nats",
            ),
        };
        let started = std::thread::spawn(move || {
            let container = image
                .with_exposed_port(port.tcp())
                .with_wait_for(ready)
                .start()
                .map_err(|e| e.to_string())?;
            let host_port = container
                .get_host_port_ipv4(port.tcp())
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((container, host_port))
        })
        .join();
        match started {
            Ok(Ok((container, host_port))) => Broker {
                url: format!("{scheme}://127.0.0.1:{host_port}"),
                _running: Running::Container(Box::new(Guard(Some(container)))),
            },
            Ok(Err(e)) => panic!("cannot start the {scheme} container: {e}"),
            Err(_) => panic!("the thread starting the {scheme} container panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn no_engine_means_local_binaries() {
        let s = select(env(&[]), false, true);
        assert_eq!(s.backend, Backend::Local);
        assert!(s.reason.contains("no Docker engine"), "{}", s.reason);
    }

    #[test]
    fn docker_host_or_the_default_socket_means_containers() {
        let s = select(env(&[("DOCKER_HOST", "tcp://10.0.0.5:2375")]), false, true);
        assert_eq!(s.backend, Backend::Containers);
        assert!(s.reason.contains("DOCKER_HOST=tcp://10.0.0.5:2375"));
        let s = select(env(&[]), true, true);
        assert_eq!(s.backend, Backend::Containers);
        assert!(s.reason.contains(DEFAULT_SOCKET));
        // An empty DOCKER_HOST is no engine.
        assert_eq!(
            select(env(&[("DOCKER_HOST", " ")]), false, true).backend,
            Backend::Local
        );
    }

    #[test]
    fn an_engine_without_the_feature_still_means_local_and_says_why() {
        let s = select(
            env(&[("DOCKER_HOST", "unix:///run/user/1000/podman.sock")]),
            false,
            false,
        );
        assert_eq!(s.backend, Backend::Local);
        assert!(s.reason.contains("`containers` feature"), "{}", s.reason);
    }

    #[test]
    fn neffos_brokers_forces_the_choice() {
        let s = select(env(&[("NEFFOS_BROKERS", "local")]), true, true);
        assert_eq!(s.backend, Backend::Local);
        let s = select(env(&[("NEFFOS_BROKERS", "Containers")]), false, true);
        assert_eq!(s.backend, Backend::Containers);
        let s = select(env(&[("NEFFOS_BROKERS", "containers")]), false, false);
        assert_eq!(s.backend, Backend::Local);
    }

    #[test]
    fn without_an_engine_the_brokers_are_local_and_answer() {
        // This machine class has no engine: the harness must fall back to the binaries.
        if selection().backend == Backend::Local {
            let redis = redis();
            assert!(redis.url().starts_with("redis://127.0.0.1:"));
            let nats = nats();
            assert!(nats.url().starts_with("nats://127.0.0.1:"));
        }
    }
}
